package backup

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kubekeep/kubekeep/backup/versionread"
	"github.com/kubekeep/kubekeep/config"
	"github.com/kubekeep/kubekeep/internal/testetcd"
	"github.com/kubekeep/kubekeep/rsyncish"
)

func mustRun(t *testing.T, opts Options) *Result {
	t.Helper()
	res, err := Run(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func latestID(t *testing.T, s *rsyncish.Store) string {
	t.Helper()
	id, err := s.Resolve(rsyncish.Latest)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// The CA keys vanish while etcd keeps running: the next versions are
// committed (every file that is left is kept) but degraded, loud in the
// result, the meta and the log, and "latest" stays on the last complete
// version for as long as the keys are gone; they come back and the next
// version is good again. Before, such a version was "ok" and became
// "latest" at once.
func TestRunDegradedWhenMustNeverLoseFilesVanish(t *testing.T) {
	root := testetcd.SandboxT(t)
	testetcd.StartT(t, root)
	store := openStore(t)
	var logs bytes.Buffer
	opts := Options{Root: root.Dir, Store: store, Etcd: config.Default().Etcd, Origin: versionread.OriginAgent,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))}

	good := mustRun(t, opts)
	if good.Status != versionread.StatusOK || !good.Good || good.Degraded || len(good.Problems) != 0 {
		t.Fatalf("first version: status %s good %v problems %q", good.Status, good.Good, good.Problems)
	}
	keys := map[string][]byte{}
	for _, p := range []string{"/etc/kubernetes/pki/ca.key", "/etc/kubernetes/pki/etcd/ca.key"} {
		data, err := os.ReadFile(root.Path(p))
		if err != nil {
			t.Fatal(err)
		}
		keys[p] = data
		if err := os.Remove(root.Path(p)); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 { // the second one must not take the first as its reference
		bad := mustRun(t, opts)
		if bad.Status != versionread.StatusDegraded || bad.Good || !bad.Degraded || bad.Files == 0 || bad.Etcd == nil || !bad.Etcd.Verified {
			t.Fatalf("version without the CA keys: status %s good %v degraded %v files %d", bad.Status, bad.Good, bad.Degraded, bad.Files)
		}
		joined := strings.Join(bad.Problems, "\n")
		if !strings.Contains(joined, "/etc/kubernetes/pki/ca.key") || !strings.Contains(joined, "/etc/kubernetes/pki/etcd/ca.key") ||
			!strings.Contains(joined, good.ID) {
			t.Errorf("problems do not name the lost keys and the version that had them: %q", bad.Problems)
		}
		vi, err := store.Version(bad.ID)
		if err != nil {
			t.Fatal(err)
		}
		st := versionread.VersionState(vi)
		if st.Status != versionread.StatusDegraded || !st.Degraded || st.Good || len(st.Problems) != len(bad.Problems) || st.Origin != versionread.OriginAgent || st.String() != "degraded" {
			t.Errorf("recorded state %+v (%s)", st, st)
		}
		if id := latestID(t, store); id != good.ID {
			t.Errorf("latest = %s, want the last complete version %s", id, good.ID)
		}
	}
	if !strings.Contains(logs.String(), "DEGRADED") {
		t.Errorf("a degraded version is not logged loudly:\n%s", logs.String())
	}

	for p, data := range keys {
		if err := os.WriteFile(root.Path(p), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	back := mustRun(t, opts)
	if back.Status != versionread.StatusOK || !back.Good {
		t.Fatalf("keys back: status %s problems %q", back.Status, back.Problems)
	}
	if id := latestID(t, store); id != back.ID {
		t.Errorf("latest = %s, want %s", id, back.ID)
	}
}

// PKI and etcd's data both vanish (a wiped disk) and a backup runs: the
// version is etcd-failed and degraded, and "latest" is still the complete
// version before it, which the README's "re-run one phase with --version
// latest" needs.
func TestRunPKIAndEtcdGone(t *testing.T) {
	root := testetcd.SandboxT(t)
	srv := testetcd.StartT(t, root)
	store := openStore(t)
	etcdCfg := config.Default().Etcd
	etcdCfg.DialTimeout = 500 * time.Millisecond
	opts := Options{Root: root.Dir, Store: store, Etcd: etcdCfg}
	good := mustRun(t, opts)
	srv.Stop()
	for _, p := range []string{"/etc/kubernetes/pki", root.EtcdDataDir} {
		if err := os.RemoveAll(root.Path(p)); err != nil {
			t.Fatal(err)
		}
	}
	bad := mustRun(t, opts)
	if bad.Status != versionread.StatusEtcdFailed || !bad.Degraded || bad.Good {
		t.Fatalf("status %s degraded %v", bad.Status, bad.Degraded)
	}
	vi, _ := store.Version(bad.ID)
	if s := versionread.VersionState(vi).String(); s != "etcd-failed,degraded" {
		t.Errorf("shown as %q", s)
	}
	if !strings.Contains(strings.Join(bad.Problems, "\n"), "/etc/kubernetes/pki/ca.key") {
		t.Errorf("problems %q", bad.Problems)
	}
	if id := latestID(t, store); id != good.ID {
		t.Errorf("latest = %s, want %s", id, good.ID)
	}
}

// A file that goes away on purpose (super-admin.conf moved off the node,
// as kubeadm suggests) degrades the versions until one backup accepts the
// loss; that version becomes the reference, and later ones are good.
// Files the configuration now excludes are never a loss.
func TestRunAcceptMissingAndExcludes(t *testing.T) {
	root := testetcd.SandboxT(t)
	testetcd.StartT(t, root)
	store := openStore(t)
	opts := Options{Root: root.Dir, Store: store, Etcd: config.Default().Etcd, Origin: versionread.OriginSafety}
	mustRun(t, opts)

	// Excluding the kubelet's PKI dir by configuration loses nothing.
	excl := opts
	excl.Exclude = []string{"/var/lib/kubelet/pki"}
	if res := mustRun(t, excl); res.Status != versionread.StatusOK {
		t.Fatalf("an excluded path counted as lost: %s %q", res.Status, res.Problems)
	}

	if err := os.Remove(root.Path("/etc/kubernetes/super-admin.conf")); err != nil {
		t.Fatal(err)
	}
	res := mustRun(t, opts)
	if res.Status != versionread.StatusDegraded || !strings.Contains(strings.Join(res.Problems, "\n"), "/etc/kubernetes/super-admin.conf") ||
		!strings.Contains(strings.Join(res.Problems, "\n"), "--accept-missing") {
		t.Fatalf("status %s problems %q", res.Status, res.Problems)
	}
	accept := opts
	accept.AcceptMissing = true
	accepted := mustRun(t, accept)
	if accepted.Status != versionread.StatusOK || !accepted.Good {
		t.Fatalf("accepted loss: %s %q", accepted.Status, accepted.Problems)
	}
	vi, _ := store.Version(accepted.ID)
	if _, ok := vi.Meta[versionread.MetaAccepted]; !ok {
		t.Error("the accepted loss is not recorded")
	}
	if st := versionread.VersionState(vi); st.Origin != versionread.OriginSafety {
		t.Errorf("origin %q", st.Origin)
	}
	if next := mustRun(t, opts); next.Status != versionread.StatusOK {
		t.Errorf("after the accepted loss: %s %q", next.Status, next.Problems)
	}
}

// The rules on their own: which losses degrade a version.
func TestLossProblems(t *testing.T) {
	pki := []string{defaultPKIDir}
	for _, tc := range []struct {
		name string
		loss rsyncish.Loss
		want []string // substrings, one per problem; nil: no problem
	}{
		{"nothing lost", rsyncish.Loss{Ref: "R", Files: 10}, nil},
		{"one leaf cert of many", rsyncish.Loss{Ref: "R", Files: 20, Missing: []string{"/etc/kubernetes/pki/apiserver.crt"},
			Paths: []rsyncish.PathLoss{{Path: "/etc/kubernetes/pki", Files: 20, Missing: 1}}}, nil},
		{"sa.key", rsyncish.Loss{Ref: "R", Files: 20, Missing: []string{"/etc/kubernetes/pki/sa.key"},
			Paths: []rsyncish.PathLoss{{Path: "/etc/kubernetes/pki", Files: 20, Missing: 1}}}, []string{"must-never-lose files are gone since version R: /etc/kubernetes/pki/sa.key"}},
		{"half of a path", rsyncish.Loss{Ref: "R", Files: 40, Missing: []string{"/etc/kubernetes/manifests/a.yaml", "/etc/kubernetes/manifests/b.yaml"},
			Paths: []rsyncish.PathLoss{{Path: "/etc/kubernetes/manifests", Files: 4, Missing: 2}, {Path: "/etc/ssl/certs", Files: 36}}},
			[]string{"2 of the 4 files below /etc/kubernetes/manifests in version R are gone (/etc/kubernetes/manifests/a.yaml, /etc/kubernetes/manifests/b.yaml)"}},
		{"a quarter overall", rsyncish.Loss{Ref: "R", Files: 8, Missing: []string{"/a/1", "/b/1"},
			Paths: []rsyncish.PathLoss{{Path: "/a", Files: 4, Missing: 1}, {Path: "/b", Files: 4, Missing: 1}}},
			[]string{"2 of the 8 files in version R are gone"}},
	} {
		got := lossProblems(&tc.loss, pki)
		if len(got) != len(tc.want) {
			t.Errorf("%s: problems %q, want %d", tc.name, got, len(tc.want))
			continue
		}
		for i, w := range tc.want {
			if !strings.Contains(got[i], w) {
				t.Errorf("%s: problem %q lacks %q", tc.name, got[i], w)
			}
		}
	}
}

// A manifest discovery cannot parse is a problem of the set (layout's
// Set.Problems): the version is committed with every file discovery did
// find, degraded, naming the manifest, and "latest" stays on the last
// complete version. Before, discovery failed the whole backup (6 of 7
// agent runs failed).
func TestRunDegradedByDiscoveryProblems(t *testing.T) {
	root := testetcd.SandboxT(t)
	testetcd.StartT(t, root)
	store := openStore(t)
	opts := Options{Root: root.Dir, Store: store, Etcd: config.Default().Etcd}
	good := mustRun(t, opts)
	if err := os.WriteFile(root.Path("/etc/kubernetes/manifests/broken.yaml"), []byte("apiVersion: v1\nkind: Pod\nspec: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	res := mustRun(t, opts)
	if res.Status != versionread.StatusDegraded || res.Good || !strings.Contains(strings.Join(res.Problems, "\n"), "broken.yaml") || res.Files < good.Files {
		t.Fatalf("status %s problems %q files %d (good version: %d)", res.Status, res.Problems, res.Files, good.Files)
	}
	vi, _ := store.Version(res.ID)
	if st := versionread.VersionState(vi); !st.Degraded || len(st.Problems) == 0 {
		t.Errorf("recorded state %+v", st)
	}
	if id := latestID(t, store); id != good.ID {
		t.Errorf("latest = %s, want %s", id, good.ID)
	}
}
