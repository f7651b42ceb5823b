// Package tiers copies kubekeep's store to off-site tiers: object
// storage (tiers/s3, tiers/oss) behind the storage seam
// (rsyncish/backend), sealed (tiers/seal) so that neither the bucket's
// readers nor the master can read it back.
//
// A tier holds copies of the store's objects, byte for byte before
// sealing: packs, pack indexes, version manifests, drill marks, journal
// segments and config.json. So an off-site copy is an object copy, not a
// re-encode, and a store pulled back from a tier is a store every restore
// command reads.
//
// Sync uploads what the tier lacks, known from a local Catalogue (no LIST
// on the hot path), in an order that keeps the tier consistent at every
// moment: all object lists are taken first, newest kinds first
// (manifests before packs: a manifest is committed only after its
// packs), then uploaded oldest kinds first (packs, indexes, journal
// segments, manifests, drill marks, config). A sync killed anywhere
// leaves a tier whose every manifest's data is there, and the next sync
// finishes without uploading again what landed. Uploads are retried with
// exponential backoff and full jitter within a total budget, and can be
// held to a bandwidth limit. SyncOptions.Progress and PullOptions.Progress
// report bytes and objects as they go (nil: nothing), for a progress bar.
//
// # One store per tier
//
// On the master, Open refuses (naming the tier) a tier that holds another
// store: a tier key there while this store has none for the tier; a tier
// key other than the one this store sealed (its SHA-256 is kept in
// <tier>.keyid, taken on first use); config objects whose names this
// store's name key did not make; or the owner marker config/store-<id>
// (sealed like every name) of another store id, as when the offsite state
// was copied with a cloned disk. A tier without this store's marker gets
// it. So two clusters never mix their objects under one prefix.
//
// # Retention (Prune)
//
// Prune (kubekeep offsite prune) applies the tier's retention {keepLast,
// keepDaily, keepWeekly, keepMonthly} to the versions the tier holds, by
// the store's own rules (rsyncish.RetentionPolicy.Keep: UTC buckets, each
// keeps its newest version; the newest version with a drill mark in the
// tier is always kept), plus every version a kept one reads (a journal
// version's base), transitively. It runs on the master and relies on:
//
//   - a LIST of the tier first (Catalogue.Reconcile): what the tier holds
//     is the bucket's word, so a lost or stale catalogue is rebuilt (the
//     names open with the name key; no identity needed), and uploads a
//     killed sync never recorded are seen;
//   - the refs file beside the catalogue: what each version needs in the
//     tier (VersionRefs: its packs, the versions it reads, its etcd
//     snapshot revision), recorded by Sync from the store before the
//     manifest goes up. The tier is sealed and the master cannot read it
//     back; so a version without a record (uploaded by an older kubekeep,
//     or the store's offsite state was lost) is read from the store if it
//     still holds the version, else from the tier with an identity
//     (PruneOptions.Reader, --identity); without either Prune refuses
//     before deleting anything (ErrNoRefs).
//
// It deletes in an order that keeps the tier consistent if stopped
// anywhere: the manifests of the versions not kept (each first recorded as
// pruned in the refs file, so Sync does not upload it again while the
// store still has it), their drill marks, then the pack indexes and packs
// no remaining version needs (index before pack), then the etcd delta
// segments wholly below the lowest snapshot revision of the remaining
// versions (what the local prune trims too). Nothing else the store still
// holds is deleted: the next sync would upload it again, and versions not
// uploaded yet may need it. A config.json or the tier key is never
// deleted. An object the bucket refuses to delete because its retention
// runs (S3 Object Lock, OSS WORM: s3.ErrLocked, oss.ErrLocked) is counted
// in LockedSkipped, not an error; a version whose manifest is refused
// stays whole, with everything it needs, and a later prune deletes it. On
// S3 every version of a key is deleted (a delete marker alone keeps the
// data and its bill). A dry run asks the bucket nothing about locks: it
// counts what it would delete if nothing were locked.
//
// A prune holds the tier's lock file exclusively, syncs hold it shared:
// a sync never skips a pack as uploaded that a prune is deleting.
// Deleting needs credentials the agent does not have (its policy: put,
// get, list): Prune uses what its caller opened the tier with, which the
// CLI reads from the same environment variables as the sync, given a
// delete-capable key in the prune's own environment only.
package tiers

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"slices"
	"time"

	"golang.org/x/time/rate"

	"github.com/kubekeep/kubekeep/rsyncish/backend"
)

// SyncOptions tune a sync.
type SyncOptions struct {
	// Tier names the tier in results and logs.
	Tier string
	// Bandwidth caps the upload rate in bytes per second (0: none).
	Bandwidth int64
	// Retry is the backoff for failed uploads (zero: DefaultRetry).
	Retry Retry
	// Logger gets one line per object uploaded at debug, failures at warn.
	Logger *slog.Logger
	// Sleep waits between retries (nil: a timer honouring ctx); tests
	// shorten it.
	Sleep func(ctx context.Context, d time.Duration) error
	// Types limits the sync to these kinds of object (nil: all). The
	// agent ships journal segments as they seal with Types:
	// {JournalFile}: segments need nothing else in the tier to be
	// consistent, so the order of the package doc still holds.
	Types []backend.FileType
	// Progress, when set, is called as the sync goes: once when the
	// work is known, as bytes go up (at most every MiB of an object) and
	// after each object. It runs on the sync's goroutine: keep it quick.
	Progress func(Progress)
}

// Progress is how far a sync or a pull is. Bytes count the objects'
// plaintext (a retried object counts once).
type Progress struct {
	BytesDone, BytesTotal     int64
	ObjectsDone, ObjectsTotal int
}

// Retry is an exponential backoff with full jitter.
type Retry struct {
	Initial, Max time.Duration
	// Budget is the total time an object may spend in retries.
	Budget time.Duration
}

// DefaultRetry keeps trying for half an hour: a tier that is down for
// minutes delays the copy, it does not fail it.
var DefaultRetry = Retry{Initial: time.Second, Max: time.Minute, Budget: 30 * time.Minute}

// SyncResult is what `kubekeep offsite sync -o json` prints.
type SyncResult struct {
	Tier             string  `json:"tier"`
	VersionsUploaded int     `json:"versionsUploaded"`
	ObjectsUploaded  int     `json:"objectsUploaded"`
	BytesUploaded    int64   `json:"bytesUploaded"`
	BytesSkipped     int64   `json:"bytesSkipped"`
	Duration         float64 `json:"duration"`
}

// configObjects are the store-root files a tier needs: the store's
// identity. (lock, readlock and damage state are the local disk's own.)
var configObjects = map[string]bool{"config.json": true}

// Sync uploads to dst every object of the store at src that cat does not
// record, and records each upload in cat.
func Sync(ctx context.Context, src *backend.Local, dst backend.Backend, cat *Catalogue, opts SyncOptions) (SyncResult, error) {
	start := time.Now()
	res := SyncResult{Tier: opts.Tier}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.Retry == (Retry{}) {
		opts.Retry = DefaultRetry
	}
	var lim *rate.Limiter
	if opts.Bandwidth > 0 {
		lim = rate.NewLimiter(rate.Limit(opts.Bandwidth), int(min(opts.Bandwidth, 1<<20)))
	}
	// A prune of the tier waits for this sync, and this sync for it.
	unlock, err := cat.lock(ctx, false)
	if err != nil {
		return res, fmt.Errorf("tier %s: %w", opts.Tier, err)
	}
	defer unlock()
	// Lists first, in reverse order of dependency (see the package doc).
	todo := map[backend.FileType][]backend.FileInfo{}
	for i := len(backend.Types) - 1; i >= 0; i-- {
		t := backend.Types[i]
		if opts.Types != nil && !slices.Contains(opts.Types, t) {
			continue
		}
		err := src.List(ctx, t, func(fi backend.FileInfo) error {
			if t == backend.ConfigFile && !configObjects[fi.Name] {
				return nil
			}
			if cat.Has(backend.Handle{Type: t, Name: fi.Name}) {
				res.BytesSkipped += fi.Size
				return nil
			}
			if v, ok := versionOf(t, fi.Name); ok && cat.Pruned(v) {
				return nil // the tier's retention removed it
			}
			todo[t] = append(todo[t], fi)
			return nil
		})
		if err != nil {
			return res, fmt.Errorf("tier %s: list the store: %w", opts.Tier, err)
		}
	}
	prog := &progress{fn: opts.Progress}
	for _, fis := range todo {
		for _, fi := range fis {
			prog.p.BytesTotal += fi.Size
			prog.p.ObjectsTotal++
		}
	}
	prog.report()
	refs := &refsMaker{src: src, cat: cat, todo: todo}
	for _, t := range backend.Types {
		for _, fi := range todo[t] {
			h := backend.Handle{Type: t, Name: fi.Name}
			if t == backend.ManifestFile {
				// What the version needs goes on record before the
				// version goes up: every manifest in the tier has one.
				if err := refs.record(ctx, fi.Name); err != nil {
					res.Duration = time.Since(start).Seconds()
					return res, fmt.Errorf("tier %s: %w", opts.Tier, err)
				}
			}
			n, err := upload(ctx, src, dst, h, lim, opts, log, prog)
			prog.objectDone(fi.Size)
			if errors.Is(err, fs.ErrNotExist) || errors.Is(err, backend.ErrNotFound) {
				continue // pruned or replaced (a progress mark) since the list
			}
			if errors.Is(err, backend.ErrExists) {
				// Landed before a kill, or uploaded by another sync.
				if err := cat.Add(h, fi.Size); err != nil {
					return res, err
				}
				res.BytesSkipped += fi.Size
				continue
			}
			if err != nil {
				res.Duration = time.Since(start).Seconds()
				return res, fmt.Errorf("tier %s: %w", opts.Tier, err)
			}
			if err := cat.Add(h, n); err != nil {
				return res, err
			}
			res.ObjectsUploaded++
			res.BytesUploaded += n
			if t == backend.ManifestFile {
				res.VersionsUploaded++
			}
			log.Debug("uploaded", "tier", opts.Tier, "object", h.String(), "bytes", n)
		}
	}
	res.Duration = time.Since(start).Seconds()
	return res, nil
}

// upload sends one object, with retries.
func upload(ctx context.Context, src *backend.Local, dst backend.Backend, h backend.Handle, lim *rate.Limiter, opts SyncOptions, log *slog.Logger, prog *progress) (int64, error) {
	f, err := src.Open(h)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	fr, err := backend.NewFileReader(f)
	if err != nil {
		return 0, err
	}
	var rd backend.RewindReader = fr
	if lim != nil {
		rd = &limited{RewindReader: fr, ctx: ctx, lim: lim}
	}
	if prog.fn != nil {
		rd = &counted{RewindReader: rd, prog: prog}
	}
	sleep := opts.Sleep
	if sleep == nil {
		sleep = sleepCtx
	}
	deadline := time.Now().Add(opts.Retry.Budget)
	wait := opts.Retry.Initial
	for attempt := 1; ; attempt++ {
		err := dst.Save(ctx, h, rd)
		if err == nil {
			return fr.Length(), nil
		}
		if !retryable(ctx, err) {
			return 0, err
		}
		// Full jitter: anywhere up to the current step.
		d := time.Duration(rand.Int64N(int64(wait) + 1))
		if time.Now().Add(d).After(deadline) {
			return 0, fmt.Errorf("%s: gave up after %d attempts within %s: %w", h, attempt, opts.Retry.Budget, err)
		}
		log.Warn("upload failed; retrying", "tier", opts.Tier, "object", h.String(), "attempt", attempt, "in", d.Round(time.Millisecond), "err", err)
		if err := sleep(ctx, d); err != nil {
			return 0, err
		}
		wait = min(wait*2, opts.Retry.Max)
	}
}

func retryable(ctx context.Context, err error) bool {
	switch {
	case ctx.Err() != nil,
		errors.Is(err, backend.ErrExists),
		errors.Is(err, backend.ErrInvalidName),
		errors.Is(err, context.Canceled):
		return false
	}
	return true
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// limited holds reads to a rate.
type limited struct {
	backend.RewindReader
	ctx context.Context
	lim *rate.Limiter
}

func (l *limited) Read(p []byte) (int, error) {
	if len(p) > l.lim.Burst() {
		p = p[:l.lim.Burst()]
	}
	n, err := l.RewindReader.Read(p)
	if n > 0 {
		if werr := l.lim.WaitN(l.ctx, n); werr != nil {
			return n, werr
		}
	}
	return n, err
}

// progress reports a sync's progress to SyncOptions.Progress.
type progress struct {
	fn       func(Progress)
	p        Progress
	inFlight int64 // bytes read of the object going up
	reported int64
}

func (p *progress) report() {
	if p.fn != nil {
		q := p.p
		q.BytesDone += p.inFlight
		p.fn(q)
	}
}

func (p *progress) objectDone(size int64) {
	p.p.BytesDone += size
	p.p.ObjectsDone++
	p.inFlight, p.reported = 0, 0
	p.report()
}

// counted tells progress how far an upload's reader is (the sealing
// reads it once per attempt; a rewind starts the count over).
type counted struct {
	backend.RewindReader
	prog *progress
	pos  int64
}

func (c *counted) Read(p []byte) (int, error) {
	n, err := c.RewindReader.Read(p)
	c.pos += int64(n)
	c.prog.inFlight = c.pos
	if c.pos-c.prog.reported >= 1<<20 {
		c.prog.reported = c.pos
		c.prog.report()
	}
	return n, err
}

func (c *counted) Rewind() error {
	c.pos, c.prog.inFlight, c.prog.reported = 0, 0, 0
	return c.RewindReader.Rewind()
}
