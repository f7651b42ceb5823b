package layout

import (
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/kubekeep/kubekeep/internal/sandbox"
)

// addPod writes a static pod mounting each hostPath into r's manifests dir.
func addPod(t *testing.T, r *sandbox.Root, name string, hostPaths ...string) {
	t.Helper()
	var mounts, vols strings.Builder
	for i, p := range hostPaths {
		fmt.Fprintf(&mounts, "    - {name: v%d, mountPath: /mnt/v%d}\n", i, i)
		fmt.Fprintf(&vols, "  - {name: v%d, hostPath: {path: %q, type: DirectoryOrCreate}}\n", i, p)
	}
	y := fmt.Sprintf("apiVersion: v1\nkind: Pod\nmetadata: {name: %s, namespace: kube-system}\nspec:\n  containers:\n  - name: c\n    image: busybox\n    volumeMounts:\n%s  volumes:\n%s",
		name, mounts.String(), vols.String())
	must(t, os.WriteFile(r.Path(ManifestsDir+"/"+name+".yaml"), []byte(y), 0o600))
}

func problemWith(s *Set, parts ...string) bool {
	for _, p := range s.Problems {
		ok := true
		for _, part := range parts {
			ok = ok && strings.Contains(p, part)
		}
		if ok {
			return true
		}
	}
	return false
}

// TestManifestTooBig: a 96 MiB file in the manifests dir is refused before
// it is read whole (it used to cost 807 MB of RSS), as a problem; the rest
// is discovered.
func TestManifestTooBig(t *testing.T) {
	r, err := sandbox.Build(t.TempDir(), sandbox.Options{})
	must(t, err)
	big := r.Path(ManifestsDir + "/huge.yaml")
	must(t, os.WriteFile(big, []byte("apiVersion: v1\n"), 0o600))
	must(t, os.Truncate(big, 96<<20)) // sparse: no disk, but 96 MiB to read

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	s, err := Discover(r.Dir, Options{})
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 16<<20 {
		t.Errorf("discovery allocated %d MiB for a 96 MiB manifest it must refuse unread", alloc>>20)
	}
	if len(s.Problems) != 1 || !problemWith(s, ManifestsDir+"/huge.yaml", "96 MiB, over the 1 MiB limit") {
		t.Errorf("problems %q", s.Problems)
	}
	if _, ok := s.Lookup("/etc/kubernetes/pki"); !ok || s.Etcd.DataDir != "/var/lib/etcd" {
		t.Errorf("the good manifests were not discovered: %v %+v", s.HostPaths(), s.Etcd)
	}
}

// TestBrokenEtcdManifest: when the manifest that fails is etcd's, etcd is
// taken from the apiserver's flags, and the warning says why.
func TestBrokenEtcdManifest(t *testing.T) {
	r, err := sandbox.Build(t.TempDir(), sandbox.Options{})
	must(t, err)
	must(t, os.WriteFile(r.Path(ManifestsDir+"/etcd.yaml"), []byte("apiVersion: v1\nkind: Pod\n\tbad\n"), 0o600))
	s, err := Discover(r.Dir, Options{})
	must(t, err)
	if !problemWith(s, ManifestsDir+"/etcd.yaml:") || !hasWarning(s, "etcd may be the pod of "+ManifestsDir+"/etcd.yaml") {
		t.Errorf("problems %q warnings %q", s.Problems, s.Warnings)
	}
	if !s.Etcd.External || !slices.Equal(s.Etcd.Endpoints, []string{r.EtcdClientURL()}) {
		t.Errorf("etcd %+v: want the apiserver's --etcd-servers", s.Etcd)
	}
}

// TestRootAndKernelPaths: hostPath / used to fold every other path into
// itself (a backup of a sandbox then stored nothing, and one of a host
// walked /proc and failed); /proc, /sys and /dev fail every backup. They
// are left out with a problem, /run and /var/run with a warning, and the
// rest of the set is what it would be without them.
func TestRootAndKernelPaths(t *testing.T) {
	r, err := sandbox.Build(t.TempDir(), sandbox.Options{})
	must(t, err)
	plain, err := Discover(r.Dir, Options{})
	must(t, err)

	addPod(t, r, "node-agent", "/", "/proc", "/sys/fs/cgroup", "/dev", "/var/run/kmsplugin", "/run/xtables.lock")
	s, err := Discover(r.Dir, Options{})
	must(t, err)
	if !slices.Equal(s.HostPaths(), plain.HostPaths()) {
		t.Errorf("paths\n got %v\nwant %v", s.HostPaths(), plain.HostPaths())
	}
	for _, k := range s.Skipped {
		if k.CoveredBy == "/" {
			t.Errorf("%s folded into /", k.Path)
		}
	}
	for _, want := range [][]string{{"/ (extra", "whole filesystem"}, {"/proc", "in /proc"}, {"/sys/fs/cgroup", "in /sys"}, {"/dev (", "in /dev"}} {
		if !problemWith(s, want...) {
			t.Errorf("no problem with %q in %q", want, s.Problems)
		}
	}
	if len(s.Problems) != 4 {
		t.Errorf("problems %q", s.Problems)
	}
	for _, p := range s.Problems {
		if !slices.Contains(s.Warnings, p) {
			t.Errorf("problem %q is not a warning", p)
		}
	}
	if !hasWarning(s, "/var/run/kmsplugin", "runtime state") || !hasWarning(s, "/run/xtables.lock", "runtime state") {
		t.Errorf("warnings %q", s.Warnings)
	}
	if len(s.Missing) != 0 {
		t.Errorf("left-out paths reported missing: %+v", s.Missing)
	}

	// paths.exclude acknowledges them; excluding / does not empty the set.
	s, err = Discover(r.Dir, Options{Exclude: []string{"/", "/proc", "/sys", "/dev"}})
	must(t, err)
	if len(s.Problems) != 0 || !slices.Equal(s.HostPaths(), plain.HostPaths()) {
		t.Errorf("with excludes: problems %q paths %v", s.Problems, s.HostPaths())
	}
	if len(s.Excluded) != 4 || s.Excluded[0] != (Excluded{Path: "/", Exclude: "/"}) {
		t.Errorf("excluded %+v", s.Excluded)
	}
}

// mountKernelFS mounts a kernel filesystem at dir until the test ends,
// skipping the test where that is not allowed.
func mountKernelFS(t *testing.T, fstype, dir string) {
	t.Helper()
	must(t, os.MkdirAll(dir, 0o755))
	if err := syscall.Mount(fstype, dir, fstype, syscall.MS_RDONLY|syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC, ""); err != nil {
		t.Skipf("cannot mount %s here (needs root): %v", fstype, err)
	}
	// Registered after TempDir's removal, so it runs before it.
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
}

// TestKernelFilesystemByMagic: a kernel filesystem found by statfs, not by
// its name, at a hostPath or mounted below one, is left out with a
// problem; the files next to it are still counted.
func TestKernelFilesystemByMagic(t *testing.T) {
	r, err := sandbox.Build(t.TempDir(), sandbox.Options{})
	must(t, err)
	writeHost(t, r, "/srv/state/keep.conf", "12345")
	mountKernelFS(t, "proc", r.Path("/srv/state/kproc"))
	mountKernelFS(t, "sysfs", r.Path("/opt/ksys"))
	addPod(t, r, "node-agent", "/srv/state", "/opt/ksys")

	s, err := Discover(r.Dir, Options{})
	must(t, err)
	if _, ok := s.Lookup("/opt/ksys"); ok {
		t.Error("/opt/ksys (sysfs) is in the set")
	}
	st, ok := s.Lookup("/srv/state")
	if !ok || !slices.Equal(st.Exclude, []string{"/srv/state/kproc"}) || st.Size != 5 {
		t.Errorf("/srv/state: %+v; want kproc excluded and only keep.conf's 5 bytes counted", st)
	}
	if !problemWith(s, "/opt/ksys", "sysfs filesystem") || !problemWith(s, "/srv/state/kproc inside /srv/state is a proc mount") ||
		len(s.Problems) != 2 {
		t.Errorf("problems %q", s.Problems)
	}
}
