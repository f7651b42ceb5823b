package rsyncish

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/kubekeep/kubekeep/rsyncish/format"
)

// readerIndex is the pack index as a random-access reader needs it: the
// checked entries of every pack index, searched for the few blobs a read
// touches, without the map of every blob the writer's index builds (16k
// entries per GiB stored; building it cost most of a `get`) and without
// the stat of every pack and the damage record, which only a writer needs
// (it must not reuse a bad copy; a reader tries every copy and the blob's
// hash decides).
type readerIndex struct {
	packs   []string
	entries [][]format.IndexEntry
	files   map[int]*os.File
}

func (s *Store) loadReaderIndex() (*readerIndex, error) {
	ents, err := readStoreDir(s.path(indexDir))
	if err != nil {
		return nil, fmt.Errorf("reading the pack indexes: %w", err)
	}
	x := &readerIndex{files: map[int]*os.File{}}
	for _, e := range ents {
		id, ok := strings.CutSuffix(e.Name(), indexExt)
		if !ok {
			continue
		}
		data, err := readExact(s.path(indexDir, e.Name()))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			s.log.Warn("skipping unreadable pack index", "pack", id, "err", err)
			continue
		}
		entries, _, err := format.DecodeIndex(data)
		if err != nil {
			s.log.Warn("skipping damaged pack index", "pack", id, "err", err)
			continue
		}
		x.packs = append(x.packs, id)
		x.entries = append(x.entries, entries)
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
	for p, entries := range x.entries {
		for _, e := range entries {
			if e.ID != id {
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
	return nil
}
