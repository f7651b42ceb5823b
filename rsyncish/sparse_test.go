package rsyncish

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestSparseManifest: a 10 GiB sparse file with one block of data costs a
// few extents in the manifest (runs of zeros are runs), not one extent per
// block (8.7 MB per version before). It restores sparse and byte-exact, and
// data written into the hole later costs only the changed pages.
func TestSparseManifest(t *testing.T) {
	root, dir := t.TempDir(), t.TempDir()
	p := filepath.Join(root, "var/lib/etcd/member/wal/big.wal")
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	const size = 10 << 30
	data := randBytes(PageSize)
	if _, err := f.WriteAt(data, 5<<30); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	s := openTest(t, dir, 0)
	v1 := backup(t, s, root, "/var/lib/etcd")
	st, err := os.Stat(filepath.Join(dir, versionsDir, v1.ID+manifestExt))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("manifest of a 10 GiB sparse file: %d bytes", st.Size())
	if st.Size() > 4<<10 {
		t.Errorf("manifest is %d bytes for one block of data", st.Size())
	}
	out := t.TempDir()
	if err := s.RestoreFiles(context.Background(), v1.ID, out, nil); err != nil {
		t.Fatal(err)
	}
	rp := filepath.Join(out, "var/lib/etcd/member/wal/big.wal")
	rst, err := os.Stat(rp)
	if err != nil || rst.Size() != size {
		t.Fatalf("restored: %v %v", rst, err)
	}
	if blocks := rst.Sys().(*syscall.Stat_t).Blocks * 512; blocks > 1<<20 {
		t.Errorf("restored file occupies %d bytes: not sparse", blocks)
	}
	rf, _ := os.Open(rp)
	got := make([]byte, 3*PageSize)
	rf.ReadAt(got, 5<<30-PageSize)
	rf.Close()
	if !bytes.Equal(got[PageSize:2*PageSize], data) || !bytes.Equal(got[:PageSize], make([]byte, PageSize)) || !bytes.Equal(got[2*PageSize:], make([]byte, PageSize)) {
		t.Error("restored data block differs")
	}

	// One page written into the hole: the next version stores that page.
	f, _ = os.OpenFile(p, os.O_WRONLY, 0)
	page := randBytes(PageSize)
	if _, err := f.WriteAt(page, 7<<30+3*PageSize); err != nil {
		t.Fatal(err)
	}
	f.Close()
	v2 := backup(t, s, root, "/var/lib/etcd")
	if v2.Stats.BytesNew != PageSize {
		t.Errorf("a page written into a hole stored %d new bytes, want %d", v2.Stats.BytesNew, PageSize)
	}
	out2 := t.TempDir()
	if err := s.RestoreFiles(context.Background(), v2.ID, out2, nil); err != nil {
		t.Fatal(err)
	}
	rf, _ = os.Open(filepath.Join(out2, "var/lib/etcd/member/wal/big.wal"))
	defer rf.Close()
	got = make([]byte, PageSize)
	rf.ReadAt(got, 7<<30+3*PageSize)
	if !bytes.Equal(got, page) {
		t.Error("page written into the hole does not restore")
	}
	rf.ReadAt(got, 5<<30)
	if !bytes.Equal(got, data) {
		t.Error("first data block lost in the second version")
	}
	unlock := lockTest(t, s)
	defer unlock()
	if rep, err := s.Verify(context.Background(), true); err != nil || !rep.Clean() {
		t.Fatalf("verify: %v %+v", err, rep)
	}
}
