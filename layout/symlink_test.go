package layout

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kubekeep/kubekeep/internal/sandbox"
)

// treeSize adds up the regular files below dir (a real path) without
// following links: what a backup of that tree copies.
func treeSize(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	must(t, filepath.WalkDir(dir, func(_ string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if de.Type().IsRegular() {
			fi, err := de.Info()
			if err != nil {
				return err
			}
			n += fi.Size()
		}
		return nil
	}))
	return n
}

// moveAndLink moves hostPath to target inside r and leaves a symlink to
// link (as written, absolute or relative) in its place.
func moveAndLink(t *testing.T, r *sandbox.Root, hostPath, target, link string) {
	t.Helper()
	must(t, os.MkdirAll(filepath.Dir(r.Path(target)), 0o755))
	must(t, os.Rename(r.Path(hostPath), r.Path(target)))
	must(t, os.Symlink(link, r.Path(hostPath)))
}

// TestSymlinkedPKI: /etc/kubernetes/pki a link to a directory elsewhere
// (an absolute target, as an admin writes it). The pods see the directory,
// so the set holds it as a dir with its real size and the target, and
// discovery finds etcd's client cert through it. Before, it was "symlink
// 0B" and ca.key was silently not backed up.
func TestSymlinkedPKI(t *testing.T) {
	r, err := sandbox.Build(t.TempDir(), sandbox.Options{})
	must(t, err)
	want := treeSize(t, r.Path("/etc/kubernetes/pki"))
	moveAndLink(t, r, "/etc/kubernetes/pki", "/data/k8s/pki", "/data/k8s/pki")

	s, err := Discover(r.Dir, Options{})
	must(t, err)
	p, ok := s.Lookup("/etc/kubernetes/pki")
	if !ok || p.Kind != KindDir || p.Target != "/data/k8s/pki" || p.Size != want || want < 5000 {
		t.Fatalf("pki %+v; want a dir -> /data/k8s/pki of %d bytes", p, want)
	}
	if _, ok := s.Lookup("/data/k8s/pki"); ok {
		t.Error("the target is listed on its own; it is backed up under the link's path")
	}
	if skipped(s)["/etc/kubernetes/pki/etcd"] != "/etc/kubernetes/pki" {
		t.Errorf("pki/etcd not folded into the linked pki dir: %+v", s.Skipped)
	}
	if s.Etcd.CertFile != r.EtcdClientCert || len(s.Warnings) != 0 || len(s.Problems) != 0 {
		t.Errorf("etcd cert %q warnings %q problems %q", s.Etcd.CertFile, s.Warnings, s.Problems)
	}
}

// TestSymlinkedParent: a link in a parent (/etc/kubernetes itself moved)
// gives every path below it a target; the manifests are read through it.
func TestSymlinkedParent(t *testing.T) {
	r, err := sandbox.Build(t.TempDir(), sandbox.Options{})
	must(t, err)
	moveAndLink(t, r, "/etc/kubernetes", "/srv/k8s", "../srv/k8s")
	s, err := Discover(r.Dir, Options{})
	must(t, err)
	for _, host := range []string{"/etc/kubernetes/pki", "/etc/kubernetes/admin.conf", ManifestsDir} {
		p, ok := s.Lookup(host)
		want := "/srv/k8s" + strings.TrimPrefix(host, "/etc/kubernetes")
		if !ok || p.Target != want || p.Kind == KindSymlink {
			t.Errorf("%s: %+v; want target %s", host, p, want)
		}
	}
	if s.Etcd.Name != r.Opts.NodeName || len(s.Warnings) != 0 {
		t.Errorf("etcd %+v warnings %q", s.Etcd, s.Warnings)
	}
}

// TestBrokenSymlinks: a dangling link, a loop and a link climbing above the
// root are warnings; the first two keep only the link.
func TestBrokenSymlinks(t *testing.T) {
	r, err := sandbox.Build(t.TempDir(), sandbox.Options{})
	must(t, err)
	must(t, os.RemoveAll(r.Path("/etc/kubernetes/pki")))
	must(t, os.Symlink("/data/pki", r.Path("/etc/kubernetes/pki")))
	must(t, os.Symlink("b", r.Path("/etc/kubernetes/a")))
	must(t, os.Symlink("a", r.Path("/etc/kubernetes/b")))
	writeHost(t, r, "/etc/kubelet-extra", "KUBELET_EXTRA_ARGS=\n")
	// From /etc/default, ../../../.. climbs above the root: on a host
	// /.. is /, so it is /etc/kubelet-extra.
	must(t, os.MkdirAll(r.Path("/etc/default"), 0o755))
	must(t, os.Symlink("../../../../etc/kubelet-extra", r.Path("/etc/default/kubelet")))

	s, err := Discover(r.Dir, Options{Extra: []string{"/etc/kubernetes/a"}})
	must(t, err)
	if p, _ := s.Lookup("/etc/kubernetes/pki"); p.Kind != KindSymlink || p.Target != "" || p.Size != 0 {
		t.Errorf("dangling pki %+v", p)
	}
	if !hasWarning(s, "/etc/kubernetes/pki (pki", "symlink to /data/pki, which does not exist") {
		t.Errorf("warnings %q", s.Warnings)
	}
	if p, _ := s.Lookup("/etc/kubernetes/a"); p.Kind != KindSymlink || !hasWarning(s, "/etc/kubernetes/a", "too many levels of symbolic links") {
		t.Errorf("loop %+v; warnings %q", p, s.Warnings)
	}
	if p, _ := s.Lookup("/etc/default/kubelet"); p.Kind != KindFile || p.Target != "/etc/kubelet-extra" ||
		!hasWarning(s, "/etc/default/kubelet", "climbs above the root") {
		t.Errorf("climbing link %+v; warnings %q", p, s.Warnings)
	}
}

// TestSymlinkedManifest: the kubelet loads a manifest that is a symlink;
// so does discovery (inside the root), and the file it leads to is in the
// set (the manifests dir keeps only the link).
func TestSymlinkedManifest(t *testing.T) {
	r, err := sandbox.Build(t.TempDir(), sandbox.Options{})
	must(t, err)
	moveAndLink(t, r, ManifestsDir+"/etcd.yaml", "/srv/manifests/etcd.yaml", "/srv/manifests/etcd.yaml")
	s, err := Discover(r.Dir, Options{})
	must(t, err)
	if s.Etcd.External || s.Etcd.DataDir != "/var/lib/etcd" {
		t.Errorf("etcd not found through the link: %+v", s.Etcd)
	}
	if p, ok := s.Lookup("/srv/manifests/etcd.yaml"); !ok || p.Role != RoleManifests || p.Kind != KindFile {
		t.Errorf("link target %+v, %v", p, ok)
	}
	if _, ok := s.Lookup("/var/lib/etcd"); !ok || len(s.Warnings) != 0 {
		t.Errorf("paths %v warnings %q", s.HostPaths(), s.Warnings)
	}
}

func TestResolve(t *testing.T) {
	root := t.TempDir()
	for _, l := range [][2]string{
		{"/etc/ssl/certs", "../pki/tls/certs"},
		{"/etc/abs", "/etc/pki"},
		{"/etc/up", "../../../../etc/pki"},
		{"/etc/chain", "abs/tls"},
		{"/etc/file-link", "/etc/pki/tls/certs/ca.crt"},
		{"/etc/dangling", "/nowhere"},
		{"/etc/loop1", "loop2"},
		{"/etc/loop2", "loop1"},
	} {
		must(t, os.MkdirAll(filepath.Join(root, "etc/pki/tls/certs"), 0o755))
		must(t, os.MkdirAll(filepath.Dir(filepath.Join(root, l[0])), 0o755))
		must(t, os.Symlink(l[1], filepath.Join(root, l[0])))
	}
	must(t, os.WriteFile(filepath.Join(root, "etc/pki/tls/certs/ca.crt"), nil, 0o644))
	for _, tc := range []struct{ in, want string }{
		{"/etc/ssl/certs", "/etc/pki/tls/certs"},
		{"/etc/ssl/certs/ca.crt", "/etc/pki/tls/certs/ca.crt"},
		{"/etc/abs/tls", "/etc/pki/tls"},
		{"/etc/up", "/etc/pki"},
		{"/etc/chain/certs", "/etc/pki/tls/certs"},
		{"/etc/file-link", "/etc/pki/tls/certs/ca.crt"},
		{"/etc/pki", "/etc/pki"},
		{"/", "/"},
	} {
		got, err := Resolve(root, tc.in)
		if err != nil || got != tc.want {
			t.Errorf("Resolve(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, tc := range []struct {
		in   string
		want error
	}{
		{"/etc/dangling", fs.ErrNotExist},
		{"/etc/missing/x", fs.ErrNotExist},
		{"/etc/file-link/x", fs.ErrNotExist},
		{"/etc/loop1", ErrLinkLoop},
	} {
		if got, err := Resolve(root, tc.in); !errors.Is(err, tc.want) {
			t.Errorf("Resolve(%q) = %q, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	if _, err := Resolve(root, "relative"); err == nil {
		t.Error("relative host path accepted")
	}
}

// FuzzResolve: whatever links a tree holds, a resolved path is a clean
// host path, so Join puts it inside the root.
func FuzzResolve(f *testing.F) {
	f.Add("/a", "../../../b", "/x/y")
	f.Add("/a/b", "/a", "/a/b/b/b")
	f.Fuzz(func(t *testing.T, linkPath, link, query string) {
		root := t.TempDir()
		lp, err := Join(root, linkPath)
		if err != nil || lp == root || strings.ContainsRune(link, 0) || link == "" {
			return
		}
		if os.MkdirAll(filepath.Dir(lp), 0o755) != nil || os.Symlink(link, lp) != nil {
			return
		}
		got, err := Resolve(root, query)
		if err != nil {
			return
		}
		if c, err := cleanHostPath(got); err != nil || c != got {
			t.Fatalf("Resolve(%q) = %q: not a clean host path", query, got)
		}
	})
}
