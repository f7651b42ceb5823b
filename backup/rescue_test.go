package backup

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kubekeep/kubekeep/rsyncish"
)

// The rescue kit is what an operator reaches for on the worst day: a
// flipped byte in the store's copy of the kubekeep binary (same size, same
// mtime: bit rot) is found by verify, and the next backup writes the copy
// again. Before, the size-and-mtime shortcut kept the rotten copy forever.
func TestRescueBinaryRewrittenWhenDamaged(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	s, err := rsyncish.Open(dir, rsyncish.Options{AllowSameFilesystem: true})
	if err != nil {
		t.Fatal(err)
	}
	unlock, err := s.Lock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	if err := writeRescueKit(s); err != nil {
		t.Fatal(err)
	}
	exe, _ := os.Executable()
	want, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, RescueBinary)
	fi, _ := os.Stat(p)
	data, _ := os.ReadFile(p)
	data[len(data)/2] ^= 0x01
	if err := os.WriteFile(p, data, 0o700); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(p, time.Now(), fi.ModTime())
	rep, err := s.Verify(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Clean() {
		t.Fatal("verify did not notice the rotten rescue binary")
	}
	if err := writeRescueKit(s); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(p); !bytes.Equal(got, want) {
		t.Fatal("the next backup kept the rotten copy of the kubekeep binary")
	}
	if rep, err := s.Verify(context.Background(), false); err != nil || !rep.Clean() {
		t.Fatalf("verify after the rewrite: %v %+v", err, rep)
	}
}
