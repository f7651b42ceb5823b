package objects

import (
	"fmt"
	"io"
	"sort"

	"github.com/kubekeep/kubekeep/etcdsnap/snapread"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// Reader is what `kubekeep get`, `objects` and `diff` read a version's
// objects through: a Snapshot (a bbolt file) or an Indexed (a key index
// and random access into the image), both optionally moved forward by
// journal events.
type Reader interface {
	// Revision is the etcd revision shown (events applied included).
	Revision() int64
	UseEncryption(k *Keyring)
	Get(ref Ref) (*Object, error)
	GetKey(key string) (*Object, error)
	RawValue(key string) ([]byte, error)
	// Items lists the live objects under /registry matching f, by key.
	Items(f Filter) ([]Item, error)
	ApplyEvents(events []snapread.Event) error
	Close() error
	// walk visits the keys with the prefix in key order (deletions
	// included), which Diff merges; value reads one's stored bytes.
	walk(prefix string, fn func(key string, st keyState) error) error
	value(key string, st keyState) ([]byte, error)
	keyringOf() *Keyring
	// overlayKeys are the keys events changed, sorted; base names the
	// snapshot under them ("" when unknown).
	overlayKeys() []string
	baseName() string
	lookup(key string) (keyState, bool, error)
}

// keyState is where one key's newest state is.
type keyState struct {
	rev            snapread.Revision
	createRevision int64
	version        int64
	lease          int64
	overlay        bool
	value          []byte // overlays only
	// journal: the state is a journal key index record, whose value is
	// read through JournalConfig.Value at off and n.
	journal bool
	// off and n locate the KeyValue in an Indexed image.
	off, n int64
}

// Indexed reads the objects of an etcd snapshot image through its key
// index (snapread.KeyIndex, written by the backup's check): a lookup reads
// the index's root, one chunk and one block, then the one value, by offset
// out of the image, so it costs the same on a 100 MiB and an 8 GiB etcd.
// Values are checked against the index when read (the stored KeyValue
// must hold the key at the revision the index names): an index and image
// that disagree are an error wrapping snapread.ErrKeyIndex, as is a
// damaged index, never another object. Safe for concurrent reads;
// ApplyEvents and UseEncryption must not run concurrently with them.
type Indexed struct {
	idx     *snapread.KeyIndex
	image   io.ReaderAt
	cfg     IndexedConfig
	rev     int64
	compact int64
	// jx is a journal version's key index (UseJournal), over the keys the
	// journal changed since the image; nil for none.
	jx      *snapread.KeyIndex
	jcfg    JournalConfig
	overlay map[string]keyState
	sorted  []string // overlay keys, sorted; nil when stale
	keyring *Keyring
}

// JournalConfig is a journal version's key index: for every key the
// journal changed since the base image, its state at the version's
// revision (versionread.EtcdJournalKeysStream, in etcdsnap's key index format;
// its header's Revision is the version's revision and CompactRevision the
// base's).
type JournalConfig struct {
	Index     io.ReaderAt
	IndexSize int64
	// Value reads the value key was put with at revision rev, located by
	// the record's ValueOffset and ValueLength (off, n).
	Value func(key string, rev, off, n int64) ([]byte, error)
	// OnClose runs at the view's Close, before IndexedConfig.OnClose.
	OnClose func() error
}

// UseJournal moves the view to a journal version's revision through its
// key index, without replaying the journal: a key the index holds is in
// the state it names, any other is as in the image. The index must be
// over this image (its CompactRevision is the image's revision), else
// the error wraps snapread.ErrKeyIndex. Call it before ApplyEvents.
func (s *Indexed) UseJournal(cfg JournalConfig) error {
	if s.jx != nil || len(s.overlay) > 0 {
		return fmt.Errorf("a journal key index on a view already moved forward")
	}
	x, err := snapread.OpenKeyIndex(cfg.Index, cfg.IndexSize)
	if err != nil {
		return err
	}
	h := x.Header()
	if h.CompactRevision != s.rev || h.Revision < s.rev {
		return fmt.Errorf("%w: the journal key index covers revisions %d to %d, the image is at %d", snapread.ErrKeyIndex, h.CompactRevision, h.Revision, s.rev)
	}
	s.jx, s.jcfg, s.rev, s.sorted = x, cfg, h.Revision, nil
	return nil
}

// IndexedConfig says where an Indexed reads from.
type IndexedConfig struct {
	Index     io.ReaderAt
	IndexSize int64
	Image     io.ReaderAt
	// Base names the snapshot (e.g. the version holding it): two readers
	// with the same Base differ only by the events applied to them, which
	// is all Diff then compares.
	Base string
	// OnClose runs at Close (closing the streams).
	OnClose func() error
}

// OpenIndexed opens the key index and checks its root.
func OpenIndexed(cfg IndexedConfig) (*Indexed, error) {
	x, err := snapread.OpenKeyIndex(cfg.Index, cfg.IndexSize)
	if err != nil {
		return nil, err
	}
	h := x.Header()
	return &Indexed{idx: x, image: cfg.Image, cfg: cfg, rev: max(h.Revision, h.CompactRevision), compact: h.CompactRevision, overlay: map[string]keyState{}}, nil
}

// Close runs the config's OnClose.
func (s *Indexed) Close() error {
	if s.jcfg.OnClose != nil {
		f := s.jcfg.OnClose
		s.jcfg.OnClose = nil
		_ = f()
	}
	if s.cfg.OnClose != nil {
		f := s.cfg.OnClose
		s.cfg.OnClose = nil
		return f()
	}
	return nil
}

// Revision is the etcd revision shown (events applied included).
func (s *Indexed) Revision() int64 { return s.rev }

// CompactRevision is the revision etcd had compacted the image to.
func (s *Indexed) CompactRevision() int64 { return s.compact }

// UseEncryption sets the keys used to decrypt values encrypted at rest.
func (s *Indexed) UseEncryption(k *Keyring) { s.keyring = k }

func (s *Indexed) keyringOf() *Keyring   { return s.keyring }
func (s *Indexed) baseName() string      { return s.cfg.Base }
func (s *Indexed) overlayKeys() []string { return s.sortedOverlay() }

func stateOf(r snapread.IndexedKey) keyState {
	return keyState{rev: r.Revision, createRevision: r.CreateRevision, version: r.Version, lease: r.Lease, off: r.ValueOffset, n: r.ValueLength}
}

func journalStateOf(r snapread.IndexedKey) keyState {
	st := stateOf(r)
	st.journal = true
	return st
}

func (s *Indexed) lookup(key string) (keyState, bool, error) {
	if st, ok := s.overlay[key]; ok {
		return st, true, nil
	}
	if s.jx != nil {
		r, ok, err := s.jx.Lookup(key)
		if err != nil {
			return keyState{}, false, err
		}
		if ok {
			return journalStateOf(r), true, nil
		}
	}
	r, ok, err := s.idx.Lookup(key)
	if err != nil || !ok {
		return keyState{}, false, err
	}
	return stateOf(r), true, nil
}

// Get returns one object, decoded and decrypted.
func (s *Indexed) Get(ref Ref) (*Object, error) { return s.GetKey(ref.Key()) }

// GetKey is Get by raw etcd key.
func (s *Indexed) GetKey(key string) (*Object, error) {
	st, ok, err := s.lookup(key)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", key, err)
	}
	return getObject(s, key, st, ok, s.rev, s.keyring)
}

// getObject builds the Object of key from its state.
func getObject(r Reader, key string, st keyState, ok bool, rev int64, kr *Keyring) (*Object, error) {
	if !ok {
		return nil, &NotFoundError{Key: key, Revision: rev}
	}
	if st.rev.Tombstone {
		return nil, &NotFoundError{Key: key, DeletedAt: st.rev.Main, Revision: rev}
	}
	raw, err := r.value(key, st)
	if err != nil {
		return nil, err
	}
	obj := &Object{Key: key, ModRevision: st.rev.Main, CreateRevision: st.createRevision, Version: st.version, Lease: st.lease}
	obj.Ref, _ = RefFromKey(key)
	if err := obj.decode(raw, kr); err != nil {
		return nil, err
	}
	return obj, nil
}

// RawValue is the stored bytes of a live key, still encrypted if
// encrypted at rest.
func (s *Indexed) RawValue(key string) ([]byte, error) {
	st, ok, err := s.lookup(key)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", key, err)
	}
	if !ok || st.rev.Tombstone {
		return nil, &NotFoundError{Key: key, Revision: s.rev}
	}
	return s.value(key, st)
}

// maxValue bounds one stored KeyValue read out of an image (etcd's own
// request limit is 1.5 MiB by default; --max-request-bytes can raise it).
const maxValue = 256 << 20

func (s *Indexed) value(key string, st keyState) ([]byte, error) {
	if st.overlay {
		return st.value, nil
	}
	if st.journal {
		v, err := s.jcfg.Value(key, st.rev.Main, st.off, st.n)
		if err != nil {
			return nil, fmt.Errorf("read %s at revision %d from the journal: %w", key, st.rev.Main, err)
		}
		return v, nil
	}
	if st.n <= 0 || st.n > maxValue {
		return nil, fmt.Errorf("read %s at revision %d: %w: value length %d", key, st.rev.Main, snapread.ErrKeyIndex, st.n)
	}
	buf := make([]byte, st.n)
	if _, err := s.image.ReadAt(buf, st.off); err != nil {
		return nil, fmt.Errorf("read %s at revision %d (image offset %d): %w", key, st.rev.Main, st.off, err)
	}
	var kv mvccpb.KeyValue
	if err := kv.Unmarshal(buf); err != nil {
		return nil, fmt.Errorf("read %s at revision %d: %w: image offset %d holds no KeyValue: %v", key, st.rev.Main, snapread.ErrKeyIndex, st.off, err)
	}
	if string(kv.Key) != key || kv.ModRevision != st.rev.Main {
		return nil, fmt.Errorf("read %s at revision %d: %w: image offset %d holds %q at revision %d", key, st.rev.Main, snapread.ErrKeyIndex, st.off, kv.Key, kv.ModRevision)
	}
	return kv.Value, nil
}

// sortedOverlay is every key whose state is not the image's: the
// journal key index's and the applied events', sorted. Diff compares two
// views of one image on these keys only.
func (s *Indexed) sortedOverlay() []string {
	if s.sorted == nil {
		keys := make(map[string]bool, len(s.overlay))
		for k := range s.overlay {
			keys[k] = true
		}
		if s.jx != nil {
			// An error leaves the journal's keys out; the lookups Diff
			// then makes of them fail the same way and say so.
			_ = s.jx.Range("", "", func(r snapread.IndexedKey) bool {
				keys[r.Key] = true
				return true
			})
		}
		s.sorted = make([]string, 0, len(keys))
		for k := range keys {
			s.sorted = append(s.sorted, k)
		}
		sort.Strings(s.sorted)
	}
	return s.sorted
}

// overlayRange is the states under [prefix, end) that are not the
// image's (end "": no bound): the journal key index's, then the applied
// events' over them; keys sorted.
func (s *Indexed) overlayRange(prefix, end string) ([]string, map[string]keyState, error) {
	if s.jx == nil {
		ov := s.sortedOverlay()
		return ov[sort.SearchStrings(ov, prefix):], s.overlay, nil
	}
	states := map[string]keyState{}
	err := s.jx.Range(prefix, end, func(r snapread.IndexedKey) bool {
		states[r.Key] = journalStateOf(r)
		return true
	})
	if err != nil {
		return nil, nil, err
	}
	for k, st := range s.overlay {
		if k >= prefix && (end == "" || k < end) {
			states[k] = st
		}
	}
	keys := make([]string, 0, len(states))
	for k := range states {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys, states, nil
}

// walk merges the index's range with the overlay, in key order.
func (s *Indexed) walk(prefix string, fn func(key string, st keyState) error) error {
	end := snapread.PrefixEnd(prefix)
	ov, states, err := s.overlayRange(prefix, end)
	if err != nil {
		return err
	}
	i := 0
	inRange := func(k string) bool { return end == "" || k < end }
	var ferr error
	err = s.idx.Range(prefix, end, func(r snapread.IndexedKey) bool {
		for ; i < len(ov) && ov[i] < r.Key; i++ {
			if ferr = fn(ov[i], states[ov[i]]); ferr != nil {
				return false
			}
		}
		if i < len(ov) && ov[i] == r.Key {
			ferr = fn(ov[i], states[ov[i]])
			i++
		} else {
			ferr = fn(r.Key, stateOf(r))
		}
		return ferr == nil
	})
	if err != nil {
		return err
	}
	if ferr != nil {
		return ferr
	}
	for ; i < len(ov) && inRange(ov[i]); i++ {
		if err := fn(ov[i], states[ov[i]]); err != nil {
			return err
		}
	}
	return nil
}

// Items lists the live objects under /registry matching f, sorted by key.
// It reads only the index blocks under the filter's key prefix (one
// resource, or one resource in one namespace) and no values.
func (s *Indexed) Items(f Filter) ([]Item, error) { return items(s, f) }

func items(r Reader, f Filter) ([]Item, error) {
	prefix := registryPrefix
	if f.Resource != "" {
		prefix = Ref{Group: f.Group, Resource: f.Resource, Namespace: f.Namespace}.Key()
	}
	var out []Item
	err := r.walk(prefix, func(key string, st keyState) error {
		if st.rev.Tombstone {
			return nil
		}
		ref, ok := RefFromKey(key)
		if !ok {
			return nil
		}
		if f.Resource != "" && (ref.Resource != f.Resource || ref.Group != f.Group) {
			return nil
		}
		if f.Namespace != "" && ref.Namespace != f.Namespace {
			return nil
		}
		out = append(out, Item{Ref: ref, Key: key, ModRevision: st.rev.Main, CreateRevision: st.createRevision, Version: st.version})
		return nil
	})
	return out, err
}

// ApplyEvents moves the view forward by delta events, as
// Snapshot.ApplyEvents does.
func (s *Indexed) ApplyEvents(events []snapread.Event) error {
	last, err := applyEvents(s.rev, events, func(key string, st keyState) {
		s.overlay[key] = st
	})
	if err != nil {
		return err
	}
	s.sorted = nil
	s.rev = max(s.rev, last)
	return nil
}

// applyEvents checks events and hands each one after base to put as the
// key's new state; it returns the last revision.
func applyEvents(base int64, events []snapread.Event, put func(key string, st keyState)) (int64, error) {
	last := int64(0)
	for n, ev := range events {
		if ev.ModRevision < last {
			return 0, fmt.Errorf("event %d (%s %s at revision %d): out of order after revision %d", n, ev.Type, ev.Key, ev.ModRevision, last)
		}
		last = ev.ModRevision
		if ev.ModRevision <= base {
			continue
		}
		if ev.Key == "" {
			return 0, fmt.Errorf("event %d at revision %d: empty key", n, ev.ModRevision)
		}
		st := keyState{overlay: true, rev: snapread.Revision{Main: ev.ModRevision}}
		switch ev.Type {
		case snapread.EventPut:
			st.value, st.lease, st.version = ev.Value, ev.Lease, ev.Version
			st.createRevision = ev.CreateRevision
			if st.createRevision == 0 {
				st.createRevision = ev.ModRevision
			}
		case snapread.EventDelete:
			st.rev.Tombstone = true
		default:
			return 0, fmt.Errorf("event %d (%s at revision %d): unknown type %d", n, ev.Key, ev.ModRevision, ev.Type)
		}
		// Two changes of one key in one transaction keep the later.
		put(ev.Key, st)
	}
	return last, nil
}
