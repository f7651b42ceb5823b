package tiers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"time"

	"github.com/kubekeep/kubekeep/rsyncish/backend"
)

// PullResult is what a pull copied (`kubekeep offsite pull -o json`).
type PullResult struct {
	Tier string `json:"tier"`
	// Objects and Bytes are what this pull copied into the destination;
	// AlreadyHad the objects of the pull it held already (a resumed pull).
	Objects    int     `json:"objects"`
	Bytes      int64   `json:"bytes"`
	AlreadyHad int     `json:"alreadyHad"`
	Duration   float64 `json:"duration"`
	// Destination is the store directory pulled into.
	Destination string `json:"destination"`
	// Version is the version asked for, resolved (PullOptions.Version;
	// empty for a pull of everything: its caller resolves the name in
	// the pulled store).
	Version string `json:"version"`
	// Versions are the IDs of the versions whose manifests the pull
	// covers: Version and the versions it reads (a journal version's
	// base), oldest first; for a pull of everything, every version the
	// tier holds, by ID.
	Versions []string `json:"versions"`
	// ObjectsLeft and BytesLeft are what the tier holds that the pull
	// left there (0 for a pull of everything).
	ObjectsLeft int   `json:"objectsLeft"`
	BytesLeft   int64 `json:"bytesLeft"`
	// BlocksMissing counts blocks the pulled versions name that no pack
	// index in the tier holds (a damaged tier; logged as a warning, and
	// verify of the pulled store names what they damage).
	BlocksMissing int `json:"blocksMissing,omitempty"`
}

// Pull copies every object a tier holds into the store directory dst (a
// new or a half-pulled one: what is there already is kept, so a pull
// resumes), in the order a store is written (data before what references
// it), each object checked on the way by the tier (a sealed tier
// authenticates every chunk). The result opens with rsyncish.Open, and
// every restore command works on it. PullWith with a Version pulls one
// version and the journal after it instead.
func Pull(ctx context.Context, src backend.Backend, dst *backend.Local, tier string) (PullResult, error) {
	return PullTypes(ctx, src, dst, tier, backend.Types...)
}

// PullTypes is Pull of the objects of the types given only (the
// manifests alone, to list a tier's versions).
func PullTypes(ctx context.Context, src backend.Backend, dst *backend.Local, tier string, types ...backend.FileType) (PullResult, error) {
	return PullWith(ctx, src, dst, PullOptions{Tier: tier, Types: types})
}

// PullOptions tune a pull.
type PullOptions struct {
	// Tier names the tier in results and errors.
	Tier string
	// Version, when set, makes the pull selective: that version (an ID, a
	// unique prefix of one, "latest" for the newest good version or
	// "newest", as rsyncish.Store.Resolve reads them) with what it needs
	// and the journal after it; see "Pulling one version" in the package
	// doc. Empty: every object the tier holds (of Types).
	Version string
	// Types limits a pull of everything to these kinds of object (nil:
	// all). Not with Version.
	Types []backend.FileType
	// Progress, when set, is called once the work is known, as bytes come
	// in (at most every MiB of an object) and after each object (objects
	// the destination has already count as done).
	Progress func(Progress)
	// Logger gets a selective pull's warnings (nil: none).
	Logger *slog.Logger
}

// PullWith is Pull with options. Every list is taken before the first
// copy, newest kinds first (as Sync lists), so a manifest uploaded while
// the pull lists comes only with the packs it names.
func PullWith(ctx context.Context, src backend.Backend, dst *backend.Local, o PullOptions) (PullResult, error) {
	if o.Version != "" {
		if o.Types != nil {
			return PullResult{Tier: o.Tier, Destination: dst.Location()}, errors.New("pull: Types and Version do not go together: a version's pull takes what the version needs")
		}
		return pullVersion(ctx, src, dst, o)
	}
	start := time.Now()
	tier := o.Tier
	res := PullResult{Tier: tier, Destination: dst.Location(), Versions: []string{}}
	types := o.Types
	if types == nil {
		types = backend.Types
	}
	listed, err := listTier(ctx, src, tier, types)
	if err != nil {
		return res, err
	}
	var todo []pullItem
	for _, t := range types {
		for _, fi := range listed[t] {
			todo = append(todo, pullItem{h: backend.Handle{Type: t, Name: fi.Name}, size: fi.Size})
			if id, ok := versionOf(t, fi.Name); ok && t == backend.ManifestFile {
				res.Versions = append(res.Versions, id)
			}
		}
	}
	sort.Strings(res.Versions)
	err = copyObjects(ctx, src, dst, tier, todo, &progress{fn: o.Progress}, &res)
	res.Duration = time.Since(start).Seconds()
	return res, err
}

// listTier lists the objects of types in src, newest kinds first (see
// PullWith), config objects other than the store's own left out.
func listTier(ctx context.Context, src backend.Backend, tier string, types []backend.FileType) (map[backend.FileType][]backend.FileInfo, error) {
	listed := map[backend.FileType][]backend.FileInfo{}
	for i := len(types) - 1; i >= 0; i-- {
		t := types[i]
		if err := src.List(ctx, t, func(fi backend.FileInfo) error {
			if t == backend.ConfigFile && !configObjects[fi.Name] {
				return nil
			}
			listed[t] = append(listed[t], fi)
			return nil
		}); err != nil {
			return nil, fmt.Errorf("tier %s: list %s: %w", tier, t, err)
		}
	}
	return listed, nil
}

// pullItem is one object to pull: its handle, its size in the listing,
// and its content when the pull read it already (nil: load it).
type pullItem struct {
	h    backend.Handle
	size int64
	data []byte
}

// copyObjects copies todo, in order, into dst: objects dst holds already
// are counted in res.AlreadyHad, the others loaded (unless read already)
// and saved.
func copyObjects(ctx context.Context, src backend.Backend, dst *backend.Local, tier string, todo []pullItem, prog *progress, res *PullResult) error {
	for _, it := range todo {
		prog.p.BytesTotal += it.size
		prog.p.ObjectsTotal++
	}
	prog.report()
	var buf bytes.Buffer
	for _, it := range todo {
		h := it.h
		if _, err := dst.Stat(ctx, h); err == nil {
			res.AlreadyHad++
			prog.objectDone(it.size)
			continue
		}
		data := it.data
		if data == nil {
			err := src.Load(ctx, h, 0, 0, func(r io.Reader) error {
				buf.Reset()
				_, err := io.Copy(&buf, &countedReader{r: r, prog: prog})
				return err
			})
			if err != nil {
				return fmt.Errorf("tier %s: %w", tier, err)
			}
			data = buf.Bytes()
		}
		if err := dst.Save(ctx, h, backend.NewByteReader(data)); err != nil && !errors.Is(err, backend.ErrExists) {
			return fmt.Errorf("pull %s into %s: %w", h, dst.Location(), err)
		}
		res.Objects++
		res.Bytes += int64(len(data))
		prog.objectDone(it.size)
	}
	return nil
}

// countedReader tells progress how far a download is.
type countedReader struct {
	r    io.Reader
	prog *progress
	pos  int64
}

func (c *countedReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if c.prog.fn != nil {
		c.pos += int64(n)
		c.prog.inFlight = c.pos
		if c.pos-c.prog.reported >= 1<<20 {
			c.prog.reported = c.pos
			c.prog.report()
		}
	}
	return n, err
}
