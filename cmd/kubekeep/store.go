package main

import (
	"context"
	"errors"
	"time"

	"github.com/kubekeep/kubekeep/rsyncish"
)

// openStore opens the store named by g.cfg.Store (--store overrides the
// path) with the second-disk guards from the config. Read-only commands
// pass create=false so a mistyped --store is an error, not a new store.
func openStore(g *globalOptions) (*rsyncish.Store, error) { return openStoreMode(g, true) }

func openStoreMode(g *globalOptions, create bool) (*rsyncish.Store, error) {
	sc := g.cfg.Store
	if sc.Path == "" {
		return nil, &exitError{code: 2, msg: "no store: set store.path in the config or pass --store"}
	}
	s, err := rsyncish.Open(sc.Path, rsyncish.Options{
		BlockSize:           int(sc.BlockSize),
		Mountpoint:          sc.Mountpoint,
		AllowSameFilesystem: sc.AllowSameFilesystem,
		MinFree:             int64(sc.MinFree),
		NoCreate:            !create,
		Logger:              g.logger,
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

// lockStore takes the store's writer lock, waiting up to wait for a running
// backup or prune to finish (the agent's runs are short).
func lockStore(ctx context.Context, s *rsyncish.Store, wait time.Duration) (func() error, error) {
	deadline := time.Now().Add(wait)
	for {
		unlock, err := s.Lock(ctx)
		if err == nil || !errors.Is(err, rsyncish.ErrLocked) || time.Now().After(deadline) {
			return unlock, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}
