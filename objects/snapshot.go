package objects

import (
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"sort"
	"strings"
	"time"

	"github.com/kubekeep/kubekeep/etcdsnap/snapread"
	bolt "go.etcd.io/bbolt"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// Snapshot is a read-only view of the Kubernetes objects in one etcd
// snapshot file (or a raw member/snap/db), optionally moved forward in time
// by watch events. It is not safe for concurrent use while ApplyEvents or
// UseEncryption run; reads may run concurrently otherwise.
type Snapshot struct {
	path       string
	db         *bolt.DB
	keys       map[string]int32 // etcd key -> index in entries
	entries    []entry
	rev        int64
	compactRev int64
	keyring    *Keyring
}

// Buckets of etcd's backend (server/storage/schema).
var (
	bucketKey  = []byte("key")
	bucketMeta = []byte("meta")
)

// entry is where the live value of one key is: a revision in the bbolt
// file, or a value carried in by ApplyEvents (overlay, with its value and
// lease).
type entry = keyState

// ErrCompacted means the revision asked for is older than the snapshot's
// compaction: etcd has already dropped the history needed to answer.
var ErrCompacted = errors.New("revision compacted")

// NotFoundError says an object is absent, and when it was deleted if the
// snapshot still records the deletion.
type NotFoundError struct {
	Key       string
	DeletedAt int64 // revision of the delete; 0 when the key never existed here
	Revision  int64 // the snapshot revision looked at
}

func (e *NotFoundError) Error() string {
	if e.DeletedAt > 0 {
		return fmt.Sprintf("%s: deleted at revision %d (snapshot at revision %d)", e.Key, e.DeletedAt, e.Revision)
	}
	return fmt.Sprintf("%s: not found at revision %d", e.Key, e.Revision)
}

// Open opens an etcd bbolt file read-only and indexes the latest revision
// of every key in one pass. A snapshot written by etcdctl/Maintenance.Snapshot
// opens as is: bbolt ignores the 32-byte sha256 trailer after its pages.
func Open(dbPath string) (*Snapshot, error) { return OpenAt(dbPath, 0) }

// OpenAt is Open as of an older revision still present in the file (the
// history kept since the last compaction); rev 0 means the latest.
func OpenAt(dbPath string, rev int64) (*Snapshot, error) {
	st, err := os.Stat(dbPath)
	if err != nil {
		return nil, fmt.Errorf("open etcd snapshot: %w", err)
	}
	// bbolt would try to initialise an empty file (and fail read-only with a
	// confusing error); a snapshot is never smaller than its two meta pages.
	if st.Size() < 1024 {
		return nil, fmt.Errorf("open etcd snapshot %s: %d bytes is too small for a bbolt database", dbPath, st.Size())
	}
	db, err := bolt.Open(dbPath, 0o400, &bolt.Options{ReadOnly: true, Timeout: 2 * time.Second, MmapFlags: mmapFlags})
	if err != nil {
		return nil, fmt.Errorf("open etcd snapshot %s: %w", dbPath, err)
	}
	s := &Snapshot{path: dbPath, db: db, keys: map[string]int32{}}
	if err := s.index(rev, st.Size()); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("index etcd snapshot %s: %w", dbPath, err)
	}
	return s, nil
}

// view runs fn in a read transaction and turns what bbolt does on a
// damaged file into an error: bbolt follows page numbers straight into its
// memory map, so a page that is not what its parent says panics, and one
// past the end of the file faults (SIGBUS), which without SetPanicOnFault
// kills the process. It does not catch everything: pages that point back at
// their parent make bbolt loop. A file that passed the backup's check
// (snapread.CheckDB: bbolt's own consistency check, out of process) has
// none of this.
func (s *Snapshot) view(fn func(tx *bolt.Tx) error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("damaged bbolt file: %v", r)
		}
	}()
	return s.db.View(fn)
}

func (s *Snapshot) index(at int64, fileSize int64) error {
	return s.view(func(tx *bolt.Tx) error {
		// bbolt trusts the meta page's page count and maps past the end of
		// a shorter file: every page read there would fault.
		if tx.Size() > fileSize {
			return fmt.Errorf("truncated: the file is %d bytes, its bbolt meta page says %d", fileSize, tx.Size())
		}
		var err error
		if s.compactRev, err = snapread.CompactRevision(tx.Bucket(bucketMeta)); err != nil {
			return err
		}
		b := tx.Bucket(bucketKey)
		if b == nil {
			return errors.New(`no bucket "key": not an etcd v3 data file`)
		}
		if at > 0 && at < s.compactRev {
			return fmt.Errorf("revision %d: %w (compacted at %d)", at, ErrCompacted, s.compactRev)
		}
		c := b.Cursor()
		var top int64
		var prev *snapread.Revision
		stopped := false
		for k, v := c.First(); k != nil; k, v = c.Next() {
			// The backup check parsed every entry the same way.
			h, err := snapread.ParseEntry(k, v)
			if err != nil {
				return err
			}
			// Everything below (the newest entry wins, the stop at rev, the
			// snapshot's revision) rests on bbolt handing keys over in
			// order, which it does only as far as its pages are sorted.
			if prev != nil && (h.Main < prev.Main || h.Main == prev.Main && h.Sub <= prev.Sub) {
				return fmt.Errorf("entry at revision %s after %s: revisions out of order, the file is damaged", h.Revision, prev)
			}
			prev = &h.Revision
			if at > 0 && h.Main > at {
				stopped = true
				break // keys are ordered by revision
			}
			top = h.Main
			if h.IsBumpMarker() {
				continue // a restore moved the revision on here; no key changed
			}
			e := entry{rev: h.Revision, createRevision: h.CreateRevision, version: h.Version}
			// Indexing with string(h.Key) does not allocate; only a new key
			// costs a copy.
			if i, ok := s.keys[string(h.Key)]; ok {
				s.entries[i] = e
				continue
			}
			s.keys[string(h.Key)] = int32(len(s.entries))
			s.entries = append(s.entries, e)
		}
		if at > 0 {
			if !stopped && top < at {
				return fmt.Errorf("revision %d is after the file's last revision %d", at, top)
			}
			top = at
		}
		// As etcd does on start: compaction may have removed the newest
		// revisions (deletes), yet the store's revision never goes back.
		s.rev = max(top, s.compactRev)
		return nil
	})
}

// Close releases the file.
func (s *Snapshot) Close() error { return s.db.Close() }

// Path is the file the snapshot was opened from.
func (s *Snapshot) Path() string { return s.path }

// Revision is the etcd revision the snapshot (plus applied events) shows.
func (s *Snapshot) Revision() int64 { return s.rev }

// CompactRevision is the revision etcd had compacted the file to.
func (s *Snapshot) CompactRevision() int64 { return s.compactRev }

// UseEncryption sets the keys used to decrypt values encrypted at rest.
func (s *Snapshot) UseEncryption(k *Keyring) { s.keyring = k }

// Get returns one object, decoded and decrypted.
func (s *Snapshot) Get(ref Ref) (*Object, error) { return s.GetKey(ref.Key()) }

// GetKey is Get by raw etcd key.
func (s *Snapshot) GetKey(key string) (*Object, error) {
	i, ok := s.keys[key]
	if !ok {
		return nil, &NotFoundError{Key: key, Revision: s.rev}
	}
	e := s.entries[i]
	if e.rev.Tombstone {
		return nil, &NotFoundError{Key: key, DeletedAt: e.rev.Main, Revision: s.rev}
	}
	raw, lease, err := s.valueLease(key, e)
	if err != nil {
		return nil, err
	}
	obj := &Object{
		Key:            key,
		ModRevision:    e.rev.Main,
		CreateRevision: e.createRevision,
		Version:        e.version,
		Lease:          lease,
	}
	obj.Ref, _ = RefFromKey(key)
	if err := obj.decode(raw, s.keyring); err != nil {
		return nil, err
	}
	return obj, nil
}

// RawValue is the stored bytes of a live key, as etcdctl get would print
// them: still encrypted if encrypted at rest.
func (s *Snapshot) RawValue(key string) ([]byte, error) {
	i, ok := s.keys[key]
	if !ok || s.entries[i].rev.Tombstone {
		return nil, &NotFoundError{Key: key, Revision: s.rev}
	}
	v, _, err := s.valueLease(key, s.entries[i])
	return v, err
}

func (s *Snapshot) value(key string, e entry) ([]byte, error) {
	v, _, err := s.valueLease(key, e)
	return v, err
}

func (s *Snapshot) valueLease(key string, e entry) ([]byte, int64, error) {
	if e.overlay {
		return e.value, e.lease, nil
	}
	var kv mvccpb.KeyValue
	err := s.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketKey).Get(e.rev.Bytes())
		if v == nil {
			return fmt.Errorf("revision %d_%d vanished from the file", e.rev.Main, e.rev.Sub)
		}
		// Unmarshal copies the value out of the mmap, which is gone once the
		// transaction ends.
		return kv.Unmarshal(v)
	})
	if err != nil {
		return nil, 0, fmt.Errorf("read %s at revision %d: %w", key, e.rev.Main, err)
	}
	if string(kv.Key) != key {
		return nil, 0, fmt.Errorf("read %s at revision %d: file holds key %q there", key, e.rev.Main, kv.Key)
	}
	return kv.Value, kv.Lease, nil
}

// Item is one live object in a listing: where it is, not what it holds.
type Item struct {
	Ref            Ref
	Key            string
	ModRevision    int64
	CreateRevision int64
	Version        int64
}

// Filter selects objects for List. Empty fields match everything;
// Resource and Group are matched together when Resource is set.
type Filter struct {
	Group     string
	Resource  string
	Namespace string
}

// List returns the live objects under /registry that match f, sorted by
// key. It reads no values.
func (s *Snapshot) List(f Filter) []Item {
	var out []Item
	for key, i := range s.keys {
		e := s.entries[i]
		if e.rev.Tombstone {
			continue
		}
		ref, ok := RefFromKey(key)
		if !ok {
			continue
		}
		if f.Resource != "" && (ref.Resource != f.Resource || ref.Group != f.Group) {
			continue
		}
		if f.Namespace != "" && ref.Namespace != f.Namespace {
			continue
		}
		out = append(out, Item{Ref: ref, Key: key, ModRevision: e.rev.Main, CreateRevision: e.createRevision, Version: e.version})
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Key < out[b].Key })
	return out
}

// Len is the number of live keys (all of etcd, not only /registry).
func (s *Snapshot) Len() int {
	n := 0
	for _, e := range s.entries {
		if !e.rev.Tombstone {
			n++
		}
	}
	return n
}

// ApplyEvents moves the snapshot forward by delta events (etcdsnap's, as
// the journal stores them; a put with CreateRevision 0 is read as creating
// its key at ModRevision), which must come in revision order. Events at or below the snapshot's revision are already
// in it and are skipped, so overlapping delta logs apply cleanly. For a
// point in time, pass only the events up to it.
func (s *Snapshot) ApplyEvents(events []snapread.Event) error {
	last, err := applyEvents(s.rev, events, func(key string, e entry) {
		if i, ok := s.keys[key]; ok {
			s.entries[i] = e
		} else {
			s.keys[key] = int32(len(s.entries))
			s.entries = append(s.entries, e)
		}
	})
	if err != nil {
		return err
	}
	s.rev = max(s.rev, last)
	return nil
}

// Items is List as Reader has it.
func (s *Snapshot) Items(f Filter) ([]Item, error) { return s.List(f), nil }

func (s *Snapshot) keyringOf() *Keyring { return s.keyring }
func (s *Snapshot) baseName() string    { return "" }

func (s *Snapshot) lookup(key string) (keyState, bool, error) {
	i, ok := s.keys[key]
	if !ok {
		return keyState{}, false, nil
	}
	return s.entries[i], true, nil
}

func (s *Snapshot) overlayKeys() []string {
	var out []string
	for k, i := range s.keys {
		if s.entries[i].overlay {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

// walk visits the keys with the prefix in key order.
func (s *Snapshot) walk(prefix string, fn func(key string, st keyState) error) error {
	var ks []string
	for k := range s.keys {
		if strings.HasPrefix(k, prefix) {
			ks = append(ks, k)
		}
	}
	sort.Strings(ks)
	for _, k := range ks {
		if err := fn(k, s.entries[s.keys[k]]); err != nil {
			return err
		}
	}
	return nil
}
