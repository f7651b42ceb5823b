package rsyncish

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"sync"

	"github.com/kubekeep/kubekeep/rsyncish/format"
)

// loc is where a blob lives. Packs are referred to by number to keep the
// map small: a store of 10 GiB in 64 KiB blocks has ~160k entries.
type loc struct {
	pack     uint32
	off, len uint32
}

// index is shared by the writer (which adds to it) and readers of the same
// process, hence the lock.
type index struct {
	mu    sync.RWMutex
	packs []string
	blobs map[format.ID]loc
}

func (x *index) addPack(id string) uint32 {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.packs = append(x.packs, id)
	return uint32(len(x.packs) - 1)
}

func (x *index) get(id format.ID) (loc, bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	l, ok := x.blobs[id]
	return l, ok
}

func (x *index) has(id format.ID) bool {
	_, ok := x.get(id)
	return ok
}

func (x *index) put(id format.ID, l loc) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if _, dup := x.blobs[id]; !dup {
		x.blobs[id] = l
	}
}

func (x *index) packName(p uint32) string {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.packs[p]
}

// loadIndex reads every pack index. A damaged index is skipped with a
// warning: its blobs then count as absent, so the next backup stores them
// again instead of referring to data it cannot vouch for. Verify reports it.
func (s *Store) loadIndex() (*index, error) {
	ents, err := os.ReadDir(s.path(indexDir))
	if err != nil {
		return nil, fmt.Errorf("reading the pack indexes: %w", err)
	}
	x := &index{blobs: make(map[format.ID]loc)}
	for _, e := range ents {
		id, ok := strings.CutSuffix(e.Name(), indexExt)
		if !ok {
			continue
		}
		data, err := os.ReadFile(s.path(indexDir, e.Name()))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reading index %s: %w", id, err)
		}
		entries, _, err := format.DecodeIndex(data)
		if err != nil {
			s.log.Warn("skipping damaged pack index", "pack", id, "err", err)
			continue
		}
		p := x.addPack(id)
		for _, b := range entries {
			if _, dup := x.blobs[b.ID]; !dup {
				x.blobs[b.ID] = loc{pack: p, off: b.Off, len: b.Len}
			}
		}
	}
	return x, nil
}

// index returns the store's in-memory index, loading it once per lock (or
// per call when not locked: another process may be writing).
func (s *Store) index() (*index, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.idx != nil {
		return s.idx, nil
	}
	x, err := s.loadIndex()
	if err != nil {
		return nil, err
	}
	if s.locked {
		s.idx = x
	}
	return x, nil
}

// blobReader reads and checks blobs, keeping pack files open.
type blobReader struct {
	s     *Store
	x     *index
	mu    sync.Mutex
	files map[uint32]*os.File
	// override lets the writer serve reads of the pack it is still
	// writing (flushed first) through its own file handle.
	override func(pack uint32) (*os.File, bool)
}

func newBlobReader(s *Store, x *index) *blobReader {
	return &blobReader{s: s, x: x, files: map[uint32]*os.File{}}
}

func (r *blobReader) file(p uint32) (*os.File, error) {
	if r.override != nil {
		if f, ok := r.override(p); ok {
			return f, nil
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if f := r.files[p]; f != nil {
		return f, nil
	}
	f, err := os.Open(r.s.path(packsDir, r.x.packName(p)+packExt))
	if err != nil {
		return nil, err
	}
	r.files[p] = f
	return f, nil
}

// blob returns the blob's bytes after checking them against its ID, so no
// reader ever hands out rotted data silently.
func (r *blobReader) blob(id format.ID, buf []byte) ([]byte, error) {
	l, ok := r.x.get(id)
	if !ok {
		return nil, fmt.Errorf("blob %s: %w in any pack index", id.Short(), ErrNotFound)
	}
	f, err := r.file(l.pack)
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w", id.Short(), err)
	}
	if cap(buf) < int(l.len) {
		buf = make([]byte, l.len)
	}
	buf = buf[:l.len]
	if _, err := f.ReadAt(buf, int64(l.off)); err != nil {
		return nil, fmt.Errorf("blob %s in pack %s: %w", id.Short(), r.x.packName(l.pack), err)
	}
	if format.Sum(buf) != id {
		return nil, fmt.Errorf("blob %s in pack %s at %d: content does not match its hash (bit rot?)", id.Short(), r.x.packName(l.pack), l.off)
	}
	return buf, nil
}

func (r *blobReader) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, f := range r.files {
		f.Close()
	}
	r.files = map[uint32]*os.File{}
	return nil
}
