package etcdsnap_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kubekeep/kubekeep/etcdsnap"
	"github.com/kubekeep/kubekeep/etcdsnap/snapread"
	"github.com/kubekeep/kubekeep/internal/testetcd"
)

func sampleSegment() *snapread.Segment {
	t0 := time.Unix(1_800_000_000, 123).UTC()
	return &snapread.Segment{
		FromRev: 10, ToRev: 14, FromTime: t0, ToTime: t0.Add(2 * time.Second),
		Events: []snapread.Event{
			{Type: snapread.EventPut, Key: "/registry/configmaps/a/b", Value: []byte("k8s\x00\x0a\x01"), ModRevision: 11, CreateRevision: 3, Version: 4, Time: t0.Add(time.Millisecond)},
			{Type: snapread.EventPut, Key: "/x", Value: nil, ModRevision: 12, CreateRevision: 12, Version: 1, Lease: 7, Time: t0.Add(time.Second)},
			{Type: snapread.EventDelete, Key: "/y", ModRevision: 12, Time: t0.Add(time.Second)},
			{Type: snapread.EventDelete, Key: "/z", ModRevision: 14, Time: t0.Add(2 * time.Second)},
		},
	}
}

func sameSegment(a, b *snapread.Segment) bool {
	if a.FromRev != b.FromRev || a.ToRev != b.ToRev || a.CatchUp != b.CatchUp || !a.FromTime.Equal(b.FromTime) || !a.ToTime.Equal(b.ToTime) || len(a.Events) != len(b.Events) {
		return false
	}
	for i := range a.Events {
		x, y := a.Events[i], b.Events[i]
		if x.Type != y.Type || x.Key != y.Key || !bytes.Equal(x.Value, y.Value) || x.ModRevision != y.ModRevision ||
			x.CreateRevision != y.CreateRevision || x.Version != y.Version || x.Lease != y.Lease || !x.Time.Equal(y.Time) {
			return false
		}
	}
	return true
}

func TestSegmentRoundTripAndDamage(t *testing.T) {
	s := sampleSegment()
	b := s.Encode()
	got, err := snapread.DecodeSegment(b)
	if err != nil {
		t.Fatal(err)
	}
	if !sameSegment(s, got) {
		t.Fatalf("round trip:\n%+v\n%+v", s, got)
	}
	// Every single-byte change and every truncation is caught.
	for i := range b {
		c := bytes.Clone(b)
		c[i] ^= 0x41
		if _, err := snapread.DecodeSegment(c); !errors.Is(err, snapread.ErrBadSegment) {
			t.Fatalf("byte %d changed: %v", i, err)
		}
		if _, err := snapread.DecodeSegment(b[:i]); !errors.Is(err, snapread.ErrBadSegment) {
			t.Fatalf("truncated to %d: %v", i, err)
		}
	}
	// Out-of-order and out-of-range events are refused even with a valid
	// checksum.
	bad := sampleSegment()
	bad.Events[0].ModRevision, bad.Events[1].ModRevision = 13, 12
	if _, err := snapread.DecodeSegment(bad.Encode()); !errors.Is(err, snapread.ErrBadSegment) {
		t.Fatalf("out of order: %v", err)
	}
	bad = sampleSegment()
	bad.Events[3].ModRevision = 15
	if _, err := snapread.DecodeSegment(bad.Encode()); !errors.Is(err, snapread.ErrBadSegment) {
		t.Fatalf("beyond toRev: %v", err)
	}
}

func FuzzDecodeSegment(f *testing.F) {
	f.Add(sampleSegment().Encode())
	f.Add((&snapread.Segment{FromRev: 5, ToRev: 5}).Encode())
	f.Add([]byte("KKDS\x01\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		from, to, rerr := snapread.SegmentRange(b)
		s, err := snapread.DecodeSegment(b)
		// The header alone reads wherever the whole segment does, and
		// says what the whole one says.
		if err == nil && (rerr != nil || from != s.FromRev || to != s.ToRev) {
			t.Fatalf("SegmentRange: (%d, %d] %v; DecodeSegment: (%d, %d]", from, to, rerr, s.FromRev, s.ToRev)
		}
		if rerr != nil && !errors.Is(rerr, snapread.ErrBadSegment) {
			t.Fatalf("SegmentRange: error of the wrong kind: %v", rerr)
		}
		// In place decodes what the copying decode does.
		if in, ierr := snapread.DecodeSegmentInPlace(bytes.Clone(b)); (ierr == nil) != (err == nil) || err == nil && !sameSegment(s, in) {
			t.Fatalf("DecodeSegmentInPlace: %v; DecodeSegment: %v", ierr, err)
		}
		// Sealed (no crc32c of its own) decodes what the checked decode
		// does, and whatever else it reads is a valid segment: the same
		// bytes with their crc32c set decode alike.
		sealed, serr := snapread.DecodeSegmentSealed(bytes.Clone(b))
		if err == nil && (serr != nil || !sameSegment(s, sealed)) {
			t.Fatalf("DecodeSegmentSealed: %v; DecodeSegment: ok", serr)
		}
		if serr == nil && len(b) >= 4 {
			fixed := bytes.Clone(b)
			binary.BigEndian.PutUint32(fixed[len(fixed)-4:], crc32.Checksum(fixed[:len(fixed)-4], crc32.MakeTable(crc32.Castagnoli)))
			if again, err := snapread.DecodeSegment(fixed); err != nil || !sameSegment(sealed, again) {
				t.Fatalf("DecodeSegmentSealed accepts what a checked decode of the same content refuses: %v", err)
			}
		}
		if err != nil {
			if !errors.Is(err, snapread.ErrBadSegment) {
				t.Fatalf("error of the wrong kind: %v", err)
			}
			return
		}
		// Whatever decodes re-encodes to a segment that decodes the same.
		again, err := snapread.DecodeSegment(s.Encode())
		if err != nil || !sameSegment(s, again) {
			t.Fatalf("re-encode: %v", err)
		}
		prev := s.FromRev
		for _, e := range s.Events {
			if e.ModRevision < prev || e.ModRevision > s.ToRev || e.Key == "" {
				t.Fatalf("invalid event accepted: %+v in (%d,%d]", e, s.FromRev, s.ToRev)
			}
			prev = e.ModRevision
		}
	})
}

// TestDeltaChainBreaks: compaction past the start and a dead etcd both end
// the stream with ErrNeedSnapshot, never with a silent gap.
func TestDeltaChainBreaks(t *testing.T) {
	r := testetcd.SandboxT(t)
	srv := testetcd.StartT(t, r)
	ctx := ctxT(t)
	cli := srv.ClientT(t)
	var last int64
	for i := range 20 {
		resp, err := cli.Put(ctx, fmt.Sprintf("/c/%d", i), "v")
		if err != nil {
			t.Fatal(err)
		}
		last = resp.Header.Revision
	}
	if _, err := cli.Compact(ctx, last, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	cfg := etcdsnap.DeltaConfig{Flush: 20 * time.Millisecond, Heartbeat: 100 * time.Millisecond}

	t.Run("compacted", func(t *testing.T) {
		ds := etcdsnap.NewDeltaStreamer(cli, 3, time.Now(), &memSink{}, cfg)
		err := ds.Run(ctx)
		var ns *etcdsnap.NeedSnapshotError
		if !errors.As(err, &ns) || !errors.Is(err, etcdsnap.ErrNeedSnapshot) || ns.CompactRevision != last {
			t.Fatalf("got %v, want NeedSnapshotError compacted at %d", err, last)
		}
		t.Log(err)
	})

	t.Run("etcd dies", func(t *testing.T) {
		// Its own client: stopping the server must be what breaks it.
		own, _, err := etcdsnap.Connect(ctx, clientConfig(r, srv.Endpoint()), srv.Endpoint())
		if err != nil {
			t.Fatal(err)
		}
		defer own.Close()
		sink := &memSink{}
		ds := etcdsnap.NewDeltaStreamer(own, last, time.Now(), sink, cfg)
		done := make(chan error, 1)
		go func() { done <- ds.Run(ctx) }()
		resp, err := cli.Put(ctx, "/c/after", "v")
		if err != nil {
			t.Fatal(err)
		}
		for ds.Covered().ToRev < resp.Header.Revision {
			time.Sleep(10 * time.Millisecond)
		}
		srv.Stop()
		select {
		case err := <-done:
			if !errors.Is(err, etcdsnap.ErrNeedSnapshot) {
				t.Fatalf("got %v, want ErrNeedSnapshot", err)
			}
			t.Log(err)
		case <-time.After(15 * time.Second):
			t.Fatal("streamer kept running with etcd gone")
		}
		if c := ds.Covered(); c.ToRev < resp.Header.Revision || c.Events != 1 {
			t.Fatalf("coverage before the break lost: %+v", c)
		}
		if sink.err != nil {
			t.Fatal(sink.err)
		}
	})
}
