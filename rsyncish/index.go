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
	// bad: the copy is in a pack that is missing or of the wrong size, or
	// verify found it rotten. Readers still try it (the blob's hash
	// decides), writers never reuse it: a new version must not refer to
	// data the store may not be able to produce, so the block is stored
	// again, and that good copy then serves the old versions too.
	bad bool
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

// has reports whether the store holds a good copy of the blob: what a
// writer may refer to without storing it.
func (x *index) has(id format.ID) bool {
	l, ok := x.get(id)
	return ok && !l.bad
}

// put records a copy of a blob; a good copy replaces a bad one.
func (x *index) put(id format.ID, l loc) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.putLocked(id, l)
}

func (x *index) putLocked(id format.ID, l loc) {
	if cur, dup := x.blobs[id]; !dup || (cur.bad && !l.bad) {
		x.blobs[id] = l
	}
}

// markBad marks every copy in the named packs bad.
func (x *index) markBad(packs map[string]bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for id, l := range x.blobs {
		if packs[x.packs[l.pack]] {
			l.bad = true
			x.blobs[id] = l
		}
	}
}

func (x *index) packName(p uint32) string {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.packs[p]
}

// loadIndex reads every pack index. A damaged index is skipped with a
// warning: its blobs then count as absent, so the next backup stores them
// again instead of referring to data it cannot vouch for. Each pack is
// checked with one stat (present, regular, the size its index says) and
// against the damage record (what verify --read-data found rotten): the
// copies that fail are kept for readers but marked bad, so no writer
// reuses them. Verify and repair report and fix the damage.
func (s *Store) loadIndex() (*index, error) {
	ents, err := readStoreDir(s.path(indexDir))
	if err != nil {
		return nil, fmt.Errorf("reading the pack indexes: %w", err)
	}
	damage, _, err := s.readDamage()
	if err != nil {
		s.log.Warn("ignoring the damage record", "store", s.dir, "err", err)
	}
	x := &index{blobs: make(map[format.ID]loc)}
	var lost []string
	for _, e := range ents {
		id, ok := strings.CutSuffix(e.Name(), indexExt)
		if !ok {
			continue
		}
		data, err := readStoreFile(s.path(indexDir, e.Name()))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			s.log.Warn("skipping unreadable pack index", "pack", id, "err", err)
			continue
		}
		entries, size, err := format.DecodeIndex(data)
		if err != nil {
			s.log.Warn("skipping damaged pack index", "pack", id, "err", err)
			continue
		}
		packBad := false
		if fi, err := os.Lstat(s.path(packsDir, id+packExt)); err != nil || !fi.Mode().IsRegular() || fi.Size() != size {
			packBad = true
			lost = append(lost, id)
		}
		p := x.addPack(id)
		rot := damage[id]
		for _, b := range entries {
			x.putLocked(b.ID, loc{pack: p, off: b.Off, len: b.Len, bad: packBad || rot[b.ID]})
		}
	}
	if len(lost) > 0 {
		s.log.Warn("packs missing or of the wrong size; their blocks will be stored again (kubekeep repair drops them)", "store", s.dir, "packs", lost)
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
	f, err := openStoreFile(r.s.path(packsDir, r.x.packName(p)+packExt))
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
