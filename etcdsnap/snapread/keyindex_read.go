package snapread

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"

	"github.com/zeebo/blake3"
)

// Reading the key index (keyindex.go has the format).

// kxDecoder reads varints off a part, remembering the first problem.
type kxDecoder struct {
	b   []byte
	err error
}

func (d *kxDecoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errors.New("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

// int63 is a uvarint that must fit an int64.
func (d *kxDecoder) int63() int64 {
	v := d.uvarint()
	if v > 1<<63-1 && d.err == nil {
		d.err = errors.New("value out of range")
	}
	return int64(v)
}

func (d *kxDecoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = errors.New("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *kxDecoder) bytes(n uint64) []byte {
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.err = errors.New("truncated")
		return nil
	}
	out := d.b[:n]
	d.b = d.b[n:]
	return out
}

// key reads a prefix-compressed key after prev.
func (d *kxDecoder) key(prev string) string {
	shared := d.uvarint()
	n := d.uvarint()
	if d.err != nil {
		return ""
	}
	if shared > uint64(len(prev)) {
		d.err = fmt.Errorf("key shares %d bytes with a %d-byte key", shared, len(prev))
		return ""
	}
	suffix := d.bytes(n)
	if d.err != nil {
		return ""
	}
	return prev[:shared] + string(suffix)
}

// KeyIndex reads an index through r, loading the root at open and each
// chunk and block as a lookup needs it (the last few are kept). Safe for
// concurrent use.
type KeyIndex struct {
	r      io.ReaderAt
	size   int64
	h      KeyIndexHeader
	chunks []indexPart

	mu     sync.Mutex
	cached map[int64][]byte // decoded-and-checked parts by offset
	order  []int64
}

// indexPart locates a chunk or a block and its checked bytes.
type indexPart struct {
	first  string
	off, n int64
	count  int64
	sum    [16]byte
}

func keyIndexErr(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrKeyIndex, fmt.Sprintf(format, a...))
}

// OpenKeyIndex reads and checks the root of the index of size bytes r
// holds.
func OpenKeyIndex(r io.ReaderAt, size int64) (*KeyIndex, error) {
	if size < int64(len(keyIndexMagic))+keyIndexTrailerLen {
		return nil, keyIndexErr("%d bytes is too short", size)
	}
	var tr [keyIndexTrailerLen]byte
	if _, err := r.ReadAt(tr[:], size-keyIndexTrailerLen); err != nil {
		return nil, fmt.Errorf("key index trailer: %w", err)
	}
	if string(tr[48:]) != keyIndexMagic {
		return nil, keyIndexErr("bad magic at the end (not a key index, or format newer than this kubekeep reads)")
	}
	rootOff := binary.LittleEndian.Uint64(tr[0:8])
	rootLen := binary.LittleEndian.Uint64(tr[8:16])
	rootEnd := uint64(size - keyIndexTrailerLen)
	if rootLen > keyIndexMaxRoot || rootOff < uint64(len(keyIndexMagic)) || rootOff > rootEnd || rootLen != rootEnd-rootOff {
		return nil, keyIndexErr("root at %d+%d does not end at the trailer (%d)", rootOff, rootLen, rootEnd)
	}
	root := make([]byte, rootLen)
	if _, err := r.ReadAt(root, int64(rootOff)); err != nil {
		return nil, fmt.Errorf("key index root: %w", err)
	}
	if blake3.Sum256(root) != [32]byte(tr[16:48]) {
		return nil, keyIndexErr("root at offset %d: checksum mismatch", rootOff)
	}
	if !bytes.HasPrefix(root, []byte(keyIndexRootMagic)) {
		return nil, keyIndexErr("root: bad magic")
	}
	d := &kxDecoder{b: root[len(keyIndexRootMagic):]}
	x := &KeyIndex{r: r, size: size, cached: map[int64][]byte{}}
	x.h = KeyIndexHeader{Revision: d.int63(), CompactRevision: d.int63(), ImageSize: d.int63(), Keys: d.int63(), Records: d.int63()}
	n := d.uvarint()
	if d.err == nil && n > uint64(len(d.b)) {
		d.err = fmt.Errorf("%d chunks in %d bytes", n, len(d.b))
	}
	if d.err == nil && x.h.Keys > x.h.Records {
		d.err = fmt.Errorf("%d live keys of %d records", x.h.Keys, x.h.Records)
	}
	prev := ""
	for i := uint64(0); i < n && d.err == nil; i++ {
		kl := d.uvarint()
		first := string(d.bytes(kl))
		p := indexPart{first: first, off: d.int63(), n: d.int63(), count: d.int63()}
		copy(p.sum[:], d.bytes(16))
		if d.err != nil {
			break
		}
		switch {
		case first == "" || i > 0 && first <= prev:
			d.err = fmt.Errorf("chunk %d: first key %q not after %q", i, first, prev)
		case p.n <= 0 || p.n > keyIndexMaxPart || p.off < int64(len(keyIndexMagic)) || p.off > int64(rootOff)-p.n:
			d.err = fmt.Errorf("chunk %d at %d+%d outside the index", i, p.off, p.n)
		case p.count <= 0 || p.count > keyIndexMaxPart:
			d.err = fmt.Errorf("chunk %d: %d blocks", i, p.count)
		}
		prev = first
		x.chunks = append(x.chunks, p)
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%d bytes after the last chunk", len(d.b))
	}
	if d.err == nil && n == 0 && x.h.Records != 0 {
		d.err = fmt.Errorf("no chunks for %d records", x.h.Records)
	}
	if d.err != nil {
		return nil, keyIndexErr("root: %v", d.err)
	}
	return x, nil
}

// Header is what the index says about its image.
func (x *KeyIndex) Header() KeyIndexHeader { return x.h }

// part reads and checks one chunk or block.
func (x *KeyIndex) part(what string, p indexPart) ([]byte, error) {
	x.mu.Lock()
	if b, ok := x.cached[p.off]; ok {
		x.mu.Unlock()
		return b, nil
	}
	x.mu.Unlock()
	b := make([]byte, p.n)
	if _, err := x.r.ReadAt(b, p.off); err != nil {
		return nil, fmt.Errorf("key index %s at offset %d: %w", what, p.off, err)
	}
	if sum128(b) != p.sum {
		return nil, keyIndexErr("%s at offset %d: checksum mismatch", what, p.off)
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if len(x.order) >= 8 {
		delete(x.cached, x.order[0])
		x.order = x.order[1:]
	}
	x.cached[p.off] = b
	x.order = append(x.order, p.off)
	return b, nil
}

// blocks decodes chunk c's block descriptors. next is the first key of
// the following chunk ("" for the last).
func (x *KeyIndex) blocks(c int) ([]indexPart, error) {
	ch := x.chunks[c]
	b, err := x.part("chunk", ch)
	if err != nil {
		return nil, err
	}
	d := &kxDecoder{b: b}
	n := d.uvarint()
	if d.err == nil && n != uint64(ch.count) {
		d.err = fmt.Errorf("%d blocks, the root says %d", n, ch.count)
	}
	next := ""
	if c+1 < len(x.chunks) {
		next = x.chunks[c+1].first
	}
	out := make([]indexPart, 0, min(n, uint64(len(b))))
	prev := ""
	for i := uint64(0); i < n && d.err == nil; i++ {
		first := d.key(prev)
		p := indexPart{first: first, off: d.int63(), n: d.int63(), count: d.int63()}
		copy(p.sum[:], d.bytes(16))
		if d.err != nil {
			break
		}
		switch {
		case i == 0 && first != ch.first:
			d.err = fmt.Errorf("first key %q, the root says %q", first, ch.first)
		case i > 0 && first <= prev, next != "" && first >= next:
			d.err = fmt.Errorf("block %d: first key %q out of order", i, first)
		case p.n <= 0 || p.n > keyIndexMaxPart || p.off < int64(len(keyIndexMagic)) || p.off > x.size-p.n:
			d.err = fmt.Errorf("block %d at %d+%d outside the index", i, p.off, p.n)
		case p.count <= 0 || p.count > p.n:
			d.err = fmt.Errorf("block %d: %d records in %d bytes", i, p.count, p.n)
		}
		prev = first
		out = append(out, p)
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%d bytes after the last block", len(d.b))
	}
	if d.err != nil {
		return nil, keyIndexErr("chunk at offset %d: %v", ch.off, d.err)
	}
	return out, nil
}

// records decodes one block, whose keys must lie in [bl.first, next).
func (x *KeyIndex) records(bl indexPart, next string) ([]IndexedKey, error) {
	b, err := x.part("block", bl)
	if err != nil {
		return nil, err
	}
	d := &kxDecoder{b: b}
	n := d.uvarint()
	if d.err == nil && n != uint64(bl.count) {
		d.err = fmt.Errorf("%d records, its chunk says %d", n, bl.count)
	}
	out := make([]IndexedKey, 0, min(n, uint64(len(b))))
	prev := ""
	for i := uint64(0); i < n && d.err == nil; i++ {
		r := IndexedKey{Key: d.key(prev)}
		r.Revision.Main = d.int63()
		r.Revision.Sub = d.int63()
		flags := d.uvarint()
		r.CreateRevision = d.int63()
		r.Version = d.int63()
		r.Lease = d.varint()
		r.ValueOffset = d.int63()
		r.ValueLength = d.int63()
		if d.err != nil {
			break
		}
		r.Revision.Tombstone = flags == 1
		switch {
		case flags > 1:
			d.err = fmt.Errorf("record %d: unknown flags %d", i, flags)
		case i == 0 && r.Key != bl.first:
			d.err = fmt.Errorf("first key %q, its chunk says %q", r.Key, bl.first)
		case i > 0 && r.Key <= prev, next != "" && r.Key >= next:
			d.err = fmt.Errorf("record %d: key %q out of order", i, r.Key)
		case !r.Revision.Tombstone && (r.ValueLength <= 0 || r.ValueOffset > x.h.ImageSize-r.ValueLength):
			d.err = fmt.Errorf("record %d (%q): value at %d+%d outside the %d-byte image", i, r.Key, r.ValueOffset, r.ValueLength, x.h.ImageSize)
		}
		prev = r.Key
		out = append(out, r)
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%d bytes after the last record", len(d.b))
	}
	if d.err != nil {
		return nil, keyIndexErr("block at offset %d: %v", bl.off, d.err)
	}
	return out, nil
}

// Lookup returns key's record; false when the index has none.
func (x *KeyIndex) Lookup(key string) (IndexedKey, bool, error) {
	var found IndexedKey
	ok := false
	err := x.Range(key, key+"\x00", func(r IndexedKey) bool {
		found, ok = r, r.Key == key
		return false
	})
	return found, ok, err
}

// Range calls fn for each record with from <= key < to (to "" for no end),
// in key order, until fn returns false. It reads only the chunks and
// blocks that hold such keys.
func (x *KeyIndex) Range(from, to string, fn func(IndexedKey) bool) error {
	// The last chunk whose first key is <= from.
	c := sort.Search(len(x.chunks), func(i int) bool { return x.chunks[i].first > from }) - 1
	c = max(c, 0)
	for ; c < len(x.chunks); c++ {
		if to != "" && x.chunks[c].first >= to {
			return nil
		}
		bls, err := x.blocks(c)
		if err != nil {
			return err
		}
		b := sort.Search(len(bls), func(i int) bool { return bls[i].first > from }) - 1
		b = max(b, 0)
		for ; b < len(bls); b++ {
			if to != "" && bls[b].first >= to {
				return nil
			}
			next := ""
			if b+1 < len(bls) {
				next = bls[b+1].first
			} else if c+1 < len(x.chunks) {
				next = x.chunks[c+1].first
			}
			recs, err := x.records(bls[b], next)
			if err != nil {
				return err
			}
			for _, r := range recs {
				if r.Key < from {
					continue
				}
				if to != "" && r.Key >= to {
					return nil
				}
				if !fn(r) {
					return nil
				}
			}
		}
	}
	return nil
}

// PrefixEnd is the first key after every key with prefix p ("" when there
// is none: p is all 0xff).
func PrefixEnd(p string) string {
	b := []byte(p)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return string(b[:i+1])
		}
	}
	return ""
}
