// Package backend is the storage seam under kubekeep's store: one small
// interface over "a place that keeps named, immutable objects", in the
// manner of restic's internal/backend. The local disk (Local) is one
// implementation and stays the source of truth; off-site tiers (S3, MinIO,
// Alibaba OSS) are others, and hold copies of the store's objects (packs,
// indexes, manifests, journal segments, drill marks), so an off-site copy
// is an object copy, not a re-encode.
//
// # Guarantees every implementation gives (the store's crash-safety order
// depends on them; backendtest checks each)
//
//   - Save is atomic and durable: when it returns nil, the whole object is
//     stored and survives a crash (the local disk: written to a temp name,
//     fsynced, linked into place, directory fsynced); before that, no
//     reader, List or Stat sees any of it. A Save that fails or is
//     cancelled leaves nothing visible under the name.
//   - Objects are immutable: Save never replaces an existing object; it
//     returns an error wrapping ErrExists (the store names objects by
//     content or by a fresh random name, so a collision is a bug or an
//     attack, never an update).
//   - Save checks that it stored rd.Length() bytes: a short reader is an
//     error, not a short object.
//   - Load reads a range; a range past the end is an error (never a
//     silently short read). A missing object is an error wrapping
//     ErrNotFound, from Load, Stat and Remove alike.
//   - List reports every object of a type whose Save returned, and none
//     whose Save did not (temp files are never listed).
//   - Remove is durable when it returns.
//
// Names are the store's: '/'-separated relative paths of portable
// characters (letters, digits, '.', '-', '_'), no empty element and none
// starting with '.' (those are the backends' own temp names); ValidName
// says which. A type maps to a directory (or a key
// prefix) of its own.
package backend

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// FileType is the kind of a store object; each lives under its own
// directory or key prefix (the value).
type FileType string

// The store's object types.
const (
	ConfigFile   FileType = "config"   // the store's config.json (Name "config.json")
	PackFile     FileType = "packs"    // blobs back to back
	IndexFile    FileType = "index"    // a pack's blob list
	ManifestFile FileType = "versions" // a version's manifest
	VerifiedFile FileType = "verified" // a restore drill's result
	JournalFile  FileType = "journals" // delta segments and breaks, Name "<journal>/<file>"
)

// Types lists every FileType, in the order a copy should ship them: data
// before what references it, so a copy interrupted anywhere never holds a
// manifest whose packs it lacks.
var Types = []FileType{PackFile, IndexFile, JournalFile, ManifestFile, VerifiedFile, ConfigFile}

// Handle names one object.
type Handle struct {
	Type FileType
	Name string
}

func (h Handle) String() string { return string(h.Type) + "/" + h.Name }

// Valid says whether h names an object any backend can hold.
func (h Handle) Valid() error {
	known := false
	for _, t := range Types {
		known = known || t == h.Type
	}
	if !known {
		return fmt.Errorf("%w: unknown type %q", ErrInvalidName, h.Type)
	}
	return ValidName(h.Name)
}

// FileInfo is what Stat and List report of an object.
type FileInfo struct {
	Name    string
	Size    int64
	ModTime time.Time
}

// Errors every implementation wraps.
var (
	ErrNotFound    = errors.New("object not found")
	ErrExists      = errors.New("object already exists")
	ErrInvalidName = errors.New("invalid object name")
	ErrShortRead   = errors.New("object is shorter than the range asked for")
)

// Backend keeps named immutable objects. See the package documentation
// for what every method guarantees.
type Backend interface {
	// Location describes where the objects live (a directory, a bucket
	// and prefix), never with credentials.
	Location() string
	// Save stores the rd.Length() bytes of rd under h, atomically.
	Save(ctx context.Context, h Handle, rd RewindReader) error
	// Load calls fn with a reader of length bytes of h from offset
	// (length 0: to the end). fn's reader is valid only during the call;
	// an error fn returns is returned.
	Load(ctx context.Context, h Handle, length int, offset int64, fn func(io.Reader) error) error
	// Stat reports h's size and time.
	Stat(ctx context.Context, h Handle) (FileInfo, error)
	// List calls fn for every object of type t; Name is relative to the
	// type (journal objects: "<journal>/<file>").
	List(ctx context.Context, t FileType, fn func(FileInfo) error) error
	// Remove deletes h.
	Remove(ctx context.Context, h Handle) error
	// Close releases what the backend holds.
	Close() error
}

// RewindReader is what Save takes: a reader of known length that can be
// read again from the start (a retry re-sends the same bytes).
type RewindReader interface {
	io.Reader
	// Rewind starts the reader over.
	Rewind() error
	// Length is the number of bytes the reader yields.
	Length() int64
}

// ByteReader is a RewindReader over a byte slice.
type ByteReader struct {
	*bytes.Reader
	data []byte
}

// NewByteReader returns a RewindReader of b.
func NewByteReader(b []byte) *ByteReader {
	return &ByteReader{Reader: bytes.NewReader(b), data: b}
}

// Rewind implements RewindReader.
func (b *ByteReader) Rewind() error { _, err := b.Seek(0, io.SeekStart); return err }

// Length implements RewindReader.
func (b *ByteReader) Length() int64 { return int64(len(b.data)) }

// FileReader is a RewindReader over an open file, from its start to the
// size it had when wrapped.
type FileReader struct {
	f    *os.File
	size int64
	r    *io.SectionReader
}

// NewFileReader wraps f (not closed by FileReader).
func NewFileReader(f *os.File) (*FileReader, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	return &FileReader{f: f, size: fi.Size(), r: io.NewSectionReader(f, 0, fi.Size())}, nil
}

func (r *FileReader) Read(p []byte) (int, error) { return r.r.Read(p) }

// Rewind implements RewindReader.
func (r *FileReader) Rewind() error { _, err := r.r.Seek(0, io.SeekStart); return err }

// Length implements RewindReader.
func (r *FileReader) Length() int64 { return r.size }

// ValidName checks a store object name (see the package documentation).
func ValidName(name string) error {
	if name == "" || len(name) > 512 {
		return fmt.Errorf("%w: %q", ErrInvalidName, name)
	}
	for _, el := range strings.Split(name, "/") {
		if el == "" || el[0] == '.' {
			return fmt.Errorf("%w: %q", ErrInvalidName, name)
		}
	}
	for _, c := range name {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("./-_", c)
		if !ok {
			return fmt.Errorf("%w: %q holds %q", ErrInvalidName, name, c)
		}
	}
	return nil
}

// LoadAll reads the whole object h.
func LoadAll(ctx context.Context, b Backend, h Handle) ([]byte, error) {
	var out []byte
	err := b.Load(ctx, h, 0, 0, func(r io.Reader) error {
		var err error
		out, err = io.ReadAll(r)
		return err
	})
	return out, err
}
