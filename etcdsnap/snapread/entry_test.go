package snapread

import (
	"bytes"
	"strings"
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

// revKey is a key of bucket "key" written as etcd's mvcc writes it
// (BigEndian main, '_', BigEndian sub, 't' for a delete), independently of
// Revision.Bytes.
func revKey(main, sub uint64, tomb bool) []byte {
	b := []byte{byte(main >> 56), byte(main >> 48), byte(main >> 40), byte(main >> 32), byte(main >> 24), byte(main >> 16), byte(main >> 8), byte(main), '_',
		byte(sub >> 56), byte(sub >> 48), byte(sub >> 40), byte(sub >> 32), byte(sub >> 24), byte(sub >> 16), byte(sub >> 8), byte(sub)}
	if tomb {
		b = append(b, 't')
	}
	return b
}

func TestParseRevision(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		want Revision
		err  string
	}{
		{"put", revKey(1_000_000_252, 0, false), Revision{Main: 1_000_000_252}, ""},
		{"delete in a transaction", revKey(7, 3, true), Revision{Main: 7, Sub: 3, Tombstone: true}, ""},
		{"short", revKey(7, 0, false)[:16], Revision{}, "bad revision key"},
		{"no separator", append(revKey(7, 0, false)[:8], bytes.Repeat([]byte{0}, 9)...), Revision{}, "bad revision key"},
		{"unknown mark", append(revKey(7, 0, false), 'x'), Revision{}, "unknown mark"},
		{"negative main", revKey(1<<63, 0, false), Revision{}, "negative"},
		{"negative sub", revKey(1, 1<<63, false), Revision{}, "negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := ParseRevision(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("ParseRevision(%x) = %+v, %v; want an error saying %q", tc.in, r, err, tc.err)
				}
				return
			}
			if err != nil || r != tc.want {
				t.Fatalf("ParseRevision(%x) = %+v, %v; want %+v", tc.in, r, err, tc.want)
			}
			if !bytes.Equal(r.Bytes(), tc.in) {
				t.Fatalf("Bytes() = %x, want %x", r.Bytes(), tc.in)
			}
		})
	}
}

// TestParseEntry: the one reading of a stored revision that the check and
// every reader share. The bump marker is the empty entry at sub-revision 0
// of a put; any other entry without a key is refused, by both.
func TestParseEntry(t *testing.T) {
	full := kvBytes(t, &mvccpb.KeyValue{Key: []byte("/registry/pods/default/a"), CreateRevision: 5, ModRevision: 9, Version: 3,
		Value: bytes.Repeat([]byte{0xff}, 300), Lease: 7})
	put := revKey(9, 0, false)
	for _, tc := range []struct {
		name         string
		k, v         []byte
		key          string
		marker       bool
		err          string // ParseEntry's, and so the check's
		checkOnlyErr string // refused by the check's full walk only
	}{
		{"full entry", put, full, "/registry/pods/default/a", false, "", ""},
		{"delete", revKey(9, 0, true), kvBytes(t, &mvccpb.KeyValue{Key: []byte("k"), ModRevision: 9}), "k", false, "", ""},
		{"revision bump marker", revKey(1_000_000_252, 0, false), []byte{}, "", true, "", ""},
		{"nil value is the marker too", revKey(1_000_000_252, 0, false), nil, "", true, "", ""},
		{"empty entry at a delete", revKey(9, 0, true), []byte{}, "", false, "has no key", ""},
		{"empty entry at sub-revision 1", revKey(9, 1, false), []byte{}, "", false, "has no key", ""},
		{"value without key", put, kvBytes(t, &mvccpb.KeyValue{ModRevision: 9, Value: []byte("v")}), "", false, "has no key", ""},
		{"only a version", put, []byte{0x20, 0x01}, "", false, "has no key", ""},
		{"explicit empty key", put, append([]byte{0x0a, 0x00}, kvBytes(t, &mvccpb.KeyValue{ModRevision: 9, Value: []byte("v")})...), "", false, "empty key", ""},
		{"bad revision key", put[:10], full, "", false, "bad revision key", ""},
		{"key with varint wire type", put, []byte{0x08, 0x01}, "", false, "has no key", ""},
		{"length past the end", put, []byte{0x0a, 0x05, 'a'}, "", false, "key", ""},
		// The head is all ParseEntry reads (indexing must not touch the
		// value's overflow pages); the check walks the rest.
		{"truncated value", put, full[:len(full)-10], "/registry/pods/default/a", false, "", "entry field 5"},
		{"key after the value again", put, append(bytes.Clone(full), 0x0a, 0x01, 'b'), "/registry/pods/default/a", false, "", "two key fields"},
		{"field number zero after the head", put, append(bytes.Clone(full), 0x02, 0x00), "/registry/pods/default/a", false, "", "field number 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, err := ParseEntry(tc.k, tc.v)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("ParseEntry = %+v, %v; want an error saying %q", e, err, tc.err)
				}
				if _, cerr := checkEntry(tc.k, tc.v); cerr == nil {
					t.Fatal("the check passes what readers refuse")
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseEntry: %v", err)
			}
			if string(e.Key) != tc.key || e.IsBumpMarker() != tc.marker {
				t.Fatalf("key %q marker %v, want %q %v", e.Key, e.IsBumpMarker(), tc.key, tc.marker)
			}
			_, cerr := checkEntry(tc.k, tc.v)
			if tc.checkOnlyErr == "" && cerr != nil {
				t.Fatalf("check refuses it: %v", cerr)
			}
			if tc.checkOnlyErr != "" && (cerr == nil || !strings.Contains(cerr.Error(), tc.checkOnlyErr)) {
				t.Fatalf("check: %v, want an error saying %q", cerr, tc.checkOnlyErr)
			}
		})
	}
	e, err := ParseEntry(put, full)
	if err != nil || e.CreateRevision != 5 || e.Version != 3 || e.Main != 9 {
		t.Fatalf("head %+v %v, want create 5 version 3 at 9", e, err)
	}
}

// FuzzCheckEntry holds the check to what readers do with an entry: one
// the check passes is one ParseEntry (the index of package objects and of
// etcdsnap's readers) reads, with the same key, and, unless it is the bump
// marker, one mvccpb (which reads the value) decodes with that key too,
// at a revision that names it again. (The check may be stricter about
// encodings etcd never writes: groups, overlong varints.)
func FuzzCheckEntry(f *testing.F) {
	f.Add(revKey(2, 0, false), kvBytes(f, &mvccpb.KeyValue{Key: []byte("k"), Value: []byte("v"), ModRevision: 2}))
	f.Add(revKey(1_000_000_252, 0, false), []byte{}) // the bump marker
	f.Add(revKey(9, 0, true), []byte{})
	f.Add(revKey(9, 1, false), []byte{})
	f.Add(revKey(9, 0, false), []byte{0x2a, 0x01, 'v'})
	f.Add(revKey(9, 0, false), []byte{0x0a, 0x00, 0x2a, 0x01, 'v'})
	f.Add(revKey(9, 0, false), []byte{0x0a, 0x01, 'k', 0x2a, 0x01, 'v', 0x0a, 0x01, 'j'})
	f.Add(revKey(9, 0, false), []byte{0x0a, 0x01, 'k', 0x38, 0x01})
	f.Fuzz(func(t *testing.T, k, v []byte) {
		e, err := checkEntry(k, v)
		if err != nil {
			return
		}
		h, err := ParseEntry(k, v)
		if err != nil {
			t.Fatalf("the check passed what ParseEntry refuses: %v", err)
		}
		if !bytes.Equal(h.Key, e.Key) || h.IsBumpMarker() != e.IsBumpMarker() {
			t.Fatalf("check key %q, ParseEntry %q", e.Key, h.Key)
		}
		if !bytes.Equal(h.Revision.Bytes(), k) {
			t.Fatalf("revision %+v is written back as %x, stored at %x", h.Revision, h.Revision.Bytes(), k)
		}
		if h.IsBumpMarker() {
			if len(v) != 0 || h.Tombstone || h.Sub != 0 {
				t.Fatalf("marker %+v with %d bytes", h.Revision, len(v))
			}
			return
		}
		var kv mvccpb.KeyValue
		if uerr := kv.Unmarshal(v); uerr != nil {
			t.Fatalf("the check passed (key %q) what mvccpb rejects: %v", e.Key, uerr)
		}
		if !bytes.Equal(e.Key, kv.Key) || len(kv.Key) == 0 {
			t.Fatalf("check key %q, mvccpb %q", e.Key, kv.Key)
		}
	})
}

// FuzzCheckEntryOfEncoded: every entry etcd's put or delete can write (a
// non-empty key) is accepted, with its key and head.
func FuzzCheckEntryOfEncoded(f *testing.F) {
	f.Add([]byte("/registry/a"), []byte("v"), int64(1), int64(2), int64(1), int64(0), false)
	f.Add([]byte("k"), []byte{}, int64(0), int64(0), int64(0), int64(-1), true)
	f.Fuzz(func(t *testing.T, key, value []byte, create, mod, version, lease int64, tomb bool) {
		if len(key) == 0 {
			return // etcd refuses an empty key
		}
		in := kvBytes(t, &mvccpb.KeyValue{Key: key, Value: value, CreateRevision: create, ModRevision: mod, Version: version, Lease: lease})
		e, err := checkEntry(revKey(uint64(mod)&(1<<63-1), 0, tomb), in)
		if err != nil {
			t.Fatalf("the check rejects an encoded entry: %v", err)
		}
		if !bytes.Equal(e.Key, key) || e.CreateRevision != create || e.Version != version {
			t.Fatalf("head %q create %d version %d, want %q %d %d", e.Key, e.CreateRevision, e.Version, key, create, version)
		}
	})
}
