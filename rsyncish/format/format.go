// Package format holds every on-disk encoding of the rsyncish store, and
// nothing else: no I/O, no paths. Each encoding carries a blake3 checksum so
// that a flipped bit anywhere in a store file is detected by decoding alone
// (pack data is covered by the blob IDs themselves). Decoders never trust
// their input: they are fuzzed, bound every length by the input size and
// return an error instead of panicking.
package format

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/zeebo/blake3"
)

// ID is the blake3-256 digest of a blob's bytes.
type ID [32]byte

// ZeroID marks an extent of zero bytes that is stored as nothing. No blob
// has it as a digest in practice (it would take a blake3 preimage).
var ZeroID ID

// Sum hashes data into an ID.
func Sum(data []byte) ID { return ID(blake3.Sum256(data)) }

func (id ID) String() string { return hex.EncodeToString(id[:]) }

// Short is the 12-hex-digit prefix used in messages.
func (id ID) Short() string { return hex.EncodeToString(id[:6]) }

// IsZero reports whether the ID is the zero-extent marker.
func (id ID) IsZero() bool { return id == ZeroID }

// ParseID parses 64 hex digits.
func ParseID(s string) (ID, error) {
	var id ID
	if len(s) != 64 {
		return id, fmt.Errorf("blob id %q: want 64 hex digits", s)
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, fmt.Errorf("blob id %q: %w", s, err)
	}
	return id, nil
}

// Extent is a run of a file's bytes: Len bytes of blob ID starting at Off.
// Extents never cross a block boundary of the file, so a later version can
// replace one block's extents without touching its neighbours.
type Extent struct {
	ID  ID
	Off uint32
	Len uint32
}

const extentSize = 32 + 4 + 4

// Extents marshal to JSON as one base64 string of fixed 40-byte records:
// a 1 GiB file has 16,384 of them and field names per extent would triple
// the manifest.
type Extents []Extent

// MarshalJSON implements json.Marshaler.
func (xs Extents) MarshalJSON() ([]byte, error) {
	raw := make([]byte, len(xs)*extentSize)
	for i, x := range xs {
		b := raw[i*extentSize:]
		copy(b, x.ID[:])
		binary.LittleEndian.PutUint32(b[32:], x.Off)
		binary.LittleEndian.PutUint32(b[36:], x.Len)
	}
	out := make([]byte, 0, base64.StdEncoding.EncodedLen(len(raw))+2)
	out = append(out, '"')
	out = base64.StdEncoding.AppendEncode(out, raw)
	return append(out, '"'), nil
}

// UnmarshalJSON implements json.Unmarshaler.
func (xs *Extents) UnmarshalJSON(data []byte) error {
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		return fmt.Errorf("extents: %w", err)
	}
	raw, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return fmt.Errorf("extents: %w", err)
	}
	if len(raw)%extentSize != 0 {
		return fmt.Errorf("extents: %d bytes is not a multiple of %d", len(raw), extentSize)
	}
	out := make(Extents, len(raw)/extentSize)
	for i := range out {
		b := raw[i*extentSize:]
		copy(out[i].ID[:], b[:32])
		out[i].Off = binary.LittleEndian.Uint32(b[32:])
		out[i].Len = binary.LittleEndian.Uint32(b[36:])
		if out[i].Len == 0 {
			return fmt.Errorf("extents: extent %d is empty", i)
		}
	}
	*xs = out
	return nil
}

// Total is the number of file bytes the extents describe.
func (xs Extents) Total() int64 {
	var n int64
	for _, x := range xs {
		n += int64(x.Len)
	}
	return n
}

// ---- sealed documents: body + "blake3 <hex>\n" ----

const sealPrefix = "blake3 "
const sealLen = len(sealPrefix) + 64 + 1

// Seal appends the checksum trailer to body.
func Seal(body []byte) []byte {
	sum := blake3.Sum256(body)
	out := append(body, sealPrefix...)
	out = hex.AppendEncode(out, sum[:])
	return append(out, '\n')
}

// ErrChecksum is returned when a sealed document's trailer does not match.
var ErrChecksum = errors.New("checksum mismatch")

// Unseal checks the trailer and returns the body.
func Unseal(data []byte) ([]byte, error) {
	if len(data) < sealLen {
		return nil, fmt.Errorf("truncated: %d bytes, no checksum trailer", len(data))
	}
	body, trailer := data[:len(data)-sealLen], data[len(data)-sealLen:]
	if !bytes.HasPrefix(trailer, []byte(sealPrefix)) || trailer[sealLen-1] != '\n' {
		return nil, errors.New("no checksum trailer")
	}
	// Compared as text: hex decoding would accept an upper-case digit, so a
	// flipped case bit in the trailer would go unnoticed.
	sum := blake3.Sum256(body)
	if string(trailer[len(sealPrefix):sealLen-1]) != hex.EncodeToString(sum[:]) {
		return nil, ErrChecksum
	}
	return body, nil
}

// SealJSON encodes v as a sealed JSON document.
func SealJSON(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return Seal(append(b, '\n')), nil
}

// UnsealJSON checks and decodes a document made by SealJSON.
func UnsealJSON(data []byte, v any) error {
	body, err := Unseal(data)
	if err != nil {
		return err
	}
	return json.Unmarshal(body, v)
}

// ---- store config ----

// StoreFormat is the format version this code writes; it reads every
// format from 1 up to it. Format 2: manifests are "kubekeep-manifest 2"
// (names are bytes, see ManifestMagic). A format-1 store is upgraded (its
// config.json rewritten) when the first version of format 2 is written, so
// an older kubekeep refuses the store with a clear message instead of
// reporting the new manifests as damage.
const StoreFormat = 2

// Config is the store's config.json, written once at creation.
type Config struct {
	Format  int       `json:"format"`
	StoreID string    `json:"storeId"`
	Created time.Time `json:"created"`
}

// Verification records a successful check of a version (the restore drill),
// kept beside the immutable manifest in verified/<id>.
type Verification struct {
	Time   time.Time `json:"time"`
	Method string    `json:"method"`
	Detail string    `json:"detail,omitempty"`
}

// Damage is the store's damage.json: the blobs a verify --read-data found
// rotten, by pack. Writers and readers skip those copies (the next backup
// stores the blocks again); repair rewrites the packs without them.
// Missing packs and packs of the wrong size are not listed: a stat finds
// them every time the index is loaded.
type Damage struct {
	Time  time.Time           `json:"time"`
	Packs map[string][]string `json:"packs"` // pack id -> blob ids (hex)
	// Aux are the top-level extras (the rescue kit) that did not match
	// their recorded hash: the next WriteAux of each clears it.
	Aux []string `json:"aux,omitempty"`
	// Segments are the journal segments verify found damaged (unreadable,
	// failing their checksum, truncated), by journal: a version requiring
	// revisions they hold is not built (VersionWriter.Require), without
	// reading the journal again. A segment is never rewritten under its
	// name, so an entry goes stale only when the segment is trimmed.
	Segments map[string][]string `json:"segments,omitempty"`
}

// AuxFiles is the store's aux.json: what WriteAux wrote, so that verify can
// tell a rotted rescue kit (the kubekeep binary, RESTORE.md) from a good one.
type AuxFiles struct {
	Files map[string]AuxFile `json:"files"`
}

// AuxFile is one recorded aux file.
type AuxFile struct {
	Size   int64     `json:"size"`
	Blake3 string    `json:"blake3"`
	Time   time.Time `json:"time"`
	// Prev is the hash of the copy being replaced while a WriteAux is under
	// way (a crash may leave either copy); empty otherwise.
	Prev string `json:"prev,omitempty"`
}
