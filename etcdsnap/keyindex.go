package etcdsnap

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"sort"
	"sync"

	"github.com/zeebo/blake3"
)

// The key index: what a reader needs to take one key out of a snapshot
// image without opening it with bbolt. The backup's check writes it (it
// walks every entry anyway) beside the image (KeyIndexPathFor), and the
// backup stores it as a stream of the version; `kubekeep get` then reads
// the index's root, one chunk, one block, and the value's bytes, all by
// offset out of the stored streams.
//
// For every key of bucket "key" it holds the newest stored revision (a
// deletion too, while the image keeps it: a reader can say when the key
// went), its create revision, version and lease, and where that
// revision's mvccpb.KeyValue lies in the image (offset and length: a
// value's overflow pages are contiguous in bbolt's file).
//
// Format 1, all integers unsigned varints unless said otherwise:
//
//	"KKKEYS01"                          magic
//	block*                              records sorted by key, each block
//	                                    zero-padded to a 4 KiB multiple
//	chunk*                              block descriptors, 128 per chunk
//	root                                header and chunk descriptors
//	trailer (56 bytes)                  root offset (u64 LE), root length
//	                                    (u64 LE), blake3-256 of the root,
//	                                    "KKKEYS01"
//
//	block:  count, then per record: shared-prefix length with the previous
//	        key of the block, suffix length, suffix, mod main, mod sub,
//	        flags (1: deletion), create revision, version, lease (zigzag),
//	        value offset, value length
//	chunk:  count, then per block: first key (shared prefix, suffix as
//	        above), offset, data length, records, blake3-128 of the data
//	root:   "KKKEYR01", revision, compact revision, image size, live keys,
//	        records, chunk count, then per chunk: first key length, first
//	        key, offset, length, blocks, blake3-128 of the chunk
//
// Blocks end where the FNV-1a hash of a key says (past 8 KiB, or at
// 64 KiB), not at a fixed count: the output is a function of the records
// alone, and a change to some keys rewrites only the blocks that hold
// them, so the store's page-level dedupe keeps the others. Every part a
// reader uses is checked against its checksum first; a damaged or
// truncated index is an error wrapping ErrKeyIndex, never a wrong answer.

// ErrKeyIndex: the key index is damaged, truncated or not one.
var ErrKeyIndex = errors.New("damaged key index")

const (
	keyIndexMagic      = "KKKEYS01"
	keyIndexRootMagic  = "KKKEYR01"
	keyIndexTrailerLen = 8 + 8 + 32 + 8
	keyIndexPage       = 4096
	keyIndexMinBlock   = 8 << 10
	keyIndexMaxBlock   = 64 << 10
	keyIndexCutMask    = 127 // past the minimum, 1 key in 128 ends a block
	keyIndexChunkLen   = 128 // blocks per chunk
	// Bounds a reader enforces before it allocates.
	keyIndexMaxPart = 4 << 20
	keyIndexMaxRoot = 64 << 20
)

// IndexedKey is one key of the index: its newest stored revision and
// where that revision's mvccpb.KeyValue is in the image.
type IndexedKey struct {
	Key            string
	Revision       Revision // Tombstone: the newest revision deletes the key
	CreateRevision int64
	Version        int64
	Lease          int64
	// ValueOffset and ValueLength locate the stored mvccpb.KeyValue in the
	// image (zero for a deletion).
	ValueOffset int64
	ValueLength int64
}

// KeyIndexHeader is what the index says about its image.
type KeyIndexHeader struct {
	// Revision is the newest main revision in the image (bump markers
	// count), CompactRevision where its history starts.
	Revision        int64
	CompactRevision int64
	// ImageSize bounds every value location (the bbolt file's size).
	ImageSize int64
	// Keys are live keys, Records all records (deletions included).
	Keys    int64
	Records int64
}

// WriteKeyIndex writes the index of recs, which must be sorted by key
// without duplicates, to w. The same input always gives the same bytes.
func WriteKeyIndex(w io.Writer, h KeyIndexHeader, recs []IndexedKey) error {
	bw := bufio.NewWriterSize(w, 256<<10)
	off := int64(0)
	write := func(b []byte) error {
		_, err := bw.Write(b)
		off += int64(len(b))
		return err
	}
	if err := write([]byte(keyIndexMagic)); err != nil {
		return err
	}
	type blockDesc struct {
		first        string
		off, n, recs int64
		sum          [16]byte
	}
	var blocks []blockDesc
	var buf, body []byte
	var prev string
	count := 0
	first := ""
	flush := func() error {
		if count == 0 {
			return nil
		}
		data := binary.AppendUvarint(nil, uint64(count))
		data = append(data, body...)
		d := blockDesc{first: first, off: off, n: int64(len(data)), recs: int64(count), sum: sum128(data)}
		if pad := (keyIndexPage - len(data)%keyIndexPage) % keyIndexPage; pad > 0 {
			data = append(data, make([]byte, pad)...)
		}
		blocks = append(blocks, d)
		body, count, prev = body[:0], 0, ""
		return write(data)
	}
	for i, r := range recs {
		if i > 0 && r.Key <= recs[i-1].Key {
			return fmt.Errorf("key index: keys not sorted or duplicate at %q", r.Key)
		}
		if r.Key == "" {
			return errors.New("key index: empty key")
		}
		if count == 0 {
			first = r.Key
		}
		buf = appendRecord(buf[:0], prev, r)
		body = append(body, buf...)
		prev = r.Key
		count++
		if n := len(body); n >= keyIndexMaxBlock || n >= keyIndexMinBlock && cutAfter(r.Key) {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := flush(); err != nil {
		return err
	}
	type chunkDesc struct {
		first     string
		off, n, b int64
		sum       [16]byte
	}
	var chunks []chunkDesc
	for i := 0; i < len(blocks); i += keyIndexChunkLen {
		part := blocks[i:min(i+keyIndexChunkLen, len(blocks))]
		data := binary.AppendUvarint(nil, uint64(len(part)))
		p := ""
		for _, b := range part {
			data = appendKey(data, p, b.first)
			p = b.first
			data = binary.AppendUvarint(data, uint64(b.off))
			data = binary.AppendUvarint(data, uint64(b.n))
			data = binary.AppendUvarint(data, uint64(b.recs))
			data = append(data, b.sum[:]...)
		}
		chunks = append(chunks, chunkDesc{first: part[0].first, off: off, n: int64(len(data)), b: int64(len(part)), sum: sum128(data)})
		if err := write(data); err != nil {
			return err
		}
	}
	root := []byte(keyIndexRootMagic)
	for _, v := range []int64{h.Revision, h.CompactRevision, h.ImageSize, h.Keys, h.Records, int64(len(chunks))} {
		root = binary.AppendUvarint(root, uint64(v))
	}
	for _, c := range chunks {
		root = binary.AppendUvarint(root, uint64(len(c.first)))
		root = append(root, c.first...)
		root = binary.AppendUvarint(root, uint64(c.off))
		root = binary.AppendUvarint(root, uint64(c.n))
		root = binary.AppendUvarint(root, uint64(c.b))
		root = append(root, c.sum[:]...)
	}
	rootOff := off
	if err := write(root); err != nil {
		return err
	}
	tr := binary.LittleEndian.AppendUint64(nil, uint64(rootOff))
	tr = binary.LittleEndian.AppendUint64(tr, uint64(len(root)))
	s := blake3.Sum256(root)
	tr = append(tr, s[:]...)
	tr = append(tr, keyIndexMagic...)
	if err := write(tr); err != nil {
		return err
	}
	return bw.Flush()
}

func sum128(b []byte) (s [16]byte) {
	full := blake3.Sum256(b)
	copy(s[:], full[:16])
	return s
}

func cutAfter(key string) bool {
	h := fnv.New64a()
	h.Write([]byte(key))
	return h.Sum64()&keyIndexCutMask == 0
}

func appendKey(b []byte, prev, key string) []byte {
	shared := 0
	for shared < len(prev) && shared < len(key) && prev[shared] == key[shared] {
		shared++
	}
	b = binary.AppendUvarint(b, uint64(shared))
	b = binary.AppendUvarint(b, uint64(len(key)-shared))
	return append(b, key[shared:]...)
}

func appendRecord(b []byte, prev string, r IndexedKey) []byte {
	b = appendKey(b, prev, r.Key)
	b = binary.AppendUvarint(b, uint64(r.Revision.Main))
	b = binary.AppendUvarint(b, uint64(r.Revision.Sub))
	var flags uint64
	if r.Revision.Tombstone {
		flags = 1
	}
	b = binary.AppendUvarint(b, flags)
	b = binary.AppendUvarint(b, uint64(r.CreateRevision))
	b = binary.AppendUvarint(b, uint64(r.Version))
	b = binary.AppendVarint(b, r.Lease)
	b = binary.AppendUvarint(b, uint64(r.ValueOffset))
	return binary.AppendUvarint(b, uint64(r.ValueLength))
}

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

// keyIndexBuilder collects the newest revision of every key while the
// check walks bucket "key" in revision order.
type keyIndexBuilder struct {
	base, size uintptr // the image's memory map
	recs       map[string]IndexedKey
	bad        error // a value outside the map: write no index
}

func newKeyIndexBuilder() *keyIndexBuilder {
	return &keyIndexBuilder{recs: map[string]IndexedKey{}}
}

// add records entry e whose stored value v (a slice of the map) is at the
// given address.
func (b *keyIndexBuilder) add(e Entry, v []byte, addr uintptr) {
	if b.bad != nil || e.IsBumpMarker() {
		return
	}
	r := IndexedKey{Revision: e.Revision, CreateRevision: e.CreateRevision, Version: e.Version}
	if !e.Tombstone {
		if addr < b.base || addr-b.base+uintptr(len(v)) > b.size {
			b.bad = fmt.Errorf("value of revision %s outside the image's map", e.Revision)
			return
		}
		r.ValueOffset, r.ValueLength = int64(addr-b.base), int64(len(v))
		r.Lease = entryLease(v)
	}
	if old, ok := b.recs[string(e.Key)]; ok {
		r.Key = old.Key
	} else {
		r.Key = string(e.Key)
	}
	b.recs[r.Key] = r
}

// entryLease reads field 6 (lease) of a stored mvccpb.KeyValue the check
// already validated; 0 when absent.
func entryLease(v []byte) int64 {
	var lease int64
	for len(v) > 0 {
		tag, n := binary.Uvarint(v)
		if n <= 0 {
			return 0
		}
		v = v[n:]
		num, typ := tag>>3, tag&7
		switch typ {
		case 0:
			x, m := binary.Uvarint(v)
			if m <= 0 {
				return 0
			}
			if num == 6 {
				lease = int64(x)
			}
			v = v[m:]
		case 2:
			l, m := binary.Uvarint(v)
			if m <= 0 || l > uint64(len(v)-m) {
				return 0
			}
			v = v[m+int(l):]
		case 1:
			if len(v) < 8 {
				return 0
			}
			v = v[8:]
		case 5:
			if len(v) < 4 {
				return 0
			}
			v = v[4:]
		default:
			return 0
		}
	}
	return lease
}

// write writes the index for an image whose check gave st.
func (b *keyIndexBuilder) write(w io.Writer, st DBStats) error {
	if b.bad != nil {
		return b.bad
	}
	keys := make([]string, 0, len(b.recs))
	live := int64(0)
	for k, r := range b.recs {
		keys = append(keys, k)
		if !r.Revision.Tombstone {
			live++
		}
	}
	sort.Strings(keys)
	recs := make([]IndexedKey, len(keys))
	for i, k := range keys {
		recs[i] = b.recs[k]
	}
	h := KeyIndexHeader{Revision: st.Revision, CompactRevision: st.CompactRevision, ImageSize: st.Size, Keys: live, Records: int64(len(recs))}
	return WriteKeyIndex(w, h, recs)
}
