package etcdsnap

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
)

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

// entryKey validates the wire structure of a stored mvccpb.KeyValue and
// returns its key (empty for the marker entry a restore's revision bump
// writes) without copying or touching the value: a check that
// decoded every value would read each overflow page of a 1 GiB image and
// copy it once more, only to count keys.
func entryKey(b []byte) ([]byte, error) {
	var key []byte
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
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return nil, fmt.Errorf("entry key: %w", protowire.ParseError(m))
			}
			key, n = v, m
		} else if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
			return nil, fmt.Errorf("entry field %d: %w", num, protowire.ParseError(n))
		}
		b = b[n:]
	}
	return key, nil
}
