package restore

import (
	"bytes"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kubekeep/kubekeep/rsyncish"
)

// On a real node the root is "/": the containment check must take every
// absolute path as inside it (comparing with root+"/" tested for "//" and
// refused them all), and still refuse a link out of any other root.
func TestInsideRootOnSlash(t *testing.T) {
	r := &runner{opts: Options{Root: "/"}}
	for _, hp := range []string{
		"/var/lib/etcd.kubekeep-restore-20261123T100400Z",
		"/var/lib/etcd/.kubekeep-restore-20261123T100400Z",
		"/etc/kubernetes/kubekeep-restore/kubeadm-init-20261123T100400Z.yaml",
		"/tmp",
	} {
		got, err := r.insideRoot(hp)
		if err != nil || got != hp {
			t.Errorf("insideRoot(%s) with root /: %q, %v", hp, got, err)
		}
	}
	for _, c := range []struct {
		p, base string
		want    bool
	}{
		{"/var/lib/etcd", "/", true},
		{"/", "/", true},
		{"/etc/pki", "/etc/pki", true},
		{"/etc/pki/tls", "/etc/pki", true},
		{"/etc/pki-foo", "/etc/pki", false},
		{"/etc", "/etc/pki", false},
	} {
		if got := within(c.p, c.base); got != c.want {
			t.Errorf("within(%s, %s) = %v", c.p, c.base, got)
		}
	}

	// Another root: a link leading out is refused, one inside is not.
	dir := t.TempDir()
	root := filepath.Join(dir, "node")
	outside := filepath.Join(dir, "outside")
	for _, d := range []string{filepath.Join(root, "var/lib"), filepath.Join(root, "data"), outside} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(outside, filepath.Join(root, "var/lib/etcd")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../../data", filepath.Join(root, "var/lib/kubelet")); err != nil {
		t.Fatal(err)
	}
	r = &runner{opts: Options{Root: root + "/"}}
	if _, err := r.insideRoot("/var/lib/etcd/member"); !errors.Is(err, rsyncish.ErrUnsafePath) {
		t.Errorf("a link out of the root: %v", err)
	}
	if _, err := r.insideRoot("/var/lib/kubelet/pki"); err != nil {
		t.Errorf("a link inside the root: %v", err)
	}
}

// A dry run on the real root "/" of this machine (which runs no control
// plane: nothing to find, and a dry run writes nothing) goes through the
// etcd and kubeadm phases' containment checks without refusing the
// staging dir or the kubeadm config. A node with a new address makes the
// kubeadm phase plan kubeadm init.
func TestDryRunOnRootSlash(t *testing.T) {
	f := getFixture(t)
	for _, p := range []string{"/var/lib/etcd", "/etc/kubernetes"} {
		if _, err := os.Lstat(p); err == nil {
			t.Skipf("this machine has %s: not touching a real node's paths even in a dry run", p)
		}
	}
	var out bytes.Buffer
	o := f.opts("/", PhaseFiles, PhaseEtcd, PhaseKubeadm, PhaseVerify)
	o.DryRun, o.Out = true, &out
	o.HostIPs = []net.IP{net.ParseIP("10.9.9.9")}
	o.Kubeadm = "kubeadm-that-does-not-exist"
	o.Now = func() time.Time { return time.Date(2026, 11, 23, 10, 4, 0, 0, time.UTC) }
	if _, err := Run(ctxT(t), o); err != nil {
		t.Fatalf("dry run with root /: %v\n%s", err, out.String())
	}
	text := out.String()
	for _, want := range []string{
		"would: restore the etcd snapshot",
		"into /var/lib/etcd.kubekeep-restore-20261123T100400Z",
		"would: move /var/lib/etcd.kubekeep-restore-20261123T100400Z into place as /var/lib/etcd",
		"would: write /etc/kubernetes/kubekeep-restore/kubeadm-init-20261123T100400Z.yaml",
		"would: run kubeadm-that-does-not-exist init --config /etc/kubernetes/kubekeep-restore/kubeadm-init-20261123T100400Z.yaml",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("dry run output lacks %q", want)
		}
	}
	if strings.Contains(text, "escapes") {
		t.Errorf("a containment check refused a path under /:\n%s", text)
	}
	for _, p := range []string{"/var/lib/etcd", "/etc/kubernetes", "/var/lib/etcd.kubekeep-restore-20261123T100400Z"} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("the dry run created %s", p)
		}
	}
	if t.Failed() {
		t.Log(text)
	}
}

// At root / a parent dir that is a symlink with an absolute target
// (/var/lib/kubelet moved to a data disk) leads nowhere outside, but
// restores write through an os.Root, which does not follow it: the plan
// says so, with the relative link that works, instead of claiming the
// link leads out of /. Planning writes nothing, so this runs at / itself.
func TestPlanAbsoluteLinkParentAtRootSlash(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: plans a restore at /")
	}
	ctx := ctxT(t)
	base := t.TempDir()
	tree := filepath.Join(base, "kubelet")
	if err := os.MkdirAll(filepath.Join(tree, "pki"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tree, "pki", "kubelet.crt"), []byte("crt"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := rsyncish.Open(filepath.Join(base, "store"), rsyncish.Options{AllowSameFilesystem: true})
	if err != nil {
		t.Fatal(err)
	}
	unlock, err := s.Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	w, err := s.NewVersion(ctx, rsyncish.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.AddTree("/", []string{tree + "/pki"}, nil); err != nil {
		t.Fatal(err)
	}
	vi, err := w.Commit()
	if err != nil {
		t.Fatal(err)
	}
	unlock()
	// The kubelet dir moved to another disk, an absolute link left.
	real := filepath.Join(base, "data-kubelet")
	if err := os.Rename(tree, real); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(real, tree); err != nil {
		t.Fatal(err)
	}
	src, err := loadSource(s, vi.ID)
	if err != nil {
		t.Fatal(err)
	}
	root, err := os.OpenRoot("/")
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	_, err = planFiles(ctx, s, src, root, "/", nil, "/etc/kubernetes/kubekeep-replaced-x")
	want := tree + " is a symlink with an absolute target (" + real + "): a restore writes through relative links only (ln -sfn data-kubelet " + tree + " makes it one)"
	if !errors.Is(err, rsyncish.ErrUnsafePath) || !strings.Contains(err.Error(), want) {
		t.Errorf("plan through an absolute link at /: %v\nwant %q", err, want)
	}
}
