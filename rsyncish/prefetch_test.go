package rsyncish

import (
	"bytes"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

func addStream(t *testing.T, s *Store, name string, data []byte) VersionInfo {
	t.Helper()
	return commitVersion(t, s, func(w *VersionWriter) error {
		_, err := w.AddStream(name, bytes.NewReader(data))
		return err
	})
}

// TestPrefetchReader reads a large stream whose extents mix everything a
// snapshot's have: fresh blocks, holes, blocks repeated back to back and
// far apart, and 4 KiB pages reused from an older version's blocks. The
// parallel reader must hand out exactly the stored bytes, under any read
// pattern, and stop cleanly when closed half-way.
func TestPrefetchReader(t *testing.T) {
	s := openTest(t, t.TempDir(), 0)
	const size = prefetchMinSize + 3<<20 + 123
	base := randBytes(size)
	clear(base[1<<20 : 2<<20]) // a hole
	block := base[3<<20 : 3<<20+64<<10]
	for i := range 5 { // the same block again, back to back and later
		copy(base[4<<20+i*64<<10:], block)
	}
	copy(base[9<<20:], block)
	addStream(t, s, "db", base)

	// Version two: a few pages rewritten, so most blocks are rebuilt from
	// pages of version one's blobs.
	next := bytes.Clone(base)
	rng := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		page := rng.IntN(size / 4096)
		copy(next[page*4096:], randBytes(4096))
	}
	vi := addStream(t, s, "db", next)

	open := func() io.ReadCloser {
		t.Helper()
		rc, n, err := s.OpenStream(vi.ID, "db")
		if err != nil || n != int64(len(next)) {
			t.Fatalf("open: %d %v", n, err)
		}
		if _, ok := rc.(*prefetchReader); !ok {
			t.Fatalf("a %d-byte stream is read by %T, want the prefetching reader", n, rc)
		}
		return rc
	}
	rc := open()
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, next) {
		t.Fatalf("read back differs (err %v, %d of %d bytes)", err, len(got), len(next))
	}
	rc = open()
	if err := iotest.TestReader(rc, next); err != nil {
		t.Errorf("read patterns: %v", err)
	}
	rc.Close()

	goroutines := runtime.NumGoroutine()
	for range 20 {
		rc := open()
		if _, err := io.ReadFull(rc, make([]byte, 3<<20)); err != nil {
			t.Fatal(err)
		}
		rc.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > goroutines && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > goroutines {
		t.Errorf("%d goroutines after closing readers half-way, %d before", n, goroutines)
	}
}

// TestPrefetchReaderBitRot: a damaged blob stops the read with an error
// naming it; every byte handed out before is right.
func TestPrefetchReaderBitRot(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, 0)
	data := randBytes(prefetchMinSize + 1<<20)
	vi := addStream(t, s, "db", data)
	packs, err := filepath.Glob(filepath.Join(dir, packsDir, "*", "*"))
	if err != nil || len(packs) == 0 {
		packs, _ = filepath.Glob(filepath.Join(dir, packsDir, "*"))
	}
	var flipped bool
	for _, p := range packs {
		fi, err := os.Stat(p)
		if err != nil || fi.IsDir() || fi.Size() < 8<<20 {
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)/2] ^= 0x40
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		flipped = true
		break
	}
	if !flipped {
		t.Fatalf("no pack of 8 MiB or more under %s: %v", dir, packs)
	}
	rc, _, err := s.OpenStream(vi.ID, "db")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var out bytes.Buffer
	_, err = io.CopyBuffer(&out, rc, make([]byte, 1<<20))
	if err == nil || !strings.Contains(err.Error(), "does not match its hash") {
		t.Fatalf("read of a stream with a flipped bit: %v", err)
	}
	if !bytes.Equal(out.Bytes(), data[:out.Len()]) {
		t.Fatal("bytes handed out before the damaged blob differ from the stored data")
	}
	if out.Len() == len(data) {
		t.Fatal("the whole stream was handed out despite the damage")
	}
}
