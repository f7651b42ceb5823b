package rsyncish

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/kubekeep/kubekeep/rsyncish/format"
)

// readAtStream stores data as stream "s" (16 KiB blocks) and opens it for
// random access.
func readAtStream(t *testing.T, data []byte) (*Store, *StreamAt) {
	t.Helper()
	s := openTest(t, filepath.Join(t.TempDir(), "store"), 16<<10)
	vi := commitVersion(t, s, func(w *VersionWriter) error {
		_, err := w.AddStream("s", bytes.NewReader(data))
		return err
	})
	r, err := s.OpenStreamAt(vi.ID, "s")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return s, r
}

// TestStreamAtReadsWhatWasStored: random reads, across block and extent
// boundaries, through zero runs, at the end, return the stored bytes.
func TestStreamAtReadsWhatWasStored(t *testing.T) {
	data := randBytes(1 << 20)
	clear(data[200<<10 : 500<<10]) // a zero run: one extent, no blob
	_, r := readAtStream(t, data)
	if r.Size() != int64(len(data)) {
		t.Fatalf("size %d, want %d", r.Size(), len(data))
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 500 {
		off := rng.IntN(len(data))
		n := rng.IntN(70 << 10)
		buf := make([]byte, n)
		got, err := r.ReadAt(buf, int64(off))
		want := min(n, len(data)-off)
		if got != want || (err != nil && !(err == io.EOF && want < n)) {
			t.Fatalf("ReadAt(%d, %d): %d, %v; want %d", off, n, got, err, want)
		}
		if !bytes.Equal(buf[:got], data[off:off+want]) {
			t.Fatalf("ReadAt(%d, %d): wrong bytes", off, n)
		}
	}
	if n, err := r.ReadAt(make([]byte, 1), int64(len(data))); n != 0 || err != io.EOF {
		t.Errorf("read at the end: %d, %v", n, err)
	}
}

// TestStreamAtReadsOnlyTouchedBlobs: a small read of a 4 MiB stream reads
// the one blob under it from the packs, not the stream.
func TestStreamAtReadsOnlyTouchedBlobs(t *testing.T) {
	data := randBytes(4 << 20)
	_, r := readAtStream(t, data)
	buf := make([]byte, 100)
	if _, err := r.ReadAt(buf, 3<<20+5); err != nil {
		t.Fatal(err)
	}
	if _, err := r.ReadAt(buf, 3<<20+500); err != nil { // same blob: kept
		t.Fatal(err)
	}
	if got := r.BlobBytesRead(); got != 16<<10 {
		t.Errorf("two reads in one block read %d blob bytes, want one 16 KiB blob", got)
	}
}

// TestStreamAtRot: a rotten blob under a read is an error naming the
// stream, never wrong bytes; reads elsewhere still work.
func TestStreamAtRot(t *testing.T) {
	data := randBytes(256 << 10)
	s, r := readAtStream(t, data)
	packs, err := filepath.Glob(filepath.Join(s.dir, packsDir, "*"+packExt))
	if err != nil || len(packs) != 1 {
		t.Fatalf("packs %v %v", packs, err)
	}
	pack, err := os.ReadFile(packs[0])
	if err != nil {
		t.Fatal(err)
	}
	// The stream's blobs are stored in order: the first is at offset 0.
	pack[10] ^= 1
	if err := os.WriteFile(packs[0], pack, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = r.ReadAt(make([]byte, 10), 5)
	if err == nil || !strings.Contains(err.Error(), "does not match its hash") || !strings.Contains(err.Error(), `stream "s"`) {
		t.Errorf("read of a rotten blob: %v", err)
	}
	buf := make([]byte, 10)
	if _, err := r.ReadAt(buf, 100<<10); err != nil || !bytes.Equal(buf, data[100<<10:100<<10+10]) {
		t.Errorf("read of a good blob: %v", err)
	}
}

// TestStreamAtHoldsReadLock: a prune (exclusive read lock) waits while a
// StreamAt is open, as for OpenStream.
func TestStreamAtHoldsReadLock(t *testing.T) {
	s, r := readAtStream(t, randBytes(10))
	f, err := openLockFile(s.path(readLockFile), os.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := flockNB(f); err == nil {
		t.Fatal("exclusive lock taken while a StreamAt is open")
	}
	r.Close()
	if err := flockNB(f); err != nil {
		t.Fatalf("exclusive lock after Close: %v", err)
	}
	if _, err := s.OpenStreamAt("nope", "s"); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown version: %v", err)
	}
}

// flockNB tries the exclusive lock without waiting (and drops it again).
func flockNB(f *os.File) error {
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return err
	}
	return syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
}

// TestLazyManifestMatchesDecode: the lazy manifest finds every entry of a
// version as format.DecodeManifest decodes it (files, streams, names that
// need JSON escaping, an absent one).
func TestLazyManifestMatchesDecode(t *testing.T) {
	root := t.TempDir()
	sampleTree(t, root)
	writeFile(t, filepath.Join(root, "etc/kubernetes/we\"ird\\name<&>\u00e9"), randBytes(70<<10), 0o600)
	s := openTest(t, filepath.Join(t.TempDir(), "store"), 16<<10)
	vi := commitVersion(t, s, func(w *VersionWriter) error {
		if err := w.AddTree(root, []string{"/etc/kubernetes"}, nil); err != nil {
			return err
		}
		// 64, 65 and 66 extents: the lazy decoding of lengths takes
		// records three at a time, then the rest one by one.
		for name, size := range map[string]int{"etcd/snapshot.db": 1 << 20, "etcd/b": 1<<20 + 5000, "etcd/c": 1<<20 + 16<<10 + 7} {
			if _, err := w.AddStream(name, bytes.NewReader(randBytes(size))); err != nil {
				return err
			}
		}
		return nil
	})
	m, err := s.manifest(vi.ID)
	if err != nil {
		t.Fatal(err)
	}
	lm, err := s.lazyManifest(vi.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Entries) < 5 {
		t.Fatalf("only %d entries", len(m.Entries))
	}
	lazies := 0
	for _, want := range m.Entries {
		for _, lazy := range []bool{false, true} {
			got, err := lm.entry(want.Type, want.Path, lazy)
			if err != nil || got == nil {
				t.Fatalf("%s %q: %v %v", want.Type, want.Path, got, err)
			}
			if got.Size != want.Size || got.Mode != want.Mode || got.n() != len(want.Extents) {
				t.Fatalf("%q: %+v, want %+v", want.Path, got, want)
			}
			if got.b64 != nil {
				lazies++
			}
			var off int64
			starts := got.offsets()
			for i := range want.Extents {
				x, err := got.extent(i)
				if err != nil || x != want.Extents[i] {
					t.Fatalf("%q (lazy %v): extent %d differs: %v", want.Path, lazy, i, err)
				}
				if starts[i] != off {
					t.Fatalf("%q (lazy %v): extent %d starts at %d, want %d", want.Path, lazy, i, starts[i], off)
				}
				off += int64(want.Extents[i].Len)
			}
		}
	}
	if lazies < 3 {
		t.Fatalf("only %d lazy entries", lazies)
	}
	if e, err := lm.entry("stream", "nope", true); e != nil || err != nil {
		t.Errorf("absent stream: %v %v", e, err)
	}
}

// FuzzDecodeEntryLine: a manifest line (sealed, but anyone who can write
// the store can seal one) decodes or fails; extents never claim bytes the
// size does not have.
func FuzzDecodeEntryLine(f *testing.F) {
	f.Add([]byte(`{"p":"etcd/snapshot.db","t":"s","s":40,"x":"` + strings.Repeat("A", 52) + `KAAAAA=="}`))
	f.Add([]byte(`{"p":"/etc/a","t":"f","s":0}`))
	f.Add([]byte(`{"p":"/etc/a","t":"d","x":"","pb":"AA=="}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		e, err := decodeEntryLine(line, 64<<10, false)
		lazy, lerr := decodeEntryLine(bytes.Clone(line), 64<<10, true)
		if err != nil {
			// The lazy decode checks the characters of an extent's ID
			// when it is read: it may accept what the eager one refuses
			// (and base64 skips \r and \n, which the lazy decode never
			// does), but then an extent read fails.
			if lerr == nil && !bytes.ContainsAny(line, "\r\n") && lazy.n() > 0 {
				failed := false
				for i := range lazy.n() {
					if _, err := lazy.extent(i); err != nil {
						failed = true
					}
				}
				if !failed {
					t.Fatalf("lazy decode accepts what the eager one refuses (%v), and every extent reads", err)
				}
			}
			return
		}
		if lerr != nil && !bytes.ContainsAny(line, "\r\n") {
			t.Fatalf("eager decode accepts, lazy refuses: %v", lerr)
		}
		if lerr != nil {
			return
		}
		switch e.Type {
		case format.TypeFile, format.TypeStream, format.TypeDir, format.TypeSymlink:
		default:
			t.Fatalf("entry of unknown type %q accepted", e.Type)
		}
		if lazy.n() != e.n() {
			t.Fatalf("lazy %d extents, eager %d", lazy.n(), e.n())
		}
		var total int64
		for i := range e.n() {
			x := e.mustExtent(i)
			if y, err := lazy.extent(i); err != nil || y != x || lazy.starts[i] != total {
				t.Fatalf("extent %d: lazy %+v at %d (%v), eager %+v at %d", i, y, lazy.starts[i], err, x, total)
			}
			total += int64(x.Len)
		}
		if (e.Type == format.TypeFile || e.Type == format.TypeStream) && total != e.Size {
			t.Fatalf("extents cover %d bytes, size %d", total, e.Size)
		}
	})
}

// TestStreamAtDamagedPackIndex: a pack index whose entry points at the
// wrong bytes makes a read fail (the blob's hash decides), never return
// them; another copy of the blob, named by another index, is used.
func TestStreamAtDamagedPackIndex(t *testing.T) {
	data := randBytes(64 << 10)
	s, r := readAtStream(t, data)
	// The pack indexes themselves, without the multi-pack index (which
	// the commit built from the good index: TestMidx*).
	if err := os.Remove(filepath.Join(s.dir, midxFile)); err != nil {
		t.Fatal(err)
	}
	idxs, err := filepath.Glob(filepath.Join(s.dir, indexDir, "*"+indexExt))
	if err != nil || len(idxs) != 1 {
		t.Fatalf("indexes %v %v", idxs, err)
	}
	raw, err := os.ReadFile(idxs[0])
	if err != nil {
		t.Fatal(err)
	}
	bad := bytes.Clone(raw)
	bad[packIndexHead+32] ^= 0x10 // the first entry's offset
	if err := os.WriteFile(idxs[0], bad, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := r.ReadAt(make([]byte, 10), 0); err == nil {
		t.Fatal("read through a damaged index entry succeeded")
	}
	r2, err := s.OpenStreamAt(r.id, "s")
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	// A second copy of the pack and its intact index, listed after the
	// damaged one: the failed copy is passed over.
	packs, _ := filepath.Glob(filepath.Join(s.dir, packsDir, "*"+packExt))
	pack, _ := os.ReadFile(packs[0])
	if err := os.WriteFile(filepath.Join(s.dir, packsDir, strings.Repeat("f", 32)+packExt), pack, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.dir, indexDir, strings.Repeat("f", 32)+indexExt), raw, 0o600); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 10)
	if _, err := r2.ReadAt(buf, 0); err != nil || !bytes.Equal(buf, data[:10]) {
		t.Errorf("read with a good second copy: %v", err)
	}
}

// A manifest changed anywhere (the header, the extents of the stream
// read, its first byte) gives no stream, whatever would decode, and the
// error is the checksum's (lazyManifest checks the trailer first).
func TestStreamAtManifestChangedGivesNoStream(t *testing.T) {
	data := randBytes(256 << 10)
	s, r := readAtStream(t, data)
	r.Close()
	path := filepath.Join(s.dir, versionsDir, r.id+manifestExt)
	clean, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	x := bytes.Index(clean, []byte(`"x":"`))
	if x < 0 {
		t.Fatal("no extents in the manifest")
	}
	for name, at := range map[string]int{"header": bytes.IndexByte(clean, '\n') + 3, "extents": x + 12, "first byte": 0} {
		b := bytes.Clone(clean)
		// Another valid base64 letter (or header letter): still decodes.
		if b[at] == 'A' {
			b[at] = 'B'
		} else {
			b[at] = 'A'
		}
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		v, err := s.OpenVersion(r.id)
		if err == nil {
			var st *StreamAt
			st, err = v.Stream("s")
			if err == nil {
				st.Close()
			}
			v.Close()
		}
		if err == nil || (!errors.Is(err, format.ErrChecksum) && name != "first byte") {
			t.Errorf("a manifest changed in its %s: %v, want a checksum error", name, err)
		}
	}
	if err := os.WriteFile(path, clean, 0o600); err != nil {
		t.Fatal(err)
	}
	got, _, err := readAll(t, s, r.id)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the manifest put back: %d bytes, %v", len(got), err)
	}
}
