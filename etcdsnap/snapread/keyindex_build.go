package snapread

import (
	"encoding/binary"
	"fmt"
	"io"
	"sort"
)

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
