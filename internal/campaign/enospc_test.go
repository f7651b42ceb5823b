package campaign

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// loopSize is the second disk of the enospc and eio sub-campaigns: room
// for the rescue kit (the stripped binary, ~65 MB) and the versions.
const loopSize = 192 << 20

// needRoot skips t with why when the test does not run as root or a
// tool is missing.
func needRoot(t *testing.T, what string, tools ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("%s needs root (CI runs as root); skipping", what)
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s needs %s: %v", what, tool, err)
		}
	}
}

// mountExt4 makes an ext4 on dev (a file or a block device) and mounts
// it; unmounted at cleanup, failed test or not.
func mountExt4(t *testing.T, dev string, loop bool) string {
	t.Helper()
	mnt := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-m", "0", dev).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4 %s: %v %s", dev, err, out)
	}
	args := []string{dev, mnt}
	if loop {
		args = []string{"-o", "loop", dev, mnt}
	}
	if out, err := exec.Command("mount", args...).CombinedOutput(); err != nil {
		t.Skipf("cannot mount %s here (%v: %s); skipping", dev, err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() { unmount(t, mnt) })
	return mnt
}

func unmount(t *testing.T, mnt string) {
	if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
		if out2, err2 := exec.Command("umount", "-l", mnt).CombinedOutput(); err2 != nil {
			t.Errorf("umount %s: %v %s; umount -l: %v %s", mnt, err, out, err2, out2)
		}
	}
}

// loopFS is a fresh ext4 image of size bytes, loop-mounted.
func loopFS(t *testing.T, size int64) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	return mountExt4(t, img, true)
}

func freeBytes(dir string) int64 {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0
	}
	return int64(st.Bavail) * st.Bsize
}

// fill takes all but leave bytes of the filesystem at mnt with a filler
// file outside the store, and returns a func that frees them again.
func fill(t *testing.T, mnt string, leave int64) func() {
	t.Helper()
	p := filepath.Join(mnt, "filler")
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// ext4 needs some of the "free" space for the filler's own extent
	// tree: back off until the allocation fits.
	for n := freeBytes(mnt) - leave; n > 0; n -= 64 << 10 {
		err := syscall.Fallocate(int(f.Fd()), 0, 0, n)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("fallocate: %v", err)
		}
	}
	return func() {
		if err := os.Remove(p); err != nil {
			t.Errorf("remove the filler: %v", err)
		}
	}
}

var enospcTargets = []string{"backup", "prune", "agent"}

// runENOSPC: the store on a small loop-mounted ext4, filled to a random
// level before a backup, a prune or an agent run.
func runENOSPC(t *testing.T, bin string, k knobs, sum *summary) {
	needRoot(t, "the ENOSPC sub-campaign (a loop-mounted ext4)", "mkfs.ext4", "mount", "umount")
	mnt := loopFS(t, loopSize)
	rng := rngFor(k.seed, "enospc")
	w := newWorld(t, bin, rng, sum, "enospc", worldOptions{mountpoint: mnt})
	w.setupBackups(t, k, 2)
	w.runRounds(t, k, rng, enospcTargets, func(t *testing.T, target string) {
		c := newChecker(t, w, fault{kind: "enospc", target: target}, k.strict)
		defer c.finish()
		w.enospcRound(c, mnt, target)
	})
}

// leaveLevels: how much free space a round leaves, from nothing to a few
// MiB (a version here writes about 1-6 MiB).
func (w *world) leaveLevel() int64 {
	switch w.rng.IntN(4) {
	case 0:
		return 0
	case 1:
		return w.rng.Int64N(64 << 10)
	case 2:
		return w.rng.Int64N(1 << 20)
	default:
		return w.rng.Int64N(6 << 20)
	}
}

func noSpace(r result) bool {
	s := strings.ToLower(r.stderr + r.stdout)
	for _, say := range []string{"no space", "not enough free space", "free on the store", "enospc", "disk full", "disk is full"} {
		if strings.Contains(s, say) {
			return true
		}
	}
	return false
}

func (w *world) enospcRound(c *checker, mnt, target string) {
	if target == "prune" && !w.enoughToPrune(c, "before a prune on a full disk") {
		return
	}
	w.mutate(3)
	files, rev := w.state, w.etcdRev()
	leave := w.leaveLevel()
	free := fill(c.t, mnt, leave)
	freed := false
	defer func() {
		if !freed {
			free()
		}
	}()
	c.f.detail = fmt.Sprintf("%d bytes left free (%d seen)", leave, freeBytes(mnt))
	exp := expect{clean: true}
	switch target {
	case "backup":
		r := w.kk(2*time.Minute, "backup", "-o", "json")
		w.noteOutcome(c, r)
		switch r.code {
		case 0, 1, 3:
		default:
			c.fail("backup", "backup on a full disk: %s", r)
		}
		exp.adopt = adoptOne(c, files, rev, "backup on a full disk")
	case "prune":
		_, mayVanish, ok := w.prunePlan(c)
		if !ok {
			return
		}
		r := w.kk(2*time.Minute, "prune", "-o", "json", "--wait", "30s")
		w.noteOutcome(c, r)
		if r.code == 0 {
			var pj pruneJSON
			if err := json.Unmarshal([]byte(r.stdout), &pj); err != nil {
				c.fail("prune", "prune -o json: %v: %s", err, r)
			}
		}
		exp.mayVanish = mayVanish
	case "agent":
		revStart, revEnd, r, running := w.runAgent(c, time.Duration(1500+w.rng.IntN(2000))*time.Millisecond, func(p *proc) result {
			p.signal(syscall.SIGTERM)
			return p.wait()
		})
		if !running {
			c.fail("agent", "the agent exited on its own on a full disk: %s", r)
		} else if r.code != 0 {
			c.fail("agent", "the agent did not stop cleanly on SIGTERM on a full disk: %s", r)
		}
		if noSpace(r) {
			w.sum.add(c.f.kind, "runs that hit ENOSPC", 1)
		}
		exp.adopt = adoptAgent(c, files, revStart, revEnd)
	}
	// While the disk is still full: verify and every restore work.
	ar := w.audit(c, exp)
	if segments(w.store) != nil {
		w.checkPITR(c, ar)
	}
	free()
	freed = true
	w.nextBackup(c, false)
	w.trim(c)
}

func (w *world) noteOutcome(c *checker, r result) {
	switch {
	case r.code == 0:
		w.sum.add(c.f.kind, "runs that fit", 1)
	case noSpace(r):
		w.sum.add(c.f.kind, "runs that hit ENOSPC", 1)
	default:
		c.fail("enospc-error", "%s failed on a full disk without saying so: %s", cmdName(r.args[len(w.globals()):]), r)
	}
}
