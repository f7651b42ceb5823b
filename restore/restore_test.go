package restore

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/kubekeep/kubekeep/backup/versionread"
	"github.com/kubekeep/kubekeep/etcdsnap"
	"github.com/kubekeep/kubekeep/etcdsnap/snapread"
	"github.com/kubekeep/kubekeep/internal/testetcd"
	"github.com/kubekeep/kubekeep/layout"
	"github.com/kubekeep/kubekeep/rsyncish"
	"github.com/kubekeep/kubekeep/rsyncish/format"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if fix != nil {
		os.RemoveAll(filepath.Dir(fix.root.Dir))
	}
	os.Exit(code)
}

// The whole story on a wiped node: back up a sandbox with a real TLS etcd,
// wipe it, run preflight…etcd into it, put the manifests back, start a real
// etcd on the restored data dir and compare every key with the source at
// the backup revision; the restored files are byte-identical with modes.
func TestRestoreWipedRoot(t *testing.T) {
	f := getFixture(t)
	ctx := ctxT(t)
	dir := filepath.Join(t.TempDir(), "node")
	// The wiped node: nothing at all under the root.
	var out bytes.Buffer
	o := f.opts(dir, PhasePreflight, PhaseSafety, PhaseStop, PhaseFiles, PhaseEtcd)
	o.Out = &out
	res, err := Run(ctx, o)
	if err != nil {
		t.Fatalf("restore: %v\n%s", err, out.String())
	}
	if len(res.Phases) != 5 || res.Preflight == nil || !res.Preflight.NodeUnchanged {
		t.Fatalf("phases %+v preflight %+v", res.Phases, res.Preflight)
	}
	if res.Preflight.SnapshotRevision != f.info.Etcd.Revision {
		t.Errorf("preflight read revision %d, backup %d", res.Preflight.SnapshotRevision, f.info.Etcd.Revision)
	}
	if res.Phases[1].Skipped == "" {
		t.Errorf("safety on an empty node should have nothing to save: %+v", res.Phases[1])
	}

	got, err := hashTree(dir, f.root.EtcdDataDir)
	if err != nil {
		t.Fatal(err)
	}
	// Only what the version holds: parents it does not store are made
	// 0755, whatever the source had.
	stored := map[string]bool{}
	ents, err := f.store.List(f.id)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		stored[e.Path] = true
	}
	notManifests := func(p string) bool { return stored[p] && !within(p, layout.ManifestsDir) }
	diffTrees(t, "files phase", f.tree, got, notManifests)
	if n := len(stored); n < 40 {
		t.Fatalf("version holds only %d entries", n)
	}
	if _, ok := got[layout.ManifestsDir+"/etcd.yaml"]; ok {
		t.Error("the files phase put a manifest back before etcd was restored")
	}

	// Node unchanged: the kubeadm phase only puts the manifests back.
	o = f.opts(dir, PhaseKubeadm)
	o.Out = &out
	if _, err := Run(ctx, o); err != nil {
		t.Fatalf("kubeadm phase: %v\n%s", err, out.String())
	}
	got, err = hashTree(dir, f.root.EtcdDataDir)
	if err != nil {
		t.Fatal(err)
	}
	diffTrees(t, "after kubeadm phase", f.tree, got, func(p string) bool { return stored[p] })

	// The kubelet's part, played by the test: etcd from the restored dir.
	srv, err := testetcd.Start(ctx, f.rootFor(dir))
	if err != nil {
		t.Fatalf("etcd on the restored data dir: %v", err)
	}
	defer srv.Stop()
	kv, rev := readAll(t, srv.ClientT(t))
	if want := f.info.Etcd.Revision + etcdsnap.RevisionBump; rev != want {
		t.Errorf("restored etcd at revision %d, want %d (bumped)", rev, want)
	}
	if len(kv) != len(f.kv) {
		t.Errorf("restored etcd has %d keys, source had %d at the backup revision", len(kv), len(f.kv))
	}
	for k, v := range f.kv {
		if kv[k] != v {
			t.Errorf("key %s: restored %q, source %q", k, trunc(kv[k]), trunc(v))
		}
	}
	if _, ok := kv["/registry/configmaps/load/after-backup"]; ok {
		t.Error("a key written after the backup was restored")
	}
	if _, ok := kv["/registry/configmaps/load/cm-007"]; ok {
		t.Error("a key deleted before the backup came back")
	}

	// The apiserver's part: one serving a certificate of the restored CA
	// (with kubeadm's SANs, so not 127.0.0.1), ready a few seconds in.
	ca := loadTestCA(t, filepath.Join(dir, "etc/kubernetes/pki/ca.crt"), filepath.Join(dir, "etc/kubernetes/pki/ca.key"))
	api, _ := fakeAPIServer(t, ca.servingCert(t), 3*time.Second)
	o = f.opts(dir, PhaseVerify)
	o.APIServer, o.ReadyzTimeout = api.Listener.Addr().String(), time.Minute
	out.Reset()
	o.Out = &out
	if _, err := Run(ctx, o); err != nil {
		t.Fatalf("verify phase: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "etcd healthy at revision") {
		t.Errorf("verify did not report etcd health:\n%s", out.String())
	}
	if want := "apiserver ready at https://" + o.APIServer + "/readyz after"; !strings.Contains(out.String(), want) {
		t.Errorf("verify did not wait for the apiserver (%q):\n%s", want, out.String())
	}
}

func trunc(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

// Over a node that still has its old data: the old etcd data dir is moved
// aside (never deleted) and the new one takes its place; a second etcd
// run of the phase moves that aside in turn.
func TestEtcdPhaseKeepsOldDataDir(t *testing.T) {
	f := getFixture(t)
	ctx := ctxT(t)
	dir := filepath.Join(t.TempDir(), "node")
	old := filepath.Join(dir, "var/lib/etcd/member/snap")
	if err := os.MkdirAll(old, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(old, "db"), []byte("the broken old db"), 0o600); err != nil {
		t.Fatal(err)
	}
	o := f.opts(dir, PhaseEtcd)
	stamp := time.Date(2026, 11, 23, 10, 4, 0, 0, time.UTC)
	o.Now = func() time.Time { return stamp }
	if _, err := Run(ctx, o); err != nil {
		t.Fatal(err)
	}
	kept, err := os.ReadFile(filepath.Join(dir, "var/lib/etcd.kubekeep-old-20261123T100400Z/member/snap/db"))
	if err != nil || string(kept) != "the broken old db" {
		t.Fatalf("old data dir not kept aside: %q %v", kept, err)
	}
	st, err := snapread.CheckDB(etcdsnap.DBPath(filepath.Join(dir, "var/lib/etcd")))
	if err != nil {
		t.Fatal(err)
	}
	if st.Revision != f.info.Etcd.Revision+etcdsnap.RevisionBump || st.Keys != f.info.Etcd.Keys {
		t.Errorf("restored db at revision %d with %d keys", st.Revision, st.Keys)
	}
	fi, err := os.Stat(filepath.Join(dir, "var/lib/etcd"))
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("data dir mode %v, %v", fi.Mode(), err)
	}
}

// --dry-run prints an action for every phase and changes nothing: not the
// root (hashed before and after), not the store's versions.
func TestDryRunChangesNothing(t *testing.T) {
	f := getFixture(t)
	ctx := ctxT(t)
	// A node that has everything: the source sandbox itself, with a
	// stale data dir.
	dir := f.root.Dir
	before, err := hashTree(dir)
	if err != nil {
		t.Fatal(err)
	}
	vsBefore, _ := f.store.Versions()
	var out bytes.Buffer
	o := f.opts(dir)
	o.DryRun = true
	o.Out = &out
	o.HostIPs = []net.IP{net.ParseIP("10.9.9.9")} // a new IP: certs, kubeconfigs and kubeadm init planned
	o.Kubeadm = "kubeadm-that-does-not-exist"
	res, err := Run(ctx, o)
	if err == nil || !errors.Is(err, ErrBlocked) {
		// kubeadm is missing and the node changed: preflight blocks.
		t.Fatalf("want preflight blocked by missing kubeadm, got %v\n%s", err, out.String())
	}
	// The preview goes on past the blocker: an operator sees every phase.
	if first := out.String(); !strings.Contains(first, "[preflight] WOULD FAIL") ||
		!strings.Contains(first, "would: restore the etcd snapshot") || !strings.Contains(first, "would: run kubeadm-that-does-not-exist init") {
		t.Errorf("a blocked dry run must still preview every phase:\n%s", first)
	}
	if len(res.Phases) != len(Phases) {
		t.Errorf("blocked dry run previewed %d phases, want %d", len(res.Phases), len(Phases))
	}
	o.Phases = []string{PhaseSafety, PhaseStop, PhaseFiles, PhaseEtcd, PhaseKubeadm, PhaseVerify}
	out.Reset()
	res, err = Run(ctx, o)
	if err != nil {
		t.Fatalf("dry run: %v\n%s", err, out.String())
	}
	after, err := hashTree(dir)
	if err != nil {
		t.Fatal(err)
	}
	diffTrees(t, "dry run", before, after, nil)
	if vs, _ := f.store.Versions(); len(vs) != len(vsBefore) {
		t.Errorf("dry run added versions: %d -> %d", len(vsBefore), len(vs))
	}
	text := out.String()
	for _, want := range []string{
		"would: store a backup",
		"would: move /etc/kubernetes/manifests/etcd.yaml aside",
		"would: wait up to",
		"would: restore ",
		"would: move /etc/kubernetes/pki/apiserver.crt aside",
		"would: restore the etcd snapshot",
		"would: move the old data dir /var/lib/etcd aside",
		"would: move /etc/kubernetes/admin.conf aside",
		"would: write /etc/kubernetes/kubekeep-restore/kubeadm-init-",
		"would: run kubeadm-that-does-not-exist init --config",
		"would: wait up to",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("dry run output lacks %q", want)
		}
	}
	for _, p := range res.Phases {
		if len(p.Actions) == 0 && p.Skipped == "" {
			t.Errorf("phase %s printed no action", p.Name)
		}
	}
	if t.Failed() {
		t.Log(text)
	}
}

// kubeadm cannot be installed on this machine. The kubeadm phase runs
// whatever `kubeadm` is on PATH, so this test puts a recording script of
// that name there and checks the exact arguments and the config file it
// was given. It does not prove kubeadm accepts them; the config is checked
// against kubeadm's documented v1beta4 format by hand.
func TestKubeadmPhaseRunsKubeadmInit(t *testing.T) {
	f := getFixture(t)
	ctx := ctxT(t)
	dir := filepath.Join(t.TempDir(), "node")
	bin := t.TempDir()
	rec := t.TempDir()
	script := `#!/bin/sh
printf '%s\n' "$@" > "` + rec + `/args"
printf '%s\n' "$KUBEKEEP_ROOT" > "` + rec + `/root"
while [ $# -gt 0 ]; do
  if [ "$1" = --config ]; then cp "$2" "` + rec + `/config"; fi
  shift
done
echo "[init] pretending to be kubeadm"
`
	if err := os.WriteFile(filepath.Join(bin, "kubeadm"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))

	var out bytes.Buffer
	o := f.opts(dir, PhaseFiles, PhaseEtcd, PhaseKubeadm)
	// The disk moved to a new VM: new name, new address.
	o.Hostname, o.HostIPs = "master-new", []net.IP{net.ParseIP("10.9.9.9")}
	o.Out = &out
	stamp := time.Date(2026, 11, 23, 10, 4, 0, 0, time.UTC)
	o.Now = func() time.Time { return stamp }
	if _, err := Run(ctx, o); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	args, err := os.ReadFile(filepath.Join(rec, "args"))
	if err != nil {
		t.Fatalf("kubeadm was not run: %v\n%s", err, out.String())
	}
	cfgPath := filepath.Join(dir, "etc/kubernetes/kubekeep-restore/kubeadm-init-20261123T100400Z.yaml")
	want := "init\n--config\n" + cfgPath + "\n--ignore-preflight-errors=DirAvailable--var-lib-etcd\n"
	if string(args) != want {
		t.Errorf("kubeadm args:\n%s\nwant:\n%s", args, want)
	}
	if r, _ := os.ReadFile(filepath.Join(rec, "root")); strings.TrimSpace(string(r)) != dir {
		t.Errorf("KUBEKEEP_ROOT %q", r)
	}
	cfg, err := os.ReadFile(filepath.Join(rec, "config"))
	if err != nil {
		t.Fatal(err)
	}
	// The fixture is a kubeadm 1.31 node: its CRI socket is in
	// kubeadm-flags.env; its etcd has no kubelet-config, so the
	// KubeletConfiguration is the node's config.yaml; the apiserver's
	// address (10.0.0.5) is not this new host's, so kubeadm picks one.
	saved := testetcd.ClusterConfiguration(f.root.Opts.KubernetesVersion, f.root.Opts.AdvertiseAddress)
	head := "apiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\nnodeRegistration:\n  name: \"master-1\"\n" +
		"  criSocket: \"unix:///var/run/containerd/containerd.sock\"\n---\n" + saved + "---\n"
	if !strings.HasPrefix(string(cfg), head) {
		t.Errorf("config given to kubeadm:\n%s\nwant it to start with:\n%s", cfg, head)
	} else {
		var got, want map[string]any
		nodeKC, err := os.ReadFile(f.root.Path("/var/lib/kubelet/config.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.Unmarshal(nodeKC, &want); err != nil {
			t.Fatal(err)
		}
		delete(want, "containerRuntimeEndpoint")
		if err := yaml.Unmarshal(cfg[len(head):], &got); err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("the KubeletConfiguration given to kubeadm (%v):\n%s\nthe node's config.yaml:\n%s", err, cfg[len(head):], nodeKC)
		}
	}
	if !strings.Contains(out.String(), "advertised 10.0.0.5, which this host does not have (10.9.9.9): the advertise address is left to kubeadm") {
		t.Errorf("the account does not say the advertise address is left to kubeadm:\n%s", out.String())
	}
	if fi, err := os.Stat(cfgPath); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("config file mode: %v %v", fi, err)
	}
	// Leaf certs naming the old address were moved aside for kubeadm to
	// re-sign with the old CA; the CAs and keys that must never be lost stay.
	for _, p := range []string{"apiserver.crt", "apiserver.key", "etcd/server.crt", "etcd/server.key", "etcd/peer.crt", "etcd/peer.key"} {
		if _, err := os.Stat(filepath.Join(dir, "etc/kubernetes/pki", p)); err == nil {
			t.Errorf("%s still in pki/: kubeadm would keep a cert for the old address", p)
		}
		if _, err := os.Stat(filepath.Join(dir, "etc/kubernetes/kubekeep-removed-certs-20261123T100400Z/etc/kubernetes/pki", p)); err != nil {
			t.Errorf("%s not kept aside: %v", p, err)
		}
	}
	for _, p := range []string{"ca.crt", "ca.key", "sa.key", "sa.pub", "front-proxy-ca.crt", "etcd/ca.key", "apiserver-etcd-client.crt", "etcd/healthcheck-client.crt"} {
		if _, err := os.Stat(filepath.Join(dir, "etc/kubernetes/pki", p)); err != nil {
			t.Errorf("%s missing: %v", p, err)
		}
	}
	// Kubeconfigs naming the old server are moved aside; kubeadm writes them.
	for _, p := range []string{"admin.conf", "controller-manager.conf", "scheduler.conf", "kubelet.conf"} {
		if _, err := os.Stat(filepath.Join(dir, "etc/kubernetes", p)); err == nil {
			t.Errorf("%s with the old server URL left in place", p)
		}
	}
	// And no manifest was put back by us: kubeadm writes them.
	if ms, _ := filepath.Glob(filepath.Join(dir, "etc/kubernetes/manifests/*")); len(ms) != 0 {
		t.Errorf("manifests present before kubeadm wrote them: %v", ms)
	}
}

// Hostile versions: stored paths with "..", a symlink that would carry
// later files outside, a data dir outside the root. Nothing is written
// outside the root (nor inside it), and the error says why.
func TestHostileVersionsRestoreNothing(t *testing.T) {
	f := getFixture(t)
	ctx := ctxT(t)
	var caEntry format.Entry
	forgeOnce := func(name string, edit func(m *format.Manifest)) string {
		id := "hostile-" + name
		forgeVersion(t, f.store, f.id, id, func(m *format.Manifest) {
			for _, e := range m.Entries {
				if e.Path == "/etc/kubernetes/pki/ca.crt" {
					caEntry = e
				}
			}
			edit(m)
		})
		return id
	}
	cases := map[string]struct {
		id   string
		want string
	}{}
	cases["dotdot"] = struct{ id, want string }{forgeOnce("dotdot", func(m *format.Manifest) {
		e := caEntry
		e.Path = "../../etc/shadow"
		m.Entries = append(m.Entries, e)
	}), `"../../etc/shadow"`}
	cases["absolute-dotdot"] = struct{ id, want string }{forgeOnce("absdotdot", func(m *format.Manifest) {
		e := caEntry
		e.Path = "/etc/kubernetes/../../../../etc/shadow"
		m.Entries = append(m.Entries, e)
	}), `"/etc/kubernetes/../../../../etc/shadow"`}
	outside := filepath.Join(t.TempDir(), "outside")
	cases["symlink"] = struct{ id, want string }{forgeOnce("symlink", func(m *format.Manifest) {
		m.Entries = append(m.Entries, format.Entry{Path: "/etc/kubernetes/evil", Type: format.TypeSymlink, Target: outside, Mode: 0o777})
		e := caEntry
		e.Path = "/etc/kubernetes/evil/shadow"
		m.Entries = append(m.Entries, e)
	}), "below the stored symlink /etc/kubernetes/evil"}
	cases["datadir"] = struct{ id, want string }{forgeOnce("datadir", func(m *format.Manifest) {
		m.Header.Meta[versionread.MetaLayout] = []byte(`{"paths":[],"etcd":{"dataDir":"/var/lib/../../../../tmp/kk-evil","name":"master-1","initialCluster":"master-1=https://10.0.0.5:2380","peerURLs":["https://10.0.0.5:2380"],"endpoints":[]}}`)
	}), `etcd data dir "/var/lib/../../../../tmp/kk-evil"`}

	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			parent := t.TempDir()
			dir := filepath.Join(parent, "node")
			o := f.opts(dir)
			o.Version = c.id
			var out bytes.Buffer
			o.Out = &out
			_, err := Run(ctx, o)
			var pe *PhaseError
			if !errors.As(err, &pe) || pe.Phase != PhasePreflight || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("want preflight to refuse naming %s, got %v\n%s", c.want, err, out.String())
			}
			// The files and etcd phases refuse on their own too.
			for _, ph := range []string{PhaseFiles, PhaseEtcd, PhaseKubeadm} {
				o.Phases = []string{ph}
				_, err := Run(ctx, o)
				if !errors.Is(err, rsyncish.ErrUnsafePath) || !strings.Contains(err.Error(), c.want) {
					t.Errorf("phase %s alone: %v", ph, err)
				}
			}
			ents, _ := os.ReadDir(parent)
			if len(ents) > 0 {
				t.Errorf("something was written: %v", ents)
			}
			if _, err := os.Lstat(outside); err == nil {
				t.Error("written outside the root")
			}
			if _, err := os.Lstat("/tmp/kk-evil"); err == nil {
				t.Error("written outside the root: /tmp/kk-evil")
			}
		})
	}
}

// A truncated snapshot fails in preflight, before any phase changes a
// thing; with preflight skipped, the etcd phase still refuses it before
// touching the data dir.
func TestTruncatedSnapshotFailsInPreflight(t *testing.T) {
	f := getFixture(t)
	ctx := ctxT(t)
	rc, size, err := f.store.OpenStream(f.id, versionread.EtcdSnapshotStream)
	if err != nil {
		t.Fatal(err)
	}
	full, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || int64(len(full)) != size {
		t.Fatalf("read snapshot: %d of %d bytes, %v", len(full), size, err)
	}
	unlock, err := f.store.Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	w, err := f.store.NewVersion(ctx, rsyncish.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.AddTree(f.root.Dir, []string{"/etc/kubernetes/pki"}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := w.AddStream(versionread.EtcdSnapshotStream, bytes.NewReader(full[:len(full)/2])); err != nil {
		t.Fatal(err)
	}
	vi0, _ := f.store.Version(f.id)
	for _, k := range []string{versionread.MetaEtcd, versionread.MetaLayout, versionread.MetaStatus} {
		if err := w.SetMeta(k, vi0.Meta[k]); err != nil {
			t.Fatal(err)
		}
	}
	vi, err := w.Commit()
	if err != nil {
		t.Fatal(err)
	}
	unlock()

	dir := filepath.Join(t.TempDir(), "node")
	o := f.opts(dir)
	o.Version = vi.ID
	var out bytes.Buffer
	o.Out = &out
	_, err = Run(ctx, o)
	var pe *PhaseError
	if !errors.As(err, &pe) || pe.Phase != PhasePreflight || !strings.Contains(err.Error(), "etcd snapshot unusable") {
		t.Fatalf("want preflight to fail on the snapshot, got %v\n%s", err, out.String())
	}
	if !strings.Contains(pe.Error(), "--phase preflight --phase safety") {
		t.Errorf("no resume command: %v", pe)
	}
	if _, err := os.Stat(dir); err == nil {
		t.Errorf("preflight created %s", dir)
	}
	// The etcd phase on its own (no preflight before it in the run) must
	// refuse the truncated stream too, with an error, not a crash.
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	o.Phases = []string{PhaseEtcd}
	if _, err := Run(ctx, o); err == nil {
		t.Fatal("etcd phase restored a truncated snapshot")
	} else if !strings.Contains(err.Error(), "not intact") {
		t.Errorf("etcd phase on a truncated snapshot: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "var/lib/etcd")); err == nil {
		t.Error("etcd phase created the data dir from a truncated snapshot")
	}
	if _, err := Drill(ctx, f.store, vi.ID, nil); err == nil || !strings.Contains(err.Error(), "no sha256 trailer") {
		t.Errorf("drill of a truncated snapshot: %v", err)
	}
	if v, _ := f.store.Version(vi.ID); v.Verified {
		t.Error("truncated version marked verified")
	}
}

// The stop phase moves the manifests aside and waits until etcd stops
// answering; here the test stops the embedded etcd, as the kubelet would.
// Safety first takes a real backup of the running etcd. A control plane
// that never stops makes the phase fail with a resume command.
func TestSafetyAndStopWaitForEtcd(t *testing.T) {
	f := getFixture(t)
	ctx := ctxT(t)
	// The node: the fixture restored, its etcd started as the kubelet would.
	dir := filepath.Join(t.TempDir(), "node")
	if _, err := Run(ctx, f.opts(dir, PhaseFiles, PhaseEtcd, PhaseKubeadm)); err != nil {
		t.Fatal(err)
	}
	root := f.rootFor(dir)
	srv := testetcd.StartT(t, root)
	vsBefore, _ := f.store.Versions()

	o := f.opts(root.Dir, PhaseSafety, PhaseStop)
	o.StopTimeout = 2 * time.Second
	var out bytes.Buffer
	o.Out = &out
	_, err := Run(ctx, o)
	var pe *PhaseError
	if !errors.As(err, &pe) || pe.Phase != PhaseStop || !strings.Contains(err.Error(), "still answering") ||
		!strings.HasSuffix(err.Error(), "--phase stop") {
		t.Fatalf("want stop to time out with a resume command, got %v\n%s", err, out.String())
	}
	vs, _ := f.store.Versions()
	if len(vs) != len(vsBefore)+1 {
		t.Fatalf("safety made no version: %d -> %d", len(vsBefore), len(vs))
	}
	var st versionread.Status
	if newest := vs[len(vs)-1]; newest.Meta[versionread.MetaStatus] == nil || jsonUnmarshal(newest.Meta[versionread.MetaStatus], &st) != nil || st != versionread.StatusOK {
		t.Errorf("safety version status %s", st)
	}
	if ms, _ := filepath.Glob(root.Path(layout.ManifestsDir + "/*.yaml")); len(ms) != 0 {
		t.Errorf("manifests not moved: %v", ms)
	}

	// Re-run the phase alone: no manifests left to move, the wait is what
	// remains; etcd stops a second in.
	o.Phases = []string{PhaseStop}
	o.StopTimeout = 30 * time.Second
	go func() {
		time.Sleep(time.Second)
		srv.Stop()
	}()
	start := time.Now()
	if _, err := Run(ctx, o); err != nil {
		t.Fatalf("stop: %v\n%s", err, out.String())
	}
	if srv.Running() || time.Since(start) < time.Second {
		t.Errorf("stop returned after %s with etcd running=%v", time.Since(start), srv.Running())
	}
	aside, _ := filepath.Glob(root.Path("/etc/kubernetes/kubekeep-manifests-*/etcd.yaml"))
	if len(aside) != 1 {
		t.Errorf("manifests not kept aside: %v", aside)
	}
}

// The drill restores the snapshot into a scratch dir on the store, serves
// it with a real etcd, compares revision, keys and a key/value hash with
// the backup, marks the version verified and leaves nothing behind.
func TestDrillMarksVerified(t *testing.T) {
	f := getFixture(t)
	ctx := ctxT(t)
	tmpNames := func() []string {
		ents, _ := os.ReadDir(filepath.Join(f.store.Dir(), "tmp"))
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		return names
	}
	before := tmpNames()
	res, err := Drill(ctx, f.store, f.id, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Verified || res.ServedKeys != f.info.Etcd.Keys || res.ServedRevision != f.info.Etcd.Revision+etcdsnap.RevisionBump ||
		res.KVHash != res.SnapshotKVHash || res.SnapshotSHA256 != f.info.Etcd.SHA256 {
		t.Fatalf("drill: %+v", res)
	}
	vi, err := f.store.Version(f.id)
	if err != nil {
		t.Fatal(err)
	}
	if !vi.Verified || vi.Verification.Method != DrillMethod || !strings.Contains(vi.Verification.Detail, res.KVHash) {
		t.Errorf("version not marked verified: %+v", vi.Verification)
	}
	if after := tmpNames(); !slices.Equal(after, before) {
		t.Errorf("drill left entries in the store's tmp: %v, before %v", after, before)
	}
	// Every key/value: the hash must be the source's at the backup.
	h := newKVHasher()
	for _, k := range sortedKeys(f.kv) {
		h.add([]byte(k), []byte(f.kv[k]))
	}
	if h.sum() != res.KVHash {
		t.Error("drill's key/value hash is not the source's at the backup revision")
	}
}

func TestSelectPhases(t *testing.T) {
	got, err := SelectPhases([]string{"etcd", "files,preflight"})
	if err != nil || strings.Join(got, " ") != "preflight files etcd" {
		t.Errorf("%v %v", got, err)
	}
	if _, err := SelectPhases([]string{"reboot"}); err == nil {
		t.Error("unknown phase accepted")
	}
	if got, _ := SelectPhases(nil); len(got) != len(Phases) {
		t.Errorf("%v", got)
	}
}

// Unused-context guard: a cancelled context stops a restore early.
func TestCancelledContext(t *testing.T) {
	f := getFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Run(ctx, f.opts(filepath.Join(t.TempDir(), "n"), PhasePreflight)); err == nil {
		t.Error("preflight ran with a cancelled context")
	}
}

// Safety on a node whose manifests are gone (a re-run after the stop
// phase, a half-built VM) keeps /etc/kubernetes and every other path
// layout says a rebuild needs: instance-config.yaml (the CRI socket of
// kubeadm 1.34), the kubelet's env files and drop-ins too. Before, a
// short copy of that list left them out.
func TestSafetyWithoutManifestsKeepsKubeletFiles(t *testing.T) {
	f := getFixture(t)
	ctx := ctxT(t)
	dir := filepath.Join(t.TempDir(), "node")
	if _, err := Run(ctx, f.opts(dir, PhaseFiles)); err != nil {
		t.Fatal(err)
	}
	extra := map[string]string{
		"/var/lib/kubelet/instance-config.yaml":                "containerRuntimeEndpoint: \"unix:///run/containerd/containerd.sock\"\n",
		"/etc/default/kubelet":                                 "KUBELET_EXTRA_ARGS=--node-ip=10.0.0.5\n",
		"/etc/sysconfig/kubelet":                               "KUBELET_EXTRA_ARGS=--max-pods=42\n",
		"/etc/systemd/system/kubelet.service.d/20-limits.conf": "[Service]\nLimitNOFILE=1048576\n",
	}
	for p, content := range extra {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if ms, _ := filepath.Glob(filepath.Join(dir, "etc/kubernetes/manifests/*")); len(ms) != 0 {
		t.Fatalf("the files phase put manifests back: %v", ms)
	}
	os.RemoveAll(filepath.Join(dir, "etc/kubernetes/manifests"))
	var out bytes.Buffer
	o := f.opts(dir, PhaseSafety)
	o.Out = &out
	if _, err := Run(ctx, o); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "no usable manifests") {
		t.Fatalf("safety did not take the no-manifests path:\n%s", out.String())
	}
	newest, err := f.store.Newest()
	if err != nil {
		t.Fatal(err)
	}
	entries, err := f.store.List(newest.ID)
	if err != nil {
		t.Fatal(err)
	}
	held := map[string]bool{}
	for _, e := range entries {
		held[e.Path] = true
	}
	for _, p := range append(sortedKeys(extra), "/etc/kubernetes/pki/ca.key", "/etc/kubernetes/admin.conf", "/var/lib/kubelet/config.yaml",
		"/var/lib/kubelet/kubeadm-flags.env", "/var/lib/kubelet/pki") {
		if !held[p] {
			t.Errorf("the safety version %s lacks %s\n%s", newest.ID, p, out.String())
		}
	}
}
