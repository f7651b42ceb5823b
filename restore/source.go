package restore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/kubekeep/kubekeep/backup/versionread"
	"github.com/kubekeep/kubekeep/etcdsnap"
	"github.com/kubekeep/kubekeep/etcdsnap/snapread"
	"github.com/kubekeep/kubekeep/internal/ctxio"
	"github.com/kubekeep/kubekeep/layout"
	"github.com/kubekeep/kubekeep/rsyncish"
)

// DefaultDeltaJournal is the store journal holding etcd watch deltas, the
// one backup.DeltaSink writes.
const DefaultDeltaJournal = versionread.DeltaJournal

// source is what a restore reads from one version, checked once.
type source struct {
	id      string
	info    rsyncish.VersionInfo
	entries []rsyncish.Entry
	set     *layout.Set
	etcd    *snapread.Info
	status  versionread.Status
	// unsafe lists why paths of this version are refused; a version with
	// any restores nothing.
	unsafe []string
	// hasSnapshot / hasClusterConfig: the streams are present.
	hasSnapshot      bool
	snapshotSize     int64
	hasClusterConfig bool
	// snapID is the version holding the etcd snapshot stream: id itself,
	// or a journal version's base. etcd is then the base's snapshot info
	// and journal the version's own (Source journal): its state is that
	// snapshot plus the delta journal up to journal.Revision.
	snapID  string
	journal *snapread.Info
	// chainErr: the journal version's chain is not intact (base gone,
	// a gap or a break); nothing of its etcd state can be restored.
	chainErr error
}

// etcdRevision is the revision of the version's own etcd state (a journal
// version's, not its base's), 0 when it records none.
func (src *source) etcdRevision() int64 {
	if src.journal != nil {
		return src.journal.Revision
	}
	if src.etcd != nil {
		return src.etcd.Revision
	}
	return 0
}

// etcdKeys is the key count of the version's own etcd state.
func (src *source) etcdKeys() int64 {
	if src.journal != nil {
		return src.journal.Keys
	}
	if src.etcd != nil {
		return src.etcd.Keys
	}
	return 0
}

// untilRevision is the revision a restore replays to: the one asked for,
// else a journal version's own (its base's snapshot alone is not its
// state); 0 for a full version at its snapshot.
func (src *source) untilRevision(at time.Time, rev int64) int64 {
	if rev > 0 || !at.IsZero() || src.journal == nil {
		return rev
	}
	return src.journal.Revision
}

func loadSource(store *rsyncish.Store, version string) (*source, error) {
	id, err := versionread.Resolve(store, version)
	if err != nil {
		return nil, err
	}
	vi, err := store.Version(id)
	if err != nil {
		return nil, err
	}
	entries, err := store.List(id)
	if err != nil {
		return nil, err
	}
	src := &source{id: id, info: vi, entries: entries, snapID: id}
	if raw, ok := vi.Meta[versionread.MetaLayout]; ok {
		var set layout.Set
		if err := json.Unmarshal(raw, &set); err != nil {
			return nil, fmt.Errorf("version %s: layout meta: %w", id, err)
		}
		src.set = &set
	}
	if raw, ok := vi.Meta[versionread.MetaEtcd]; ok {
		var info snapread.Info
		if err := json.Unmarshal(raw, &info); err != nil {
			return nil, fmt.Errorf("version %s: etcd meta: %w", id, err)
		}
		src.etcd = &info
	}
	if raw, ok := vi.Meta[versionread.MetaStatus]; ok {
		_ = json.Unmarshal(raw, &src.status)
	}
	for _, sh := range vi.Streams {
		switch sh.Name {
		case versionread.EtcdSnapshotStream:
			src.hasSnapshot, src.snapshotSize = true, sh.Size
		case versionread.ClusterConfigurationStream:
			src.hasClusterConfig = true
		}
	}
	if src.etcd != nil && src.etcd.Source == snapread.SourceJournal {
		if err := src.loadBase(store); err != nil {
			src.chainErr = err
		}
	}
	src.unsafe = unsafePaths(src)
	return src, nil
}

// loadBase points a journal version's snapshot at its base's and checks
// the chain from there (versionread.Readable).
func (src *source) loadBase(store *rsyncish.Store) error {
	own := src.etcd
	src.journal = own
	vs, err := store.Versions()
	if err != nil {
		return err
	}
	if err := versionread.Readable(store, vs, src.info); err != nil {
		return err
	}
	base, err := store.Version(own.Base)
	if err != nil {
		return fmt.Errorf("version %s: its base %s: %w", src.id, own.Base, err)
	}
	src.snapID, src.etcd = base.ID, versionread.VersionEtcd(base)
	for _, sh := range base.Streams {
		if sh.Name == versionread.EtcdSnapshotStream {
			src.hasSnapshot, src.snapshotSize = true, sh.Size
		}
	}
	return nil
}

// unsafePaths finds every reason a version could write outside the root or
// over something it must not. rsyncish refuses unclean paths too, but only
// once the files phase runs; this lets preflight refuse before anything
// changes, and also covers the paths restore computes itself from meta.
func unsafePaths(src *source) []string {
	var bad []string
	links := map[string]string{}
	for _, e := range src.entries {
		if e.Type == "stream" {
			continue
		}
		if !rsyncish.SafePath(e.Path) {
			bad = append(bad, fmt.Sprintf("stored path %q is not a clean absolute path: it could land outside the root", e.Path))
			continue
		}
		if e.Type == "symlink" {
			links[e.Path] = e.Target
		}
	}
	// A stored symlink followed by files below it would have those files
	// written wherever the link points.
	for _, e := range src.entries {
		if e.Type == "stream" || !rsyncish.SafePath(e.Path) {
			continue
		}
		for dir := parentDir(e.Path); dir != "/"; dir = parentDir(dir) {
			if t, ok := links[dir]; ok {
				bad = append(bad, fmt.Sprintf("stored path %s lies below the stored symlink %s -> %s", e.Path, dir, t))
				break
			}
		}
	}
	if src.set != nil {
		et := src.set.Etcd
		for what, p := range map[string]string{"etcd data dir": et.DataDir, "etcd manifest": et.Manifest,
			"etcd CA": et.CAFile, "etcd client cert": et.CertFile, "etcd client key": et.KeyFile} {
			if p == "" {
				continue
			}
			if !rsyncish.SafePath(p) {
				bad = append(bad, fmt.Sprintf("%s %q in the version's layout is not a clean absolute path: it could land outside the root", what, p))
			}
		}
		if dd := et.DataDir; dd != "" && rsyncish.SafePath(dd) {
			// The data dir is moved aside whole: it must not hold what
			// the files phase restores.
			for _, e := range src.entries {
				if e.Type != "stream" && within(e.Path, dd) {
					bad = append(bad, fmt.Sprintf("etcd data dir %s contains the stored path %s: moving it aside would move restored files", dd, e.Path))
					break
				}
			}
		}
	}
	sort.Strings(bad)
	return bad
}

func parentDir(p string) string {
	i := strings.LastIndexByte(p, '/')
	if i <= 0 {
		return "/"
	}
	return p[:i]
}

// within reports whether p is base or below it, by whole path segments.
func within(p, base string) bool {
	if base == "/" {
		return true
	}
	return p == base || strings.HasPrefix(p, base+"/")
}

// dataDir is the local etcd data dir the version's layout names, "" when
// none (or an external etcd).
func (src *source) dataDir() string {
	if src.set == nil || src.set.Etcd.External {
		return ""
	}
	return src.set.Etcd.DataDir
}

func (src *source) unsafeError() error {
	if len(src.unsafe) == 0 {
		return nil
	}
	return fmt.Errorf("version %s: %w: %s; nothing restored", src.id, rsyncish.ErrUnsafePath, strings.Join(src.unsafe, "; "))
}

// readStream returns a small stream (the ClusterConfiguration).
func (src *source) readStream(store *rsyncish.Store, name string) ([]byte, error) {
	rc, _, err := store.OpenStream(src.id, name)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("version %s: read %s: %w", src.id, name, err)
	}
	return b, nil
}

// readFile returns a small stored file's content (certificates,
// kubeconfigs), nil when the version does not hold it.
func (src *source) readFile(store *rsyncish.Store, hostPath string) ([]byte, error) {
	rc, _, err := store.OpenFile(src.id, hostPath)
	if errors.Is(err, rsyncish.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("version %s: read %s: %w", src.id, hostPath, err)
	}
	return b, nil
}

// hasStream says whether the version holds the named stream.
func (src *source) hasStream(name string) bool {
	for _, sh := range src.info.Streams {
		if sh.Name == name {
			return true
		}
	}
	return false
}

func (src *source) entry(hostPath string) (rsyncish.Entry, bool) {
	for _, e := range src.entries {
		if e.Path == hostPath {
			return e, true
		}
	}
	return rsyncish.Entry{}, false
}

// snapshotFile is a version's etcd snapshot written out to the store's
// filesystem and fully checked: sha256 trailer (API snapshots), bbolt
// consistency, and revision against what the backup recorded.
type snapshotFile struct {
	path  string
	raw   bool
	size  int64
	sha   string
	stats snapread.DBStats
	// checked: stats come from a bbolt check of this file.
	checked bool
}

func (s *snapshotFile) remove() {
	if s != nil && s.path != "" {
		_ = os.Remove(s.path)
	}
}

// materializeSnapshot writes the snapshot stream to a temp file in the
// store (never the root disk, which may be the broken one) and checks it.
// A truncated or corrupt stream fails here, before a restore changes
// anything.
//
// With check false the bbolt check is left to the caller: RestoreDataDir
// runs its own before it writes, and a second full pass over a 1 GiB
// image costs seconds.
func materializeSnapshot(ctx context.Context, store *rsyncish.Store, src *source, check bool) (*snapshotFile, error) {
	if src.chainErr != nil {
		return nil, fmt.Errorf("version %s cannot be restored: %w", src.id, src.chainErr)
	}
	if !src.hasSnapshot {
		why := "no etcd snapshot stream"
		if src.status != "" {
			why += fmt.Sprintf(" (backup status %s)", src.status)
		}
		return nil, fmt.Errorf("version %s has %s: pick a version whose status is ok (kubekeep versions)", src.id, why)
	}
	f, err := versionread.MaterializeSnapshot(ctx, store, src.snapID)
	if err != nil {
		return nil, err
	}
	sf := &snapshotFile{path: f.Path, raw: f.Raw, size: f.Size, sha: f.SHA256}
	if !check {
		return sf, nil
	}
	st, err := snapread.CheckDB(sf.path)
	if err != nil {
		sf.remove()
		return nil, fmt.Errorf("version %s: stored etcd snapshot fails its consistency check: %w", src.snapID, err)
	}
	sf.stats, sf.checked = st, true
	if src.etcd != nil && src.etcd.Revision != 0 && src.etcd.Revision != st.Revision {
		sf.remove()
		return nil, fmt.Errorf("version %s: stored etcd snapshot is at revision %d, the backup recorded %d", src.snapID, st.Revision, src.etcd.Revision)
	}
	return sf, nil
}

// vouch says what a restore may take as checked about the file without
// another pass over it: a fresh bbolt check of this very file, or the
// backup's own check of these bytes (recorded as verified; every block was
// re-hashed against its address on the way out, and an API snapshot's
// sha256 trailer matched again in MaterializeSnapshot).
func (s *snapshotFile) vouch(src *source) *etcdsnap.VerifiedImage {
	switch {
	case s.checked:
		return &etcdsnap.VerifiedImage{Revision: s.stats.Revision, Keys: s.stats.Keys, Trailer: !s.raw}
	case src.etcd != nil && src.etcd.Verified && src.etcd.Revision > 0:
		return &etcdsnap.VerifiedImage{Revision: src.etcd.Revision, Keys: src.etcd.Keys, Trailer: !s.raw}
	}
	return nil
}

// etcdImage sets the snapshot a data dir restore reads. A version whose
// snapshot the backup checked is streamed out of the store straight into
// the new data dir: every block is checked against its blake3 address on
// the way, which proves these are the bytes the backup checked, and the
// image is written once instead of to a scratch file first (for a 1 GiB
// etcd that is a second of writing and a second of hashing less). A copy
// already materialised for this run (preflight checked it), or a version
// the backup could not vouch for, goes through a checked file. With
// recheck (the drill), the sha256 trailer is checked again on the way in
// and a file is checked whole whatever vouches for it. The returned func
// releases what was opened.
func etcdImage(ctx context.Context, store *rsyncish.Store, src *source, have *snapshotFile, cfg *etcdsnap.RestoreConfig, recheck bool) (func(), error) {
	if src.chainErr != nil {
		return nil, fmt.Errorf("version %s cannot be restored: %w", src.id, src.chainErr)
	}
	if streamsImage(src, have) {
		e := src.etcd
		rc, size, err := store.OpenStream(src.snapID, versionread.EtcdSnapshotStream)
		if err != nil {
			return nil, fmt.Errorf("version %s: open the etcd snapshot: %w", src.snapID, err)
		}
		raw := e.Source == snapread.SourceRaw
		cfg.Snapshot, cfg.SnapshotSize, cfg.SkipHashCheck = ctxio.Reader(ctx, rc), size, raw
		cfg.Verified = &etcdsnap.VerifiedImage{Revision: e.Revision, Keys: e.Keys, Trailer: e.TrailerVerified && !recheck}
		return func() { rc.Close() }, nil
	}
	sf := have
	if sf == nil {
		var err error
		if sf, err = materializeSnapshot(ctx, store, src, false); err != nil {
			return nil, err
		}
	}
	cfg.SnapshotPath, cfg.SkipHashCheck, cfg.Verified = sf.path, sf.raw, sf.vouch(src)
	if recheck {
		cfg.Verified = nil
	}
	return func() {
		if sf != have {
			sf.remove()
		}
	}, nil
}

// streamsImage says whether etcdImage streams the snapshot straight from
// the store (no copy of it on disk first). The size check matters: the
// record vouches for the stream the backup wrote, and a stored stream of
// another length is not it.
func streamsImage(src *source, have *snapshotFile) bool {
	e := src.etcd
	return have == nil && e != nil && e.Verified && e.Revision > 0 && e.StreamBytes > 0 && e.StreamBytes == src.snapshotSize
}

// snapshot materialises the snapshot once per run; check asks for the
// bbolt check too (preflight), which a run that has it keeps.
func (r *runner) snapshot(ctx context.Context, check bool) (*snapshotFile, error) {
	if r.snap != nil && (r.snap.checked || !check) {
		return r.snap, nil
	}
	r.snap.remove()
	release := func() {}
	if r.src.hasSnapshot {
		release = r.counting(r.src.snapshotSize)
	}
	sf, err := materializeSnapshot(ctx, r.opts.Store, r.src, check)
	release()
	if err != nil {
		return nil, err
	}
	r.snap = sf
	return sf, nil
}

// deltaSegments returns the journal segments a point-in-time restore from
// a snapshot at snapRev needs (nil when no point was asked for).
func deltaSegments(store *rsyncish.Store, journal string, snapRev int64, at time.Time, rev int64) ([]io.Reader, error) {
	if at.IsZero() && rev == 0 {
		return nil, nil
	}
	names, err := store.Journals()
	if err != nil {
		return nil, fmt.Errorf("list journals: %w", err)
	}
	found := false
	for _, n := range names {
		found = found || n == journal
	}
	if !found {
		return nil, fmt.Errorf("store %s has no etcd delta journal %q: only the snapshot's own revision %d can be restored", store.Dir(), journal, snapRev)
	}
	j, err := store.Journal(journal)
	if err != nil {
		return nil, err
	}
	// Only the segments up to the target: damage in a later one must not
	// block a point in time before it.
	var until uint64
	if rev > 0 {
		until = uint64(rev)
	}
	datas, _, err := j.ReadNeeded(uint64(max(snapRev, 0)), until, at)
	if err != nil {
		return nil, fmt.Errorf("etcd delta journal %s: %w", journal, err)
	}
	out := make([]io.Reader, 0, len(datas))
	for _, data := range datas {
		out = append(out, bytes.NewReader(data))
	}
	return out, nil
}

// PickVersionAt returns the newest version with a good etcd snapshot (or
// an intact journal version) started at or before at: the base for a
// point-in-time restore.
func PickVersionAt(store *rsyncish.Store, at time.Time) (string, error) {
	vs, err := store.Versions()
	if err != nil {
		return "", err
	}
	for i := len(vs) - 1; i >= 0; i-- {
		v := vs[i]
		if v.Time.After(at) {
			continue
		}
		var st versionread.Status
		if raw, ok := v.Meta[versionread.MetaStatus]; ok {
			_ = json.Unmarshal(raw, &st)
		}
		if st == versionread.StatusOK && versionread.Readable(store, vs, v) == nil {
			return v.ID, nil
		}
	}
	return "", fmt.Errorf("no version with a good etcd snapshot was taken before %s: %w", at.UTC().Format(time.RFC3339), rsyncish.ErrNotFound)
}
