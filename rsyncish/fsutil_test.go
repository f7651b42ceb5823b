package rsyncish

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// A mount point is found in mountinfo whatever bytes its path holds: the
// kernel escapes space, tab, newline and backslash, and leaves the rest
// (U+00A0, \r, \v, \f) in the field, which only an ASCII space ends.
func TestMountedInKeepsUnicodeSpacesInPaths(t *testing.T) {
	const info = "22 1 0:21 / /proc rw,nosuid shared:12 - proc proc rw\n" +
		"98 29 0:52 / /mnt/with\\040space rw,relatime shared:50 - tmpfs tmpfs rw,size=1024k\n" +
		"99 29 0:53 / /mnt/nb\u00a0sp rw,relatime shared:51 - tmpfs tmpfs rw,size=1024k\n" +
		"100 29 0:54 / /mnt/cr\rx rw,relatime shared:52 - tmpfs tmpfs rw,size=1024k\n" +
		"101 29 0:55 / /mnt/vt\vx\fy rw,relatime shared:53 - tmpfs tmpfs rw,size=1024k\n"
	for _, p := range []string{"/proc", "/mnt/with space", "/mnt/nb\u00a0sp", "/mnt/cr\rx", "/mnt/vt\vx\fy"} {
		if !mountedIn(info, p) {
			t.Errorf("%q: not found in mountinfo", p)
		}
	}
	for _, p := range []string{"/mnt", "/mnt/nb", "/mnt/cr", "/mnt/vt\vx", "/"} {
		if mountedIn(info, p) {
			t.Errorf("%q: found in mountinfo, but nothing is mounted there", p)
		}
	}
}

// The same against the kernel: a tmpfs mounted at such a path is mounted
// for isMounted (needs root to mount).
func TestIsMountedRealMountWithUnicodeSpace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs")
	}
	if _, err := exec.LookPath("mount"); err != nil {
		t.Skip("no mount binary")
	}
	for _, name := range []string{"plain", "with space", "nb\u00a0sp", "cr\rx", "vt\vx"} {
		p := filepath.Join(t.TempDir(), name)
		if err := os.Mkdir(p, 0o700); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", p).CombinedOutput(); err != nil {
			t.Skipf("cannot mount a tmpfs here: %v %s", err, out)
		}
		ok, err := isMounted(p)
		if out, uerr := exec.Command("umount", p).CombinedOutput(); uerr != nil {
			t.Fatalf("umount %q: %v %s", p, uerr, out)
		}
		if err != nil || !ok {
			t.Errorf("%q: mounted=%v err=%v, want mounted", name, ok, err)
		}
		if ok, err := isMounted(p); err != nil || ok {
			t.Errorf("%q after umount: mounted=%v err=%v, want not mounted", name, ok, err)
		}
	}
}
