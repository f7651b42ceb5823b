package rsyncish

import (
	"bufio"
	"context"
	"crypto/sha256"
	"fmt"
	"io/fs"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var crashtool struct {
	once sync.Once
	dir  string
	bin  string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if crashtool.dir != "" {
		os.RemoveAll(crashtool.dir)
	}
	os.Exit(code)
}

// buildCrashtool compiles (once) the helper that runs backups and prunes in
// a process of their own, so they can be SIGKILLed and measured.
func buildCrashtool(t *testing.T) string {
	t.Helper()
	crashtool.once.Do(func() {
		crashtool.dir, crashtool.err = os.MkdirTemp("", "crashtool")
		if crashtool.err != nil {
			return
		}
		crashtool.bin = filepath.Join(crashtool.dir, "crashtool")
		out, err := exec.Command("go", "build", "-o", crashtool.bin, "./internal/crashtool").CombinedOutput()
		if err != nil {
			crashtool.err = fmt.Errorf("building crashtool: %v\n%s", err, out)
		}
	})
	if crashtool.err != nil {
		t.Fatal(crashtool.err)
	}
	return crashtool.bin
}

// TestPeakMemory8GiB stores an 8 GiB stream in a separate (non-race)
// process and requires its peak RSS to stay under 128 MiB. The stream
// repeats every MiB so the store stays small, but every block is still
// read, hashed and looked up, and the version's block list has 131,072
// entries.
func TestPeakMemory8GiB(t *testing.T) {
	if testing.Short() {
		t.Skip("reads 8 GiB; skipped with -short")
	}
	bin := buildCrashtool(t)
	out, err := exec.Command(bin, "mem", "-store", filepath.Join(t.TempDir(), "s"), "-size", strconv.FormatInt(8<<30, 10)).CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var size, newB, read, rss int64
	if _, err := fmt.Sscanf(string(out), "STREAM %d bytes, new %d, read %d; peak RSS %d KiB", &size, &newB, &read, &rss); err != nil {
		t.Fatalf("parsing %q: %v", out, err)
	}
	t.Logf("8 GiB stream: peak RSS %d MiB, %d new bytes", rss>>10, newB)
	if size != 8<<30 || read != 8<<30 {
		t.Fatalf("stored %d of %d bytes", size, int64(8<<30))
	}
	if rss >= 128<<10 {
		t.Errorf("peak RSS %d MiB, want < 128 MiB", rss>>10)
	}
}

// treeHashes records what a version of root must restore to.
func treeHashes(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel := strings.TrimPrefix(p, root)
		info, err := os.Lstat(p)
		if err != nil {
			return err
		}
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			out[rel] = "link:" + l
		case d.Type().IsRegular():
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			out[rel] = fmt.Sprintf("%x %v %d", sha256.Sum256(data), info.Mode(), info.ModTime().UnixNano())
		case d.IsDir():
			out[rel] = fmt.Sprintf("dir %v", info.Mode())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// mutate changes the tree a little: pages of the big file, a small file
// rewritten, one added, one removed.
func mutate(t *testing.T, root string, rng *mrand.Rand, i int) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(root, "data/db"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := f.Stat()
	for range 1 + rng.IntN(40) {
		off := rng.Int64N(st.Size()/PageSize) * PageSize
		if _, err := f.WriteAt(randBytes(PageSize), off); err != nil {
			t.Fatal(err)
		}
	}
	if rng.IntN(4) == 0 {
		if _, err := f.WriteAt(randBytes(rng.IntN(200<<10)), st.Size()); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	writeFile(t, filepath.Join(root, fmt.Sprintf("conf/f%02d", rng.IntN(20))), randBytes(rng.IntN(3000)), 0o640)
	writeFile(t, filepath.Join(root, fmt.Sprintf("new/n%03d", i)), randBytes(100+rng.IntN(70<<10)), 0o600)
	if i > 3 {
		os.Remove(filepath.Join(root, fmt.Sprintf("new/n%03d", i-3)))
	}
}

// TestCrashKill SIGKILLs backups and prunes at random moments, 60 times
// each, sometimes running both at once, then requires a clean
// verify --read-data and every surviving version to restore identically.
func TestCrashKill(t *testing.T) {
	bin := buildCrashtool(t)
	root, dir := t.TempDir(), filepath.Join(t.TempDir(), "store")
	writeFile(t, filepath.Join(root, "data/db"), randBytes(6<<20), 0o600)
	for i := range 20 {
		writeFile(t, filepath.Join(root, fmt.Sprintf("conf/f%02d", i)), randBytes(500+i*100), 0o644)
	}
	if err := os.Symlink("../data/db", filepath.Join(root, "conf/link")); err != nil {
		t.Fatal(err)
	}
	rng := mrand.New(mrand.NewPCG(uint64(time.Now().UnixNano()), 7))
	expect := map[string]map[string]string{} // version id -> tree
	run := func(killAfter time.Duration, args ...string) (committed bool, killed bool) {
		cmd := exec.Command(bin, args...)
		cmd.Stderr = nil
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var timer *time.Timer
		if killAfter >= 0 {
			timer = time.AfterFunc(killAfter, func() { _ = cmd.Process.Signal(syscall.SIGKILL) })
		}
		sc := bufio.NewScanner(out)
		state := treeHashes(t, filepath.Join(root))
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) == 2 && f[0] == "ID" {
				expect[f[1]] = state
			}
			if len(f) >= 1 && f[0] == "COMMITTED" {
				committed = true
			}
		}
		err = cmd.Wait()
		if timer != nil {
			timer.Stop()
		}
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			killed = true
		}
		return committed, killed
	}
	backupArgs := []string{"backup", "-store", dir, "-root", root, "-path", "/data", "-path", "/conf", "-path", "/new"}
	pruneArgs := []string{"prune", "-store", dir, "-keep-last", "4"}

	// Calibrate: how long does an undisturbed run take?
	start := time.Now()
	if ok, _ := run(-1, backupArgs...); !ok {
		t.Fatal("uninterrupted backup did not commit")
	}
	dur := max(time.Since(start), 20*time.Millisecond)
	kills := map[string]int{}
	checker := openTest(t, dir, 0)
	// Checked after every round, before a later backup can heal damage by
	// storing the same content-addressed blocks again.
	check := func(round int) {
		rep, err := checker.Verify(context.Background(), true)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		for _, p := range rep.Problems {
			t.Errorf("round %d: %s", round, p)
		}
		if !rep.Clean() {
			t.FailNow()
		}
	}
	for i := range 60 {
		if i > 0 {
			check(i)
		}
		mutate(t, root, rng, i)
		killAt := time.Duration(rng.Int64N(int64(dur) * 12 / 10))
		if i%5 == 4 {
			// Both at once: one of them meets the lock; both get killed.
			done := make(chan struct{})
			go func() { defer close(done); run(killAt, pruneArgs...) }()
			if _, k := run(killAt/2, backupArgs...); k {
				kills["backup"]++
			}
			<-done
			continue
		}
		if _, k := run(killAt, backupArgs...); k {
			kills["backup"]++
		}
		if _, k := run(time.Duration(rng.Int64N(int64(dur)/2+1)), pruneArgs...); k {
			kills["prune"]++
		}
	}
	t.Logf("killed %d backups and %d prunes mid-run (of 60 each); run time ~%v", kills["backup"], kills["prune"], dur)
	if kills["backup"] < 20 || kills["prune"] < 10 {
		t.Errorf("too few runs were actually killed mid-way (%v): the test proves little", kills)
	}
	// One clean backup (its Lock cleans the leftovers), then check all.
	if ok, _ := run(-1, backupArgs...); !ok {
		t.Fatal("backup after the crashes did not commit")
	}
	s := openTest(t, dir, 0)
	unlock := lockTest(t, s)
	rep, err := s.Verify(context.Background(), true)
	unlock()
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Clean() {
		for _, p := range rep.Problems {
			t.Error(p)
		}
	}
	if len(rep.Warnings) > 0 {
		t.Errorf("leftovers after a Lock: %v", rep.Warnings)
	}
	vs, err := s.Versions()
	if err != nil || len(vs) < 2 {
		t.Fatalf("versions: %d, %v", len(vs), err)
	}
	for _, v := range vs {
		want, ok := expect[v.ID]
		if !ok {
			t.Fatalf("version %s was never announced", v.ID)
		}
		out := t.TempDir()
		if err := s.RestoreFiles(context.Background(), v.ID, out, nil); err != nil {
			t.Fatal(err)
		}
		got := treeHashes(t, out)
		delete(got, "")
		for k, wv := range want {
			if k == "" {
				continue
			}
			if got[k] != wv {
				t.Errorf("version %s: %s restored as %q, want %q", v.ID, k, got[k], wv)
			}
		}
		if len(got) != len(want)-1 {
			t.Errorf("version %s: restored %d entries, want %d", v.ID, len(got), len(want)-1)
		}
	}
	t.Logf("%d surviving versions restore byte-identical", len(vs))
}
