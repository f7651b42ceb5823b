// Package backup takes one kubekeep version: it discovers the backup set
// from the static-pod manifests, stores the files, streams a consistent
// etcd snapshot into the same version (or records the delta journal on an
// earlier one), checks that snapshot before the version commits, and exports beside it the kubeadm ClusterConfiguration
// and the cluster's KubeletConfiguration and KubeProxyConfiguration (what
// `kubeadm init --config` needs to rebuild the node as it was).
//
// It is the one place that knows how layout, etcdsnap and rsyncish fit
// together; the CLI, the agent, the cloud snapshot and a restore's safety
// phase all call Run.
//
// The files are the paths layout placed (Discover, or Place for paths
// given by hand): a symlink is stored as a link and what it leads to where
// it is, so a version of a node whose /etc/kubernetes/pki links to
// /data/pki holds the link and /data/pki, and restores as it was.
// Certificates and the etcd data dir the backup opens itself are resolved
// inside the root the same way (layout.Real): nothing outside it is read.
//
// A version's etcd part is either a full snapshot (the stream above) or,
// while a delta stream writes the store's journal, a journal version: a
// reference to the newest full version (its base) plus the journal up to
// etcd's revision, checked and recorded with evidence for the drill
// (journalversion.go has the rules, config.FullSnapshot the policy for
// when etcd is asked for a full snapshot anyway). versionread.EtcdSourceOf
// tells a reader which; versionread.Resolve is what "latest" means for
// readers of etcd state
// (it passes over a journal version whose chain broke); Prune keeps a
// base while a kept version needs it, and of the delta journal only what
// the kept versions and the point-in-time window need: each kept journal
// version's chain from its base, and the whole journal from the oldest
// version the keepLast and keepHourly rules keep (the last ~24 h with the
// defaults); the holes it leaves are recorded, and a read into one says
// prune trimmed it (prune.go).
//
// Every version records a status: ok (good: a checked etcd snapshot and a
// complete file set), etcd-failed, files-only or degraded (files lost
// since the previous complete version, or problems discovery reported).
// Versions that are not good are committed and kept but never what
// "latest" resolves to (rsyncish.Store.Resolve); state.go has the rules.
package backup

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/kubekeep/kubekeep/backup/versionread"
	"github.com/kubekeep/kubekeep/config"
	"github.com/kubekeep/kubekeep/etcdsnap"
	"github.com/kubekeep/kubekeep/etcdsnap/snapread"
	"github.com/kubekeep/kubekeep/layout"
	"github.com/kubekeep/kubekeep/rsyncish"
)

// Options for one version.
type Options struct {
	// Root prefixes every host path.
	Root  string
	Store *rsyncish.Store
	// Paths are host paths added by hand (--path) or configured (paths.extra).
	Paths []string
	// Exclude removes host paths, with everything below them.
	Exclude []string
	// NoDiscover skips reading the manifests: only Paths are stored, and
	// etcd only when Etcd names endpoints.
	NoDiscover bool
	// Etcd overrides what discovery finds (endpoints, certificates).
	Etcd config.Etcd
	// LockWait is how long to queue behind another writer (a prune, the
	// agent's backup); default one minute.
	LockWait time.Duration
	// Origin says who takes the version (OriginAgent, OriginCLI,
	// OriginSafety); recorded in its meta, shown by `kubekeep versions`.
	Origin string
	// AcceptMissing records files gone since the previous complete
	// version as intended instead of degrading the version (state.go).
	AcceptMissing bool
	// ForceFull takes a full etcd snapshot even when a journal version
	// would do (`kubekeep backup --full`).
	ForceFull bool
	// JournalWait bounds the wait for the delta journal to be durable up
	// to etcd's revision (DefaultJournalWait). Without DeltaTail, a journal
	// last written longer ago than that means no stream is running.
	JournalWait time.Duration
	// DeltaTail, when the caller runs the delta stream (the agent), says
	// how far the journal is durable without listing it.
	DeltaTail func() int64
	// JournalCache, kept across versions by one writer (the agent), lets
	// a journal version read only the journal since the previous one.
	JournalCache *JournalCache
	Logger       *slog.Logger
}

// Result is what one backup did. Its JSON form is the `kubekeep backup -o
// json` contract: id, time, files, bytesRead, bytesWritten, bytesNew and
// duration must not be renamed.
type Result struct {
	ID           string             `json:"id"`
	Time         time.Time          `json:"time"`
	Files        int                `json:"files"`
	BytesRead    int64              `json:"bytesRead"`
	BytesWritten int64              `json:"bytesWritten"`
	BytesNew     int64              `json:"bytesNew"`
	Duration     string             `json:"duration"`
	Status       versionread.Status `json:"status"`
	// Good: the version is what "latest" resolves to from now on (status
	// ok). Degraded and Problems: see state.go.
	Good     bool           `json:"good"`
	Degraded bool           `json:"degraded"`
	Problems []string       `json:"problems,omitempty"`
	Etcd     *snapread.Info `json:"etcd,omitempty"`
	// EtcdKind is EtcdKindFull or EtcdKindJournal when the version holds
	// etcd state; FullReason says why a full snapshot was taken.
	EtcdKind   string        `json:"etcdKind,omitempty"`
	FullReason string        `json:"fullReason,omitempty"`
	Journal    *JournalProof `json:"journal,omitempty"`
	Warnings   []string      `json:"warnings,omitempty"`
	// EtcdError is the reason for StatusEtcdFailed, nil otherwise.
	EtcdError error `json:"-"`
	// Set is the discovered backup set (nil with NoDiscover).
	Set *layout.Set `json:"-"`
}

// Run takes one version. It holds the store's writer lock for its whole
// duration. An etcd failure does not fail the backup (the files are still
// committed, Status says etcd-failed), nor does a degraded file set (the
// version is committed with its problems); any store failure does, and
// leaves every committed version as it was.
func Run(ctx context.Context, opts Options) (*Result, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	started := time.Now()
	res := &Result{}

	// set is what discovery found (nil with NoDiscover); placed is what
	// the files are read from: the set, or with NoDiscover opts.Paths
	// placed by layout the same way (symlinks followed, the link kept).
	var set, placed *layout.Set
	var err error
	if !opts.NoDiscover {
		set, err = layout.Discover(opts.Root, layout.Options{Extra: opts.Paths, Exclude: opts.Exclude})
		if err != nil {
			return nil, fmt.Errorf("discover what to back up: %w", err)
		}
		res.Set, placed = set, set
	} else if len(opts.Paths) > 0 {
		placed, err = layout.Place(opts.Root, layout.Options{Extra: opts.Paths, Exclude: hostExcludes(opts.Exclude)})
		if err != nil {
			return nil, fmt.Errorf("paths to back up: %w", err)
		}
	}
	if placed != nil {
		res.Warnings = append(res.Warnings, placed.Warnings...)
		res.Problems = append(res.Problems, placed.Problems...)
	}
	hostPaths, treeExclude := filePaths(placed, opts)
	if len(hostPaths) == 0 {
		return nil, errors.New("nothing to back up: discovery found no paths and no --path was given")
	}
	cc, haveEtcd := ClientConfig(opts.Root, set, opts.Etcd)

	wait := opts.LockWait
	if wait == 0 {
		wait = time.Minute
	}
	unlock, err := opts.Store.LockWait(ctx, wait)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err := unlock(); err != nil {
			log.Warn("releasing the store lock", "err", err)
		}
	}()
	w, err := opts.Store.NewVersion(ctx, rsyncish.WriteOptions{})
	if err != nil {
		return nil, err
	}
	committed := false
	defer func() {
		if !committed {
			w.Abort()
		}
	}()
	if err := w.AddTree(opts.Root, hostPaths, treeExclude); err != nil {
		return nil, fmt.Errorf("store files: %w", err)
	}
	lost, err := checkLoss(w, opts, placed, hostPaths, treeExclude, log)
	if err != nil {
		return nil, err
	}
	res.Problems = append(res.Problems, lost...)

	res.Status = versionread.StatusFilesOnly
	if haveEtcd {
		info, proof, err := journalEtcd(ctx, w, opts, cc, log)
		var nj *notJournal
		switch {
		case errors.As(err, &nj):
			res.FullReason = nj.why
			log.Info("taking a full etcd snapshot", "reason", nj.why)
			info, err = addEtcd(ctx, w, opts, set, cc, log)
			res.EtcdKind = versionread.EtcdKindFull
		case err != nil:
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, err
		default:
			res.EtcdKind, res.Journal = versionread.EtcdKindJournal, proof
			if err := w.SetMeta(versionread.MetaJournal, proof); err != nil {
				return nil, err
			}
		}
		res.Etcd = info
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			var se *StoreError
			if errors.As(err, &se) {
				return nil, se
			}
			res.Status, res.EtcdError = versionread.StatusEtcdFailed, err
			res.Warnings = append(res.Warnings, "etcd not backed up: "+err.Error())
			log.Error("etcd snapshot failed; committing the files without it", "err", err)
		} else {
			res.Status = versionread.StatusOK
		}
		if err := w.SetMeta(versionread.MetaEtcd, info); err != nil {
			return nil, err
		}
	}
	if set != nil {
		if err := w.SetMeta(versionread.MetaLayout, set); err != nil {
			return nil, err
		}
	}
	if len(res.Problems) > 0 {
		res.Degraded = true
		if res.Status == versionread.StatusOK {
			res.Status = versionread.StatusDegraded
		}
		if err := w.SetMeta(versionread.MetaProblems, res.Problems); err != nil {
			return nil, err
		}
	}
	res.Good = res.Status == versionread.StatusOK
	if opts.Origin != "" {
		if err := w.SetMeta(versionread.MetaOrigin, opts.Origin); err != nil {
			return nil, err
		}
	}
	if err := w.SetMeta(versionread.MetaStatus, res.Status); err != nil {
		return nil, err
	}
	vi, err := w.Commit()
	if err != nil {
		return nil, fmt.Errorf("commit version: %w", err)
	}
	committed = true
	res.ID, res.Time, res.Files = vi.ID, vi.Time, vi.Files
	res.BytesRead, res.BytesWritten, res.BytesNew = vi.Stats.BytesRead, vi.Stats.BytesWritten, vi.Stats.BytesNew
	res.Duration = time.Since(started).Round(time.Millisecond).String()
	if res.Degraded {
		log.Error("version committed DEGRADED: it is kept, but `latest` will not select it", "version", res.ID,
			"status", string(res.Status), "problems", res.Problems)
	}
	if err := writeRescueKit(opts.Store); err != nil {
		// The version is committed; a missing rescue copy is worth a
		// warning, not a failed backup.
		log.Warn("could not refresh the kubekeep binary / RESTORE.md on the second disk", "err", err)
		res.Warnings = append(res.Warnings, "rescue kit: "+err.Error())
	}
	return res, nil
}

// ClientConfig merges discovery (set may be nil) with the configured
// overrides; false means there is no etcd to reach. Host paths of
// certificates get the root prefix here, the one place that does it, with
// their symlinks resolved inside the root (hostFile).
func ClientConfig(root string, set *layout.Set, o config.Etcd) (etcdsnap.ClientConfig, bool) {
	var cc etcdsnap.ClientConfig
	if set != nil {
		cc.Endpoints = set.Etcd.Endpoints
		cc.CAFile, cc.CertFile, cc.KeyFile = set.Etcd.CAFile, set.Etcd.CertFile, set.Etcd.KeyFile
	}
	if len(o.Endpoints) > 0 {
		cc.Endpoints = o.Endpoints
	}
	if o.CAFile != "" {
		cc.CAFile = o.CAFile
	}
	if o.CertFile != "" {
		cc.CertFile, cc.KeyFile = o.CertFile, o.KeyFile
	}
	for _, f := range []*string{&cc.CAFile, &cc.CertFile, &cc.KeyFile} {
		if *f != "" {
			*f = hostFile(root, *f)
		}
	}
	cc.DialTimeout = o.DialTimeout
	return cc, len(cc.Endpoints) > 0
}

// addEtcd streams a snapshot into the version and, at the same time, into
// a temp file on the store's own filesystem (never the root disk), which is
// bbolt-checked before the version may count it. If etcd cannot be reached
// and nothing holds its data dir, the db file is copied raw instead.
func addEtcd(ctx context.Context, w *rsyncish.VersionWriter, opts Options, set *layout.Set, cc etcdsnap.ClientConfig, log *slog.Logger) (*snapread.Info, error) {
	sctx := ctx
	if opts.Etcd.SnapshotTimeout > 0 {
		var cancel context.CancelFunc
		sctx, cancel = context.WithTimeout(ctx, opts.Etcd.SnapshotTimeout)
		defer cancel()
	}
	info, tmpPath, err := streamInto(w, opts.Store, func(dst io.Writer) (snapread.Info, error) {
		return etcdsnap.Snapshot(sctx, cc, dst)
	})
	var storeErr *StoreError
	if err != nil && !errors.As(err, &storeErr) && set != nil && set.Etcd.DataDir != "" && ctx.Err() == nil {
		dataDir := hostFile(opts.Root, set.Etcd.DataDir)
		locked, lerr := etcdsnap.DataDirLocked(dataDir)
		switch {
		case lerr != nil:
			log.Warn("cannot tell whether etcd holds its data dir; no raw copy", "dataDir", dataDir, "err", lerr)
		case locked:
			log.Warn("etcd holds its data dir but does not answer; no raw copy", "dataDir", dataDir)
		default:
			log.Warn("etcd API unavailable and the data dir is free: taking a raw copy", "apiError", err, "dataDir", dataDir)
			rawInfo, rawTmp, rawErr := streamInto(w, opts.Store, func(dst io.Writer) (snapread.Info, error) {
				return etcdsnap.RawCopy(ctx, dataDir, dst)
			})
			if rawErr == nil {
				info, tmpPath, err = rawInfo, rawTmp, nil
			} else {
				err = fmt.Errorf("%w; raw copy also failed: %v", err, rawErr)
			}
		}
	}
	if err != nil {
		return &info, err
	}
	if _, err := info.Check(tmpPath); err != nil {
		return &info, fmt.Errorf("snapshot of %s failed its consistency check: %w", info.Endpoint, err)
	}
	if info.KeyIndexPath != "" {
		if err := addFileStream(w, versionread.EtcdKeyIndexStream, info.KeyIndexPath); err != nil {
			return &info, &StoreError{fmt.Errorf("store the etcd key index: %w", err)}
		}
	}
	if cfg, err := info.ClusterConfiguration(); err != nil {
		// Not fatal: an external or non-kubeadm etcd has no kubeadm-config.
		log.Warn("no kubeadm ClusterConfiguration in etcd; a rebuild will need one by hand", "err", err)
	} else if _, err := w.AddStream(versionread.ClusterConfigurationStream, bytes.NewReader(cfg)); err != nil {
		return &info, fmt.Errorf("store ClusterConfiguration: %w", err)
	}
	for _, d := range []struct{ kind, stream string }{
		{snapread.KindKubeletConfiguration, versionread.KubeletConfigurationStream},
		{snapread.KindKubeProxyConfiguration, versionread.KubeProxyConfigurationStream},
	} {
		if cfg, err := info.KubeadmDocument(d.kind); err != nil {
			log.Info("no "+d.kind+" in etcd; a rebuild takes kubeadm's defaults for it", "err", err)
		} else if _, err := w.AddStream(d.stream, bytes.NewReader(cfg)); err != nil {
			return &info, fmt.Errorf("store %s: %w", d.kind, err)
		}
	}
	log.Info("etcd snapshot stored", "endpoint", info.Endpoint, "source", info.Source, "revision", info.Revision,
		"keys", info.Keys, "dbSize", info.DBSize)
	return &info, nil
}

// streamInto runs produce with a writer that feeds both the version's
// snapshot stream and the store's check copy of the image, so the bytes
// are read from etcd once. It returns the check copy's path.
func streamInto(w *rsyncish.VersionWriter, store *rsyncish.Store, produce func(io.Writer) (snapread.Info, error)) (snapread.Info, string, error) {
	cc, err := openCheckCopy(store)
	if err != nil {
		return snapread.Info{}, "", &StoreError{fmt.Errorf("file for the snapshot check: %w", err)}
	}
	pr, pw := io.Pipe()
	type produced struct {
		info snapread.Info
		err  error
	}
	done := make(chan produced, 1)
	go func() {
		// etcd sends 32 KiB chunks; handing each to the store's goroutine
		// and the check copy one by one cost ~0.5 s of a 5.9 s backup of a
		// 1.2 GiB image in wakeups and syscalls. A MiB at a time it is noise.
		bw := bufio.NewWriterSize(io.MultiWriter(pw, cc), 1<<20)
		info, err := produce(bw)
		if err == nil {
			err = bw.Flush()
		}
		if err == nil {
			err = cc.finish()
		}
		pw.CloseWithError(err)
		done <- produced{info, err}
	}()
	_, addErr := w.AddStream(versionread.EtcdSnapshotStream, pr)
	// Unblock the producer if the store side failed first.
	pr.CloseWithError(errStoreSide)
	p := <-done
	// The check copy lives on the second disk: its failure is the store's,
	// not etcd's, whatever produce made of it.
	if cerr := cc.Close(); cerr != nil {
		return p.info, cc.Name(), &StoreError{cerr}
	}
	if addErr != nil && !errors.Is(addErr, p.err) {
		// The store failed on its own (disk full, I/O error): that fails
		// the backup, unlike an etcd failure.
		return p.info, cc.Name(), &StoreError{fmt.Errorf("store etcd snapshot: %w", addErr)}
	}
	return p.info, cc.Name(), p.err
}

var errStoreSide = errors.New("the store stopped reading the snapshot")

// StoreError marks a failure of the second disk while etcd was fine; it
// fails the whole backup instead of committing a files-only version.
type StoreError struct{ Err error }

func (e *StoreError) Error() string { return e.Err.Error() }
func (e *StoreError) Unwrap() error { return e.Err }

// addFileStream stores the file at path as stream name of the version.
func addFileStream(w *rsyncish.VersionWriter, name, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = w.AddStream(name, f)
	return err
}
