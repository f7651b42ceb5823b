package restore

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kubekeep/kubekeep/backup"
	"github.com/kubekeep/kubekeep/backup/versionread"
	"github.com/kubekeep/kubekeep/config"
	"github.com/kubekeep/kubekeep/etcdsnap"
	"github.com/kubekeep/kubekeep/etcdsnap/snapread"
	"github.com/kubekeep/kubekeep/internal/sandbox"
	"github.com/kubekeep/kubekeep/internal/testetcd"
	"github.com/kubekeep/kubekeep/rsyncish"
	"github.com/kubekeep/kubekeep/rsyncish/format"
)

// journalFixture is a store with a full version of a real etcd and a
// delta stream running into its journal, as the agent runs it.
type journalFixture struct {
	t     *testing.T
	ctx   context.Context
	sb    *sandbox.Root
	root  string
	cli   *clientv3.Client
	store *rsyncish.Store
	full  *backup.Result
	j     *rsyncish.Journal
	stop  func()
	// cache is kept across the fixture's backups, as the agent keeps it.
	cache backup.JournalCache
}

func newJournalFixture(t *testing.T) *journalFixture {
	t.Helper()
	root := testetcd.SandboxT(t)
	srv := testetcd.StartT(t, root)
	cli := srv.ClientT(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	t.Cleanup(cancel)
	store, err := rsyncish.Open(filepath.Join(t.TempDir(), "store"), rsyncish.Options{AllowSameFilesystem: true})
	if err != nil {
		t.Fatal(err)
	}
	f := &journalFixture{t: t, ctx: ctx, sb: root, root: root.Dir, cli: cli, store: store}
	if _, err := cli.Put(ctx, "/j/before", "x"); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.LoadCluster(ctx); err != nil {
		t.Fatal(err)
	}
	f.full = f.backup(false)
	if f.full.EtcdKind != versionread.EtcdKindFull {
		t.Fatalf("first version: etcd kind %q, want full", f.full.EtcdKind)
	}
	sink, err := backup.DeltaSink(store)
	if err != nil {
		t.Fatal(err)
	}
	streamCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- etcdsnap.NewDeltaStreamer(cli, f.full.Etcd.Revision, f.full.Time, sink,
			etcdsnap.DeltaConfig{Flush: 20 * time.Millisecond, Heartbeat: 200 * time.Millisecond}).Run(streamCtx)
	}()
	var once sync.Once
	f.stop = func() { once.Do(func() { stop(); <-done }) }
	t.Cleanup(f.stop)
	if f.j, err = store.Journal(versionread.DeltaJournal); err != nil {
		t.Fatal(err)
	}
	// The stream's first segment (a progress mark) makes the journal live.
	f.waitDurable(f.full.Etcd.Revision)
	return f
}

func (f *journalFixture) backup(full bool) *backup.Result {
	f.t.Helper()
	res, err := backup.Run(f.ctx, backup.Options{Root: f.root, Store: f.store, Etcd: config.Default().Etcd, ForceFull: full, JournalCache: &f.cache})
	if err != nil || res.Status != versionread.StatusOK {
		f.t.Fatalf("backup: %v %+v", err, res)
	}
	return res
}

func (f *journalFixture) waitDurable(rev int64) {
	f.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		segs, _ := f.j.List()
		if len(segs) > 0 && int64(segs[len(segs)-1].Last) >= rev {
			return
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("revision %d never became durable", rev)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitMarkAfter waits for the journal to hold revision rev alone in a
// segment and a progress mark at rev after it: two segments named
// rev-rev.
func (f *journalFixture) waitMarkAfter(rev int64) {
	f.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		segs, _ := f.j.List()
		n := 0
		for _, si := range segs {
			if int64(si.First) == rev && int64(si.Last) == rev {
				n++
			}
		}
		if n >= 2 {
			return
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("revision %d never had a segment of its own and a progress mark after it: %+v", rev, segs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// stateAt is what etcd itself holds at rev: every live key and its value.
func (f *journalFixture) stateAt(rev int64) map[string]string {
	f.t.Helper()
	resp, err := f.cli.Get(f.ctx, "\x00", clientv3.WithFromKey(), clientv3.WithRev(rev))
	if err != nil {
		f.t.Fatal(err)
	}
	out := map[string]string{}
	for _, kv := range resp.Kvs {
		out[string(kv.Key)] = string(kv.Value)
	}
	return out
}

func dbState(t *testing.T, dataDir string) map[string]string {
	t.Helper()
	kvs, err := snapread.ReadKeys(etcdsnap.DBPath(dataDir))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, kv := range kvs {
		out[string(kv.Key)] = string(kv.Value)
	}
	return out
}

func sameState(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s: key %s = %q (present %v), etcd held %q", what, k, g, ok, v)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s: key %s restored, etcd did not hold it", what, k)
		}
	}
}

// changes writes a round of puts, a delete and a two-key transaction (one
// revision, two changes) and returns etcd's revision after them.
func (f *journalFixture) changes(i int) int64 {
	f.t.Helper()
	for _, k := range []string{fmt.Sprintf("/j/new-%d", i), "/j/shared"} {
		if _, err := f.cli.Put(f.ctx, k, fmt.Sprintf("v%d", i)); err != nil {
			f.t.Fatal(err)
		}
	}
	if i > 1 {
		if _, err := f.cli.Delete(f.ctx, fmt.Sprintf("/j/new-%d", i-1)); err != nil {
			f.t.Fatal(err)
		}
	}
	r, err := f.cli.Txn(f.ctx).Then(clientv3.OpPut(fmt.Sprintf("/j/txn-a-%d", i), "a"), clientv3.OpPut(fmt.Sprintf("/j/txn-b-%d", i), "b")).Commit()
	if err != nil {
		f.t.Fatal(err)
	}
	return r.Header.Revision
}

// With a delta stream running, the versions after a full one are journal
// versions (no snapshot of their own: base + journal), and each restores
// (restore etcd --to, and the drill) to exactly what etcd held at its
// revision. Before, every version streamed a whole snapshot.
func TestJournalVersionsRestoreWhatEtcdHeld(t *testing.T) {
	f := newJournalFixture(t)
	type made struct {
		res  *backup.Result
		want map[string]string
	}
	var versions []made
	for i := 1; i <= 5; i++ {
		rev := f.changes(i)
		res := f.backup(false)
		if res.EtcdKind != versionread.EtcdKindJournal {
			t.Fatalf("version %d: etcd kind %q (%s), want journal", i, res.EtcdKind, res.FullReason)
		}
		if res.Etcd.Source != snapread.SourceJournal || res.Etcd.Base != f.full.ID || res.Etcd.BaseRevision != f.full.Etcd.Revision {
			t.Fatalf("version %d records %+v, want a journal on base %s at %d", i, res.Etcd, f.full.ID, f.full.Etcd.Revision)
		}
		if res.Etcd.Revision < rev {
			t.Fatalf("version %d at revision %d, etcd was at %d before it", i, res.Etcd.Revision, rev)
		}
		vi, err := f.store.Version(res.ID)
		if err != nil {
			t.Fatal(err)
		}
		for _, sh := range vi.Streams {
			if sh.Name == versionread.EtcdSnapshotStream {
				t.Fatalf("journal version %d holds a snapshot stream of its own", i)
			}
		}
		if !hasStream(vi, versionread.ClusterConfigurationStream) && hasStream(mustVersion(t, f.store, f.full.ID), versionread.ClusterConfigurationStream) {
			t.Errorf("journal version %d lost the ClusterConfiguration export its base holds", i)
		}
		versions = append(versions, made{res, f.stateAt(res.Etcd.Revision)})
	}
	for i, v := range versions {
		to := filepath.Join(t.TempDir(), "etcd")
		got, err := RestoreEtcd(f.ctx, EtcdOptions{Store: f.store, Version: v.res.ID, To: to})
		if err != nil {
			t.Fatalf("restore etcd of journal version %d: %v", i+1, err)
		}
		if got.ReplayedToRevision != v.res.Etcd.Revision {
			t.Errorf("version %d restored to revision %d, want %d", i+1, got.ReplayedToRevision, v.res.Etcd.Revision)
		}
		sameState(t, fmt.Sprintf("version %d", i+1), dbState(t, to), v.want)
	}
	last := versions[len(versions)-1].res
	dr, err := Drill(f.ctx, f.store, last.ID, nil)
	if err != nil || !dr.Verified {
		t.Fatalf("drill of a journal version: %v %+v", err, dr)
	}
	if dr.Base != f.full.ID || dr.ChangedKeys == 0 || dr.RecordedRevision != last.Etcd.Revision {
		t.Errorf("drill result %+v: want base %s, changed keys, revision %d", dr, f.full.ID, last.Etcd.Revision)
	}
	// The drill also held the journal key index against the replay: a
	// record per changed key.
	if dr.JournalIndexRecords != dr.ChangedKeys {
		t.Errorf("drill checked %d journal key index records, the journal changes %d keys", dr.JournalIndexRecords, dr.ChangedKeys)
	}
	// Forced: a full version again, which later journal versions build on.
	if full := f.backup(true); full.EtcdKind != versionread.EtcdKindFull {
		t.Errorf("backup with ForceFull: kind %q", full.EtcdKind)
	}
}

func hasStream(v rsyncish.VersionInfo, name string) bool {
	for _, sh := range v.Streams {
		if sh.Name == name {
			return true
		}
	}
	return false
}

func mustVersion(t *testing.T, s *rsyncish.Store, id string) rsyncish.VersionInfo {
	t.Helper()
	v, err := s.Version(id)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// The drill proves a journal version against what etcd held: with the
// journal tampered with (each segment rewritten with a valid checksum, so
// nothing but its content tells), the chain still looks whole, yet the
// drill fails: one change of a two-key transaction dropped (the key count
// differs), one value altered (same keys, same revisions: only the digest
// of the changed keys' values, read from etcd at backup time, tells), one
// whole revision dropped (the replay falls short of the revision).
func TestDrillFailsOnATamperedJournal(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(e snapread.Event) (snapread.Event, bool) // false: drop it
	}{
		{"dropped change", func(e snapread.Event) (snapread.Event, bool) { return e, e.Key != "/j/txn-b-1" }},
		{"altered value", func(e snapread.Event) (snapread.Event, bool) {
			if e.Key == "/j/txn-b-1" {
				e.Value = []byte("forged")
			}
			return e, true
		}},
		{"dropped revision", func(e snapread.Event) (snapread.Event, bool) { return e, e.Key != "/j/new-1" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newJournalFixture(t)
			f.changes(1)
			res := f.backup(false)
			if res.EtcdKind != versionread.EtcdKindJournal {
				t.Fatalf("etcd kind %q (%s), want journal", res.EtcdKind, res.FullReason)
			}
			if dr, err := Drill(f.ctx, f.store, res.ID, nil); err != nil || !dr.Verified {
				t.Fatalf("drill of the untouched journal version: %v", err)
			}
			f.stop()
			segs, err := f.j.List()
			if err != nil {
				t.Fatal(err)
			}
			changed := false
			for _, si := range segs {
				data, err := f.j.Read(si)
				if err != nil {
					t.Fatal(err)
				}
				seg, err := snapread.DecodeSegment(data)
				if err != nil {
					t.Fatal(err)
				}
				var kept []snapread.Event
				touched := false
				for _, e := range seg.Events {
					ne, keep := tc.mutate(e)
					touched = touched || !keep || string(ne.Value) != string(e.Value)
					if keep {
						kept = append(kept, ne)
					}
				}
				if !touched {
					continue
				}
				changed = true
				seg.Events = kept
				raw := format.EncodeSegment(format.Segment{First: si.First, Last: si.Last, Time: si.Time, Data: seg.Encode()})
				if err := os.WriteFile(filepath.Join(f.store.Dir(), "journals", versionread.DeltaJournal, si.File), raw, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if !changed {
				t.Fatal("nothing in the journal to tamper with")
			}
			dr, err := Drill(f.ctx, f.store, res.ID, nil)
			if err == nil || dr.Verified {
				t.Fatalf("drill of a journal version whose journal was tampered with passed: %+v", dr)
			}
			t.Logf("drill: %v", err)
		})
	}
}

// Retention keeps a journal version's base, and the journal it needs:
// prune to the newest version alone leaves it restorable. A journal with
// a hole makes the next version full, and `latest` passes over a journal
// version whose chain was broken afterwards.
func TestPruneKeepsBaseAndGapForcesFull(t *testing.T) {
	f := newJournalFixture(t)
	f.changes(1)
	v1 := f.backup(false)
	f.changes(2)
	v2 := f.backup(false)
	if v1.EtcdKind != versionread.EtcdKindJournal || v2.EtcdKind != versionread.EtcdKindJournal {
		t.Fatalf("kinds %q %q, want journal", v1.EtcdKind, v2.EtcdKind)
	}
	want := f.stateAt(v2.Etcd.Revision)
	unlock, err := f.store.Lock(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	pr, err := backup.Prune(f.ctx, f.store, config.Retention{KeepLast: 1}, false)
	unlock()
	if err != nil {
		t.Fatal(err)
	}
	kept := map[string]bool{}
	for _, k := range pr.Keep {
		kept[k.ID] = true
	}
	if !kept[v2.ID] || !kept[f.full.ID] || kept[v1.ID] {
		t.Fatalf("prune kept %+v: want %s and its base %s, not %s", pr.Keep, v2.ID, f.full.ID, v1.ID)
	}
	to := filepath.Join(t.TempDir(), "etcd")
	if _, err := RestoreEtcd(f.ctx, EtcdOptions{Store: f.store, Version: "latest", To: to}); err != nil {
		t.Fatalf("restore etcd of the kept journal version: %v", err)
	}
	sameState(t, "after prune", dbState(t, to), want)

	// A lost segment between the base and etcd's revision: the next
	// version cannot be a journal one.
	f.stop()
	segs, err := f.j.List()
	if err != nil {
		t.Fatal(err)
	}
	var victim rsyncish.SegmentInfo
	for _, si := range segs {
		if int64(si.First) > f.full.Etcd.Revision && si.Last > si.First {
			victim = si
			break
		}
	}
	if victim.File == "" {
		t.Fatalf("no segment with changes after the base in %+v", segs)
	}
	if err := os.Remove(filepath.Join(f.store.Dir(), "journals", versionread.DeltaJournal, victim.File)); err != nil {
		t.Fatal(err)
	}
	id, err := versionread.Resolve(f.store, "latest")
	if err != nil || id != f.full.ID {
		t.Errorf("latest with the journal version's chain broken: %q %v, want the base %s", id, err, f.full.ID)
	}
	res, err := backup.Run(f.ctx, backup.Options{Root: f.root, Store: f.store, Etcd: config.Default().Etcd, JournalWait: time.Hour, DeltaTail: func() int64 { return 1 << 62 }})
	if err != nil {
		t.Fatal(err)
	}
	if res.EtcdKind != versionread.EtcdKindFull || !strings.Contains(res.FullReason, "misses") {
		t.Errorf("backup over a journal with a hole: kind %q, reason %q; want full because of the hole", res.EtcdKind, res.FullReason)
	}
}

// Every version holds the kubeadm exports a rebuild needs: a journal
// version carries its base's ClusterConfiguration, and when kubeadm-config
// changed in the journal (a kubeadm upgrade), the new one.
func TestJournalVersionCarriesExports(t *testing.T) {
	f := newJournalFixture(t)
	read := func(id string) string {
		t.Helper()
		rc, _, err := f.store.OpenStream(id, versionread.ClusterConfigurationStream)
		if err != nil {
			t.Fatalf("version %s: %v", id, err)
		}
		defer rc.Close()
		b, err := io.ReadAll(rc)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	baseDoc := read(f.full.ID)
	if !strings.Contains(baseDoc, "kind: ClusterConfiguration") {
		t.Fatalf("the full version's ClusterConfiguration: %q", baseDoc)
	}
	f.changes(1)
	same := f.backup(false)
	if same.EtcdKind != versionread.EtcdKindJournal {
		t.Fatalf("kind %q (%s)", same.EtcdKind, same.FullReason)
	}
	if got := read(same.ID); got != baseDoc {
		t.Errorf("journal version's ClusterConfiguration differs from its base's:\n%s", got)
	}
	upgraded := testetcd.ClusterConfiguration("v1.99.0", "10.0.0.99")
	v, err := testetcd.Encode(testetcd.KubeadmConfigMap(upgraded))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.cli.Put(f.ctx, snapread.KubeadmConfigKey, string(v)); err != nil {
		t.Fatal(err)
	}
	changed := f.backup(false)
	if changed.EtcdKind != versionread.EtcdKindJournal {
		t.Fatalf("kind %q (%s)", changed.EtcdKind, changed.FullReason)
	}
	if got := read(changed.ID); got != upgraded {
		t.Errorf("journal version after kubeadm-config changed holds:\n%s\nwant:\n%s", got, upgraded)
	}
}

// A whole restore (preflight, files, etcd phases) of a journal version
// onto a wiped node: the data dir holds what etcd held at the version's
// revision, from the base's snapshot and the journal.
func TestRestorePhasesOfAJournalVersion(t *testing.T) {
	f := newJournalFixture(t)
	f.changes(1)
	jv := f.backup(false)
	if jv.EtcdKind != versionread.EtcdKindJournal {
		t.Fatalf("kind %q (%s)", jv.EtcdKind, jv.FullReason)
	}
	want := f.stateAt(jv.Etcd.Revision)
	f.changes(2) // after the version: not restored
	dir := filepath.Join(t.TempDir(), "node")
	res, err := Run(f.ctx, Options{Root: dir, Store: f.store, Version: jv.ID,
		Phases:   []string{PhasePreflight, PhaseFiles, PhaseEtcd},
		Hostname: f.sb.Opts.NodeName, HostIPs: []net.IP{net.ParseIP(f.sb.Opts.AdvertiseAddress)}})
	if err != nil {
		t.Fatalf("restore of a journal version: %v\n%+v", err, res)
	}
	dataDir := filepath.Join(dir, strings.TrimPrefix(f.sb.EtcdDataDir, "/"))
	sameState(t, "restore phases", dbState(t, dataDir), want)
	st, err := snapread.CheckDB(etcdsnap.DBPath(dataDir))
	if err != nil || st.Revision != jv.Etcd.Revision+etcdsnap.RevisionBump {
		t.Errorf("restored db: %+v %v, want revision %d + bump", st, err, jv.Etcd.Revision)
	}
}
