package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kubekeep/kubekeep/backup/versionread"
	"github.com/kubekeep/kubekeep/etcdsnap/snapread"
	"github.com/kubekeep/kubekeep/layout"
	"github.com/kubekeep/kubekeep/objects"
	"github.com/kubekeep/kubekeep/rsyncish"
)

// versionSnapshot is a version's etcd state, opened for reading: through
// the key index the backup stored beside the snapshot (random access into
// the stored streams, nothing materialised), or for a version without one
// (older backups, a damaged index) the snapshot materialised and opened
// with bbolt. A journal version is its base's snapshot plus the journal up
// to its revision; --at moves either kind on to a time.
type versionSnapshot struct {
	id      string
	store   *rsyncish.Store
	snap    objects.Reader
	file    *versionread.SnapshotFile // materialised only
	vr      *rsyncish.VersionReader
	indexed bool
	// journalIndexed: a journal version read through its journal key
	// index (no replay since the base).
	journalIndexed bool
	deltas         int // journal events applied
	// unmap releases the mapped journal segments the applied events are
	// views of (after snap is closed).
	unmap func()
	// journalBytes is what was read of the delta journal's segments.
	journalBytes atomic.Int64
	encFrom      string
	// encKeys loads the version's own keys (nil with --encryption-config).
	encKeys func() (encKeys, error)
}

type encKeys struct {
	kr   *objects.Keyring
	from string
}

// encryptionFrom says where the keys came from, loading the version's own
// ("" when none is known).
func (v *versionSnapshot) encryptionFrom() string {
	if v.encKeys == nil {
		return v.encFrom
	}
	k, _ := v.encKeys()
	if k.kr == nil {
		return ""
	}
	return k.from
}

func (v *versionSnapshot) Close() {
	if v.snap != nil {
		_ = v.snap.Close()
	}
	if v.unmap != nil {
		v.unmap()
	}
	if v.vr != nil {
		_ = v.vr.Close()
	}
	v.file.Remove()
}

// storeBytes is what reading cost in blob bytes read from the store's
// packs (the indexed path; 0 otherwise).
func (v *versionSnapshot) storeBytes() int64 {
	if v.vr == nil {
		return 0
	}
	return v.vr.BlobBytesRead()
}

// shortLivedGC lets a one-object read keep what it allocates: with the
// default GOGC, the heap the package inits leave (~4 MB) made a get of one
// object collect garbage twice more before it exits, ~10 ms of its ~50.
// Its live heap is an index block, a journal segment and one object, so
// 5x that is a few tens of MB at most.
func shortLivedGC() { debug.SetGCPercent(400) }

// withIndexFallback runs fn on the version's state and, when the key
// index turns out damaged part-way (a block that fails its checksum, an
// index that disagrees with the image), warns and runs it again on the
// materialised snapshot: the index only speeds reads up, the snapshot is
// the truth.
func withIndexFallback(ctx context.Context, g *globalOptions, version, at, encConfig string, fn func(*versionSnapshot) error) error {
	vs, err := openVersionState(ctx, g, version, at, encConfig, false, nil)
	if err != nil {
		return err
	}
	err = fn(vs)
	indexed := vs.indexed
	vs.Close()
	if err == nil || !indexed || !errors.Is(err, snapread.ErrKeyIndex) {
		return err
	}
	g.logger.Warn("the version's etcd key index is damaged; reading the whole snapshot instead (verify --read-data names the damage)", "version", vs.id, "err", err)
	vs, err = openVersionState(ctx, g, version, at, encConfig, true, nil)
	if err != nil {
		return err
	}
	defer vs.Close()
	return fn(vs)
}

// openVersionState opens the state of --version/--at; with share, through
// the read lock and pack index share already holds (diff's second point).
func openVersionState(ctx context.Context, g *globalOptions, version, at, encConfig string, noIndex bool, share *versionSnapshot) (*versionSnapshot, error) {
	var store *rsyncish.Store
	var err error
	if share != nil {
		store = share.store
	} else if store, err = openStoreMode(g, false); err != nil {
		return nil, err
	}
	var atTime time.Time
	if at != "" {
		if atTime, err = time.Parse(time.RFC3339, at); err != nil {
			return nil, fmt.Errorf("--at %q: want RFC 3339, like 2026-11-23T10:15:00Z", at)
		}
	}
	var id string
	if at != "" && (version == "" || version == "latest") {
		id, err = versionAt(store, atTime)
	} else {
		// "latest" passes over a journal version that cannot be read.
		id, err = versionread.Resolve(store, version)
	}
	if err != nil {
		return nil, err
	}
	vi, err := store.Version(id)
	if err != nil {
		return nil, err
	}
	src, ok := versionread.EtcdSourceOf(vi)
	if !ok {
		return nil, fmt.Errorf("version %s holds no etcd state (its etcd backup failed, or it is files-only)", id)
	}
	if at != "" && atTime.Before(vi.Time) {
		return nil, fmt.Errorf("--at %s is before version %s (%s)", at, id, vi.Time.Format(time.RFC3339))
	}
	vs := &versionSnapshot{id: id, store: store}
	ok = false
	defer func() {
		if !ok {
			vs.Close()
		}
	}()
	if share != nil && share.vr != nil {
		vs.vr, err = share.vr.Version(id)
	} else {
		vs.vr, err = store.OpenVersion(id)
	}
	if err != nil {
		return nil, err
	}
	if !noIndex {
		vs.snap, err = openIndexed(vs.vr, src)
		if errors.Is(err, snapread.ErrKeyIndex) {
			g.logger.Warn("the version's etcd key index is damaged; reading the whole snapshot instead (verify --read-data names the damage)", "version", src.Version, "err", err)
		} else if err != nil && !errors.Is(err, rsyncish.ErrNotFound) {
			return nil, fmt.Errorf("version %s: %w", id, err)
		}
		vs.indexed = vs.snap != nil
	}
	if vs.snap == nil {
		// No key index (a version from before kubekeep wrote one): the
		// snapshot is copied out of the store and opened with bbolt.
		if vs.file, err = versionread.MaterializeSnapshot(ctx, store, src.Version); err != nil {
			return nil, err
		}
		if vs.snap, err = objects.Open(vs.file.Path); err != nil {
			return nil, fmt.Errorf("version %s: %w", src.Version, err)
		}
	}
	if encConfig != "" {
		// Named by the operator: a bad file fails at once.
		kr, from, err := keyring(vs.vr, id, g.cfg.Root, encConfig)
		if err != nil {
			return nil, err
		}
		vs.snap.UseEncryption(kr)
		vs.encFrom = from
	} else {
		// The version's own EncryptionConfiguration, read only when an
		// encrypted value needs it: parsing the apiserver's manifest was a
		// tenth of what a get of an unencrypted object cost.
		vr := vs.vr
		vs.encKeys = sync.OnceValues(func() (encKeys, error) {
			kr, from, err := keyring(vr, id, g.cfg.Root, "")
			return encKeys{kr, from}, err
		})
		vs.snap.UseEncryption(objects.DeferKeyring(func() (*objects.Keyring, error) {
			k, err := vs.encKeys()
			return k.kr, err
		}))
	}
	if src.Journal && vs.indexed && journalIndexUsable(src, at, atTime) {
		// The version's journal key index moves the view to its revision
		// without replaying the journal since the base; --at then replays
		// only what follows the version.
		vs.journalIndexed, err = useJournalIndex(store, vs.vr, vs.snap, &vs.journalBytes)
		if err != nil && !errors.Is(err, snapread.ErrKeyIndex) {
			return nil, fmt.Errorf("version %s: %w", id, err)
		}
		if err != nil {
			g.logger.Warn("the version's journal key index is damaged; replaying the journal instead (verify --read-data names the damage)", "version", id, "err", err)
		}
	}
	if src.Journal || at != "" {
		untilRev := int64(0)
		if at == "" {
			untilRev = src.Revision
		}
		if vs.deltas, vs.unmap, err = applyDeltas(store, vs.snap, untilRev, atTime, &vs.journalBytes); err != nil {
			return nil, fmt.Errorf("version %s: %w", id, err)
		}
	}
	g.logger.Debug("opened version snapshot", "version", id, "snapshotOf", src.Version, "revision", vs.snap.Revision(), "indexed", vs.indexed, "deltas", vs.deltas)
	ok = true
	return vs, nil
}

// journalIndexUsable says whether a journal version's key index may stand
// for its state: always for the version itself; for --at only when the
// version's etcd part had ended by then (it read etcd's revision at some
// moment while it ran, and the index is at that revision).
func journalIndexUsable(src versionread.EtcdSource, at string, t time.Time) bool {
	if at == "" {
		return true
	}
	if src.Info == nil || src.Info.Started.IsZero() {
		return false
	}
	end := src.Info.Started.Add(time.Duration(src.Info.Duration * float64(time.Second)))
	return !end.After(t)
}

// useJournalIndex moves snap (the base's indexed snapshot) to the journal
// version vr's revision through its journal key index. False, nil: vr has
// none (written before kubekeep wrote one); errors wrapping
// snapread.ErrKeyIndex: it is damaged (the journal is replayed instead).
func useJournalIndex(store *rsyncish.Store, vr *rsyncish.VersionReader, snap objects.Reader, read *atomic.Int64) (bool, error) {
	ix, ok := snap.(*objects.Indexed)
	if !ok {
		return false, nil
	}
	keys, err := vr.Stream(versionread.EtcdJournalKeysStream)
	if errors.Is(err, rsyncish.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	segs, err := vr.Stream(versionread.EtcdJournalSegsStream)
	if err != nil {
		keys.Close()
		if errors.Is(err, rsyncish.ErrNotFound) {
			return false, fmt.Errorf("%w: %s without %s", snapread.ErrKeyIndex, versionread.EtcdJournalKeysStream, versionread.EtcdJournalSegsStream)
		}
		return false, err
	}
	j, err := store.Journal(versionread.DeltaJournal)
	if err == nil {
		err = ix.UseJournal(objects.JournalConfig{Index: keys, IndexSize: keys.Size(),
			Value: versionread.JournalValues(j, segs, segs.Size(), read),
			OnClose: func() error {
				keys.Close()
				return segs.Close()
			}})
	}
	if err != nil {
		keys.Close()
		segs.Close()
		return false, err
	}
	return true, nil
}

// openIndexed opens the snapshot of src through its stored key index.
func openIndexed(vr *rsyncish.VersionReader, src versionread.EtcdSource) (objects.Reader, error) {
	base := vr
	if src.Version != vr.ID() {
		var err error
		if base, err = vr.Version(src.Version); err != nil {
			return nil, err
		}
		defer base.Close()
	}
	idx, err := base.Stream(versionread.EtcdKeyIndexStream)
	if err != nil {
		return nil, err
	}
	img, err := base.Stream(versionread.EtcdSnapshotStream)
	if err != nil {
		idx.Close()
		return nil, err
	}
	r, err := objects.OpenIndexed(objects.IndexedConfig{
		Index: idx, IndexSize: idx.Size(), Image: img,
		Base: src.Version,
		OnClose: func() error {
			idx.Close()
			return img.Close()
		},
	})
	if err != nil {
		idx.Close()
		img.Close()
		return nil, err
	}
	return r, nil
}

// versionAt is the newest version started at or before t that holds etcd
// state that can be read (a snapshot of its own, or a base and an intact
// journal).
func versionAt(store *rsyncish.Store, t time.Time) (string, error) {
	id := ""
	if err := store.NewestFirst(func(v rsyncish.VersionInfo) bool {
		if v.Time.After(t) {
			return true
		}
		if _, ok := versionread.EtcdSourceOf(v); ok && versionread.ReadableNow(store, v) == nil {
			id = v.ID
			return false
		}
		return true
	}); err != nil {
		return "", err
	}
	if id == "" {
		return "", fmt.Errorf("no version with an etcd snapshot at or before %s: %w", t.Format(time.RFC3339), rsyncish.ErrNotFound)
	}
	return id, nil
}

// keyring loads the EncryptionConfiguration: the file given, else the one
// the version's kube-apiserver manifest names, read from the version
// itself (the host's copy may be newer, or gone).
func keyring(store *rsyncish.VersionReader, id, root, explicit string) (*objects.Keyring, string, error) {
	if explicit != "" {
		kr, err := objects.LoadEncryptionConfig(explicit)
		return kr, explicit, err
	}
	manifest := filepath.Join(layout.ManifestsDir, "kube-apiserver.yaml")
	data, err := readVersionFile(store, id, manifest)
	if err != nil {
		return nil, "", nil // no manifest in the version: nothing encrypted we could know of
	}
	pod, err := layout.ParseManifest(manifest, data)
	if err != nil || len(pod.Spec.Containers) == 0 {
		return nil, "", nil
	}
	c := pod.Spec.Containers[0]
	cpath := layout.ContainerFlags(c)["encryption-provider-config"]
	if cpath == "" {
		return nil, "", nil
	}
	hostPath, ok := layout.HostPathOf(pod, c, cpath)
	if !ok {
		return nil, "", fmt.Errorf("the apiserver's --encryption-provider-config %s is on no hostPath volume: pass --encryption-config", cpath)
	}
	cfg, err := readVersionFile(store, id, hostPath)
	if err != nil {
		// Encrypted values will say which key they need.
		return nil, "", nil
	}
	kr, err := objects.ParseEncryptionConfig(cfg)
	if err != nil {
		return nil, "", fmt.Errorf("version %s: encryption config %s: %w", id, hostPath, err)
	}
	return kr, "version " + id + ":" + hostPath, nil
}

func readVersionFile(vr *rsyncish.VersionReader, _, hostPath string) ([]byte, error) {
	f, err := vr.File(hostPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.NewSectionReader(f, 0, min(f.Size(), 16<<20)))
}

// applyDeltas replays the journal's etcd changes recorded after the
// snapshot up to revision untilRev or time t (zero: no such target). The
// changes applied are views of the mapped segments: release unmaps them,
// after snap is done with.
func applyDeltas(store *rsyncish.Store, snap objects.Reader, untilRev int64, t time.Time, read *atomic.Int64) (n int, release func(), err error) {
	release = func() {}
	// Only the segments up to the target: damage in a later one blocks
	// nothing before it.
	j, err := store.Journal(versionread.DeltaJournal)
	if err != nil {
		return 0, release, fmt.Errorf("etcd deltas: %w", err)
	}
	if t.IsZero() && untilRev <= snap.Revision() {
		return 0, release, nil
	}
	datas, _, unmap, err := j.MapNeeded(uint64(max(snap.Revision(), 0)), uint64(max(untilRev, 0)), t)
	if err != nil {
		if errors.Is(err, rsyncish.ErrNotFound) && untilRev <= snap.Revision() {
			return 0, release, nil
		}
		return 0, release, fmt.Errorf("etcd deltas: %w", err)
	}
	n, err = replayInto(store, snap, datas, untilRev, t, read)
	if err != nil {
		unmap()
		return 0, release, err
	}
	return n, unmap, nil
}

func replayInto(store *rsyncish.Store, snap objects.Reader, datas [][]byte, untilRev int64, t time.Time, read *atomic.Int64) (int, error) {
	for _, d := range datas {
		read.Add(int64(len(d)))
	}
	// The restore's own checks: no gap from the snapshot, the target
	// covered (up to the newest change or progress mark), not inside a
	// stretch a restarted watch caught up on.
	evs, err := snapread.ReplayEventsSealed(datas, snap.Revision(), untilRev, t) // MapNeeded checked each file's seal
	if err != nil {
		// A hole prune made says so, with the versions around it.
		return 0, fmt.Errorf("etcd deltas: %w", versionread.TrimmedAt(store, snap.Revision(), untilRev, t, err))
	}
	if err := snap.ApplyEvents(evs); err != nil {
		return 0, fmt.Errorf("etcd deltas: %w", err)
	}
	return len(evs), nil
}
