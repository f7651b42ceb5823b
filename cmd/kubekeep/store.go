package main

import (
	"github.com/kubekeep/kubekeep/backup/versionread"
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
		SegmentSpan:         versionread.SegmentSpan,
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}
