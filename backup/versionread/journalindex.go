package versionread

// The journal key index: how `get`, `objects` and `diff` read a journal
// version without replaying the journal.
//
// A journal version's state is its base's snapshot moved forward by every
// change the journal holds since the base. Replaying those changes costs
// what the journal holds since the base: at a 5-minute cadence with a full
// snapshot every few hours, hundreds of MiB to GiBs read and decoded to
// print one object. So each journal version also records, for every key
// the journal changed in (BaseRevision, Revision], the key's last change:
//
//   - EtcdJournalKeysStream, a key index in etcdsnap's format (the one the
//     base's EtcdKeyIndexStream has: blocks found through a root, each
//     checked by its hash), one record per key: the revision of the key's
//     last change (a tombstone for a deletion), its create revision,
//     version and lease, and, for a put, where its value is: ValueOffset
//     and ValueLength locate the segment's entry in
//   - EtcdJournalSegsStream, the segment table: journalSegEntry-byte
//     entries, each the file name of one journal segment (NUL padded).
//
// A reader looks a key up there first: a record says the key's state at
// the version's revision (its value read out of the one segment named,
// whose checksum is checked and which must hold that change); no record
// means the key did not change since the base, whose own index answers.
// Both streams hold every key changed since the base, so each is
// O(distinct keys changed since the base), like the TouchedDigest read the
// version makes anyway; the store's deduplication against the previous
// version keeps what is written near O(what changed since it).
//
// The record of a key is the change the journal holds at the highest
// revision for it; the segment holding a revision is found by name (a
// segment is named by the revisions it holds). Versions written before
// this index existed, or whose index streams are damaged, are read by
// replaying the journal as before (the readers fall back).

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/kubekeep/kubekeep/etcdsnap/snapread"
	"github.com/kubekeep/kubekeep/rsyncish"
)

// The journal key index streams of a journal version.
const (
	EtcdJournalKeysStream = "etcd/journal-keys.idx"
	EtcdJournalSegsStream = "etcd/journal-segs"
)

// journalSegEntry is the size of one segment table entry: a segment file
// name (66 bytes at most), NUL padded.
const journalSegEntry = 72

// JournalKey is the last change of one key the journal holds.
type JournalKey struct {
	rev, create, version, lease int64
	deleted                     bool
	Seg                         string // the segment file holding it
}

// AttributeEvents records in keys the last change of each key in events
// (in revision order), with the segment of needed (the chain's segments,
// ordered by first revision) that holds it: the first one whose name
// covers the revision. It returns an error when an event's revision is in
// no segment's name, which a chain from ChainSegments rules out.
func AttributeEvents(keys map[string]JournalKey, events []snapread.Event, needed []rsyncish.SegmentInfo) error {
	i := 0
	for _, e := range events {
		m := uint64(e.ModRevision)
		for i < len(needed) && needed[i].Last < m {
			i++
		}
		if i == len(needed) || needed[i].First > m {
			return fmt.Errorf("the change of %q at revision %d is in no journal segment's name", e.Key, e.ModRevision)
		}
		k := JournalKey{rev: e.ModRevision, Seg: needed[i].File}
		if e.Type == snapread.EventDelete {
			k.deleted = true
		} else {
			k.create, k.version, k.lease = e.CreateRevision, e.Version, e.Lease
			if k.create == 0 {
				k.create = e.ModRevision
			}
		}
		keys[e.Key] = k
	}
	return nil
}

// encodeJournalIndex returns the two streams of the index over keys, for
// a version at rev on a base at baseRev. The header's Keys counts the
// records that are not deletions.
func encodeJournalIndex(keys map[string]JournalKey, rev, baseRev int64) (index, segs []byte, err error) {
	names := map[string]int64{}
	for _, k := range keys {
		if !k.deleted {
			names[k.Seg] = 0
		}
	}
	table := make([]byte, 0, len(names)*journalSegEntry)
	for _, n := range slices.Sorted(maps.Keys(names)) {
		if len(n) > journalSegEntry || n == "" {
			return nil, nil, fmt.Errorf("journal segment name %q does not fit the segment table", n)
		}
		names[n] = int64(len(table))
		table = append(table, n...)
		table = append(table, make([]byte, journalSegEntry-len(n))...)
	}
	recs := make([]snapread.IndexedKey, 0, len(keys))
	live := int64(0)
	for _, key := range slices.Sorted(maps.Keys(keys)) {
		k := keys[key]
		if !k.deleted {
			live++
		}
		r := snapread.IndexedKey{Key: key, Revision: snapread.Revision{Main: k.rev, Tombstone: k.deleted}}
		if !k.deleted {
			r.CreateRevision, r.Version, r.Lease = k.create, k.version, k.lease
			r.ValueOffset, r.ValueLength = names[k.Seg], journalSegEntry
		}
		recs = append(recs, r)
	}
	var buf bytes.Buffer
	h := snapread.KeyIndexHeader{Revision: rev, CompactRevision: baseRev, ImageSize: int64(len(table)), Keys: live, Records: int64(len(recs))}
	if err := snapread.WriteKeyIndex(&buf, h, recs); err != nil {
		return nil, nil, err
	}
	return buf.Bytes(), table, nil
}

// WriteJournalIndex adds the journal key index streams to w.
func WriteJournalIndex(w *rsyncish.VersionWriter, keys map[string]JournalKey, rev, baseRev int64) error {
	index, segs, err := encodeJournalIndex(keys, rev, baseRev)
	if err != nil {
		return fmt.Errorf("journal key index: %w", err)
	}
	if _, err := w.AddStream(EtcdJournalSegsStream, bytes.NewReader(segs)); err != nil {
		return err
	}
	_, err = w.AddStream(EtcdJournalKeysStream, bytes.NewReader(index))
	return err
}

// JournalSegmentName reads the segment file name a journal key index
// record's ValueOffset and ValueLength (off, n) locate in the segment
// table segs (size bytes).
func JournalSegmentName(segs io.ReaderAt, size, off, n int64) (string, error) {
	if n != journalSegEntry || off < 0 || off%journalSegEntry != 0 || off > size-n {
		return "", fmt.Errorf("%w: journal segment entry at %d+%d outside the %d-byte segment table", snapread.ErrKeyIndex, off, n, size)
	}
	entry := make([]byte, n)
	if _, err := segs.ReadAt(entry, off); err != nil {
		return "", fmt.Errorf("journal segment table: %w", err)
	}
	return string(bytes.TrimRight(entry, "\x00")), nil
}

// JournalSegmentNames lists the segment file names of a segment table
// (size bytes), in table order.
func JournalSegmentNames(segs io.ReaderAt, size int64) ([]string, error) {
	var out []string
	for off := int64(0); off+journalSegEntry <= size; off += journalSegEntry {
		name, err := JournalSegmentName(segs, size, off, journalSegEntry)
		if err != nil {
			return out, err
		}
		out = append(out, name)
	}
	return out, nil
}

// JournalValues reads the values a journal key index points at: segs is
// the version's EtcdJournalSegsStream (size bytes), j the store's delta
// journal. The returned function gives the value key was put with at
// revision rev, out of the segment the record's ValueOffset and
// ValueLength name; the segment's checksums are checked, and when it does
// not hold that change (an index that disagrees with the journal) the
// error wraps snapread.ErrKeyIndex. The last few
// segments read are kept decoded (diff reads many keys). Safe for
// concurrent use. The bytes of the segments read are added to read when
// it is not nil.
func JournalValues(j *rsyncish.Journal, segs io.ReaderAt, size int64, read *atomic.Int64) func(key string, rev, off, n int64) ([]byte, error) {
	jv := &journalValues{j: j, read: read, cache: map[string][]snapread.Event{}}
	return func(key string, rev, off, n int64) ([]byte, error) {
		name, err := JournalSegmentName(segs, size, off, n)
		if err != nil {
			return nil, err
		}
		evs, err := jv.events(name)
		if errors.Is(err, fs.ErrNotExist) {
			// Merged into a bigger segment since the index was written
			// (journalcompact.go): the change is found by its revision.
			return jv.byRevision(name, key, rev)
		}
		if err != nil {
			// A segment damaged is the journal's damage, which a replay
			// would meet too: said as it is.
			return nil, err
		}
		if v, ok := putIn(evs, key, rev); ok {
			return v, nil
		}
		return nil, fmt.Errorf("%w: journal segment %s holds no put of %s at revision %d", snapread.ErrKeyIndex, name, key, rev)
	}
}

// journalValues is what JournalValues' reads share: the last few segments
// decoded, and the journal's listing once a named segment is gone.
type journalValues struct {
	j    *rsyncish.Journal
	read *atomic.Int64

	mu      sync.Mutex
	cache   map[string][]snapread.Event // segment file -> its events
	order   []string
	listing []rsyncish.SegmentInfo
}

// events is segment name's events, checked.
func (jv *journalValues) events(name string) ([]snapread.Event, error) {
	jv.mu.Lock()
	evs, ok := jv.cache[name]
	jv.mu.Unlock()
	if ok {
		return evs, nil
	}
	data, err := jv.j.Read(rsyncish.SegmentInfo{File: name})
	if err != nil {
		return nil, err
	}
	if jv.read != nil {
		jv.read.Add(int64(len(data)))
	}
	seg, err := snapread.DecodeSegmentSealed(data) // data is this read's own, its file's seal checked by Read
	if err != nil {
		return nil, fmt.Errorf("journal segment %s: %w", name, err)
	}
	jv.mu.Lock()
	if len(jv.order) >= 8 {
		delete(jv.cache, jv.order[0])
		jv.order = jv.order[1:]
	}
	jv.cache[name], jv.order = seg.Events, append(jv.order, name)
	jv.mu.Unlock()
	return seg.Events, nil
}

// byRevision reads a change whose segment name is gone: out of the
// segments whose names cover rev, newest first, the first that holds the
// put.
func (jv *journalValues) byRevision(name, key string, rev int64) ([]byte, error) {
	jv.mu.Lock()
	segs := jv.listing
	jv.mu.Unlock()
	if segs == nil {
		l, err := jv.j.List()
		if err != nil {
			return nil, err
		}
		jv.mu.Lock()
		jv.listing, segs = l, l
		jv.mu.Unlock()
	}
	r := uint64(rev)
	for i := len(segs) - 1; i >= 0; i-- {
		si := segs[i]
		if si.First > r || si.Last < r {
			continue
		}
		evs, err := jv.events(si.File)
		if err != nil {
			return nil, err
		}
		if v, ok := putIn(evs, key, rev); ok {
			return v, nil
		}
	}
	return nil, fmt.Errorf("%w: journal segment %s is gone and no segment holds the put of %s at revision %d", snapread.ErrKeyIndex, name, key, rev)
}

// putIn is the value key was put with at revision rev in evs (in revision
// order; a revision holds few).
func putIn(evs []snapread.Event, key string, rev int64) ([]byte, bool) {
	i, _ := slices.BinarySearchFunc(evs, rev, func(e snapread.Event, r int64) int { return cmp.Compare(e.ModRevision, r) })
	for ; i < len(evs) && evs[i].ModRevision == rev; i++ {
		if e := evs[i]; e.Key == key && e.Type == snapread.EventPut {
			return e.Value, true
		}
	}
	return nil, false
}
