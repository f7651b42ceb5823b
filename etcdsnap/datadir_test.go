package etcdsnap

import (
	"os"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// FuzzCheckShape: no bytes make the meta-page check panic, and a real
// bbolt db passes it whole and fails it cut short.
func FuzzCheckShape(f *testing.F) {
	dir := f.TempDir()
	path := filepath.Join(dir, "seed.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		f.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket([]byte("key"))
		if err != nil {
			return err
		}
		for i := range 200 {
			if err := b.Put([]byte{byte(i)}, make([]byte, 1000)); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		f.Fatal(err)
	}
	db.Close()
	seed, err := os.ReadFile(path)
	if err != nil {
		f.Fatal(err)
	}
	if err := checkShape(path); err != nil {
		f.Fatalf("a whole bbolt db fails the check: %v", err)
	}
	if err := os.WriteFile(path, seed[:len(seed)/2], 0o600); err != nil {
		f.Fatal(err)
	}
	if err := checkShape(path); err == nil {
		f.Fatal("a bbolt db cut in half passes the check")
	}
	f.Add(seed)
	f.Add(seed[:8192])
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(t.TempDir(), "db")
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		_ = checkShape(p)
	})
}
