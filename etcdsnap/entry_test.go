package etcdsnap

import (
	"bytes"
	"testing"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

func kvBytes(t testing.TB, kv *mvccpb.KeyValue) []byte {
	b, err := kv.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestEntryKey(t *testing.T) {
	full := kvBytes(t, &mvccpb.KeyValue{Key: []byte("/registry/pods/default/a"), CreateRevision: 5, ModRevision: 9, Version: 3,
		Value: bytes.Repeat([]byte{0xff}, 300), Lease: 7})
	for _, tc := range []struct {
		name    string
		in      []byte
		key     string
		wantErr bool
	}{
		{"full entry", full, "/registry/pods/default/a", false},
		{"revision bump marker", []byte{}, "", false},
		{"truncated value", full[:len(full)-10], "", true},
		{"key with varint wire type", []byte{0x08, 0x01}, "", true},
		{"field number zero", []byte{0x02, 0x00}, "", true},
		{"length past the end", []byte{0x0a, 0x05, 'a'}, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key, err := entryKey(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("entryKey err = %v, want error %v", err, tc.wantErr)
			}
			if string(key) != tc.key {
				t.Fatalf("key = %q, want %q", key, tc.key)
			}
		})
	}
}

// FuzzEntryKey holds the cheap key extraction of the check to the full
// decoder etcd itself uses: entryKey never accepts what mvccpb rejects,
// and where both accept they agree on the key. (entryKey may be stricter
// about encodings etcd never writes: groups, overlong varints.)
func FuzzEntryKey(f *testing.F) {
	f.Add(kvBytes(f, &mvccpb.KeyValue{Key: []byte("k"), Value: []byte("v"), ModRevision: 2}))
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0x01, 'k', 0x38, 0x01})
	f.Fuzz(func(t *testing.T, in []byte) {
		key, err := entryKey(in)
		if err != nil {
			return
		}
		var kv mvccpb.KeyValue
		if uerr := kv.Unmarshal(in); uerr != nil {
			t.Fatalf("entryKey accepted (key %q) what mvccpb rejects: %v", key, uerr)
		}
		if !bytes.Equal(key, kv.Key) {
			t.Fatalf("entryKey %q, mvccpb %q", key, kv.Key)
		}
	})
}

// FuzzEntryKeyOfEncoded: every entry etcd can encode is accepted, with
// its key.
func FuzzEntryKeyOfEncoded(f *testing.F) {
	f.Add([]byte("/registry/a"), []byte("v"), int64(1), int64(2), int64(1), int64(0))
	f.Add([]byte{}, []byte{}, int64(0), int64(0), int64(0), int64(-1))
	f.Fuzz(func(t *testing.T, key, value []byte, create, mod, version, lease int64) {
		in := kvBytes(t, &mvccpb.KeyValue{Key: key, Value: value, CreateRevision: create, ModRevision: mod, Version: version, Lease: lease})
		got, err := entryKey(in)
		if err != nil {
			t.Fatalf("entryKey rejects an encoded entry: %v", err)
		}
		if !bytes.Equal(got, key) {
			t.Fatalf("entryKey %q, want %q", got, key)
		}
	})
}
