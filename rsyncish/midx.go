package rsyncish

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"sort"

	"github.com/kubekeep/kubekeep/rsyncish/format"
)

// The multi-pack index.
//
// A reader of one object needs a handful of blobs, and finding them meant
// reading every pack index: at 8 GiB of etcd, 560 files and 6.5 MB for
// each `kubekeep get`, a quarter of its time, growing with the store.
// index.midx holds the entries of many pack indexes in one file sorted by
// blob ID (as git's multi-pack-index does for git's packs): a reader maps
// it, binary-searches it for each blob it wants, and reads only the pack
// indexes it does not cover (the packs written since it was built).
//
// It is a cache, never the truth. It is built from the writer's checked
// index (one good copy per blob), rewritten by a commit when it is missing
// or damaged or 8 or more packs are written or removed since, and a reader
// uses it only as far as it agrees with the store: entries of packs whose
// index is gone are skipped, the blob's hash decides every copy, and a
// blob it cannot produce sends the reader to every pack index, as before.
// So a damaged, stale or deleted index.midx costs time, never a wrong or
// failed read.
//
// Layout (little endian): "KKMIDX01" | packs u32 | packs × 32-byte pack ID
// | entries u32 | entries × (blob ID 32 | pack u32 | offset u32 | length
// u32), sorted by blob ID | blake3-256 of what precedes.
const (
	midxFile    = "index.midx"
	midxMagic   = "KKMIDX01"
	midxPackID  = 32
	midxEntry   = 32 + 4 + 4 + 4
	midxRebuild = 8 // packs written or removed since it was built
)

// midx is a mapped multi-pack index.
type midx struct {
	packs   []string
	entries []byte
	unmap   func()
}

// parseMidx reads data's layout (not its checksum: readers trust the
// blobs' hashes, the writer checks it before keeping a file).
func parseMidx(data []byte) (*midx, error) {
	bad := errors.New(midxFile + ": not in its layout")
	h := len(midxMagic)
	if len(data) < h+4+4+32 || string(data[:h]) != midxMagic {
		return nil, bad
	}
	np := uint64(binary.LittleEndian.Uint32(data[h:]))
	off := uint64(h + 4)
	if np > uint64(len(data))/midxPackID {
		return nil, bad
	}
	m := &midx{packs: make([]string, np)}
	for i := range m.packs {
		m.packs[i] = string(data[off : off+midxPackID])
		off += midxPackID
	}
	if off+4 > uint64(len(data)) {
		return nil, bad
	}
	ne := uint64(binary.LittleEndian.Uint32(data[off:]))
	off += 4
	if off+ne*midxEntry+32 != uint64(len(data)) {
		return nil, bad
	}
	m.entries = data[off : off+ne*midxEntry]
	return m, nil
}

// lookup returns the entries for blob id: its pack number, offset and
// length.
func (m *midx) lookup(id format.ID, fn func(pack int, off, length uint32) bool) {
	n := len(m.entries) / midxEntry
	i := sort.Search(n, func(i int) bool {
		return bytes.Compare(m.entries[i*midxEntry:i*midxEntry+32], id[:]) >= 0
	})
	for ; i < n; i++ {
		e := m.entries[i*midxEntry : (i+1)*midxEntry]
		if [32]byte(e[:32]) != id {
			return
		}
		if !fn(int(binary.LittleEndian.Uint32(e[32:])), binary.LittleEndian.Uint32(e[36:]), binary.LittleEndian.Uint32(e[40:])) {
			return
		}
	}
}

func (m *midx) close() {
	if m.unmap != nil {
		m.unmap()
		m.unmap = nil
	}
}

// openMidx maps the store's multi-pack index, or returns nil (none, or
// not usable: the reader then reads every pack index).
func (s *Store) openMidx() *midx {
	data, unmap, err := mapFile(s.path(midxFile), false) // searched, not read whole
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			s.log.Debug("not using the multi-pack index", "err", err)
		}
		return nil
	}
	m, err := parseMidx(data)
	if err != nil {
		unmap()
		s.log.Debug("not using the multi-pack index", "err", err)
		return nil
	}
	m.unmap = unmap
	return m
}

// encodeMidx builds a multi-pack index of x's good copies in packs whose
// ID fits the layout.
func encodeMidx(x *index) []byte {
	x.mu.RLock()
	defer x.mu.RUnlock()
	num := make([]int, len(x.packs)) // x's pack number -> the file's, or -1
	var packs []string
	for i, p := range x.packs {
		num[i] = -1
		if len(p) == midxPackID && !slices.Contains(packs, p) {
			num[i] = len(packs)
			packs = append(packs, p)
		}
	}
	type ent struct {
		id   format.ID
		pack uint32
		off  uint32
		len  uint32
	}
	ents := make([]ent, 0, len(x.blobs))
	for id, l := range x.blobs {
		if l.bad || num[l.pack] < 0 {
			continue
		}
		ents = append(ents, ent{id, uint32(num[l.pack]), l.off, l.len})
	}
	slices.SortFunc(ents, func(a, b ent) int { return bytes.Compare(a.id[:], b.id[:]) })
	b := make([]byte, 0, len(midxMagic)+8+len(packs)*midxPackID+len(ents)*midxEntry+32)
	b = append(b, midxMagic...)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(packs)))
	for _, p := range packs {
		b = append(b, p...)
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(ents)))
	for _, e := range ents {
		b = append(b, e.id[:]...)
		b = binary.LittleEndian.AppendUint32(b, e.pack)
		b = binary.LittleEndian.AppendUint32(b, e.off)
		b = binary.LittleEndian.AppendUint32(b, e.len)
	}
	sum := format.Sum(b)
	return append(b, sum[:]...)
}

// midxStale says whether the multi-pack index needs rebuilding against x
// (the writer's index, every pack index the store holds): missing,
// damaged, or midxRebuild packs apart.
func (s *Store) midxStale(x *index) bool {
	m, err := s.readMidx()
	if err != nil {
		return true
	}
	x.mu.RLock()
	have := map[string]bool{}
	for _, p := range x.packs {
		have[p] = true
	}
	x.mu.RUnlock()
	covered := map[string]bool{}
	apart := 0
	for _, p := range m.packs {
		covered[p] = true
		if !have[p] {
			apart++ // removed since
		}
	}
	for p := range have {
		if !covered[p] && len(p) == midxPackID {
			apart++ // written since
		}
	}
	return apart >= midxRebuild
}

// refreshMidx rewrites the multi-pack index from the writer's index when
// it is stale. The caller holds the lock; a failure only costs readers
// time, so it is logged, not returned.
func (s *Store) refreshMidx() {
	s.mu.Lock()
	x := s.idx
	s.mu.Unlock()
	if x == nil || !s.midxStale(x) {
		return
	}
	if err := writeFileAtomic(s.path(midxFile), encodeMidx(x), 0o600); err != nil {
		s.log.Warn("could not rewrite the multi-pack index; readers read every pack index instead", "err", err)
		os.Remove(s.path(midxFile)) // a stale one would only cost time; none costs the same
	}
}

// checkMidx is verify's look at the multi-pack index: damage there is a
// warning (readers fall back; the next backup rewrites it).
func (s *Store) checkMidx() string {
	_, err := s.readMidx()
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Sprintf("%s is damaged (%v): readers read every pack index instead; the next backup rewrites it", midxFile, err)
	}
	return ""
}

// readMidx reads the multi-pack index whole and checks its trailer, as a
// writer must before it keeps one (readers map it unchecked: openMidx).
func (s *Store) readMidx() (*midx, error) {
	data, err := readStoreFile(s.path(midxFile))
	if err != nil {
		return nil, err
	}
	if len(data) < 32 || format.Sum(data[:len(data)-32]) != [32]byte(data[len(data)-32:]) {
		return nil, format.ErrChecksum
	}
	return parseMidx(data)
}
