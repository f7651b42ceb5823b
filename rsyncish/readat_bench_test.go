package rsyncish

import (
	"bytes"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

var bigStream struct {
	once sync.Once
	dir  string
	id   string
}

// BenchmarkOpenBigStream opens a version's stream of 2^17 extents (what
// an 8.4 GiB etcd snapshot in 64 KiB blocks lists; here 4 KiB blocks, 512 MiB)
// and reads 4 KiB out of it: the manifest's cost for one `get`, without
// the process around it (KUBEKEEP_BENCH_DIR keeps the store between runs).
func BenchmarkOpenBigStream(b *testing.B) {
	bigStream.once.Do(func() {
		dir := os.Getenv("KUBEKEEP_BENCH_DIR")
		if dir == "" {
			dir = b.TempDir()
		}
		bigStream.dir = filepath.Join(dir, "bigstream")
		s, err := Open(bigStream.dir, Options{BlockSize: 4096, AllowSameFilesystem: true, Logger: testLogger(b)})
		if err != nil {
			b.Fatal(err)
		}
		if vs, _ := s.Versions(); len(vs) > 0 {
			bigStream.id = vs[len(vs)-1].ID
			return
		}
		rng := rand.New(rand.NewPCG(1, 2))
		data := make([]byte, (1<<17)*4096)
		for i := 0; i < len(data); i += 8 {
			v := rng.Uint64()
			for k := range 8 {
				data[i+k] = byte(v >> (8 * k))
			}
		}
		vi := commitVersion(b, s, func(w *VersionWriter) error {
			_, err := w.AddStream("etcd/snapshot.db", bytes.NewReader(data))
			return err
		})
		bigStream.id = vi.ID
	})
	s, err := Open(bigStream.dir, Options{AllowSameFilesystem: true, NoCreate: true, Logger: testLogger(b)})
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 4096)
	b.ResetTimer()
	for i := range b.N {
		v, err := s.OpenVersion(bigStream.id)
		if err != nil {
			b.Fatal(err)
		}
		r, err := v.Stream("etcd/snapshot.db")
		if err != nil {
			b.Fatal(err)
		}
		if _, err := r.ReadAt(buf, int64(i%(1<<17))*4096); err != nil && err != io.EOF {
			b.Fatal(err)
		}
		r.Close()
		v.Close()
	}
}
