package rsyncish

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"runtime/debug"
	"syscall"

	"github.com/kubekeep/kubekeep/rsyncish/format"
)

// lazyManifest is a version's manifest checked (its blake3 trailer) but
// not decoded: a reader that wants two entries of a version whose manifest
// lists a 1 GiB stream (16,384 extents, a 900 KB JSON line) decodes those
// two lines, not every line, and the extents' base64 without the JSON
// scanner (format.DecodeManifest spends ~15 ms on such a manifest; this
// ~1 ms). Anything it does not recognise falls back to the full decode.
type lazyManifest struct {
	id    string
	body  []byte // after the magic and header lines, in the mapping
	full  *format.Manifest
	block int
	unmap func() // nil once lent (a lazy entry refers to the mapping)
}

func (m *lazyManifest) close() {
	if m.unmap != nil {
		m.unmap()
	}
	m.unmap, m.body = nil, nil
}

// lend hands the mapping's release to the caller (who keeps it while a
// lazy entry of this manifest is in use); close then leaves it mapped.
func (m *lazyManifest) lend() func() {
	u := m.unmap
	m.unmap = nil
	return u
}

// mapStoreFile maps a store file read-only (no copy of a manifest of
// megabytes onto the heap); an empty file reads as nothing.
func mapStoreFile(path string) ([]byte, func(), error) { return mapFile(path, true) }

// mapFile is mapStoreFile; whole says the caller reads the file whole (a
// manifest or a journal segment, its seal checked first), so the mapping
// is populated at once (MAP_POPULATE: at 8 GiB of etcd, 5% of a warm
// `get`, against faulting the base manifest's 7 MB in as it is hashed);
// a page that fails to read then faults when touched, as without it. The
// multi-pack index, searched for a few blobs, is not.
func mapFile(path string, whole bool) ([]byte, func(), error) {
	f, st, err := openStoreFileStat(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	if st.Size() == 0 {
		return nil, func() {}, nil
	}
	flags := syscall.MAP_SHARED
	if whole {
		flags |= syscall.MAP_POPULATE
	}
	data, err := syscall.Mmap(int(f.Fd()), 0, int(st.Size()), syscall.PROT_READ, flags)
	if err != nil {
		return nil, nil, fmt.Errorf("map %s: %w", path, err)
	}
	return data, func() { _ = syscall.Munmap(data) }, nil
}

func (s *Store) lazyManifest(id string) (lm *lazyManifest, err error) {
	if !validID(id) {
		return nil, fmt.Errorf("version %q: %w", id, ErrNotFound)
	}
	data, unmap, err := mapStoreFile(s.path(versionsDir, id+manifestExt))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("version %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("version %s: %w", id, err)
	}
	defer func() {
		if lm == nil || lm.unmap == nil {
			unmap()
		}
	}()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer recoverFault(&err, "version "+id+": manifest")
	body, err := format.Unseal(data)
	if err != nil {
		return nil, fmt.Errorf("version %s: manifest: %w", id, err)
	}
	magic, rest, ok := bytes.Cut(body, []byte("\n"))
	head, rest, ok2 := bytes.Cut(rest, []byte("\n"))
	var h format.Header
	if !ok || !ok2 || string(magic) != format.ManifestMagic || json.Unmarshal(head, &h) != nil {
		// Format 1, or something odd: the full decoder says what.
		m, err := format.DecodeManifest(data)
		if err != nil {
			return nil, fmt.Errorf("version %s: %w", id, err)
		}
		if m.Header.ID != id {
			return nil, fmt.Errorf("version %s: manifest names itself %q", id, m.Header.ID)
		}
		return &lazyManifest{id: id, full: m}, nil
	}
	if h.ID != id {
		return nil, fmt.Errorf("version %s: manifest names itself %q", id, h.ID)
	}
	if h.BlockSize < 512 || h.BlockSize > 1<<30 || h.BlockSize&(h.BlockSize-1) != 0 {
		return nil, fmt.Errorf("version %s: manifest header: bad block size %d", id, h.BlockSize)
	}
	return &lazyManifest{id: id, body: rest, block: h.BlockSize, unmap: unmap}, nil
}

// rawEntry is an entry whose extents stay in their 40-byte wire form (a
// 1 GiB stream's 16,384 extents are not decoded into a second copy), or,
// opened lazily (readat_extents.go), in the manifest's base64 text of
// them, with only their lengths decoded (starts).
type rawEntry struct {
	format.Entry // Extents unset
	raw          []byte

	b64    []byte  // lazily: the extents' base64, in the manifest's mapping
	count  int     // lazily: how many
	starts []int64 // lazily: the stream offset of each
}

func (e *rawEntry) n() int {
	if e.b64 != nil {
		return e.count
	}
	return len(e.raw) / extentWire
}

// extent is extent i; only a lazy entry's can fail (a bad character in
// its text, or a fault reading the mapping).
func (e *rawEntry) extent(i int) (x format.Extent, err error) {
	b := e.raw
	if e.b64 != nil {
		defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
		defer recoverFault(&err, "manifest extents")
		var w [extentWire]byte
		if err := b64Bytes(e.b64, i*extentWire, (i+1)*extentWire, w[:]); err != nil {
			return x, fmt.Errorf("extent %d: %w", i, err)
		}
		b = w[:]
	} else {
		b = b[i*extentWire:]
	}
	copy(x.ID[:], b[:32])
	x.Off = binary.LittleEndian.Uint32(b[32:])
	x.Len = binary.LittleEndian.Uint32(b[36:])
	return x, nil
}

// offsets is the stream offset of each extent: the starts a lazy decode
// made, or computed from the wire form.
func (e *rawEntry) offsets() []int64 {
	if e.starts != nil {
		return e.starts
	}
	starts := make([]int64, e.n())
	var off int64
	for i := range starts {
		starts[i] = off
		off += int64(binary.LittleEndian.Uint32(e.raw[i*extentWire+36:]))
	}
	return starts
}

// mustExtent is extent i of an entry decoded whole (never lazy).
func (e *rawEntry) mustExtent(i int) format.Extent {
	if e.b64 != nil {
		panic("rsyncish: mustExtent of a lazy entry")
	}
	x, _ := e.extent(i)
	return x
}

// extentWire is an extent's size in a manifest (format.Extents' JSON).
const extentWire = 40

func rawOf(e *format.Entry) *rawEntry {
	r := &rawEntry{Entry: *e, raw: make([]byte, 0, len(e.Extents)*extentWire)}
	r.Extents = nil
	for _, x := range e.Extents {
		r.raw = append(r.raw, x.ID[:]...)
		r.raw = binary.LittleEndian.AppendUint32(r.raw, x.Off)
		r.raw = binary.LittleEndian.AppendUint32(r.raw, x.Len)
	}
	return r
}

// recoverFault turns a fault reading a mapped file (an I/O error on the
// disk under it) into an error, instead of killing the process.
func recoverFault(err *error, what string) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("%s: reading the mapped file failed: %v", what, r)
	}
}

// entry finds the entry of type typ at path. A lazy entry's extents stay
// in the manifest's mapping: its user takes the mapping over (lend).
func (m *lazyManifest) entry(typ, path string, lazy bool) (_ *rawEntry, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer recoverFault(&err, "version "+m.id+": manifest")
	if m.full != nil {
		for i := range m.full.Entries {
			if e := &m.full.Entries[i]; e.Type == typ && e.Path == path {
				return rawOf(e), nil
			}
		}
		return nil, nil
	}
	var prefix bytes.Buffer
	enc := json.NewEncoder(&prefix)
	enc.SetEscapeHTML(false) // as EncodeManifest writes
	if err := enc.Encode(struct {
		P string `json:"p"`
		T string `json:"t"`
	}{path, typ}); err != nil {
		return nil, err
	}
	// `{"p":…,"t":"…"` and then `,` or `}`.
	want := bytes.TrimSuffix(bytes.TrimSpace(prefix.Bytes()), []byte("}"))
	rest := m.body
	for n := 1; len(rest) > 0; n++ {
		line, r, ok := bytes.Cut(rest, []byte("\n"))
		if !ok {
			return nil, fmt.Errorf("version %s: manifest: entry %d: unterminated line", m.id, n)
		}
		rest = r
		if !bytes.HasPrefix(line, want) || len(line) == len(want) || line[len(want)] != ',' && line[len(want)] != '}' {
			continue
		}
		e, err := decodeEntryLine(line, m.block, lazy)
		if err != nil {
			return nil, fmt.Errorf("version %s: manifest: entry %d: %w", m.id, n, err)
		}
		if e.Path == path && e.Type == typ {
			return e, nil
		}
	}
	return nil, nil
}

// decodeEntryLine decodes one entry line, taking the extents' base64 out
// of the JSON first (it has no quote or backslash, and a JSON string
// cannot hold the sequence "x":" unescaped, so the first is the key).
// Lazily, the entry keeps the base64 (a slice of line: the caller keeps
// line alive as long as the entry) and decodes only the lengths.
func decodeEntryLine(line []byte, blockSize int, lazy bool) (*rawEntry, error) {
	var raw, b64 []byte
	if i := bytes.Index(line, []byte(`"x":"`)); i >= 0 {
		start := i + len(`"x":"`)
		end := bytes.IndexByte(line[start:], '"')
		if end < 0 {
			return nil, errors.New("unterminated extents")
		}
		if lazy {
			b64 = line[start : start+end : start+end]
		} else {
			var err error
			if raw, err = base64.StdEncoding.AppendDecode(nil, line[start:start+end]); err != nil {
				return nil, fmt.Errorf("extents: %w", err)
			}
		}
		line = append(append(bytes.Clone(line[:start]), '"'), line[start+end+1:]...)
	}
	var w struct {
		format.Entry
		PathBytes   []byte `json:"pb,omitempty"`
		TargetBytes []byte `json:"lb,omitempty"`
	}
	if err := json.Unmarshal(line, &w); err != nil {
		return nil, err
	}
	e := &rawEntry{Entry: w.Entry, raw: raw}
	e.Extents = nil
	if w.PathBytes != nil {
		e.Path = string(w.PathBytes)
	}
	if len(b64) > 0 {
		n, err := b64Count(b64)
		if err != nil {
			return nil, err
		}
		// The lengths, turned into starts in place below.
		e.b64, e.count, e.starts = b64, n, make([]int64, n)
		if err := b64Lens(b64, e.starts); err != nil {
			return nil, err
		}
	} else if len(raw)%extentWire != 0 {
		return nil, fmt.Errorf("extents: %d bytes is not a multiple of %d", len(raw), extentWire)
	}
	var off int64
	for i := range e.n() {
		var n int64
		if e.starts != nil {
			n, e.starts[i] = e.starts[i], off
		} else {
			n = int64(binary.LittleEndian.Uint32(raw[i*extentWire+36:]))
		}
		if n == 0 {
			return nil, fmt.Errorf("extents: extent %d is empty", i)
		}
		if off/int64(blockSize) != (off+n-1)/int64(blockSize) {
			// Only a zero extent (a hole) may cross a block boundary.
			x, err := e.extent(i)
			if err != nil {
				return nil, err
			}
			if x.ID != format.ZeroID {
				return nil, fmt.Errorf("%q: extent at %d crosses a block boundary", e.Path, off)
			}
		}
		off += n
	}
	switch e.Type {
	case format.TypeFile, format.TypeStream:
		if e.Size < 0 || off != e.Size {
			return nil, fmt.Errorf("%q: extents cover %d bytes, size is %d", e.Path, off, e.Size)
		}
	case format.TypeDir, format.TypeSymlink:
		if e.n() != 0 {
			return nil, fmt.Errorf("%q: %s with data", e.Path, e.Type)
		}
	default:
		return nil, fmt.Errorf("%q: unknown type %q", e.Path, e.Type)
	}
	return e, nil
}
