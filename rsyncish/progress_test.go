package rsyncish

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

type countProgress struct {
	mu           sync.Mutex
	total, added int64
}

func (c *countProgress) Bytes(n int64) { c.mu.Lock(); c.total += n; c.mu.Unlock() }
func (c *countProgress) Add(n int64)   { c.mu.Lock(); c.added += n; c.mu.Unlock() }
func (c *countProgress) reset()        { c.mu.Lock(); c.total, c.added = 0, 0; c.mu.Unlock() }

// SetProgress counts what a stream read, a restore of files and verify
// --read-data read out of the store, and nothing once it is removed.
func TestSetProgressCountsReads(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, 0)
	root := t.TempDir()
	big := randBytes(2<<20 + 5)
	writeFile(t, filepath.Join(root, "etc/big"), big, 0o600)
	writeFile(t, filepath.Join(root, "etc/small"), []byte("small"), 0o600)
	vi := backup(t, s, root, "/etc")

	var p countProgress
	s.SetProgress(&p)
	rc, size, err := s.OpenFile(vi.ID, "/etc/big")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, big) {
		t.Fatalf("read back %d bytes, %v", len(got), err)
	}
	if p.added != size {
		t.Fatalf("a read of %d bytes counted %d", size, p.added)
	}

	p.reset()
	if err := s.RestoreFiles(context.Background(), vi.ID, t.TempDir(), nil); err != nil {
		t.Fatal(err)
	}
	if want := int64(len(big) + len("small")); p.added != want {
		t.Fatalf("a restore of %d bytes of files counted %d", want, p.added)
	}

	p.reset()
	unlock := lockTest(t, s)
	rep, err := s.Verify(context.Background(), true)
	unlock()
	if err != nil || !rep.Clean() {
		t.Fatalf("verify: %+v %v", rep, err)
	}
	var packs int64
	ents, _ := os.ReadDir(filepath.Join(dir, packsDir))
	for _, e := range ents {
		fi, _ := e.Info()
		packs += fi.Size()
	}
	if p.total != packs || p.added != rep.BytesRead || p.added == 0 {
		t.Fatalf("verify --read-data: total %d (packs hold %d), counted %d (read %d)", p.total, packs, p.added, rep.BytesRead)
	}

	s.SetProgress(nil)
	p.reset()
	if err := s.RestoreFiles(context.Background(), vi.ID, t.TempDir(), nil); err != nil {
		t.Fatal(err)
	}
	if p.added != 0 || p.total != 0 {
		t.Fatalf("after SetProgress(nil): total %d, added %d", p.total, p.added)
	}
}
