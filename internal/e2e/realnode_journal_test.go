package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kubekeep/kubekeep/internal/kubenode"
	"github.com/kubekeep/kubekeep/internal/s3test"
)

// TestRealNodeJournalAndOffsiteRebuild is story 2 for the versions the
// agent makes most of the time, and story 4 (the second site), on a node
// made by real kubeadm, at --root /:
//
//   - the agent's delta stream and 10 s schedule make a full version and
//     then journal versions; the changes after the full one are only in
//     the journal;
//   - etcd wiped: `restore --version latest` restores the journal version
//     (base snapshot + journal), every object back with its UID, the
//     changes after the base included;
//   - the machine lost (etcd, PKI, admin.conf and the second disk's
//     store): `offsite pull` from a real S3 server (versitygw) into a new
//     store with only the identity, then `restore --store NEW --version
//     latest` rebuilds the same control plane.
func TestRealNodeJournalAndOffsiteRebuild(t *testing.T) {
	kubenode.RunIsolated(t, func(t *testing.T) {
		n := node(t, kubenode.Options{SkipAddons: true})
		store := storePath(t)

		// The second site: a bucket with Object Lock on a real S3 server.
		srv := s3test.StartT(t)
		srv.Bucket(t, "kk-dr", true)
		// The identity lives off the master; only its recipient goes in
		// the config.
		idFile := filepath.Join(t.TempDir(), "dr.agekey")
		recipient := strings.TrimSpace(must(t, "offsite", "keygen", "--out", idFile).stdout)
		appendConfig(t, fmt.Sprintf(`schedules:
  backup: 10s
  jitter: 0s
offsite:
  - name: dr
    url: s3://kk-dr/cp1
    endpoint: http://%s
    region: us-east-1
    recipients: [%s]
    lockDays: 1
    every: 24h
`, srv.Endpoint, recipient))

		agent := startAgent(t)
		if !waitFor(90*time.Second, func() bool { return hasKind(t, "full", 0) }) {
			t.Fatalf("no full version from the agent in 90 s\n%s", agent.log())
		}
		// Changes after the full version: only the journal holds them.
		n.Kubectl(t, "create", "configmap", "-n", "shop", "later", "--from-literal=k=journal")
		n.Kubectl(t, "patch", "configmap", "-n", "shop", "target", "--type=merge", "-p", `{"data":{"currency":"CHF"}}`)
		n.Kubectl(t, "delete", "serviceaccount", "-n", "shop", "app")
		rev := etcdRevision(t, n)
		if !waitFor(90*time.Second, func() bool { return hasKind(t, "journal", rev) }) {
			t.Fatalf("no journal version at revision >= %d in 90 s\n%s", rev, agent.log())
		}
		// The agent merges the small segments behind its versions: the
		// apiserver's leases alone make the stream write ~13 a minute.
		// Behind the newest journal version's predecessor the journal
		// holds about one segment per version.
		var jrevs []int64
		if !waitFor(120*time.Second, func() bool { jrevs = journalRevisions(t); return len(jrevs) >= 5 }) {
			t.Fatalf("5 journal versions not made in 120 s: %v\n%s", jrevs, agent.log())
		}
		stopAgent(t, agent)
		merged, all := segmentsUpTo(t, store, jrevs[len(jrevs)-2])
		t.Logf("journal: %d segment files up to the revision of the 2nd newest of %d journal versions, %d in all", merged, len(jrevs), all)
		if merged > len(jrevs)+1 {
			t.Errorf("the journal holds %d segment files up to revision %d, behind %d journal versions: its small segments were not merged", merged, jrevs[len(jrevs)-2], len(jrevs)-1)
		}
		latest := latestID(t)
		if k := kindOf(t, latest); k != "journal" {
			t.Fatalf("latest is %q, a %q version; want a journal version", latest, k)
		}
		want := uids(t, n, kubenode.AdminConf, resources)
		if _, ok := want["ServiceAccount/shop/app"]; ok {
			t.Fatal("the deleted ServiceAccount is still listed")
		}
		if _, ok := want["ConfigMap/shop/later"]; !ok {
			t.Fatalf("the ConfigMap made after the full version is not listed: %v", want)
		}
		// One object out of the journal version, as an operator reads it,
		// through the version's journal key index (the log says so).
		gr := must(t, "get", "--version", latest, "configmaps/shop/later", "-o", "json", "--log-level", "info")
		var cm struct {
			Data map[string]string `json:"data"`
		}
		if err := json.Unmarshal([]byte(gr.stdout), &cm); err != nil || cm.Data["k"] != "journal" || !strings.Contains(gr.stderr, "journalIndex") {
			t.Fatalf("get of the ConfigMap made after the full version, from the journal version (%v): %+v\n%s", err, cm, gr)
		}
		if gr := kk(t, "get", "--version", latest, "serviceaccounts/shop/app"); gr.code != 1 {
			t.Fatalf("get of the ServiceAccount deleted after the full version: want exit 1 (not found)\n%s", gr)
		}
		must(t, "offsite", "sync", "--tier", "dr")

		check := func(what string) {
			t.Helper()
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			if err := kubenode.WaitAPIServer(ctx, kubenode.AdminConf); err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			got := uids(t, n, kubenode.AdminConf, resources)
			for _, k := range sortedKeys(want) {
				if got[k] != want[k] {
					t.Errorf("%s: %s: uid %q, %q before the disaster", what, k, got[k], want[k])
				}
			}
			for _, k := range sortedKeys(got) {
				if _, ok := want[k]; !ok {
					t.Errorf("%s: %s is back, but it was gone before the disaster", what, k)
				}
			}
			if c := jsonPath(t, n, "{.data.currency}", "configmap", "-n", "shop", "target"); c != "CHF" {
				t.Errorf("%s: the target ConfigMap's currency is %q, want the journal's CHF", what, c)
			}
		}

		// Disaster 1: etcd's data gone. The journal version comes back.
		wipe(t, kubenode.EtcdDataDir, false)
		r := kk(t, restoreArgs(t, "--version", "latest")...)
		if r.code != 0 {
			t.Fatalf("restore of the journal version: %s", r)
		}
		if !strings.Contains(r.stdout, latest) {
			t.Errorf("restore --version latest did not restore %s:\n%s", latest, r.stdout)
		}
		check("after restoring the journal version")
		t.Logf("journal version %s restored at --root / in %s", latest, r.took.Round(100*time.Millisecond))

		// Disaster 2: the machine is lost, its second disk with it. A new
		// machine has the config, the identity and the bucket.
		for _, p := range []string{kubenode.EtcdDataDir, kubenode.PKIDir, kubenode.AdminConf, store} {
			if err := os.RemoveAll(p); err != nil {
				t.Fatal(err)
			}
		}
		pulled := filepath.Join(filepath.Dir(store), "pulled")
		pr := must(t, "offsite", "pull", "--tier", "dr", "--identity", idFile, "--version", "latest", "--store", pulled, "-o", "json")
		var pj struct{ Version string }
		if err := json.Unmarshal([]byte(pr.stdout), &pj); err != nil || pj.Version != latest {
			t.Errorf("offsite pull: %s (%v), want version %s", pr.stdout, err, latest)
		}
		r = kk(t, restoreArgs(t, "--store", pulled, "--version", "latest")...)
		if r.code != 0 {
			t.Fatalf("restore from the pulled store: %s", r)
		}
		check("after pull and restore on a lost machine")
		t.Logf("the lost machine rebuilt from the second site: pull %s, restore %s", pr.took.Round(100*time.Millisecond), r.took.Round(100*time.Millisecond))
		if _, err := os.Stat(filepath.Join(kubenode.PKIDir, "ca.key")); err != nil {
			t.Errorf("the CA key is not back from the second site: %v", err)
		}
	})
}

// restoreArgs is `restore ARGS`, with --yes when this build's restore
// asks before replacing a live node's state (the test is a script).
func restoreArgs(t *testing.T, args ...string) []string {
	t.Helper()
	a := append([]string{"restore"}, args...)
	if strings.Contains(kk(t, "restore", "--help").stdout, "--yes") {
		a = append(a, "--yes")
	}
	return a
}

// storePath is store.path from the config node() wrote.
func storePath(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/etc/kubekeep/kubekeep.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(strings.TrimSpace(l), "path: "); ok {
			return p
		}
	}
	t.Fatalf("no store path in the config:\n%s", b)
	return ""
}

// appendConfig adds top-level sections to the config node() wrote.
func appendConfig(t *testing.T, extra string) {
	t.Helper()
	f, err := os.OpenFile("/etc/kubekeep/kubekeep.yaml", os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(extra); err != nil {
		t.Fatal(err)
	}
}

type versionKind struct {
	ID       string `json:"id"`
	Good     bool   `json:"good"`
	Latest   bool   `json:"latest"`
	EtcdKind string `json:"etcdKind"`
	Base     string `json:"base"`
	Etcd     *struct {
		Revision int64 `json:"revision"`
	} `json:"etcd"`
}

// versionKinds is `versions -o json`; nil while the store does not exist
// yet (the agent makes it with its first version).
func versionKinds(t *testing.T) []versionKind {
	t.Helper()
	r := kk(t, "versions", "-o", "json")
	if r.code != 0 && strings.Contains(r.stderr, "no config.json") {
		return nil
	}
	var vs []versionKind
	if err := json.Unmarshal([]byte(r.stdout), &vs); r.code != 0 || err != nil {
		t.Fatalf("versions -o json: %v\n%s", err, r)
	}
	return vs
}

// hasKind: a good version of that etcd kind at revision >= rev.
func hasKind(t *testing.T, kind string, rev int64) bool {
	for _, v := range versionKinds(t) {
		if v.Good && v.EtcdKind == kind && v.Etcd != nil && v.Etcd.Revision >= rev {
			return true
		}
	}
	return false
}

func kindOf(t *testing.T, id string) string {
	for _, v := range versionKinds(t) {
		if v.ID == id {
			return v.EtcdKind
		}
	}
	return ""
}

// latestID is the version "latest" resolves to (versions -o json).
func latestID(t *testing.T) string {
	for _, v := range versionKinds(t) {
		if v.Latest {
			return v.ID
		}
	}
	return ""
}

// etcdRevision is etcd's current revision, read from etcd itself.
func etcdRevision(t *testing.T, n *kubenode.Node) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := n.Etcd(t).Get(ctx, "health")
	if err != nil {
		t.Fatal(err)
	}
	return resp.Header.Revision
}

// journalRevisions are the etcd revisions of the good journal versions,
// oldest first.
func journalRevisions(t *testing.T) []int64 {
	var out []int64
	for _, v := range versionKinds(t) {
		if v.Good && v.EtcdKind == "journal" && v.Etcd != nil {
			out = append(out, v.Etcd.Revision)
		}
	}
	slices.Sort(out)
	return out
}

// segmentsUpTo counts the delta journal's segment files whose revisions
// end at rev or before, and all of them.
func segmentsUpTo(t *testing.T, store string, rev int64) (upTo, all int) {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(store, "journals", "etcd-deltas"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		var first, last, ns int64
		if n, _ := fmt.Sscanf(e.Name(), "%d-%d-%d.seg", &first, &last, &ns); n != 3 || !strings.HasSuffix(e.Name(), ".seg") {
			continue
		}
		all++
		if last <= rev {
			upTo++
		}
	}
	return upTo, all
}
