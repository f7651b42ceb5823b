package restore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/kubekeep/kubekeep/backup/versionread"
	"github.com/kubekeep/kubekeep/etcdsnap"
	"github.com/kubekeep/kubekeep/layout"
	"github.com/kubekeep/kubekeep/rsyncish"
)

// EtcdOptions describe one etcd data dir restore out of a version.
type EtcdOptions struct {
	Store *rsyncish.Store
	// Version is an ID, a unique prefix or "latest"; empty with At picks
	// the newest good version taken before At.
	Version string
	// At or Revision replay deltas from Journal up to that point.
	At       time.Time
	Revision int64
	Journal  string
	// To is the new data dir: it must not exist or be empty.
	To string
	// Name, InitialCluster and PeerURLs override the member the backed-up
	// etcd manifest describes.
	Name           string
	InitialCluster string
	PeerURLs       []string
	Logger         *slog.Logger
	// Progress hears the bytes of the snapshot read (nil: none); the
	// caller names the step.
	Progress Progress
}

// EtcdResult is what RestoreEtcd produced.
type EtcdResult struct {
	Version string `json:"version"`
	etcdsnap.RestoreResult
}

// member is the etcd member a restored data dir describes.
type member struct {
	name, initialCluster, peerURLs string
}

// memberOf takes name, initial cluster and peer URLs from the version's
// etcd manifest (layout meta), with overrides.
func memberOf(src *source, name, initialCluster string, peerURLs []string) (member, error) {
	m := member{name: name, initialCluster: initialCluster, peerURLs: strings.Join(peerURLs, ",")}
	if src.set != nil && !src.set.Etcd.External {
		e := src.set.Etcd
		if m.name == "" {
			m.name = e.Name
		}
		if m.initialCluster == "" {
			m.initialCluster = e.InitialCluster
		}
		if m.peerURLs == "" {
			m.peerURLs = strings.Join(e.PeerURLs, ",")
		}
	}
	if m.name == "" || m.peerURLs == "" {
		return m, fmt.Errorf("version %s does not say which etcd member to restore (no etcd manifest in its layout): pass --name and --initial-advertise-peer-urls", src.id)
	}
	if m.initialCluster == "" {
		var parts []string
		for _, u := range strings.Split(m.peerURLs, ",") {
			parts = append(parts, m.name+"="+u)
		}
		m.initialCluster = strings.Join(parts, ",")
	}
	return m, nil
}

// RestoreEtcd writes a new etcd data dir at To from a version's snapshot
// (and deltas for a point in time): etcdutl's snapshot restore, with the
// member from the backed-up manifest, revision bump and mark-compacted.
// A snapshot the backup did not vouch for is checked whole before To is
// touched.
func RestoreEtcd(ctx context.Context, o EtcdOptions) (EtcdResult, error) {
	if o.Store == nil || o.To == "" {
		return EtcdResult{}, errors.New("restore etcd: a store and a target data dir are required")
	}
	if o.Journal == "" {
		o.Journal = DefaultDeltaJournal
	}
	version := o.Version
	if version == "" && !o.At.IsZero() {
		id, err := PickVersionAt(o.Store, o.At)
		if err != nil {
			return EtcdResult{}, err
		}
		version = id
	}
	src, err := loadSource(o.Store, version)
	if err != nil {
		return EtcdResult{}, err
	}
	res := EtcdResult{Version: src.id}
	m, err := memberOf(src, o.Name, o.InitialCluster, o.PeerURLs)
	if err != nil {
		return res, err
	}
	if src.etcd == nil {
		return res, fmt.Errorf("version %s records no etcd snapshot (status %s)", src.id, orDash(string(src.status)))
	}
	if src.chainErr != nil {
		return res, fmt.Errorf("version %s cannot be restored: %w", src.id, src.chainErr)
	}
	until := src.untilRevision(o.At, o.Revision)
	segs, err := deltaSegments(o.Store, o.Journal, src.etcd.Revision, o.At, until)
	if err != nil {
		return res, err
	}
	cfg := etcdsnap.RestoreConfig{
		Segments: segs, UntilRevision: until, UntilTime: o.At,
		DataDir: o.To, Name: m.name, InitialCluster: m.initialCluster, InitialAdvertisePeerURLs: m.peerURLs,
		Logger: zap.NewNop(), // etcd's info lines are noise next to ours
	}
	defer watchStore(o.Store, o.Progress)()
	progressBytes(o.Progress, src.snapshotSize)
	release, err := etcdImage(ctx, o.Store, src, nil, &cfg, false)
	if err != nil {
		return res, err
	}
	defer release()
	rr, err := etcdsnap.RestoreDataDir(ctx, cfg)
	err = versionread.TrimmedAt(o.Store, src.etcd.Revision, until, o.At, err) // a hole prune made says so
	res.RestoreResult = rr
	if err == nil && rr.SnapshotRevision != src.etcd.Revision {
		err = fmt.Errorf("the stored snapshot is at revision %d, the backup recorded %d; %s is not to be used", rr.SnapshotRevision, src.etcd.Revision, o.To)
	}
	if err != nil {
		return res, err
	}
	if o.Logger != nil {
		o.Logger.Info("etcd data dir restored", "version", src.id, "dataDir", o.To, "revision", rr.Revision,
			"keys", rr.Keys, "replayedToRevision", rr.ReplayedToRevision, "member", m.name)
	}
	return res, nil
}

// etcd restores the data dir: into a staging dir first, so a failure
// leaves the old data where it was; then the old data is moved aside
// (kept) and the new data dir put in its place. planDataDir decides how
// (a data dir that is a mount point is handled inside the mount).
func (r *runner) etcd(ctx context.Context) error {
	if err := r.src.unsafeError(); err != nil {
		return err
	}
	set := r.src.set
	if set == nil || set.Etcd.DataDir == "" {
		r.skip("the version's layout names no local etcd data dir")
		return nil
	}
	if set.Etcd.External {
		r.skip("etcd is external to this node: restore it on its own host with `kubekeep restore etcd --to DIR`")
		return nil
	}
	dataDir := set.Etcd.DataDir
	m, err := memberOf(r.src, "", "", nil)
	if err != nil {
		return err
	}
	plan, err := r.planDataDir(dataDir)
	if err != nil {
		return err
	}
	stagingReal, err := r.insideRoot(plan.staging)
	if err != nil {
		return err
	}
	dataReal, err := layout.Join(r.opts.Root, dataDir)
	if err != nil {
		return err
	}
	switch {
	case plan.hasDB:
		locked, err := etcdsnap.DataDirLocked(dataReal)
		if err != nil {
			return fmt.Errorf("cannot tell whether etcd still uses %s: %w", dataDir, err)
		}
		if locked {
			return fmt.Errorf("etcd still holds %s: run the stop phase first (kubekeep restore --phase stop)", dataDir)
		}
	case plan.exists:
		// A wiped data dir: no db, so no etcd holds one.
		r.note("%s holds no member/snap/db: no etcd uses it", dataDir)
	}
	r.note("%s", plan.summary())
	if r.src.etcd == nil {
		return fmt.Errorf("version %s records no etcd snapshot (status %s)", r.src.id, orDash(string(r.src.status)))
	}
	if r.src.chainErr != nil {
		return fmt.Errorf("version %s cannot be restored: %w", r.src.id, r.src.chainErr)
	}
	snapRev := r.src.etcd.Revision
	until := r.src.untilRevision(r.opts.At, r.opts.Revision)
	segs, err := deltaSegments(r.opts.Store, r.opts.DeltaJournal, snapRev, r.opts.At, until)
	if err != nil {
		return err
	}
	point := fmt.Sprintf("revision %d", snapRev)
	if r.src.journal != nil {
		point = fmt.Sprintf("base version %s at revision %d", r.src.snapID, snapRev)
	}
	if len(segs) > 0 {
		point += fmt.Sprintf(" plus %d delta segments", len(segs))
		if until > 0 {
			point += fmt.Sprintf(" up to revision %d", until)
		}
		if !r.opts.At.IsZero() {
			point += " up to " + r.opts.At.UTC().Format(time.RFC3339Nano)
		}
	}
	if err := r.do(fmt.Sprintf("restore the etcd snapshot (%s, %d keys) into %s as member %s (peers %s, cluster %s), revision bumped by %d and marked compacted",
		point, r.src.etcdKeys(), plan.staging, m.name, m.peerURLs, m.initialCluster, etcdsnap.RevisionBump), func() error {
		if err := r.mkdirParent(plan.staging); err != nil {
			return err
		}
		cfg := etcdsnap.RestoreConfig{
			Segments: segs, UntilRevision: until, UntilTime: r.opts.At,
			DataDir: stagingReal, Name: m.name, InitialCluster: m.initialCluster, InitialAdvertisePeerURLs: m.peerURLs,
			Logger: zap.NewNop(),
		}
		if r.snap == nil {
			defer r.counting(r.src.snapshotSize)()
		}
		release, err := etcdImage(ctx, r.opts.Store, r.src, r.snap, &cfg, false)
		if err != nil {
			return err
		}
		defer release()
		rr, err := etcdsnap.RestoreDataDir(ctx, cfg)
		err = versionread.TrimmedAt(r.opts.Store, snapRev, until, r.opts.At, err) // a hole prune made says so
		if err == nil && rr.SnapshotRevision != snapRev {
			err = fmt.Errorf("the stored snapshot is at revision %d, the backup recorded %d", rr.SnapshotRevision, snapRev)
		}
		if err != nil {
			return fmt.Errorf("%w (the partial %s can be removed; %s is untouched)", err, plan.staging, dataDir)
		}
		r.note("restored: revision %d, %d keys (original revision %d)", rr.Revision, rr.Keys, rr.ReplayedToRevision)
		return nil
	}); err != nil {
		return err
	}
	if err := r.keepOld(plan); err != nil {
		return err
	}
	return r.putInPlace(plan)
}

func (r *runner) mkdirParent(hostPath string) error {
	root, err := r.root()
	if err != nil {
		return err
	}
	p, err := rel(hostPath)
	if err != nil {
		return err
	}
	return root.MkdirAll(path.Dir(p), 0o755)
}
