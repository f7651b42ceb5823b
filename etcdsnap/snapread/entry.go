package snapread

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/encoding/protowire"
)

// One reading of etcd's key bucket for every reader of an image: the
// backup check (checkDB), etcdsnap's own readers (ReadKeys, Get, Scan) and
// package objects (kubekeep objects, get, diff) all take each stored
// revision through ParseEntry, so an entry the check passes is one every
// reader reads, and an entry a reader would stop at fails the backup's
// check instead of the restore of a deleted object weeks later.

// Revision is a key of bucket "key" (server/storage/mvcc/revision.go): 8
// bytes big-endian main revision, '_', 8 bytes big-endian sub revision,
// and a trailing 't' when the revision deletes its key.
type Revision struct {
	Main, Sub int64
	Tombstone bool
}

const (
	revBytesLen       = 8 + 1 + 8
	markedRevBytesLen = revBytesLen + 1
	tombstoneMark     = 't'
)

// ParseRevision parses a key of bucket "key" (or a revision value of
// bucket "meta"). It accepts only what Bytes writes back, so a revision
// found while indexing names its entry again when read.
func ParseRevision(k []byte) (Revision, error) {
	if (len(k) != revBytesLen && len(k) != markedRevBytesLen) || k[8] != '_' {
		return Revision{}, fmt.Errorf("bad revision key %x: want 8 bytes, '_', 8 bytes[, 't']", k)
	}
	r := Revision{Main: int64(binary.BigEndian.Uint64(k[:8])), Sub: int64(binary.BigEndian.Uint64(k[9:revBytesLen]))}
	if r.Main < 0 || r.Sub < 0 {
		return Revision{}, fmt.Errorf("bad revision key %x: negative revision", k)
	}
	if len(k) == markedRevBytesLen {
		if k[revBytesLen] != tombstoneMark {
			return Revision{}, fmt.Errorf("bad revision key %x: unknown mark %q", k, k[revBytesLen])
		}
		r.Tombstone = true
	}
	return r, nil
}

// Bytes is r as a key of bucket "key".
func (r Revision) Bytes() []byte {
	b := make([]byte, revBytesLen, markedRevBytesLen)
	binary.BigEndian.PutUint64(b, uint64(r.Main))
	b[8] = '_'
	binary.BigEndian.PutUint64(b[9:], uint64(r.Sub))
	if r.Tombstone {
		b = append(b, tombstoneMark)
	}
	return b
}

func (r Revision) String() string {
	s := fmt.Sprintf("%d_%d", r.Main, r.Sub)
	if r.Tombstone {
		s += " (delete)"
	}
	return s
}

// Entry is the head of one stored revision: what indexing it needs,
// without its value.
type Entry struct {
	Revision
	// Key aliases the page the entry was read from: copy it to keep it.
	// Nil for the revision bump marker (see IsBumpMarker).
	Key            []byte
	CreateRevision int64
	Version        int64
}

// IsBumpMarker reports whether e is the entry a restore's revision bump
// writes (`etcdutl snapshot restore --bump-revision N --mark-compacted`,
// etcdutl/snapshot unsafeBumpBucketsRevision in 3.6, unsafeBumpRevision
// in 3.5, and RestoreDataDir): no bytes at all, at the newest revision
// plus N, sub-revision 0, not a deletion. It changes no key, only moves
// the store's revision on. etcd indexes it under the empty key, which no
// client can read, and compaction keeps the newest revision of every key:
// the newest restore's marker stays for good (an older one goes at the
// first compaction after a newer), so every snapshot taken after a
// restore holds one. A reader skips it and counts its revision.
func (e Entry) IsBumpMarker() bool { return e.Key == nil }

// errNoKey: a stored revision with bytes but no key, or an empty one
// where the marker cannot be. etcd itself would index such an entry under
// the empty key, which no client can read; for kubekeep it is damage.
var errNoKey = errors.New("entry has no key, and is not a restore's revision bump marker (no bytes, sub-revision 0, not a delete)")

// ParseEntry reads one stored revision of bucket "key", k its key and v
// its value, the way every kubekeep reader does. It reads fields 1-4 of
// the mvccpb.KeyValue (key, create_revision, mod_revision, version) and
// stops at the value, which etcd's marshaller always writes after them:
// indexing then touches only the first bytes of each entry, and never the
// overflow pages a large object spills onto. Errors name the revision.
func ParseEntry(k, v []byte) (Entry, error) {
	r, err := ParseRevision(k)
	if err != nil {
		return Entry{}, err
	}
	e := Entry{Revision: r}
	if len(v) == 0 {
		if r.Tombstone || r.Sub != 0 {
			return e, fmt.Errorf("entry at revision %s: %w", r, errNoKey)
		}
		return e, nil
	}
	for len(v) > 0 {
		num, typ, n := protowire.ConsumeTag(v)
		if n < 0 {
			return e, fmt.Errorf("entry at revision %s: %w", r, protowire.ParseError(n))
		}
		if num >= 5 && e.Key != nil {
			break
		}
		v = v[n:]
		switch {
		case num == 1 && typ == protowire.BytesType:
			b, m := protowire.ConsumeBytes(v)
			if m < 0 {
				return e, fmt.Errorf("entry at revision %s: key: %w", r, protowire.ParseError(m))
			}
			e.Key, v = b, v[m:]
		case (num == 2 || num == 4) && typ == protowire.VarintType:
			x, m := protowire.ConsumeVarint(v)
			if m < 0 {
				return e, fmt.Errorf("entry at revision %s: field %d: %w", r, num, protowire.ParseError(m))
			}
			if num == 2 {
				e.CreateRevision = int64(x)
			} else {
				e.Version = int64(x)
			}
			v = v[m:]
		default:
			m := protowire.ConsumeFieldValue(num, typ, v)
			if m < 0 {
				return e, fmt.Errorf("entry at revision %s: field %d: %w", r, num, protowire.ParseError(m))
			}
			v = v[m:]
		}
	}
	if e.Key == nil {
		return e, fmt.Errorf("entry at revision %s: %w", r, errNoKey)
	}
	if len(e.Key) == 0 {
		// etcd refuses an empty key on every request.
		return e, fmt.Errorf("entry at revision %s: empty key", r)
	}
	return e, nil
}

// CompactRevision reads the compaction progress etcd keeps in bucket meta
// (nil: none) and returns the main revision history starts after: the
// finished compaction's or, when one was scheduled but not finished (as a
// restore's mark-compacted leaves it until etcd starts), that one, since
// it may already have removed revisions. etcd fails to start on a value
// that is not a revision; so does this.
func CompactRevision(meta *bolt.Bucket) (int64, error) {
	if meta == nil {
		return 0, nil
	}
	var rev int64
	for _, name := range [][]byte{metaFinishedCompact, metaScheduledCompact} {
		if v := meta.Get(name); v != nil {
			r, err := ParseRevision(v)
			if err != nil {
				return 0, fmt.Errorf("meta %s: %w", name, err)
			}
			rev = max(rev, r.Main)
		}
	}
	return rev, nil
}

// Field numbers and wire types of mvccpb.KeyValue (api/mvccpb/kv.proto).
var kvFieldTypes = map[protowire.Number]protowire.Type{
	1: protowire.BytesType,  // key
	2: protowire.VarintType, // create_revision
	3: protowire.VarintType, // mod_revision
	4: protowire.VarintType, // version
	5: protowire.BytesType,  // value
	6: protowire.VarintType, // lease
}

// errUnusualField: a field etcd never writes (a deprecated group, or a
// field number beyond protobuf's range). The check refuses it where gogo's
// decoder would skip it leniently.
var errUnusualField = errors.New("entry has a group or out-of-range field number, which etcd never writes")

// checkEntry is the backup check of one stored revision: ParseEntry, as
// every reader takes it, and then the whole entry's wire structure, as
// readers that decode the value (mvccpb's Unmarshal) need it, without
// copying or touching the value: a check that decoded every value would
// read each overflow page of a 1 GiB image and copy it once more, only to
// count keys.
func checkEntry(k, v []byte) (Entry, error) {
	e, err := ParseEntry(k, v)
	if err != nil || e.IsBumpMarker() {
		return e, err
	}
	key, err := entryKey(v)
	if err != nil {
		return e, fmt.Errorf("entry at revision %s: %w", e.Revision, err)
	}
	if !bytes.Equal(key, e.Key) {
		// Not reachable while entryKey refuses a second key field; kept so
		// the two readings can never disagree silently.
		return e, fmt.Errorf("entry at revision %s: key %q in its head, %q in full", e.Revision, e.Key, key)
	}
	return e, nil
}

// entryKey validates the wire structure of a stored mvccpb.KeyValue and
// returns its key. A second key field is refused: ParseEntry would take
// the one before the value and mvccpb the last, and the reader that
// indexes by one and reads by the other would find its entry holds
// another key.
func entryKey(b []byte) ([]byte, error) {
	var key []byte
	seenKey := false
	for len(b) > 0 {
		tag, n := protowire.ConsumeVarint(b)
		if n < 0 {
			return nil, fmt.Errorf("entry: %w", protowire.ParseError(n))
		}
		num, typ := protowire.DecodeTag(tag)
		if num == 0 {
			return nil, errors.New("entry: field number 0")
		}
		if !num.IsValid() || typ == protowire.StartGroupType || typ == protowire.EndGroupType {
			return nil, errUnusualField
		}
		if want, known := kvFieldTypes[num]; known && want != typ {
			return nil, fmt.Errorf("entry: field %d has wire type %d, want %d", num, typ, want)
		}
		b = b[n:]
		if num == 1 {
			if seenKey {
				return nil, errors.New("entry: two key fields, which etcd never writes")
			}
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return nil, fmt.Errorf("entry key: %w", protowire.ParseError(m))
			}
			key, n, seenKey = v, m, true
		} else if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
			return nil, fmt.Errorf("entry field %d: %w", num, protowire.ParseError(n))
		}
		b = b[n:]
	}
	return key, nil
}
