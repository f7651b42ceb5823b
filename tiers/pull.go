package tiers

import (
	"context"
	"errors"
	"fmt"
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
	start := time.Now()
	res := PullResult{Tier: tier, Destination: dst.Location()}
	for _, t := range types {
		var infos []backend.FileInfo
		if err := src.List(ctx, t, func(fi backend.FileInfo) error {
			infos = append(infos, fi)
			return nil
		}); err != nil {
			return res, fmt.Errorf("tier %s: list %s: %w", tier, t, err)
		}
		for _, fi := range infos {
			h := backend.Handle{Type: t, Name: fi.Name}
			if t == backend.ConfigFile && !configObjects[fi.Name] {
				continue
			}
			if _, err := dst.Stat(ctx, h); err == nil {
				res.AlreadyHad++
				continue
			}
			data, err := backend.LoadAll(ctx, src, h)
			if err != nil {
				return res, fmt.Errorf("tier %s: %w", tier, err)
			}
			if err := dst.Save(ctx, h, backend.NewByteReader(data)); err != nil && !errors.Is(err, backend.ErrExists) {
				return res, fmt.Errorf("pull %s into %s: %w", h, dst.Location(), err)
			}
			res.Objects++
			res.Bytes += int64(len(data))
		}
	}
	res.Duration = time.Since(start).Seconds()
	return res, nil
}
