package format

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/zeebo/blake3"
)

// sealWriter hashes what passes through and appends the Seal trailer on Close.
type sealWriter struct {
	w io.Writer
	h *blake3.Hasher
}

func newSealWriter(w io.Writer) *sealWriter { return &sealWriter{w: w, h: blake3.New()} }

func (s *sealWriter) Write(p []byte) (int, error) {
	_, _ = s.h.Write(p)
	return s.w.Write(p)
}

func (s *sealWriter) Close() error {
	out := append([]byte(sealPrefix), hex.EncodeToString(s.h.Sum(nil))...)
	_, err := s.w.Write(append(out, '\n'))
	return err
}

// ---- pack index ----
//
// A pack is nothing but blobs back to back, so every byte of it is covered
// by some blob's ID. Its index (index/<pack>.idx) lists them in order:
//
//	"KKIDX001" | count u32 | count × (id[32] off u32 len u32) | blake3[32]

const indexMagic = "KKIDX001"

// IndexEntry locates one blob in its pack.
type IndexEntry struct {
	ID  ID
	Off uint32
	Len uint32
}

// EncodeIndex encodes a pack index.
func EncodeIndex(entries []IndexEntry) []byte {
	b := make([]byte, 0, len(indexMagic)+4+len(entries)*extentSize+32)
	b = append(b, indexMagic...)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(entries)))
	for _, e := range entries {
		b = append(b, e.ID[:]...)
		b = binary.LittleEndian.AppendUint32(b, e.Off)
		b = binary.LittleEndian.AppendUint32(b, e.Len)
	}
	sum := blake3.Sum256(b)
	return append(b, sum[:]...)
}

// DecodeIndex decodes and checks a pack index. The blobs must tile the pack
// from offset 0 without gaps, so PackSize says how big the pack must be.
func DecodeIndex(data []byte) (entries []IndexEntry, packSize int64, err error) {
	if len(data) < len(indexMagic)+4+32 || string(data[:len(indexMagic)]) != indexMagic {
		return nil, 0, errors.New("index: bad magic or truncated")
	}
	body, sum := data[:len(data)-32], data[len(data)-32:]
	if blake3.Sum256(body) != [32]byte(sum) {
		return nil, 0, fmt.Errorf("index: %w", ErrChecksum)
	}
	n := binary.LittleEndian.Uint32(body[len(indexMagic):])
	rest := body[len(indexMagic)+4:]
	if uint64(len(rest)) != uint64(n)*extentSize {
		return nil, 0, fmt.Errorf("index: %d entries need %d bytes, have %d", n, uint64(n)*extentSize, len(rest))
	}
	entries = make([]IndexEntry, n)
	for i := range entries {
		b := rest[i*extentSize:]
		copy(entries[i].ID[:], b[:32])
		entries[i].Off = binary.LittleEndian.Uint32(b[32:])
		entries[i].Len = binary.LittleEndian.Uint32(b[36:])
		if int64(entries[i].Off) != packSize || entries[i].Len == 0 {
			return nil, 0, fmt.Errorf("index: entry %d at %d/%d does not follow the previous blob (end %d)", i, entries[i].Off, entries[i].Len, packSize)
		}
		packSize += int64(entries[i].Len)
		if packSize > 1<<32-1 {
			return nil, 0, errors.New("index: pack larger than 4 GiB")
		}
	}
	return entries, packSize, nil
}

// SalvageIndex reads what it can of a damaged index, trusting nothing: no
// checksum, no tiling. Repair uses it to find the blobs of a pack whose
// index lost a bit, and checks every blob it reads against its hash. It
// never returns more entries than the data holds.
func SalvageIndex(data []byte) []IndexEntry {
	if len(data) < len(indexMagic)+4 {
		return nil
	}
	n := uint64(binary.LittleEndian.Uint32(data[len(indexMagic):]))
	rest := data[len(indexMagic)+4:]
	if avail := uint64(len(rest)) / extentSize; n > avail {
		n = avail
	}
	out := make([]IndexEntry, 0, n)
	for i := range n {
		b := rest[i*extentSize:]
		var e IndexEntry
		copy(e.ID[:], b[:32])
		e.Off = binary.LittleEndian.Uint32(b[32:])
		e.Len = binary.LittleEndian.Uint32(b[36:])
		if e.Len > 0 {
			out = append(out, e)
		}
	}
	return out
}

// ---- journal segment ----
//
//	"KKJSEG01" | first u64 | last u64 | time i64 (unix ns) | len u32 | data | blake3[32]

const segMagic = "KKJSEG01"
const segHeader = len(segMagic) + 8 + 8 + 8 + 4

// Segment is one decoded journal segment.
type Segment struct {
	First, Last uint64
	Time        time.Time
	Data        []byte
}

// EncodeSegment encodes a journal segment.
func EncodeSegment(s Segment) []byte {
	b := make([]byte, 0, segHeader+len(s.Data)+32)
	b = append(b, segMagic...)
	b = binary.LittleEndian.AppendUint64(b, s.First)
	b = binary.LittleEndian.AppendUint64(b, s.Last)
	b = binary.LittleEndian.AppendUint64(b, uint64(s.Time.UnixNano()))
	b = binary.LittleEndian.AppendUint32(b, uint32(len(s.Data)))
	b = append(b, s.Data...)
	sum := blake3.Sum256(b)
	return append(b, sum[:]...)
}

// DecodeSegment decodes and checks a journal segment.
func DecodeSegment(data []byte) (Segment, error) {
	var s Segment
	if len(data) < segHeader+32 || string(data[:len(segMagic)]) != segMagic {
		return s, errors.New("journal segment: bad magic or truncated")
	}
	body, sum := data[:len(data)-32], data[len(data)-32:]
	if blake3.Sum256(body) != [32]byte(sum) {
		return s, fmt.Errorf("journal segment: %w", ErrChecksum)
	}
	s.First = binary.LittleEndian.Uint64(body[8:])
	s.Last = binary.LittleEndian.Uint64(body[16:])
	s.Time = time.Unix(0, int64(binary.LittleEndian.Uint64(body[24:]))).UTC()
	n := binary.LittleEndian.Uint32(body[32:])
	if uint64(len(body)-segHeader) != uint64(n) {
		return s, fmt.Errorf("journal segment: length %d, have %d bytes", n, len(body)-segHeader)
	}
	if s.Last < s.First {
		return s, fmt.Errorf("journal segment: last revision %d before first %d", s.Last, s.First)
	}
	s.Data = body[segHeader:]
	return s, nil
}
