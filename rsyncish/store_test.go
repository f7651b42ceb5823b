package rsyncish

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func openTest(t testing.TB, dir string, bs int) *Store {
	t.Helper()
	s, err := Open(dir, Options{BlockSize: bs, AllowSameFilesystem: true, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func lockTest(t testing.TB, s *Store) func() {
	t.Helper()
	unlock, err := s.Lock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return func() {
		if err := unlock(); err != nil {
			t.Error(err)
		}
	}
}

// backup makes one version of root's hostPaths.
func backup(t testing.TB, s *Store, root string, paths ...string) VersionInfo {
	t.Helper()
	return commitVersion(t, s, func(w *VersionWriter) error { return w.AddTree(root, paths, nil) })
}

// commitVersion makes one version holding what add puts in it.
func commitVersion(t testing.TB, s *Store, add func(*VersionWriter) error) VersionInfo {
	t.Helper()
	unlock := lockTest(t, s)
	defer unlock()
	w, err := s.NewVersion(context.Background(), WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := add(w); err != nil {
		w.Abort()
		t.Fatal(err)
	}
	vi, err := w.Commit()
	if err != nil {
		t.Fatal(err)
	}
	return vi
}

func writeFile(t testing.TB, path string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// sampleTree builds a small kubeadm-ish tree under root.
func sampleTree(t testing.TB, root string) {
	writeFile(t, filepath.Join(root, "etc/kubernetes/pki/ca.key"), randBytes(1675), 0o600)
	writeFile(t, filepath.Join(root, "etc/kubernetes/pki/ca.crt"), randBytes(1100), 0o644)
	writeFile(t, filepath.Join(root, "etc/kubernetes/admin.conf"), []byte("apiVersion: v1\n"), 0o600)
	writeFile(t, filepath.Join(root, "etc/kubernetes/empty"), nil, 0o640)
	writeFile(t, filepath.Join(root, "etc/kubernetes/setuid"), []byte("x"), 0o4755)
	// A file with a hole and data on both sides, bigger than a block.
	big := make([]byte, 300<<10)
	copy(big, randBytes(5000))
	copy(big[200<<10:], randBytes(70<<10))
	writeFile(t, filepath.Join(root, "var/lib/etcd/member/wal/0.wal"), big, 0o600)
	if err := os.Symlink("pki/ca.crt", filepath.Join(root, "etc/kubernetes/ca-link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/passwd", filepath.Join(root, "etc/kubernetes/abs-link")); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "etc/kubernetes/manifests"), 0o700); err != nil {
		t.Fatal(err)
	}
	old := time.Date(2020, 1, 2, 3, 4, 5, 123456789, time.UTC)
	if err := os.Chtimes(filepath.Join(root, "etc/kubernetes/pki/ca.key"), old, old); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(filepath.Join(root, "etc/kubernetes/manifests"), old, old); err != nil {
		t.Fatal(err)
	}
}

// sameTree compares every entry below rel of two roots: type, mode, owner,
// mtime (not for symlinks), content and link target.
func sameTree(t testing.TB, a, b, rel string) {
	t.Helper()
	n := 0
	err := filepath.WalkDir(filepath.Join(a, rel), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		n++
		r := strings.TrimPrefix(p, a)
		q := filepath.Join(b, r)
		ia, err := os.Lstat(p)
		if err != nil {
			return err
		}
		ib, err := os.Lstat(q)
		if err != nil {
			t.Errorf("%s: missing in restore: %v", r, err)
			return nil
		}
		if ia.Mode() != ib.Mode() {
			t.Errorf("%s: mode %v, restored %v", r, ia.Mode(), ib.Mode())
		}
		sa, sb := ia.Sys().(*syscall.Stat_t), ib.Sys().(*syscall.Stat_t)
		if sa.Uid != sb.Uid || sa.Gid != sb.Gid {
			t.Errorf("%s: owner %d:%d, restored %d:%d", r, sa.Uid, sa.Gid, sb.Uid, sb.Gid)
		}
		switch {
		case ia.Mode()&fs.ModeSymlink != 0:
			la, _ := os.Readlink(p)
			lb, _ := os.Readlink(q)
			if la != lb {
				t.Errorf("%s: link %q, restored %q", r, la, lb)
			}
		case ia.Mode().IsRegular():
			da, _ := os.ReadFile(p)
			db, _ := os.ReadFile(q)
			if !bytes.Equal(da, db) {
				t.Errorf("%s: content differs (%d vs %d bytes)", r, len(da), len(db))
			}
			fallthrough
		default:
			if !ia.ModTime().Equal(ib.ModTime()) {
				t.Errorf("%s: mtime %v, restored %v", r, ia.ModTime(), ib.ModTime())
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatalf("compared only %d entries under %s", n, rel)
	}
}

func TestRoundTrip(t *testing.T) {
	for _, bs := range []int{4 << 10, 64 << 10} {
		t.Run(human(int64(bs)), func(t *testing.T) {
			root, dir, out := t.TempDir(), t.TempDir(), t.TempDir()
			sampleTree(t, root)
			s := openTest(t, dir, bs)
			vi := backup(t, s, root, "/etc/kubernetes", "/var/lib/etcd", "/does/not/exist")
			if vi.Files != 6 || vi.Symlinks != 2 || len(vi.Skipped) != 1 {
				t.Errorf("files %d symlinks %d skipped %v", vi.Files, vi.Symlinks, vi.Skipped)
			}
			if err := s.RestoreFiles(context.Background(), vi.ID, out, nil); err != nil {
				t.Fatal(err)
			}
			sameTree(t, root, out, "etc/kubernetes")
			sameTree(t, root, out, "var/lib/etcd")

			// A second version with nothing changed reads nothing.
			vi2 := backup(t, s, root, "/etc/kubernetes", "/var/lib/etcd")
			if vi2.Stats.BytesRead != 0 || vi2.Stats.BytesNew != 0 || vi2.Stats.FilesReused != 6 {
				t.Errorf("unchanged tree: %+v", vi2.Stats)
			}
			rc, size, err := s.OpenFile(vi2.ID, "/etc/kubernetes/pki/ca.key")
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(rc)
			rc.Close()
			want, _ := os.ReadFile(filepath.Join(root, "etc/kubernetes/pki/ca.key"))
			if size != int64(len(want)) || !bytes.Equal(got, want) {
				t.Error("OpenFile content differs")
			}
			rep, err := s.Verify(context.Background(), true)
			if err != nil {
				t.Fatal(err)
			}
			if !rep.Clean() || rep.Versions != 2 {
				t.Fatalf("verify: %+v", rep)
			}
		})
	}
}

func TestStreamAndMeta(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, 0)
	data := randBytes(3<<20 + 77)
	unlock := lockTest(t, s)
	w, err := s.NewVersion(context.Background(), WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	si, err := w.AddStream("etcd.db", bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if si.Size != int64(len(data)) || si.BytesNew != int64(len(data)) {
		t.Errorf("stream info %+v", si)
	}
	if err := w.SetMeta("etcd", map[string]any{"revision": 42}); err != nil {
		t.Fatal(err)
	}
	vi, err := w.Commit()
	if err != nil {
		t.Fatal(err)
	}
	unlock()
	vs, err := s.Versions()
	if err != nil || len(vs) != 1 || string(vs[0].Meta["etcd"]) != `{"revision":42}` || vs[0].Size != int64(len(data)) {
		t.Fatalf("versions %+v %v", vs, err)
	}
	if id, err := s.Resolve("latest"); err != nil || id != vi.ID {
		t.Fatalf("resolve: %s %v", id, err)
	}
	rc, n, err := s.OpenStream(vi.ID, "etcd.db")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || n != int64(len(data)) || !bytes.Equal(got, data) {
		t.Fatalf("stream differs: %v", err)
	}
	if _, _, err := s.OpenStream(vi.ID, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing stream: %v", err)
	}
	if err := s.MarkVerified(vi.ID, Verification{Method: "test"}); err != nil {
		t.Fatal(err)
	}
	if v, _ := s.Version(vi.ID); !v.Verified {
		t.Error("not verified after MarkVerified")
	}
}

// TestDedupPages is the store's reason to exist: 1% of the 4 KiB pages of
// a 64 MiB file rewritten at random must cost about the changed bytes, at
// the default 64 KiB block size.
func TestDedupPages(t *testing.T) {
	root, dir := t.TempDir(), t.TempDir()
	const size = 64 << 20
	data := randBytes(size)
	path := filepath.Join(root, "db")
	writeFile(t, path, data, 0o600)
	s := openTest(t, dir, 0)
	v1 := backup(t, s, root, "/db")
	if v1.Stats.BytesNew != size {
		t.Fatalf("first version stored %d new bytes, want %d", v1.Stats.BytesNew, size)
	}
	used1, _, _ := s.Usage()
	pages := size / PageSize
	changed := map[int]bool{}
	rng := mrand.New(mrand.NewPCG(1, 2))
	for len(changed) < pages/100 {
		changed[rng.IntN(pages)] = true
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	for p := range changed {
		page := randBytes(PageSize)
		copy(data[p*PageSize:], page)
		if _, err := f.WriteAt(page, int64(p*PageSize)); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	v2 := backup(t, s, root, "/db")
	used2, _, _ := s.Usage()
	changedBytes := int64(len(changed) * PageSize)
	growth := used2 - used1
	t.Logf("changed %d bytes; new %d, written %d, store growth %d", changedBytes, v2.Stats.BytesNew, v2.Stats.BytesWritten, growth)
	if v2.Stats.BytesNew != changedBytes {
		t.Errorf("new bytes %d, want exactly the changed %d", v2.Stats.BytesNew, changedBytes)
	}
	if growth > changedBytes*13/10 {
		t.Errorf("store grew by %d bytes for %d changed", growth, changedBytes)
	}
	rc, _, err := s.OpenFile(v2.ID, "/db")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if !bytes.Equal(got, data) {
		t.Fatal("second version does not read back byte-identical")
	}
	rc, _, _ = s.OpenFile(v1.ID, "/db")
	got1, _ := io.ReadAll(rc)
	rc.Close()
	if bytes.Equal(got1, data) || len(got1) != size {
		t.Fatal("first version changed")
	}
}
