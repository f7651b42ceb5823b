package tiers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/kubekeep/kubekeep/rsyncish/backend"
)

// PullResult is what a pull copied.
type PullResult struct {
	Tier        string  `json:"tier"`
	Objects     int     `json:"objects"`
	Bytes       int64   `json:"bytes"`
	AlreadyHad  int     `json:"alreadyHad"`
	Duration    float64 `json:"duration"`
	Destination string  `json:"destination"`
}

// Pull copies what a tier holds into the store directory dst (a new or
// a half-pulled one: what is there already is kept, so a pull resumes),
// in the order a store is written (data before what references it), each
// object checked on the way by the tier (a sealed tier authenticates
// every chunk). The result opens with rsyncish.Open, and every restore
// command works on it.
//
// It copies every object: a pull of one version and the journal after
// it, leaving out the packs only older versions use, is not done yet.
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
	// Types limits the pull to these kinds of object (nil: all).
	Types []backend.FileType
	// Progress, when set, is called once the work is known, as bytes come
	// in (at most every MiB of an object) and after each object (objects
	// the destination has already count as done).
	Progress func(Progress)
}

// PullWith is Pull with options. Every list is taken before the first
// copy, newest kinds first (as Sync lists), so a manifest uploaded while
// the pull lists comes only with the packs it names.
func PullWith(ctx context.Context, src backend.Backend, dst *backend.Local, o PullOptions) (PullResult, error) {
	start := time.Now()
	tier := o.Tier
	res := PullResult{Tier: tier, Destination: dst.Location()}
	types := o.Types
	if types == nil {
		types = backend.Types
	}
	todo := map[backend.FileType][]backend.FileInfo{}
	prog := &progress{fn: o.Progress}
	for i := len(types) - 1; i >= 0; i-- {
		t := types[i]
		if err := src.List(ctx, t, func(fi backend.FileInfo) error {
			if t == backend.ConfigFile && !configObjects[fi.Name] {
				return nil
			}
			todo[t] = append(todo[t], fi)
			prog.p.BytesTotal += fi.Size
			prog.p.ObjectsTotal++
			return nil
		}); err != nil {
			return res, fmt.Errorf("tier %s: list %s: %w", tier, t, err)
		}
	}
	prog.report()
	for _, t := range types {
		for _, fi := range todo[t] {
			h := backend.Handle{Type: t, Name: fi.Name}
			if _, err := dst.Stat(ctx, h); err == nil {
				res.AlreadyHad++
				prog.objectDone(fi.Size)
				continue
			}
			var buf bytes.Buffer
			err := src.Load(ctx, h, 0, 0, func(r io.Reader) error {
				buf.Reset()
				_, err := io.Copy(&buf, &countedReader{r: r, prog: prog})
				return err
			})
			if err != nil {
				return res, fmt.Errorf("tier %s: %w", tier, err)
			}
			data := buf.Bytes()
			if err := dst.Save(ctx, h, backend.NewByteReader(data)); err != nil && !errors.Is(err, backend.ErrExists) {
				return res, fmt.Errorf("pull %s into %s: %w", h, dst.Location(), err)
			}
			res.Objects++
			res.Bytes += int64(len(data))
			prog.objectDone(fi.Size)
		}
	}
	res.Duration = time.Since(start).Seconds()
	return res, nil
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
