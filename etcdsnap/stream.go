package etcdsnap

import (
	"context"
	"errors"
	"fmt"
	"io"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
)

// The Maintenance.Snapshot method and the fields of SnapshotResponse
// (api/etcdserverpb/rpc.proto) that the stream reader reads.
const (
	snapshotMethod          = "/etcdserverpb.Maintenance/Snapshot"
	snapshotFieldBlob       = 3
	snapshotFieldVersion    = 4
	snapshotMaxMessageBytes = 64 << 20
)

// snapshotStream reads Maintenance.Snapshot without decoding each chunk
// into a new message. clientv3's reader costs per chunk (32 KiB): a
// pooled buffer cleared and filled, a freshly allocated blob, a copy
// through an io.Pipe and a goroutine handoff; for a 1 GiB etcd every five
// minutes that garbage and those wakeups were most of the agent's CPU.
// Here each message is copied once into a reused buffer and its blob
// handed on from there.
type snapshotStream struct {
	stream  grpc.ClientStream
	msg     rawMessage
	blob    []byte // unread part of the current chunk's blob
	version string
	err     error
}

func openSnapshotStream(ctx context.Context, cli *clientv3.Client) (*snapshotStream, error) {
	conn := cli.ActiveConnection()
	if conn == nil {
		return nil, errors.New("no connection")
	}
	desc := &grpc.StreamDesc{StreamName: "Snapshot", ServerStreams: true}
	st, err := conn.NewStream(ctx, desc, snapshotMethod, grpc.ForceCodecV2(rawCodec{}), grpc.MaxCallRecvMsgSize(snapshotMaxMessageBytes))
	if err != nil {
		return nil, err
	}
	if err := st.SendMsg(&etcdserverpb.SnapshotRequest{}); err != nil {
		return nil, err
	}
	if err := st.CloseSend(); err != nil {
		return nil, err
	}
	s := &snapshotStream{stream: st}
	// The first chunk carries the storage version; read it now so that
	// Version is known before the caller reads any data.
	if err := s.next(); err != nil && err != io.EOF {
		return nil, err
	}
	return s, nil
}

// Version is the etcd storage version the server sent with the stream
// (etcd 3.6+; empty from older servers).
func (s *snapshotStream) Version() string { return s.version }

func (s *snapshotStream) Read(p []byte) (int, error) {
	for len(s.blob) == 0 {
		if s.err != nil {
			return 0, s.err
		}
		if err := s.next(); err != nil {
			s.err = err
		}
	}
	n := copy(p, s.blob)
	s.blob = s.blob[n:]
	return n, nil
}

// WriteTo hands each chunk's blob to w directly, without a copy into the
// caller's buffer first.
func (s *snapshotStream) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		if len(s.blob) > 0 {
			n, err := w.Write(s.blob)
			total += int64(n)
			s.blob = s.blob[n:]
			if err != nil {
				return total, err
			}
			continue
		}
		if s.err != nil {
			if s.err == io.EOF {
				return total, nil
			}
			return total, s.err
		}
		if err := s.next(); err != nil {
			s.err = err
		}
	}
}

// next receives one message and points blob at its data.
func (s *snapshotStream) next() error {
	if err := s.stream.RecvMsg(&s.msg); err != nil {
		return err
	}
	blob, version, err := parseSnapshotResponse(s.msg.buf)
	if err != nil {
		return err
	}
	s.blob = blob
	if version != "" {
		s.version = version
	}
	return nil
}

// parseSnapshotResponse returns the blob and version fields of an encoded
// SnapshotResponse; blob aliases b.
func parseSnapshotResponse(b []byte) (blob []byte, version string, err error) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, "", fmt.Errorf("snapshot response: %w", protowire.ParseError(n))
		}
		b = b[n:]
		if typ == protowire.BytesType && (num == snapshotFieldBlob || num == snapshotFieldVersion) {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil, "", fmt.Errorf("snapshot response field %d: %w", num, protowire.ParseError(n))
			}
			if num == snapshotFieldBlob {
				blob = v
			} else {
				version = string(v)
			}
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return nil, "", fmt.Errorf("snapshot response field %d: %w", num, protowire.ParseError(n))
		}
		b = b[n:]
	}
	return blob, version, nil
}

// rawMessage is a received message's bytes, in a buffer reused from one
// message to the next.
type rawMessage struct{ buf []byte }

// rawCodec sends requests as the proto codec does and receives responses
// as raw bytes. Its name is "proto" so the content type on the wire is
// the one etcd expects.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(interface{ Marshal() ([]byte, error) })
	if !ok {
		return nil, fmt.Errorf("raw codec: cannot marshal %T", v)
	}
	b, err := m.Marshal()
	if err != nil {
		return nil, err
	}
	return mem.BufferSlice{mem.SliceBuffer(b)}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(*rawMessage)
	if !ok {
		return fmt.Errorf("raw codec: cannot unmarshal into %T", v)
	}
	n := data.Len()
	if cap(m.buf) < n {
		m.buf = make([]byte, n)
	}
	m.buf = m.buf[:n]
	data.CopyTo(m.buf)
	return nil
}
