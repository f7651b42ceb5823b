package rsyncish

import (
	"bytes"
	"encoding/base64"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkOpenBigStream opens a version's stream of 2^17 extents (what
// an 8.4 GiB etcd snapshot in 64 KiB blocks lists; here 4 KiB blocks, 512 MiB)
// and reads 4 KiB out of it: the manifest's cost for one `get`, without
// the process around it (KUBEKEEP_BENCH_DIR keeps the store between runs).
// The store is made once, by the parent benchmark (a sub-benchmark runs
// several times, and its temporary directory goes after each).
func BenchmarkOpenBigStream(b *testing.B) {
	dir := os.Getenv("KUBEKEEP_BENCH_DIR")
	if dir == "" {
		dir = b.TempDir()
	}
	dir = filepath.Join(dir, "bigstream")
	s, err := Open(dir, Options{BlockSize: 4096, AllowSameFilesystem: true, Logger: testLogger(b)})
	if err != nil {
		b.Fatal(err)
	}
	var id string
	if vs, _ := s.Versions(); len(vs) > 0 {
		id = vs[len(vs)-1].ID
	} else {
		rng := rand.New(rand.NewPCG(1, 2))
		data := make([]byte, (1<<17)*4096)
		for i := 0; i < len(data); i += 8 {
			v := rng.Uint64()
			for k := range 8 {
				data[i+k] = byte(v >> (8 * k))
			}
		}
		id = commitVersion(b, s, func(w *VersionWriter) error {
			_, err := w.AddStream("etcd/snapshot.db", bytes.NewReader(data))
			return err
		}).ID
	}
	b.Run("open+read", func(b *testing.B) {
		s, err := Open(dir, Options{AllowSameFilesystem: true, NoCreate: true, Logger: testLogger(b)})
		if err != nil {
			b.Fatal(err)
		}
		buf := make([]byte, 4096)
		for i := range b.N {
			v, err := s.OpenVersion(id)
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
	})
}

// BenchmarkExtentLengths: what opening an 8 GiB etcd snapshot's stream
// decodes of its 131,072 extents (7 MB of base64): "lengths" the lazy
// way (readat_extents.go), "all" every byte, as before.
func BenchmarkExtentLengths(b *testing.B) {
	const n = 1 << 17
	raw := make([]byte, n*extentWire)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range raw {
		raw[i] = byte(rng.Uint32())
	}
	text := base64.StdEncoding.AppendEncode(nil, raw)
	b.Run("lengths", func(b *testing.B) {
		lens := make([]int64, n)
		for b.Loop() {
			if err := b64Lens(text, lens); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("all", func(b *testing.B) {
		for b.Loop() {
			if _, err := base64.StdEncoding.AppendDecode(nil, text); err != nil {
				b.Fatal(err)
			}
		}
	})
}
