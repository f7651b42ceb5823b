package etcdsnap

import (
	"bytes"
	"testing"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
)

// FuzzSnapshotResponse holds the stream reader's parser to the generated
// protobuf code: every message that code encodes parses to the same blob
// and version, the two agree wherever both decode, and no bytes at all
// make the parser panic.
func FuzzSnapshotResponse(f *testing.F) {
	for _, m := range []*etcdserverpb.SnapshotResponse{
		{},
		{Header: &etcdserverpb.ResponseHeader{ClusterId: 1, MemberId: 2, Revision: 3, RaftTerm: 4}, RemainingBytes: 1 << 30, Blob: []byte{}, Version: "3.6.0"},
		{RemainingBytes: 12345, Blob: bytes.Repeat([]byte{0xab}, 32<<10)},
		{Blob: []byte("sha256-trailer-of-32-bytes......")},
	} {
		b, err := m.Marshal()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		blob, version, err := parseSnapshotResponse(data)
		var want etcdserverpb.SnapshotResponse
		if want.Unmarshal(data) != nil {
			return
		}
		// The generated code skips malformed groups the parser refuses;
		// where both decode, they agree.
		if err == nil && (!bytes.Equal(blob, want.Blob) || version != want.Version) {
			t.Fatalf("parser: blob %x version %q; generated code: blob %x version %q", blob, version, want.Blob, want.Version)
		}
		// What etcd sends is well-formed: the message as the generated
		// code encodes it must parse to the same fields.
		// (Known fields only: the generated code keeps unknown ones verbatim.)
		clean := etcdserverpb.SnapshotResponse{Header: want.Header, RemainingBytes: want.RemainingBytes, Blob: want.Blob, Version: want.Version}
		if clean.Header != nil {
			clean.Header.XXX_unrecognized = nil
		}
		enc, err := clean.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		blob, version, err = parseSnapshotResponse(enc)
		if err != nil || !bytes.Equal(blob, want.Blob) || version != want.Version {
			t.Fatalf("re-encoded %x: parser blob %x version %q err %v; want blob %x version %q", enc, blob, version, err, want.Blob, want.Version)
		}
	})
}
