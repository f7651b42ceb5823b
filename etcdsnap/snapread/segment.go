package snapread

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"
)

// Segment format, version 1 (all integers varint unless noted):
//
//	"KKDS" | version byte (1) | flags byte (0, or 1: catch-up)
//	fromRev uvarint | toRev uvarint | fromTime varint | toTime varint | count uvarint
//	count × event: type byte (1 put, 2 delete) | modRev uvarint | createRev uvarint |
//	               version uvarint | lease varint | time varint |
//	               keyLen uvarint | key | valueLen uvarint | value
//	crc32c of everything above, 4 bytes big endian
//
// A segment covers revisions (fromRev, toRev]: every change in that range
// is in it, so consecutive segments chain without gaps, and an empty
// segment still proves that nothing changed. Times are Unix nanoseconds of
// when the watcher received the change (etcd keeps no wall time).
//
// An empty segment is a progress mark: etcd said that every change up to
// toRev had been sent, and the streamer heard it at toTime, so the state
// at toTime is the state at toRev. A segment flagged catch-up holds what a
// watch delivered right after it (re)started, before etcd's first progress
// answer: those changes were committed at some moment after fromTime and
// received at their event time, so a restore refuses the moments between
// fromTime and the last of them (Segment.CatchUp). Readers that predate
// the flag read such a segment as an ordinary one.
const (
	segmentMagic   = "KKDS"
	segmentVersion = 1
	segmentHeader  = len(segmentMagic) + 2
	// flagCatchUp marks a catch-up segment; other flag bits are unknown.
	flagCatchUp = 1
	// MaxSegmentEvents bounds what DecodeSegment will allocate for.
	maxSegmentEvents = 1 << 24
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// EventType is a change kind.
type EventType byte

// Event types; the values are part of the segment format.
const (
	EventPut    EventType = 1
	EventDelete EventType = 2
)

func (t EventType) String() string {
	switch t {
	case EventPut:
		return "put"
	case EventDelete:
		return "delete"
	}
	return fmt.Sprintf("EventType(%d)", byte(t))
}

// Event is one key change.
type Event struct {
	Type           EventType
	Key            string
	Value          []byte
	ModRevision    int64
	CreateRevision int64
	Version        int64
	Lease          int64
	Time           time.Time
}

// Segment is a run of changes ordered by revision.
type Segment struct {
	FromRev, ToRev   int64
	FromTime, ToTime time.Time
	Events           []Event
	// CatchUp: the events arrived while a (re)started watch caught up, so
	// each was committed after FromTime and by its own Time, not
	// necessarily at it. A point in time between FromTime and the last
	// event's Time cannot be restored from this chain.
	CatchUp bool
}

// ErrBadSegment: a segment failed to decode or validate.
var ErrBadSegment = errors.New("bad delta segment")

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromUnixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// Encode serialises s. It does not validate: the streamer builds segments
// in order by construction; DecodeSegment is the gate.
func (s *Segment) Encode() []byte {
	size := segmentHeader + 5*binary.MaxVarintLen64 + 4
	for i := range s.Events {
		size += 1 + 6*binary.MaxVarintLen64 + 2*binary.MaxVarintLen64 + len(s.Events[i].Key) + len(s.Events[i].Value)
	}
	b := make([]byte, 0, size)
	b = append(b, segmentMagic...)
	var flags byte
	if s.CatchUp {
		flags |= flagCatchUp
	}
	b = append(b, segmentVersion, flags)
	b = binary.AppendUvarint(b, uint64(s.FromRev))
	b = binary.AppendUvarint(b, uint64(s.ToRev))
	b = binary.AppendVarint(b, unixNano(s.FromTime))
	b = binary.AppendVarint(b, unixNano(s.ToTime))
	b = binary.AppendUvarint(b, uint64(len(s.Events)))
	for i := range s.Events {
		e := &s.Events[i]
		b = append(b, byte(e.Type))
		b = binary.AppendUvarint(b, uint64(e.ModRevision))
		b = binary.AppendUvarint(b, uint64(e.CreateRevision))
		b = binary.AppendUvarint(b, uint64(e.Version))
		b = binary.AppendVarint(b, e.Lease)
		b = binary.AppendVarint(b, unixNano(e.Time))
		b = binary.AppendUvarint(b, uint64(len(e.Key)))
		b = append(b, e.Key...)
		b = binary.AppendUvarint(b, uint64(len(e.Value)))
		b = append(b, e.Value...)
	}
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

type segReader struct {
	b   []byte
	off int
	err error
}

func (r *segReader) fail(format string, a ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: at byte %d: %s", ErrBadSegment, r.off, fmt.Sprintf(format, a...))
	}
}

func (r *segReader) uvarint(what string) uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b[r.off:])
	if n <= 0 {
		r.fail("bad %s", what)
		return 0
	}
	r.off += n
	return v
}

func (r *segReader) varint(what string) int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b[r.off:])
	if n <= 0 {
		r.fail("bad %s", what)
		return 0
	}
	r.off += n
	return v
}

// rev reads a revision, which etcd keeps in int64 and never below zero.
func (r *segReader) rev(what string) int64 {
	v := r.uvarint(what)
	if v > 1<<62 {
		r.fail("%s %d out of range", what, v)
		return 0
	}
	return int64(v)
}

func (r *segReader) bytes(what string) []byte {
	n := r.uvarint(what + " length")
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)-r.off) {
		r.fail("%s length %d exceeds the %d bytes left", what, n, len(r.b)-r.off)
		return nil
	}
	v := r.b[r.off : r.off+int(n)]
	r.off += int(n)
	return v
}

// DecodeSegment parses and validates a segment: checksum, bounds, event
// types, and revision order inside (fromRev, toRev]. Keys and values are
// copied, so b may be reused.
func DecodeSegment(b []byte) (*Segment, error) {
	return decodeSegment(b, true, true)
}

// DecodeSegmentInPlace is DecodeSegment with the events' values as views
// of b (keys are still strings of their own), for a caller that keeps b
// unchanged while it uses them: no second copy of a segment's values.
func DecodeSegmentInPlace(b []byte) (*Segment, error) { return decodeSegment(b, false, true) }

// DecodeSegmentSealed is DecodeSegmentInPlace for bytes a stronger check
// has just covered: the store's blake3 seal over the journal file holding
// the segment, which rsyncish.Journal's Read and MapNeeded check before
// they return it. The segment's own crc32c guards the same bytes against
// the same accidents, so it is not computed again (a sixth of `get --at`
// at 8 GiB of etcd, where 85 MiB of segments are replayed); everything
// else is checked as DecodeSegment checks it.
func DecodeSegmentSealed(b []byte) (*Segment, error) { return decodeSegment(b, false, false) }

// decodeSegment is DecodeSegment; with copyValues false the events'
// values are views of b, which the caller then keeps unchanged while it
// uses them.
func decodeSegment(b []byte, copyValues, checkSum bool) (*Segment, error) {
	s, r, count, err := decodeSegmentHeader(b, checkSum)
	if err != nil {
		return nil, err
	}
	return decodeSegmentEvents(s, r, count, copyValues)
}

// SegmentRange is what a segment says it covers, (fromRev, toRev], read
// from its header after its checksum is checked: verify's content view of
// the journal chain, without decoding the events.
func SegmentRange(b []byte) (fromRev, toRev int64, err error) {
	s, _, _, err := decodeSegmentHeader(b, true)
	if err != nil {
		return 0, 0, err
	}
	return s.FromRev, s.ToRev, nil
}

func decodeSegmentHeader(b []byte, checkSum bool) (*Segment, *segReader, uint64, error) {
	if len(b) < segmentHeader+4 {
		return nil, nil, 0, fmt.Errorf("%w: %d bytes is shorter than any segment", ErrBadSegment, len(b))
	}
	if string(b[:len(segmentMagic)]) != segmentMagic {
		return nil, nil, 0, fmt.Errorf("%w: no %q magic", ErrBadSegment, segmentMagic)
	}
	if v := b[len(segmentMagic)]; v != segmentVersion {
		return nil, nil, 0, fmt.Errorf("%w: version %d, this kubekeep reads %d", ErrBadSegment, v, segmentVersion)
	}
	body := b[:len(b)-4]
	if checkSum {
		if want, got := binary.BigEndian.Uint32(b[len(b)-4:]), crc32.Checksum(body, castagnoli); want != got {
			return nil, nil, 0, fmt.Errorf("%w: checksum %08x, stored %08x", ErrBadSegment, got, want)
		}
	}
	flags := b[len(segmentMagic)+1]
	if flags&^flagCatchUp != 0 {
		return nil, nil, 0, fmt.Errorf("%w: unknown flags %#02x (written by a newer kubekeep?)", ErrBadSegment, flags)
	}
	r := &segReader{b: body, off: segmentHeader}
	s := &Segment{CatchUp: flags&flagCatchUp != 0}
	s.FromRev = r.rev("fromRev")
	s.ToRev = r.rev("toRev")
	s.FromTime = fromUnixNano(r.varint("fromTime"))
	s.ToTime = fromUnixNano(r.varint("toTime"))
	count := r.uvarint("event count")
	if r.err != nil {
		return nil, nil, 0, r.err
	}
	if s.ToRev < s.FromRev {
		return nil, nil, 0, fmt.Errorf("%w: toRev %d < fromRev %d", ErrBadSegment, s.ToRev, s.FromRev)
	}
	// Every event takes at least 9 bytes, which bounds the allocation by
	// the input size whatever the count claims.
	if count > maxSegmentEvents || count > uint64(len(body)-r.off)/9 {
		return nil, nil, 0, fmt.Errorf("%w: %d events cannot fit in %d bytes", ErrBadSegment, count, len(body)-r.off)
	}
	return s, r, count, nil
}

func decodeSegmentEvents(s *Segment, r *segReader, count uint64, copyValues bool) (*Segment, error) {
	body := r.b
	s.Events = make([]Event, 0, count)
	prev := s.FromRev
	for i := uint64(0); i < count && r.err == nil; i++ {
		if r.off >= len(body) {
			r.fail("event %d missing", i)
			break
		}
		e := Event{Type: EventType(body[r.off])}
		r.off++
		if e.Type != EventPut && e.Type != EventDelete {
			r.fail("event %d has type %d", i, byte(e.Type))
			break
		}
		e.ModRevision = r.rev("modRevision")
		e.CreateRevision = r.rev("createRevision")
		e.Version = r.rev("version")
		e.Lease = r.varint("lease")
		e.Time = fromUnixNano(r.varint("time"))
		e.Key = string(r.bytes("key"))
		if v := r.bytes("value"); v != nil && copyValues {
			e.Value = append([]byte(nil), v...)
		} else if len(v) > 0 {
			e.Value = v[:len(v):len(v)] // as the copy: an empty value is nil
		}
		if r.err != nil {
			break
		}
		if e.Key == "" {
			r.fail("event %d has an empty key", i)
			break
		}
		if e.ModRevision <= s.FromRev || e.ModRevision > s.ToRev {
			r.fail("event %d revision %d outside (%d, %d]", i, e.ModRevision, s.FromRev, s.ToRev)
			break
		}
		if e.ModRevision < prev {
			r.fail("event %d revision %d after %d: out of order", i, e.ModRevision, prev)
			break
		}
		prev = e.ModRevision
		s.Events = append(s.Events, e)
	}
	if r.err != nil {
		return nil, r.err
	}
	if r.off != len(body) {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrBadSegment, len(body)-r.off)
	}
	return s, nil
}
