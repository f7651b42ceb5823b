package restore

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/kubekeep/kubekeep/backup/versionread"
	"github.com/kubekeep/kubekeep/etcdsnap/snapread"
	"github.com/kubekeep/kubekeep/rsyncish"
)

// checkJournalIndex compares a journal version's journal key index
// (versionread.EtcdJournalKeysStream and EtcdJournalSegsStream, which get,
// objects and diff read the version through) with the journal the drill
// replays: one record for every key the replay changed since the base and
// no other, each the key's last change (revision, deletion or not, create
// revision, version, lease), a put's naming the segment file that holds
// that change. It returns how many records it checked; 0 and no error
// for a version written before kubekeep wrote the index.
func checkJournalIndex(store *rsyncish.Store, id, baseID string, jr *journalReplay) (int, error) {
	vr, err := store.OpenVersion(id)
	if err != nil {
		return 0, err
	}
	defer vr.Close()
	keys, err := vr.Stream(versionread.EtcdJournalKeysStream)
	if errors.Is(err, rsyncish.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer keys.Close()
	segs, err := vr.Stream(versionread.EtcdJournalSegsStream)
	if err != nil {
		return 0, fmt.Errorf("journal key index: %w", err)
	}
	defer segs.Close()
	x, err := snapread.OpenKeyIndex(keys, keys.Size())
	if err != nil {
		return 0, fmt.Errorf("journal key index: %w", err)
	}
	// The replay's last change of each key, and the segment holding each
	// change by revision and key.
	last := map[string]snapread.Event{}
	for _, e := range jr.events {
		last[e.Key] = e
	}
	type change struct {
		rev int64
		key string
	}
	// Every segment holding the change: a merged segment and the ones it
	// replaced overlap until they go (a crash, or a reader, in between).
	holder := map[change][]string{}
	present := map[string]rsyncish.SegmentInfo{}
	for _, si := range jr.segs {
		present[si.File] = si
	}
	for i, d := range jr.datas {
		seg, err := snapread.DecodeSegment(d)
		if err != nil {
			return 0, fmt.Errorf("etcd delta journal segment %s: %w", jr.segs[i].File, err)
		}
		for _, e := range seg.Events {
			if l, ok := last[e.Key]; ok && l.ModRevision == e.ModRevision {
				c := change{e.ModRevision, e.Key}
				holder[c] = append(holder[c], jr.segs[i].File)
			}
		}
	}
	h := x.Header()
	if want := jr.events; len(want) > 0 && h.Revision < want[len(want)-1].ModRevision {
		return 0, fmt.Errorf("journal key index: at revision %d, the journal reaches %d", h.Revision, want[len(want)-1].ModRevision)
	}
	n := 0
	var bad error
	err = x.Range("", "", func(r snapread.IndexedKey) bool {
		n++
		e, ok := last[r.Key]
		if !ok {
			bad = fmt.Errorf("journal key index: a record for %s, which the journal since base %s never changes", r.Key, baseID)
			return false
		}
		deleted := e.Type == snapread.EventDelete
		create := e.CreateRevision
		if create == 0 {
			create = e.ModRevision
		}
		switch {
		case r.Revision.Main != e.ModRevision || r.Revision.Tombstone != deleted:
			bad = fmt.Errorf("journal key index: %s last changed at revision %d (deleted %v), the journal says %d (deleted %v)", r.Key, r.Revision.Main, r.Revision.Tombstone, e.ModRevision, deleted)
		case !deleted && (r.CreateRevision != create || r.Version != e.Version || r.Lease != e.Lease):
			bad = fmt.Errorf("journal key index: %s created %d, version %d, lease %x; the journal says %d, %d, %x", r.Key, r.CreateRevision, r.Version, r.Lease, create, e.Version, e.Lease)
		case !deleted:
			name, err := versionread.JournalSegmentName(segs, segs.Size(), r.ValueOffset, r.ValueLength)
			if err != nil {
				bad = err
			} else if want := holder[change{e.ModRevision, r.Key}]; !slices.Contains(want, name) && !slices.ContainsFunc(want, func(w string) bool { return mergedInto(name, w, present) }) {
				bad = fmt.Errorf("journal key index: %s at revision %d is in segment %s, the index names %q", r.Key, e.ModRevision, strings.Join(want, ", "), name)
			}
		}
		return bad == nil
	})
	if err == nil {
		err = bad
	}
	if err != nil {
		return 0, err
	}
	if n != len(last) {
		return 0, fmt.Errorf("journal key index: %d records, the journal since base %s changes %d keys", n, baseID, len(last))
	}
	return n, nil
}

// mergedInto says whether the segment name an index holds is gone from the
// journal and was merged into segment want since the index was written
// (backup's journal compaction): want's revisions include all of name's,
// and the reader finds the change in want by its revision.
func mergedInto(name, want string, present map[string]rsyncish.SegmentInfo) bool {
	if _, ok := present[name]; ok {
		return false
	}
	w, ok := present[want]
	if !ok {
		return false
	}
	var first, last uint64
	var ns int64
	if n, err := fmt.Sscanf(name, "%020d-%020d-%d.seg", &first, &last, &ns); err != nil || n != 3 {
		return false
	}
	return first >= w.First && last <= w.Last && first <= last
}
