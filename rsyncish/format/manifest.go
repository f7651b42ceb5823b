package format

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"
)

// A manifest is line-oriented so that listing versions reads two short lines
// per version instead of every block list:
//
//	kubekeep-manifest 2
//	{header JSON}
//	{entry JSON}        one per file, dir, symlink or stream
//	...
//	blake3 <hex of everything above>
//
// Names are bytes, and JSON strings hold only UTF-8: in format 2 a path or
// symlink target that is not valid UTF-8 is written base64-encoded under
// "pb" / "lb" (a skipped path under "pathBytes"), with the lossy UTF-8
// rendering beside it for a reader of the file; decoding takes the bytes.
// A run of zeros is one extent however many blocks it spans (format 1: one
// per block, so a 10 GiB sparse file cost 8.7 MB of manifest). Format 1
// wrote names lossily (every invalid byte became U+FFFD); it is read as it
// is.
const ManifestMagic = "kubekeep-manifest 2"

// ManifestMagicV1 is the first line of a format-1 manifest.
const ManifestMagicV1 = "kubekeep-manifest 1"

// Entry types.
const (
	TypeFile    = "f"
	TypeDir     = "d"
	TypeSymlink = "l"
	TypeStream  = "s"
)

// Header is the summary of a version.
type Header struct {
	ID        string    `json:"id"`
	Time      time.Time `json:"time"`
	BlockSize int       `json:"blockSize"`
	// Parent is the version whose file metadata let unchanged files skip
	// reading; informational only: a version depends on another only
	// through Requires.
	Parent   string         `json:"parent,omitempty"`
	Paths    []string       `json:"paths,omitempty"`
	Files    int            `json:"files"`
	Dirs     int            `json:"dirs"`
	Symlinks int            `json:"symlinks"`
	Size     int64          `json:"size"`
	Streams  []StreamHeader `json:"streams,omitempty"`
	Skipped  []Skipped      `json:"skipped,omitempty"`
	Stats    Stats          `json:"stats"`
	// Meta is the caller's JSON (the etcd snapshot info under "etcd").
	Meta map[string]json.RawMessage `json:"meta,omitempty"`
	// Store is what the store's config.json held when the version was
	// written, so that a damaged config.json can be rebuilt from any
	// manifest (absent in versions written before it was recorded).
	Store *Config `json:"store,omitempty"`
	// Requires is the data outside this manifest the version needs to be
	// restored whole: another version's stream, a journal's revisions
	// (a journal version of etcd needs its base's snapshot and the delta
	// journal since). Verify names the version damaged when any of it is
	// missing or damaged; prune keeps what a kept version requires. Absent
	// in versions that stand alone, and in every version written before
	// it was recorded (an older kubekeep reading it ignores it, as it
	// ignored the dependency before).
	Requires []Requirement `json:"requires,omitempty"`
	// ManifestFormat is the format of the manifest it was read from (1 or
	// 2), from its magic line; not stored in the header.
	ManifestFormat int `json:"-"`
}

// Requirement is one piece of data a version needs beyond its manifest:
// either Stream of Version, or the revisions (After, Through] of Journal
// (none when Through == After).
type Requirement struct {
	Version string `json:"version,omitempty"`
	Stream  string `json:"stream,omitempty"`
	Journal string `json:"journal,omitempty"`
	After   uint64 `json:"after,omitempty"`
	Through uint64 `json:"through,omitempty"`
	// IfHeld, only when asking for a requirement (never stored): the
	// stream is required only if Version holds it at all (a stream is
	// never added to a committed version, so this is decided then).
	IfHeld bool `json:"-"`
}

// Check says what is wrong with a requirement, if anything.
func (r Requirement) Check() error {
	switch {
	case r.Version != "" && r.Journal != "":
		return fmt.Errorf("requirement names both version %q and journal %q", r.Version, r.Journal)
	case r.Version != "":
		if r.Stream == "" || r.After != 0 || r.Through != 0 {
			return fmt.Errorf("requirement of version %q: wants a stream and no revisions", r.Version)
		}
	case r.Journal != "":
		if r.Stream != "" || r.Through < r.After {
			return fmt.Errorf("requirement of journal %q: wants revisions (after, through] with through >= after, no stream", r.Journal)
		}
	default:
		return errors.New("requirement names neither a version nor a journal")
	}
	return nil
}

func (r Requirement) String() string {
	if r.Journal != "" {
		return fmt.Sprintf("journal %s revisions %d-%d", r.Journal, r.After+1, r.Through)
	}
	return fmt.Sprintf("stream %s of version %s", r.Stream, r.Version)
}

// StreamHeader names a stored stream and its size.
type StreamHeader struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
}

// Skipped is a path the backup saw and did not store, with the reason.
type Skipped struct {
	Path   string `json:"path"`
	Reason string `json:"reason"`
}

type skippedJSON struct {
	Path      string `json:"path"`
	PathBytes []byte `json:"pathBytes,omitempty"`
	Reason    string `json:"reason"`
}

// MarshalJSON writes a path that is not UTF-8 as bytes too.
func (s Skipped) MarshalJSON() ([]byte, error) {
	j := skippedJSON{Path: s.Path, Reason: s.Reason}
	if !utf8.ValidString(s.Path) {
		j.PathBytes = []byte(s.Path)
	}
	return json.Marshal(j)
}

// UnmarshalJSON prefers the bytes.
func (s *Skipped) UnmarshalJSON(data []byte) error {
	var j skippedJSON
	if err := json.Unmarshal(data, &j); err != nil {
		return err
	}
	s.Path, s.Reason = j.Path, j.Reason
	if j.PathBytes != nil {
		s.Path = string(j.PathBytes)
	}
	return nil
}

// Stats says what writing the version cost.
type Stats struct {
	BytesRead    int64         `json:"bytesRead"`
	BytesNew     int64         `json:"bytesNew"`
	BytesWritten int64         `json:"bytesWritten"`
	FilesRead    int           `json:"filesRead"`
	FilesReused  int           `json:"filesReused"`
	Duration     time.Duration `json:"duration"`
}

// Entry is one stored file, directory, symlink or stream. Path is the host
// path for files and the stream name for streams. MTime/CTime are Unix
// nanoseconds; CTime and Ino only serve to recognise an unchanged file.
type Entry struct {
	Path    string  `json:"p"`
	Type    string  `json:"t"`
	Mode    uint32  `json:"m,omitempty"`
	UID     uint32  `json:"u,omitempty"`
	GID     uint32  `json:"g,omitempty"`
	MTime   int64   `json:"mt,omitempty"`
	CTime   int64   `json:"ct,omitempty"`
	Ino     uint64  `json:"i,omitempty"`
	Size    int64   `json:"s,omitempty"`
	Target  string  `json:"l,omitempty"`
	Extents Extents `json:"x,omitempty"`
}

// wireEntry is an Entry whose path or target is not valid UTF-8, as
// written: the bytes in base64 beside the lossy strings.
type wireEntry struct {
	Entry
	PathBytes   []byte `json:"pb,omitempty"`
	TargetBytes []byte `json:"lb,omitempty"`
}

func (e *Entry) wire() any {
	if utf8.ValidString(e.Path) && utf8.ValidString(e.Target) {
		return e
	}
	w := &wireEntry{Entry: *e}
	if !utf8.ValidString(e.Path) {
		w.PathBytes = []byte(e.Path)
		w.Entry.Path = strings.ToValidUTF8(e.Path, "\uFFFD")
	}
	if !utf8.ValidString(e.Target) {
		w.TargetBytes = []byte(e.Target)
		w.Entry.Target = strings.ToValidUTF8(e.Target, "\uFFFD")
	}
	return w
}

// Manifest is a whole decoded version.
type Manifest struct {
	Header  Header
	Entries []Entry
}

// EncodeManifest writes the sealed manifest to w, one entry at a time so a
// version of a huge file never holds a second copy of its block list.
func EncodeManifest(w io.Writer, m *Manifest) error {
	h := newSealWriter(w)
	bw := bufio.NewWriterSize(h, 256<<10)
	if _, err := bw.WriteString(ManifestMagic + "\n"); err != nil {
		return err
	}
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(&m.Header); err != nil {
		return fmt.Errorf("manifest header: %w", err)
	}
	for i := range m.Entries {
		if err := enc.Encode(m.Entries[i].wire()); err != nil {
			return fmt.Errorf("manifest entry %q: %w", m.Entries[i].Path, err)
		}
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	return h.Close()
}

// DecodeManifest checks the trailer and decodes a whole manifest.
func DecodeManifest(data []byte) (*Manifest, error) {
	body, err := Unseal(data)
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	line, rest, ok := bytes.Cut(body, []byte("\n"))
	if !ok || !knownMagic(string(line)) {
		return nil, errors.New("manifest: bad magic line")
	}
	v2 := string(line) == ManifestMagic
	line, rest, ok = bytes.Cut(rest, []byte("\n"))
	if !ok {
		return nil, errors.New("manifest: no header")
	}
	m := &Manifest{}
	if err := decodeHeader(line, &m.Header); err != nil {
		return nil, err
	}
	m.Header.ManifestFormat = 1
	if v2 {
		m.Header.ManifestFormat = 2
	}
	for n := 1; len(rest) > 0; n++ {
		line, rest, ok = bytes.Cut(rest, []byte("\n"))
		if !ok {
			return nil, fmt.Errorf("manifest: entry %d: unterminated line", n)
		}
		var w wireEntry
		if err := json.Unmarshal(line, &w); err != nil {
			return nil, fmt.Errorf("manifest: entry %d: %w", n, err)
		}
		e := w.Entry
		if v2 && w.PathBytes != nil {
			e.Path = string(w.PathBytes)
		}
		if v2 && w.TargetBytes != nil {
			e.Target = string(w.TargetBytes)
		}
		if err := e.check(m.Header.BlockSize); err != nil {
			return nil, fmt.Errorf("manifest: entry %d: %w", n, err)
		}
		m.Entries = append(m.Entries, e)
	}
	return m, nil
}

// ReadManifestHeader reads only the header: what listing versions needs.
// The checksum is not checked here (it covers the whole file); Verify does.
func ReadManifestHeader(r io.Reader) (*Header, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	magic, err := br.ReadString('\n')
	if err != nil || !knownMagic(strings.TrimSuffix(magic, "\n")) || !strings.HasSuffix(magic, "\n") {
		return nil, errors.New("manifest: bad magic line")
	}
	var line []byte
	for {
		chunk, isPrefix, err := br.ReadLine()
		if err != nil {
			return nil, fmt.Errorf("manifest header: %w", err)
		}
		line = append(line, chunk...)
		if len(line) > 64<<20 {
			return nil, errors.New("manifest header: longer than 64 MiB")
		}
		if !isPrefix {
			break
		}
	}
	h := &Header{}
	if err := decodeHeader(line, h); err != nil {
		return nil, err
	}
	h.ManifestFormat = 1
	if magic == ManifestMagic+"\n" {
		h.ManifestFormat = 2
	}
	return h, nil
}

func knownMagic(line string) bool { return line == ManifestMagic || line == ManifestMagicV1 }

func decodeHeader(line []byte, h *Header) error {
	if err := json.Unmarshal(line, h); err != nil {
		return fmt.Errorf("manifest header: %w", err)
	}
	if h.ID == "" {
		return errors.New("manifest header: no id")
	}
	if h.BlockSize < 512 || h.BlockSize > 1<<30 || h.BlockSize&(h.BlockSize-1) != 0 {
		return fmt.Errorf("manifest header: bad block size %d", h.BlockSize)
	}
	for i, r := range h.Requires {
		if err := r.Check(); err != nil {
			return fmt.Errorf("manifest header: requirement %d: %w", i+1, err)
		}
	}
	return nil
}

func (e *Entry) check(blockSize int) error {
	if e.Path == "" {
		return errors.New("empty path")
	}
	switch e.Type {
	case TypeFile, TypeStream:
		if e.Size < 0 || e.Extents.Total() != e.Size {
			return fmt.Errorf("%q: extents cover %d bytes, size is %d", e.Path, e.Extents.Total(), e.Size)
		}
		// Data extents must not cross block boundaries: the writer relies
		// on it to reuse one block's extents in the next version. A run
		// of zeros may (format 2).
		var off int64
		for _, x := range e.Extents {
			if !x.ID.IsZero() && off/int64(blockSize) != (off+int64(x.Len)-1)/int64(blockSize) {
				return fmt.Errorf("%q: extent at %d crosses a block boundary", e.Path, off)
			}
			off += int64(x.Len)
		}
	case TypeDir, TypeSymlink:
		if len(e.Extents) != 0 {
			return fmt.Errorf("%q: %s with data", e.Path, e.Type)
		}
	default:
		return fmt.Errorf("%q: unknown type %q", e.Path, e.Type)
	}
	return nil
}
