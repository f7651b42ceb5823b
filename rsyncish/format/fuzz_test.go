package format

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

func sampleManifest() []byte {
	m := &Manifest{
		Header: Header{ID: "20261123T112831Z-3f2a9c1b", Time: time.Date(2026, 11, 23, 11, 28, 31, 0, time.UTC), BlockSize: 65536,
			Paths: []string{"/etc/kubernetes"}, Files: 1, Size: 70000, Skipped: []Skipped{{Path: "/etc/f\xfd", Reason: "fifo"}}, Meta: map[string]json.RawMessage{"etcd": json.RawMessage(`{"revision":7}`)}},
		Entries: []Entry{
			{Path: "/etc/kubernetes", Type: TypeDir, Mode: 0o755},
			{Path: "/etc/kubernetes/a", Type: TypeFile, Mode: 0o600, Size: 70000, Extents: Extents{{ID: Sum([]byte("x")), Len: 65536}, {Len: 4464}}},
			{Path: "/etc/kubernetes/l", Type: TypeSymlink, Target: "a"},
			{Path: "etcd.db", Type: TypeStream, Size: 5, Extents: Extents{{ID: Sum([]byte("y")), Off: 3, Len: 5}}},
			{Path: "/etc/kubernetes/k\xff", Type: TypeSymlink, Target: "t\xfe"},
		},
	}
	var b bytes.Buffer
	if err := EncodeManifest(&b, m); err != nil {
		panic(err)
	}
	return b.Bytes()
}

func TestManifestRoundTrip(t *testing.T) {
	data := sampleManifest()
	m, err := DecodeManifest(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Entries) != 5 || m.Entries[1].Extents[0].Len != 65536 || string(m.Header.Meta["etcd"]) != `{"revision":7}` {
		t.Fatalf("decoded %+v", m)
	}
	// Names are bytes, and only they say which file is which.
	if e := m.Entries[4]; e.Path != "/etc/kubernetes/k\xff" || e.Target != "t\xfe" || m.Header.Skipped[0].Path != "/etc/f\xfd" {
		t.Fatalf("names not kept as bytes: %q -> %q, skipped %q", e.Path, e.Target, m.Header.Skipped[0].Path)
	}
	h, err := ReadManifestHeader(bytes.NewReader(data))
	if err != nil || !reflect.DeepEqual(*h, m.Header) {
		t.Fatalf("header %+v %v", h, err)
	}
	for i := range data {
		bad := bytes.Clone(data)
		bad[i] ^= 1
		if _, err := DecodeManifest(bad); err == nil {
			t.Fatalf("flip at %d not detected", i)
		}
	}
}

// FuzzDecodeManifest: no input may panic or allocate without bound, and a
// manifest that decodes re-encodes to one that decodes the same.
func FuzzDecodeManifest(f *testing.F) {
	f.Add(sampleManifest())
	f.Add([]byte(ManifestMagic + "\n{}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		// Fuzzing mostly breaks the checksum; also try the body re-sealed
		// so the parser behind it is exercised.
		for _, in := range [][]byte{data, Seal(bytes.Clone(data))} {
			m, err := DecodeManifest(in)
			if err != nil {
				continue
			}
			var b bytes.Buffer
			if err := EncodeManifest(&b, m); err != nil {
				t.Fatal(err)
			}
			m2, err := DecodeManifest(b.Bytes())
			if err != nil {
				t.Fatalf("re-encoded manifest does not decode: %v", err)
			}
			if len(m2.Entries) != len(m.Entries) || m2.Header.ID != m.Header.ID {
				t.Fatal("round trip changed the manifest")
			}
			for i := range m.Entries {
				if m.Entries[i].Path != m2.Entries[i].Path || m.Entries[i].Target != m2.Entries[i].Target {
					t.Fatalf("entry %d: %q -> %q became %q -> %q", i, m.Entries[i].Path, m.Entries[i].Target, m2.Entries[i].Path, m2.Entries[i].Target)
				}
			}
			_, _ = ReadManifestHeader(bytes.NewReader(in))
		}
	})
}

func FuzzDecodeIndex(f *testing.F) {
	f.Add(EncodeIndex([]IndexEntry{{ID: Sum([]byte("a")), Off: 0, Len: 10}, {ID: Sum([]byte("b")), Off: 10, Len: 5}}))
	f.Add(EncodeIndex(nil))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, in := range [][]byte{data, reseal32(data)} {
			if es := SalvageIndex(in); len(es)*extentSize > len(in) {
				t.Fatalf("salvaged %d entries out of %d bytes", len(es), len(in))
			}
			es, size, err := DecodeIndex(in)
			if err != nil {
				continue
			}
			if got := SalvageIndex(in); len(got) != len(es) {
				t.Fatalf("salvage of a good index found %d of %d entries", len(got), len(es))
			}
			var sum int64
			for _, e := range es {
				sum += int64(e.Len)
			}
			if sum != size {
				t.Fatalf("pack size %d, blobs sum to %d", size, sum)
			}
			if !bytes.Equal(EncodeIndex(es), in) {
				t.Fatal("index does not re-encode identically")
			}
		}
	})
}

func FuzzDecodeSegment(f *testing.F) {
	f.Add(EncodeSegment(Segment{First: 5, Last: 9, Time: time.Unix(0, 1234).UTC(), Data: []byte("put a")}))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, in := range [][]byte{data, reseal32(data)} {
			s, err := DecodeSegment(in)
			if err != nil {
				continue
			}
			if !bytes.Equal(EncodeSegment(s), in) {
				t.Fatal("segment does not re-encode identically")
			}
		}
	})
}

func FuzzUnsealJSON(f *testing.F) {
	b, _ := SealJSON(Verification{Method: "drill", Time: time.Unix(5, 0).UTC()})
	f.Add(b)
	f.Fuzz(func(t *testing.T, data []byte) {
		var v Verification
		_ = UnsealJSON(data, &v)
		_ = UnsealJSON(Seal(bytes.Clone(data)), &v)
	})
}

// reseal32 replaces the last 32 bytes with the right blake3, so binary
// decoders get past their checksum.
func reseal32(data []byte) []byte {
	if len(data) < 32 {
		return data
	}
	body := bytes.Clone(data[:len(data)-32])
	s := Sum(body)
	return append(body, s[:]...)
}
