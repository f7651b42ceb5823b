package rsyncish

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"runtime/debug"
	"slices"
	"strings"

	"github.com/kubekeep/kubekeep/internal/parallel"
	"github.com/kubekeep/kubekeep/rsyncish/format"
)

// readerIndex is the pack index as a random-access reader needs it: the
// raw entries of every pack index, searched for the few blobs a read
// touches, without the map of every blob the writer's index builds (16k
// entries per GiB stored; building it cost most of a `get`), without the
// stat of every pack and the damage record, and without checking each
// index's checksum: all three serve a writer, which must not refer to a
// copy it cannot vouch for. A reader tries every copy an index names and
// the blob's own hash decides, so a damaged index entry can cost it a
// failed read, never wrong bytes (verify reports the index).
type readerIndex struct {
	packs []string
	raw   [][]byte // each pack index's entries, 40 bytes each (nil: the midx covers it)
	files map[int]*os.File
	// midx, when the store has a usable one, covers the packs whose raw
	// is nil (midx.go); midxPack maps its pack numbers to packs (-1: that
	// pack's index is gone). fallback is every pack index, read when the
	// midx and the rest could not produce a blob.
	midx     *midx
	midxPack []int
	fallback *readerIndex
	// indexesRead counts the pack index files read (tests).
	indexesRead int
}

// Pack index layout (format.EncodeIndex): magic, count (u32 LE), entries
// of ID, offset (u32 LE), length (u32 LE), blake3-256 of what precedes.
const (
	packIndexMagic = "KKIDX001"
	packIndexHead  = len(packIndexMagic) + 4
	packIndexEntry = 32 + 4 + 4
)

func (s *Store) loadReaderIndex() (*readerIndex, error) { return s.loadReaderIndexWith(true) }

func (s *Store) loadReaderIndexWith(useMidx bool) (*readerIndex, error) {
	ents, err := readStoreDir(s.path(indexDir))
	if err != nil {
		return nil, fmt.Errorf("reading the pack indexes: %w", err)
	}
	x := &readerIndex{files: map[int]*os.File{}}
	var names []string
	for _, e := range ents {
		if id, ok := strings.CutSuffix(e.Name(), indexExt); ok {
			names = append(names, id)
		}
	}
	if m := (*midx)(nil); useMidx {
		if m = s.openMidx(); m != nil {
			listed := make(map[string]bool, len(names))
			for _, n := range names {
				listed[n] = true
			}
			covered := make(map[string]bool, len(m.packs))
			x.midx, x.midxPack = m, make([]int, len(m.packs))
			for i, p := range m.packs {
				x.midxPack[i] = -1
				if listed[p] && !covered[p] {
					covered[p] = true
					x.midxPack[i] = len(x.packs)
					x.packs = append(x.packs, p)
					x.raw = append(x.raw, nil)
				}
			}
			names = slices.DeleteFunc(names, func(n string) bool { return covered[n] })
		}
	}
	x.indexesRead = len(names)
	// Read in parallel: on a cold cache each is a random read of the
	// disk, and hundreds of them in a row dominate a cold `get`.
	datas := make([][]byte, len(names))
	errs := make([]error, len(names))
	parallel.Each(len(names), 16, func(i int) {
		datas[i], errs[i] = readExact(s.path(indexDir, names[i]+indexExt))
	})
	for i, id := range names {
		data, err := datas[i], errs[i]
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			s.log.Warn("skipping unreadable pack index", "pack", id, "err", err)
			continue
		}
		if len(data) < packIndexHead+32 || string(data[:len(packIndexMagic)]) != packIndexMagic ||
			uint64(len(data)-packIndexHead-32) != uint64(binary.LittleEndian.Uint32(data[len(packIndexMagic):]))*packIndexEntry {
			s.log.Warn("skipping damaged pack index", "pack", id)
			continue
		}
		x.packs = append(x.packs, id)
		x.raw = append(x.raw, data[packIndexHead:len(data)-32])
	}
	return x, nil
}

// readExact reads a whole store file into a buffer of its size.
func readExact(path string) ([]byte, error) {
	f, st, err := openStoreFileStat(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, st.Size())
	if _, err := io.ReadFull(f, buf); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return buf, nil
}

// blob reads blob id from the first copy whose bytes match its hash.
func (x *readerIndex) blob(s *Store, id format.ID) ([]byte, error) {
	var last error
	if x.midx != nil {
		data := x.fromMidx(s, id, &last)
		if data != nil {
			return data, nil
		}
	}
	data, err := x.scan(s, id, last)
	if err == nil || x.midx == nil {
		return data, err
	}
	// Not where the midx says, nor in the packs it does not cover: every
	// pack index, as without one.
	if x.fallback == nil {
		f, lerr := s.loadReaderIndexWith(false)
		if lerr != nil {
			return nil, lerr
		}
		x.fallback = f
		x.indexesRead += f.indexesRead
	}
	return x.fallback.blob(s, id)
}

// fromMidx reads blob id from a copy the multi-pack index names, or
// returns nil. A fault reading the mapping (the file cut short under it)
// is a miss.
func (x *readerIndex) fromMidx(s *Store, id format.ID, last *error) (data []byte) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			data = nil
			*last = fmt.Errorf("%s: reading the mapped file failed: %v", midxFile, r)
		}
	}()
	x.midx.lookup(id, func(mp int, off, length uint32) bool {
		p := -1
		if mp < len(x.midxPack) {
			p = x.midxPack[mp]
		}
		if p < 0 || length == 0 || length > 1<<30 {
			return true
		}
		d, err := x.read(s, p, format.IndexEntry{ID: id, Off: off, Len: length})
		if err != nil {
			*last = err
			return true
		}
		data = d
		return false
	})
	return data
}

// scan looks for blob id in the pack indexes read whole.
func (x *readerIndex) scan(s *Store, id format.ID, last error) ([]byte, error) {
	for p, raw := range x.raw {
		for o := 0; o+packIndexEntry <= len(raw); o += packIndexEntry {
			if [32]byte(raw[o:o+32]) != id {
				continue
			}
			e := format.IndexEntry{ID: id, Off: binary.LittleEndian.Uint32(raw[o+32:]), Len: binary.LittleEndian.Uint32(raw[o+36:])}
			if e.Len == 0 || e.Len > 1<<30 {
				continue
			}
			data, err := x.read(s, p, e)
			if err == nil {
				return data, nil
			}
			last = err
		}
	}
	if last != nil {
		return nil, last
	}
	return nil, fmt.Errorf("blob %s: %w in any pack index", id.Short(), ErrNotFound)
}

func (x *readerIndex) read(s *Store, p int, e format.IndexEntry) ([]byte, error) {
	f := x.files[p]
	if f == nil {
		var err error
		if f, err = openStoreFile(s.path(packsDir, x.packs[p]+packExt)); err != nil {
			return nil, fmt.Errorf("blob %s: %w", e.ID.Short(), err)
		}
		x.files[p] = f
	}
	buf := make([]byte, e.Len)
	if _, err := f.ReadAt(buf, int64(e.Off)); err != nil {
		return nil, fmt.Errorf("blob %s in pack %s: %w", e.ID.Short(), x.packs[p], err)
	}
	if format.Sum(buf) != e.ID {
		return nil, fmt.Errorf("blob %s in pack %s at %d: content does not match its hash (bit rot?)", e.ID.Short(), x.packs[p], e.Off)
	}
	return buf, nil
}

func (x *readerIndex) close() error {
	for _, f := range x.files {
		f.Close()
	}
	x.files = nil
	if x.midx != nil {
		x.midx.close()
	}
	if x.fallback != nil {
		x.fallback.close()
	}
	return nil
}
