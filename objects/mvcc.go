package objects

import (
	"encoding/binary"
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
)

// etcd's mvcc layer (server/storage/mvcc/revision.go) keys bucket "key" by
// revision: 8-byte big-endian main revision, '_', 8-byte big-endian sub
// revision, and one more byte 't' when the revision deletes the key.
const (
	revLen       = 8 + 1 + 8
	markedRevLen = revLen + 1
	tombstone    = 't'
)

var (
	bucketKey  = []byte("key")
	bucketMeta = []byte("meta")
	// etcd records compaction progress in the meta bucket; values are
	// revision keys like those of bucket "key".
	metaFinishedCompact  = []byte("finishedCompactRev")
	metaScheduledCompact = []byte("scheduledCompactRev")
)

type revision struct {
	main, sub int64
	deleted   bool
}

func parseRevKey(b []byte) (revision, error) {
	if (len(b) != revLen && len(b) != markedRevLen) || b[8] != '_' {
		return revision{}, fmt.Errorf("bad revision key %x: want 8 bytes, '_', 8 bytes[, 't']", b)
	}
	r := revision{
		main: int64(binary.BigEndian.Uint64(b[:8])),
		sub:  int64(binary.BigEndian.Uint64(b[9:17])),
	}
	if r.main < 0 || r.sub < 0 {
		return revision{}, fmt.Errorf("bad revision key %x: negative revision", b)
	}
	if len(b) == markedRevLen {
		if b[revLen] != tombstone {
			return revision{}, fmt.Errorf("bad revision key %x: unknown mark %q", b, b[revLen])
		}
		r.deleted = true
	}
	return r, nil
}

func revKey(r revision) []byte {
	b := make([]byte, revLen, markedRevLen)
	binary.BigEndian.PutUint64(b, uint64(r.main))
	b[8] = '_'
	binary.BigEndian.PutUint64(b[9:], uint64(r.sub))
	if r.deleted {
		b = append(b, tombstone)
	}
	return b
}

// kvHeader is the part of an mvccpb.KeyValue the index needs.
type kvHeader struct {
	key            []byte // aliases the bbolt page: copy before keeping
	createRevision int64
	version        int64
}

var errNoKey = errors.New("KeyValue has no key field")

// peekKeyValue reads fields 1-4 of an mvccpb.KeyValue (key,
// create_revision, mod_revision, version) and stops at the value (field 5,
// which etcd's marshaller always writes after them):
// building the index then touches only the first bytes of each value, and
// never the overflow pages a large object spills onto.
func peekKeyValue(b []byte) (kvHeader, error) {
	var h kvHeader
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return h, fmt.Errorf("KeyValue: %w", protowire.ParseError(n))
		}
		if num >= 5 && h.key != nil {
			break
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.BytesType:
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return h, fmt.Errorf("KeyValue key: %w", protowire.ParseError(m))
			}
			h.key, b = v, b[m:]
		case (num == 2 || num == 4) && typ == protowire.VarintType:
			v, m := protowire.ConsumeVarint(b)
			if m < 0 {
				return h, fmt.Errorf("KeyValue field %d: %w", num, protowire.ParseError(m))
			}
			if num == 2 {
				h.createRevision = int64(v)
			} else {
				h.version = int64(v)
			}
			b = b[m:]
		default:
			m := protowire.ConsumeFieldValue(num, typ, b)
			if m < 0 {
				return h, fmt.Errorf("KeyValue field %d: %w", num, protowire.ParseError(m))
			}
			b = b[m:]
		}
	}
	if h.key == nil {
		return h, errNoKey
	}
	return h, nil
}
