package backend_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/kubekeep/kubekeep/rsyncish/backend"
	"github.com/kubekeep/kubekeep/rsyncish/backend/backendtest"
)

func TestLocalSuite(t *testing.T) {
	backendtest.Run(t, func(t *testing.T) backend.Backend {
		b, err := backend.OpenLocal(filepath.Join(t.TempDir(), "store"))
		if err != nil {
			t.Fatal(err)
		}
		return b
	})
}

// The store holds CA keys: every directory the backend makes is 0700 and
// every object 0600, whatever the umask; a temp file a crash left, and a
// file an operator dropped in, are never listed as objects.
func TestLocalModesAndStrays(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	b, err := backend.OpenLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	h := backend.Handle{Type: backend.JournalFile, Name: "etcd-deltas/1-2-3.seg"}
	if err := b.Save(ctx, h, backend.NewByteReader([]byte("seg"))); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{dir, filepath.Join(dir, "journals"), filepath.Join(dir, "journals", "etcd-deltas")} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: %v %v, want a 0700 directory", p, fi.Mode(), err)
		}
	}
	p := filepath.Join(dir, "journals", "etcd-deltas", "1-2-3.seg")
	if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("%s: %v %v, want a 0600 file", p, fi.Mode(), err)
	}
	for _, stray := range []string{".tmp-4711", "notes about this.txt"} {
		if err := os.WriteFile(filepath.Join(dir, "journals", "etcd-deltas", stray), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var names []string
	if err := b.List(ctx, backend.JournalFile, func(fi backend.FileInfo) error {
		names = append(names, fi.Name)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(names) != 1 || names[0] != h.Name {
		t.Errorf("list = %v, want only %s", names, h.Name)
	}
}
