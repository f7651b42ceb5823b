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
