package rsyncish

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"

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
	body  []byte // after the magic and header lines
	full  *format.Manifest
	block int
}

func (s *Store) lazyManifest(id string) (*lazyManifest, error) {
	if !validID(id) {
		return nil, fmt.Errorf("version %q: %w", id, ErrNotFound)
	}
	data, err := readStoreFile(s.path(versionsDir, id+manifestExt))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("version %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("version %s: %w", id, err)
	}
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
	return &lazyManifest{id: id, body: rest, block: h.BlockSize}, nil
}

// entry finds the entry of type typ at path.
func (m *lazyManifest) entry(typ, path string) (*format.Entry, error) {
	if m.full != nil {
		for i := range m.full.Entries {
			if e := &m.full.Entries[i]; e.Type == typ && e.Path == path {
				return e, nil
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
		e, err := decodeEntryLine(line, m.block)
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
func decodeEntryLine(line []byte, blockSize int) (*format.Entry, error) {
	var raw []byte
	if i := bytes.Index(line, []byte(`"x":"`)); i >= 0 {
		start := i + len(`"x":"`)
		end := bytes.IndexByte(line[start:], '"')
		if end < 0 {
			return nil, errors.New("unterminated extents")
		}
		var err error
		if raw, err = base64.StdEncoding.AppendDecode(nil, line[start:start+end]); err != nil {
			return nil, fmt.Errorf("extents: %w", err)
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
	e := w.Entry
	if w.PathBytes != nil {
		e.Path = string(w.PathBytes)
	}
	const extentSize = 40
	if len(raw)%extentSize != 0 {
		return nil, fmt.Errorf("extents: %d bytes is not a multiple of %d", len(raw), extentSize)
	}
	e.Extents = make(format.Extents, len(raw)/extentSize)
	var off int64
	for i := range e.Extents {
		b := raw[i*extentSize:]
		x := &e.Extents[i]
		copy(x.ID[:], b[:32])
		x.Off = binary.LittleEndian.Uint32(b[32:])
		x.Len = binary.LittleEndian.Uint32(b[36:])
		if x.Len == 0 {
			return nil, fmt.Errorf("extents: extent %d is empty", i)
		}
		if !x.ID.IsZero() && off/int64(blockSize) != (off+int64(x.Len)-1)/int64(blockSize) {
			return nil, fmt.Errorf("%q: extent at %d crosses a block boundary", e.Path, off)
		}
		off += int64(x.Len)
	}
	if (e.Type == format.TypeFile || e.Type == format.TypeStream) && (e.Size < 0 || off != e.Size) {
		return nil, fmt.Errorf("%q: extents cover %d bytes, size is %d", e.Path, off, e.Size)
	}
	return &e, nil
}
