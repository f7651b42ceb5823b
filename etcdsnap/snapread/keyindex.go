package snapread

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"

	"github.com/zeebo/blake3"
)

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
