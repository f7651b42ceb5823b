package campaign

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// dmUnavailable says why device-mapper cannot be used here, or "".
func dmUnavailable() string {
	if _, err := exec.LookPath("dmsetup"); err != nil {
		return "dmsetup is not installed (Debian package dmsetup)"
	}
	out, err := exec.Command("dmsetup", "targets").CombinedOutput()
	if err != nil {
		misc, _ := os.ReadFile("/proc/misc")
		why := "the kernel has no device-mapper driver"
		if !strings.Contains(string(misc), "device-mapper") {
			why += " (/proc/misc lists no device-mapper, and modules cannot be loaded here)"
		}
		first, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		return fmt.Sprintf("%s: dmsetup targets: %v: %s", why, err, first)
	}
	for _, target := range []string{"linear", "error"} {
		if !strings.Contains(string(out), target) {
			return "the kernel's device-mapper has no " + target + " target: " + strings.TrimSpace(string(out))
		}
	}
	return ""
}

// dmDisk is an ext4 over a device-mapper device over a loop device, whose
// table the test switches between linear (healthy) and error (every I/O
// fails with EIO).
type dmDisk struct {
	t       *testing.T
	name    string
	loop    string
	sectors int64
	mnt     string
}

func newDMDisk(t *testing.T, size int64) *dmDisk {
	t.Helper()
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "-f", "--show", img).CombinedOutput()
	if err != nil {
		t.Skipf("losetup: %v %s; skipping", err, out)
	}
	d := &dmDisk{t: t, loop: strings.TrimSpace(string(out)), sectors: size / 512,
		name: fmt.Sprintf("kubekeep-campaign-%d", os.Getpid())}
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", d.loop).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v %s", d.loop, err, out)
		}
	})
	if out, err := exec.Command("dmsetup", "create", d.name, "--table", d.table("linear")).CombinedOutput(); err != nil {
		t.Fatalf("dmsetup create: %v %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("dmsetup", "remove", "--retry", d.name).CombinedOutput(); err != nil {
			t.Errorf("dmsetup remove %s: %v %s", d.name, err, out)
		}
	})
	d.mnt = mountExt4(t, d.dev(), false)
	return d
}

func (d *dmDisk) dev() string { return "/dev/mapper/" + d.name }

func (d *dmDisk) table(target string) string {
	if target == "error" {
		return fmt.Sprintf("0 %d error", d.sectors)
	}
	return fmt.Sprintf("0 %d linear %s 0", d.sectors, d.loop)
}

// switchTo loads target as the live table.
func (d *dmDisk) switchTo(target string) error {
	for _, args := range [][]string{
		{"suspend", "--noflush", d.name},
		{"load", d.name, "--table", d.table(target)},
		{"resume", d.name},
	} {
		if out, err := exec.Command("dmsetup", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("dmsetup %s: %v %s", strings.Join(args, " "), err, out)
		}
	}
	return nil
}

// recover makes the disk healthy again the way an operator would: the
// table back to linear, unmount, e2fsck -fy, mount.
func (d *dmDisk) recover() error {
	if err := d.switchTo("linear"); err != nil {
		return err
	}
	if out, err := exec.Command("umount", d.mnt).CombinedOutput(); err != nil {
		return fmt.Errorf("umount: %v %s", err, out)
	}
	// e2fsck: 0 clean, 1 errors fixed.
	if out, err := exec.Command("e2fsck", "-fy", d.dev()).CombinedOutput(); err != nil {
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() > 1 {
			return fmt.Errorf("e2fsck: %v %s", err, out)
		}
	}
	if out, err := exec.Command("mount", d.dev(), d.mnt).CombinedOutput(); err != nil {
		return fmt.Errorf("mount: %v %s", err, out)
	}
	return nil
}

// runEIO: the store's disk starts failing every I/O with EIO in the
// middle of a backup; once it is healthy again (fsck'd, remounted),
// verify, every restore and the next backup must hold.
func runEIO(t *testing.T, bin string, k knobs, sum *summary) {
	needRoot(t, "the EIO sub-campaign (device-mapper over a loop device)", "losetup", "mkfs.ext4", "e2fsck", "mount", "umount")
	if why := dmUnavailable(); why != "" {
		sum.note("eio skipped: %s", why)
		t.Skipf("EIO from a device-mapper error target is not possible here: %s", why)
	}
	disk := newDMDisk(t, loopSize)
	rng := rngFor(k.seed, "eio")
	w := newWorld(t, bin, rng, sum, "eio", worldOptions{mountpoint: disk.mnt})
	w.setupBackups(t, k, 2)
	for i := 0; i < 2*k.n; i++ {
		t.Run(fmt.Sprintf("%02d-backup", i), func(t *testing.T) {
			w.rng = rngFor(k.seed, t.Name()) // each case its own choices
			c := newChecker(t, w, fault{kind: "eio", target: "backup"}, k.strict)
			defer c.finish()
			w.mutate(3)
			files, rev := w.state, w.etcdRev()
			delay := w.killDelay("backup", 300*time.Millisecond)
			p := w.start(2*time.Minute, "backup", "-o", "json")
			time.Sleep(delay)
			if err := disk.switchTo("error"); err != nil {
				t.Fatal(err)
			}
			r := p.wait()
			c.f.detail = fmt.Sprintf("the disk fails after %s; backup exit %d", delay.Round(time.Millisecond), r.code)
			if r.code == 0 {
				w.sum.add(c.f.kind, "runs that finished before the failure", 1)
			} else {
				w.sum.add(c.f.kind, "runs that met EIO", 1)
			}
			if err := disk.recover(); err != nil {
				t.Fatalf("bringing the disk back: %v", err)
			}
			w.audit(c, expect{clean: true, adopt: adoptOne(c, files, rev, "backup on a failing disk")})
			w.nextBackup(c, false)
			w.trim(c)
		})
	}
}
