package rsyncish

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// loopFS mounts a fresh ext4 image of size bytes and returns its mountpoint;
// it is a real second filesystem, unmounted at cleanup.
func loopFS(t *testing.T, size int64) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to loop-mount an ext4 image (CI runs as root); skipping the real-filesystem test")
	}
	for _, tool := range []string{"mkfs.ext4", "mount", "umount"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed: %v", tool, err)
		}
	}
	base := t.TempDir()
	img, mnt := filepath.Join(base, "disk.img"), filepath.Join(base, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-m", "0", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v %s", err, out)
	}
	if out, err := exec.Command("mount", "-o", "loop", img, mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot loop-mount here (%v: %s); skipping the real-filesystem test", err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", mnt, err, out)
		}
	})
	return mnt
}

// fill takes all but leave bytes of the filesystem at dir.
func fill(t *testing.T, dir string, leave int64) string {
	t.Helper()
	free, err := freeBytes(dir)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "filler")
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	// ext4 needs some of the "free" space for the filler's own extent
	// tree: back off until the allocation fits.
	for n := free - leave; n > 0; n -= 256 << 10 {
		err := syscall.Fallocate(int(f.Fd()), 0, st.Size(), n)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.ENOSPC) {
			t.Errorf("fallocate: %v", err)
			break
		}
	}
	return p
}

// fillingReader fills the disk once it has handed out half its data, like
// another process eating the second disk in the middle of a backup.
type fillingReader struct {
	r      io.Reader
	n      int
	at     int
	filled bool
	fillFn func()
}

func (f *fillingReader) Read(p []byte) (int, error) {
	if !f.filled && f.n >= f.at {
		f.filled = true
		f.fillFn()
	}
	n, err := f.r.Read(p)
	f.n += n
	return n, err
}

func TestENOSPC(t *testing.T) {
	mnt := loopFS(t, 48<<20)
	root := t.TempDir() // on another filesystem: the second-disk guard must pass
	sampleTree(t, root)
	dir := filepath.Join(mnt, "kubekeep")
	s, err := Open(dir, Options{Mountpoint: mnt, Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("open on a mounted second disk: %v", err)
	}
	v1 := backup(t, s, root, "/etc/kubernetes", "/var/lib/etcd")

	// 1. Early refusal: a new file bigger than what is free.
	filler := fill(t, mnt, 6<<20)
	writeFile(t, filepath.Join(root, "big"), randBytes(10<<20), 0o600)
	unlock := lockTest(t, s)
	w, err := s.NewVersion(context.Background(), WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	err = w.AddTree(root, []string{"/etc/kubernetes", "/big"}, nil)
	w.Abort()
	if !errors.Is(err, ErrNoSpace) || !strings.Contains(err.Error(), "free") {
		t.Fatalf("backup of a too-big new file: %v, want a clear ErrNoSpace", err)
	}
	t.Logf("early refusal: %v", err)

	// 2. Real ENOSPC: the disk fills up while a stream is being stored,
	// inside the first pack and after a first pack of 16 MiB was
	// published. The failed backup removes every pack it wrote: the space
	// is back at once, not at the next prune.
	os.Remove(filler)
	packsBefore, _ := filepath.Glob(filepath.Join(dir, packsDir, "*"))
	for _, at := range []int{12 << 20, 30 << 20} {
		w, err = s.NewVersion(context.Background(), WriteOptions{})
		if err != nil {
			t.Fatal(err)
		}
		fillFn := func() { fill(t, mnt, 0) }
		if at > packTarget {
			fillFn = func() {
				// Wait for the first pack's index: the reader runs
				// ahead of the packs.
				for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
					if idx, _ := filepath.Glob(filepath.Join(dir, indexDir, "*"+indexExt)); len(idx) > len(packsBefore) {
						break
					}
				}
				fill(t, mnt, 0)
			}
		}
		fr := &fillingReader{r: bytes.NewReader(randBytes(32 << 20)), at: at, fillFn: fillFn}
		_, err = w.AddStream("etcd.db", fr)
		if err == nil {
			_, err = w.Commit()
		} else {
			w.Abort()
		}
		if err == nil {
			t.Fatal("backup onto a full disk succeeded")
		}
		if !errors.Is(err, syscall.ENOSPC) && !errors.Is(err, ErrNoSpace) {
			t.Fatalf("backup onto a full disk: %v, want ENOSPC or ErrNoSpace", err)
		}
		t.Logf("disk filled mid-backup after %d MiB: %v", at>>20, err)
		packsAfter, _ := filepath.Glob(filepath.Join(dir, packsDir, "*"))
		idx, _ := filepath.Glob(filepath.Join(dir, indexDir, "*"))
		if len(packsAfter) != len(packsBefore) || len(idx) != len(packsBefore) {
			t.Errorf("the failed backup left its packs behind: %d packs and %d indexes, %d before", len(packsAfter), len(idx), len(packsBefore))
		}
		os.Remove(filepath.Join(mnt, "filler"))
	}
	unlock()
	if vs, _ := s.Versions(); len(vs) != 1 || vs[0].ID != v1.ID {
		t.Fatalf("versions after the failed backup: %+v", vs)
	}
	rep, err := s.Verify(context.Background(), true)
	if err != nil || !rep.Clean() {
		t.Fatalf("earlier version damaged by ENOSPC: %v %+v", err, rep.Problems)
	}

	// 3. Space freed: the next backup works and cleans the leftovers.
	os.Remove(filepath.Join(mnt, "filler"))
	v2 := backup(t, s, root, "/etc/kubernetes", "/var/lib/etcd", "/big")
	rep, err = s.Verify(context.Background(), true)
	if err != nil || !rep.Clean() || len(rep.Warnings) != 0 || rep.Versions != 2 {
		t.Fatalf("after freeing space: %v %+v", err, rep)
	}
	out := t.TempDir()
	if err := s.RestoreFiles(context.Background(), v2.ID, out, nil); err != nil {
		t.Fatal(err)
	}
	sameTree(t, root, out, "etc/kubernetes")
	sameTree(t, root, out, "big")

	// The store on the second disk must refuse a tree on that same disk.
	writeFile(t, filepath.Join(mnt, "src/a"), []byte("a"), 0o600)
	unlock = lockTest(t, s)
	defer unlock()
	w, err = s.NewVersion(context.Background(), WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	if err := w.AddTree(mnt, []string{"/src"}, nil); !errors.Is(err, ErrSameFS) {
		t.Errorf("tree on the store's disk: %v, want ErrSameFS", err)
	}
}

// TestFreshExt4AsStore: a freshly made ext4 filesystem mounted as the
// store path holds lost+found and nothing else; that is an empty
// directory, not another tool's data.
func TestFreshExt4AsStore(t *testing.T) {
	mnt := loopFS(t, 16<<20)
	if _, err := os.Stat(filepath.Join(mnt, "lost+found")); err != nil {
		t.Fatalf("mkfs.ext4 made no lost+found: %v", err)
	}
	root := t.TempDir()
	sampleTree(t, root)
	s, err := Open(mnt, Options{Mountpoint: mnt, Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("a fresh ext4 as store.path: %v", err)
	}
	vi := backup(t, s, root, "/etc/kubernetes")
	unlock := lockTest(t, s)
	defer unlock()
	if rep, err := s.Verify(context.Background(), true); err != nil || !rep.Clean() || len(rep.Warnings) != 0 || rep.Versions != 1 {
		t.Fatalf("verify: %v %+v", err, rep)
	}
	if _, err := os.Stat(filepath.Join(mnt, "lost+found")); err != nil {
		t.Errorf("lost+found gone: %v", err)
	}
	// Anything else still makes it someone else's directory.
	other := loopFS(t, 16<<20)
	writeFile(t, filepath.Join(other, "data.tar"), []byte("x"), 0o600)
	if _, err := Open(other, Options{Mountpoint: other, Logger: testLogger(t)}); err == nil {
		t.Error("a store was created beside another tool's file")
	}
	_ = vi
}
