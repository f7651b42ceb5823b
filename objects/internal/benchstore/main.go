// Command benchstore puts an etcd snapshot file into a kubekeep store as
// one version, the way a backup does (the check writes the key index,
// both are stored as streams, the etcd meta recorded), so `kubekeep get`,
// `objects` and `diff` can be timed through the CLI on a large snapshot
// without an agent. It prints the version ID and one key to ask for.
//
//	go run ./objects/internal/benchstore -snapshot DIR/snapshot.db -store DIR/store
//	go run ./objects/internal/benchstore -evict DIR/store [-evict FILE...]
//
// -evict drops the named files (directories: every file below) from the
// page cache with posix_fadvise, for a cold run on a shared machine
// without a global drop_caches.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/kubekeep/kubekeep/backup/versionread"
	"github.com/kubekeep/kubekeep/etcdsnap/snapread"
	"github.com/kubekeep/kubekeep/rsyncish"
)

type evictList []string

func (e *evictList) String() string     { return strings.Join(*e, ",") }
func (e *evictList) Set(s string) error { *e = append(*e, s); return nil }

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "benchstore:", err)
		os.Exit(1)
	}
}

func run() error {
	snap := flag.String("snapshot", "", "etcd snapshot file to store")
	dir := flag.String("store", "", "store directory (created if absent)")
	var evict evictList
	flag.Var(&evict, "evict", "drop this file or every file below this directory from the page cache (repeatable)")
	flag.Parse()
	if len(evict) > 0 {
		for _, p := range evict {
			if err := evictTree(p); err != nil {
				return err
			}
		}
		return nil
	}
	if *snap == "" || *dir == "" {
		return errors.New("-snapshot and -store are required")
	}
	info := snapread.Info{Source: snapread.SourceAPI, TrailerVerified: true}
	if _, err := info.Check(*snap); err != nil {
		return err
	}
	if info.KeyIndexPath == "" {
		return errors.New("the check wrote no key index")
	}
	defer os.Remove(info.KeyIndexPath)
	st, err := os.Stat(*snap)
	if err != nil {
		return err
	}
	info.DBSize, info.StreamBytes = st.Size()-snapread.TrailerSize, st.Size()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	s, err := rsyncish.Open(*dir, rsyncish.Options{AllowSameFilesystem: true, Logger: log})
	if err != nil {
		return err
	}
	ctx := context.Background()
	unlock, err := s.Lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	w, err := s.NewVersion(ctx, rsyncish.WriteOptions{})
	if err != nil {
		return err
	}
	for name, path := range map[string]string{versionread.EtcdSnapshotStream: *snap, versionread.EtcdKeyIndexStream: info.KeyIndexPath} {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		_, err = w.AddStream(name, f)
		f.Close()
		if err != nil {
			w.Abort()
			return err
		}
	}
	if err := w.SetMeta(versionread.MetaEtcd, info); err != nil {
		w.Abort()
		return err
	}
	vi, err := w.Commit()
	if err != nil {
		return err
	}
	fmt.Printf("version %s: snapshot %d bytes, %d keys at revision %d\n", vi.ID, st.Size(), info.Keys, info.Revision)
	return nil
}

func evictTree(root string) error {
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		return unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
	})
}
