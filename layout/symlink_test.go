package layout

import (
	"errors"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
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

// walkable checks what makes the set a plan a walk can follow: no path
// of the set lies below a symlink, and every symlink that resolves leads
// to a path of the set or inside one.
func walkable(t *testing.T, root string, s *Set) {
	t.Helper()
	for _, p := range s.Paths {
		if dir, err := Resolve(root, path.Dir(p.Path)); err != nil || dir != path.Dir(p.Path) {
			t.Errorf("%s lies below a symlink (its dir resolves to %q, %v)", p.Path, dir, err)
		}
	}
	for _, p := range s.Paths {
		if p.Kind != KindSymlink || p.Target == "" || strings.Contains(sourcesOf(p), "on the way") {
			continue
		}
		if !held(s, p.Target) {
			t.Errorf("%s -> %s: the target is in no path of the set", p.Path, p.Target)
		}
	}
}

func sourcesOf(p Path) string { return describeSources(p.Sources) }

// held reports whether a directory or file of the set is or holds p.
func held(s *Set, p string) bool {
	for _, o := range s.Paths {
		if o.Kind != KindSymlink && within(p, o.Path) {
			return true
		}
	}
	return false
}

// TestSymlinkedPKI: /etc/kubernetes/pki a link to a directory elsewhere,
// absolute (as an admin writes it) or relative. The pods see the
// directory, so the set holds the link and, as a path of its own, the
// directory it leads to with its real size; pki/etcd, mounted by etcd, is
// where it really is, inside that directory; discovery finds etcd's client
// cert through the link. Before, the set held the link only (first
// "symlink 0B", then "dir -> /data/k8s/pki" with nothing to walk there):
// the backup stored the link and pki/etcd/* below it, ca.key was lost and
// the version could not be restored (mkdirat: file exists).
func TestSymlinkedPKI(t *testing.T) {
	for _, link := range []string{"/data/k8s/pki", "../../data/k8s/pki"} {
		t.Run(link, func(t *testing.T) {
			r, err := sandbox.Build(t.TempDir(), sandbox.Options{})
			must(t, err)
			want := treeSize(t, r.Path("/etc/kubernetes/pki"))
			moveAndLink(t, r, "/etc/kubernetes/pki", "/data/k8s/pki", link)

			s, err := Discover(r.Dir, Options{})
			must(t, err)
			p, ok := s.Lookup("/etc/kubernetes/pki")
			if !ok || p.Kind != KindSymlink || p.Target != "/data/k8s/pki" || p.Size != 0 || p.Role != RolePKI {
				t.Errorf("pki %+v; want the symlink -> /data/k8s/pki", p)
			}
			d, ok := s.Lookup("/data/k8s/pki")
			if !ok || d.Kind != KindDir || d.Role != RolePKI || d.Size != want || want < 5000 ||
				sourcesOf(d) != "target of symlink /etc/kubernetes/pki" {
				t.Errorf("target %+v (%v); want the dir of %d bytes, target of the link", d, ok, want)
			}
			sk := skipped(s)
			if sk["/etc/kubernetes/pki/etcd"] != "/data/k8s/pki" || len(sk) != 1 {
				t.Errorf("pki/etcd not placed inside the linked pki dir: %+v", s.Skipped)
			}
			walkable(t, r.Dir, s)
			if s.Etcd.CertFile != r.EtcdClientCert || len(s.Warnings) != 0 || len(s.Problems) != 0 {
				t.Errorf("etcd cert %q warnings %q problems %q", s.Etcd.CertFile, s.Warnings, s.Problems)
			}
		})
	}
}

// TestSymlinkedParent: a link in a parent (/etc/kubernetes itself moved):
// every path below it is replaced by where it is, the link is in the set
// as a link, and the manifests are read through it; the rest of the link's
// target (kubeadm's tmp) is not.
func TestSymlinkedParent(t *testing.T) {
	r, err := sandbox.Build(t.TempDir(), sandbox.Options{})
	must(t, err)
	writeHost(t, r, "/etc/kubernetes/tmp/old-manifests/etcd.yaml", "stale")
	moveAndLink(t, r, "/etc/kubernetes", "/srv/k8s", "../srv/k8s")
	s, err := Discover(r.Dir, Options{})
	must(t, err)
	sk := skipped(s)
	for _, host := range []string{"/etc/kubernetes/pki", "/etc/kubernetes/admin.conf", ManifestsDir} {
		real := "/srv/k8s" + strings.TrimPrefix(host, "/etc/kubernetes")
		if p, ok := s.Lookup(real); !ok || p.Kind == KindSymlink || p.Size == 0 ||
			!strings.Contains(sourcesOf(p), host+" through symlink /etc/kubernetes") {
			t.Errorf("%s: %+v, %v; want a path of its own", real, p, ok)
		}
		if _, ok := s.Lookup(host); ok || sk[host] != real {
			t.Errorf("%s: still in the set, or not skipped for %s (%q)", host, real, sk[host])
		}
	}
	l, ok := s.Lookup("/etc/kubernetes")
	if !ok || l.Kind != KindSymlink || l.Target != "/srv/k8s" || !strings.Contains(sourcesOf(l), "symlink on the way to ") {
		t.Errorf("the link: %+v, %v", l, ok)
	}
	for _, p := range s.Paths {
		if within(p.Path, "/srv/k8s/tmp") || p.Path == "/srv/k8s" {
			t.Errorf("%s is in the set: only what discovery names below the link is", p.Path)
		}
	}
	walkable(t, r.Dir, s)
	if s.Etcd.Name != r.Opts.NodeName || len(s.Warnings) != 0 {
		t.Errorf("etcd %+v warnings %q", s.Etcd, s.Warnings)
	}
}

// TestSymlinkChain: pki -> /data/pki where /data is itself a link to a
// second disk: both links are in the set, the content where it really is.
// The etcd data dir is a link too: both it and its target are etcd-data
// (never walked), while a link on the way that other paths share is not.
func TestSymlinkChain(t *testing.T) {
	r, err := sandbox.Build(t.TempDir(), sandbox.Options{})
	must(t, err)
	want := treeSize(t, r.Path("/etc/kubernetes/pki"))
	moveAndLink(t, r, "/etc/kubernetes/pki", "/mnt/disk2/data/pki", "/data/pki")
	must(t, os.Symlink("/mnt/disk2/data", r.Path("/data")))
	moveAndLink(t, r, "/var/lib", "/mnt/disk2/lib", "../mnt/disk2/lib")
	moveAndLink(t, r, "/mnt/disk2/lib/etcd", "/mnt/disk2/etcd", "../etcd")

	s, err := Discover(r.Dir, Options{})
	must(t, err)
	for _, tc := range []struct {
		path, kind, target string
		role               Role
	}{
		{"/etc/kubernetes/pki", KindSymlink, "/mnt/disk2/data/pki", RolePKI},
		{"/data", KindSymlink, "/mnt/disk2/data", RolePKI},
		{"/mnt/disk2/data/pki", KindDir, "", RolePKI},
		{"/var/lib", KindSymlink, "/mnt/disk2/lib", RoleKubelet}, // never etcd-data, which ranks first
		{"/mnt/disk2/lib/etcd", KindSymlink, "/mnt/disk2/etcd", RoleEtcdData},
		{"/mnt/disk2/etcd", KindDir, "", RoleEtcdData},
		{"/mnt/disk2/lib/kubelet/config.yaml", KindFile, "", RoleKubelet},
	} {
		p, ok := s.Lookup(tc.path)
		if !ok || p.Kind != tc.kind || p.Target != tc.target || p.Role != tc.role {
			t.Errorf("%s: %+v, %v; want %s -> %q (%s)", tc.path, p, ok, tc.kind, tc.target, tc.role)
		}
	}
	if p, _ := s.Lookup("/mnt/disk2/data/pki"); p.Size != want {
		t.Errorf("pki size %d, want %d", p.Size, want)
	}
	walkable(t, r.Dir, s)
	if len(s.Warnings) != 0 {
		t.Errorf("warnings %q", s.Warnings)
	}
}

// TestSymlinkInsideAPath: a link a directory of the set holds is stored
// with it, as a link, and what it leads to is still in the set: paths.extra
// /etc/kubernetes holds the pki link, not /data/pki.
func TestSymlinkInsideAPath(t *testing.T) {
	r, err := sandbox.Build(t.TempDir(), sandbox.Options{})
	must(t, err)
	moveAndLink(t, r, "/etc/kubernetes/pki", "/data/pki", "/data/pki")
	s, err := Discover(r.Dir, Options{Extra: []string{"/etc/kubernetes"}})
	must(t, err)
	sk := skipped(s)
	if sk["/etc/kubernetes/pki"] != "/etc/kubernetes" || sk["/etc/kubernetes/pki/etcd"] != "/data/pki" {
		t.Errorf("skipped %+v", s.Skipped)
	}
	if p, ok := s.Lookup("/data/pki"); !ok || p.Kind != KindDir || p.Role != RolePKI {
		t.Errorf("target %+v, %v", p, ok)
	}
	walkable(t, r.Dir, s)
}

// TestSymlinkLeavingTheRoot: links that lead out of the root are not
// followed there. An absolute link to a real directory outside the root
// names a path the root does not hold, and one whose .. climbs above the
// root stops at the root, as /.. is / on a host: both dangle, with a
// warning, and only the link is in the set.
func TestSymlinkLeavingTheRoot(t *testing.T) {
	for _, tc := range []struct{ name, hint string }{{"absolute", ""}, {"relative", "climbs above the root"}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			r, err := sandbox.Build(filepath.Join(dir, "root"), sandbox.Options{})
			must(t, err)
			outside := filepath.Join(dir, "outside", "pki")
			must(t, os.MkdirAll(filepath.Dir(outside), 0o755))
			must(t, os.Rename(r.Path("/etc/kubernetes/pki"), outside))
			link := outside
			if tc.name == "relative" {
				link = "../../../outside/pki" // from root/etc/kubernetes
			}
			must(t, os.Symlink(link, r.Path("/etc/kubernetes/pki")))
			// Sanity: the OS does follow it out of the root.
			if _, err := os.Stat(r.Path("/etc/kubernetes/pki/ca.key")); err != nil {
				t.Fatal(err)
			}
			s, err := Discover(r.Dir, Options{})
			must(t, err)
			p, ok := s.Lookup("/etc/kubernetes/pki")
			if !ok || p.Kind != KindSymlink || p.Target != "" {
				t.Errorf("pki %+v, %v; want the dangling link only", p, ok)
			}
			if !hasWarning(s, "/etc/kubernetes/pki (pki", "is a symlink to "+link+", which does not exist under the root", tc.hint) {
				t.Errorf("warnings %q", s.Warnings)
			}
			for _, p := range s.Paths {
				if strings.Contains(p.Path, "outside") || p.Role == RolePKI && p.Kind != KindSymlink {
					t.Errorf("%+v: read through the link", p)
				}
			}
			walkable(t, r.Dir, s)
		})
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
	if p, _ := s.Lookup("/etc/default/kubelet"); p.Kind != KindSymlink || p.Target != "/etc/kubelet-extra" ||
		!hasWarning(s, "/etc/default/kubelet", "climbs above the root") {
		t.Errorf("climbing link %+v; warnings %q", p, s.Warnings)
	}
	if p, _ := s.Lookup("/etc/kubelet-extra"); p.Kind != KindFile || p.Role != RoleKubelet {
		t.Errorf("climbing link's target %+v", p)
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

// TestReal: Real names the file under the root without a link in it, also
// for a path that does not resolve, so opening it never follows a link
// out of the root: here /etc/out leads to a real file outside the root.
func TestReal(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	must(t, os.MkdirAll(filepath.Join(root, "etc/pki"), 0o755))
	must(t, os.WriteFile(filepath.Join(root, "etc/pki/ca.crt"), []byte("in"), 0o600))
	must(t, os.WriteFile(filepath.Join(dir, "secret"), []byte("out"), 0o600))
	must(t, os.Symlink("/etc/pki", filepath.Join(root, "etc/abs")))
	must(t, os.Symlink(dir, filepath.Join(root, "etc/out")))
	must(t, os.WriteFile(filepath.Join(root, "etc/file"), nil, 0o600))
	for _, tc := range []struct{ in, want string }{
		{"/etc/abs/ca.crt", root + "/etc/pki/ca.crt"},
		{"/etc/out/secret", root + dir + "/secret"},
		{"/etc/missing/ca.crt", root + "/etc/missing/ca.crt"},
		{"/etc/file/x", root + "/etc/file/x"},
	} {
		got, err := Real(root, tc.in)
		if err != nil || got != tc.want {
			t.Errorf("Real(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			continue
		}
		if data, err := os.ReadFile(got); tc.in != "/etc/abs/ca.crt" && (err == nil || string(data) == "out") {
			t.Errorf("Real(%q) = %q opens: %q, %v", tc.in, got, data, err)
		}
	}
	must(t, os.Symlink("loop", filepath.Join(root, "etc/loop")))
	if _, err := Real(root, "/etc/loop/x"); !errors.Is(err, ErrLinkLoop) {
		t.Errorf("loop: %v", err)
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

// TestPlace: paths given by hand, no manifests read, are placed as
// discovery's are: a symlink named (here inside a named dir) brings its
// target, a missing path is a warning, a kernel path a problem.
func TestPlace(t *testing.T) {
	r, err := sandbox.Build(t.TempDir(), sandbox.Options{})
	must(t, err)
	moveAndLink(t, r, "/etc/kubernetes/pki", "/data/pki", "/data/pki")
	must(t, os.RemoveAll(r.Path(ManifestsDir)))
	s, err := Place(r.Dir, Options{Extra: []string{"/etc/kubernetes", "/etc/kubernetes/pki", "/missing", "/proc/x"}})
	must(t, err)
	if !slices.Equal(s.HostPaths(), []string{"/data/pki", "/etc/kubernetes"}) || skipped(s)["/etc/kubernetes/pki"] != "/etc/kubernetes" {
		t.Errorf("paths %v skipped %+v", s.HostPaths(), s.Skipped)
	}
	if len(s.Missing) != 1 || s.Missing[0].Path != "/missing" || len(s.Problems) != 1 || !strings.Contains(s.Problems[0], "/proc/x") {
		t.Errorf("missing %+v problems %q", s.Missing, s.Problems)
	}
	walkable(t, r.Dir, s)
	if _, err := Place(r.Dir, Options{Extra: []string{"relative"}}); err == nil {
		t.Error("a relative path accepted")
	}
}
