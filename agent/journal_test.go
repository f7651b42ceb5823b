package agent

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/kubekeep/kubekeep/backup/versionread"
	"github.com/kubekeep/kubekeep/internal/testetcd"
)

// With the delta stream running, the agent's versions after the first
// (full) one are journal versions: a version at every interval, none
// skipped, the kind counted in metrics and shown in status. Before, every
// version streamed a full snapshot.
func TestAgentMakesJournalVersions(t *testing.T) {
	root := testetcd.SandboxT(t)
	srv := testetcd.StartT(t, root)
	ctx := context.Background()
	if _, err := srv.LoadCluster(ctx); err != nil {
		t.Fatal(err)
	}
	cli := srv.ClientT(t)
	dir := storeDir(t)
	a, buf := newAgent(t, testSettings(root, dir), nil)
	start(t, a, buf)
	n := 0
	waitFor(t, 30*time.Second, "4 versions, 2 of them journal versions", func() bool {
		n++
		if _, err := cli.Put(ctx, "/registry/configmaps/default/journal-"+strconv.Itoa(n), "v"); err != nil {
			t.Fatal(err)
		}
		journal := 0
		vs := versions(t, dir)
		for _, v := range vs {
			if src, ok := versionread.EtcdSourceOf(v); ok && src.Journal {
				journal++
			}
		}
		return len(vs) >= 4 && journal >= 2
	})
	vs := versions(t, dir)
	if src, ok := versionread.EtcdSourceOf(vs[0]); !ok || src.Journal {
		t.Errorf("first version %s: %+v, want a full snapshot", vs[0].ID, src)
	}
	for i := 1; i < len(vs); i++ {
		if gap := vs[i].Time.Sub(vs[i-1].Time); gap > 6*time.Second {
			t.Errorf("versions %s and %s are %s apart; the schedule is every 2s", vs[i-1].ID, vs[i].ID, gap)
		}
	}
	_, body := scrape(t, a, "/metrics")
	if v, _ := strconv.ParseFloat(metricValue(body, `kubekeep_backup_etcd_versions_total{kind="journal"}`), 64); v < 2 {
		t.Errorf("journal versions metric = %v, want >= 2", v)
	}
	if v := metricValue(body, `kubekeep_backup_etcd_versions_total{kind="full"}`); v == "" || v == "0" {
		t.Errorf("full versions metric = %q, want >= 1", v)
	}
	if v := metricValue(body, "kubekeep_backup_budget_skips_total"); v != "0" {
		t.Errorf("budget skips = %q with the default (off) budget", v)
	}
	// The base is the newest full version before the journal ones: the
	// first, or a later full one when the delta stream started only after
	// the second backup began (as on a loaded machine).
	full := map[string]bool{}
	for _, v := range vs {
		if src, ok := versionread.EtcdSourceOf(v); ok && !src.Journal {
			full[v.ID] = true
		}
	}
	waitFor(t, 10*time.Second, "status to show a journal version on a full base", func() bool {
		e := etcdState(a)
		return e.Kind == versionread.EtcdKindJournal && full[e.Base] && e.JournalVersions >= 2 && e.FullVersions >= 1
	})
	if e := etcdState(a); e.Base == "" || !full[e.Base] {
		t.Errorf("status base %q is not a full version of the store", e.Base)
	}
}

// An agent restarted on a store whose delta journal it wrote resumes the
// stream from the journal's tail at once, so its first version is a
// journal version holding what changed while it was down, not a full
// snapshot (before, every restart cost one: ~8 s of CPU per GiB of db).
func TestRestartedAgentResumesTheJournal(t *testing.T) {
	root := testetcd.SandboxT(t)
	srv := testetcd.StartT(t, root)
	ctx := context.Background()
	if _, err := srv.LoadCluster(ctx); err != nil {
		t.Fatal(err)
	}
	cli := srv.ClientT(t)
	dir := storeDir(t)
	cfg := testSettings(root, dir)
	cfg.Schedules.Backup = time.Hour // the versions below: the first run of each agent
	a, buf := newAgent(t, cfg, nil)
	r := start(t, a, buf)
	waitFor(t, 30*time.Second, "the first version and a change in the journal", func() bool {
		resp, err := cli.Put(ctx, "/registry/configmaps/default/before", "v")
		if err != nil {
			t.Fatal(err)
		}
		return len(versions(t, dir)) >= 1 && journalTail(t, dir) >= resp.Header.Revision-1
	})
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	n := len(versions(t, dir))
	// While no agent runs.
	resp, err := cli.Put(ctx, "/registry/configmaps/default/while-down", "v")
	if err != nil {
		t.Fatal(err)
	}
	downRev := resp.Header.Revision

	b, buf2 := newAgent(t, cfg, nil)
	start(t, b, buf2)
	waitFor(t, 60*time.Second, "the restarted agent's first version", func() bool { return len(versions(t, dir)) > n })
	v := versions(t, dir)[n]
	src, ok := versionread.EtcdSourceOf(v)
	if !ok || !src.Journal {
		t.Fatalf("the first version after the restart, %s, is %+v: want a journal version\n%s", v.ID, src, buf2.String())
	}
	if src.Revision < downRev {
		t.Errorf("the journal version is at revision %d, before the change made while the agent was down (%d)", src.Revision, downRev)
	}
}
