package etcdsnap

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kubekeep/kubekeep/etcdsnap/snapread"
	"github.com/kubekeep/kubekeep/internal/ctxio"
)

// DBPath is where etcd keeps its bbolt file inside a data dir.
func DBPath(dataDir string) string { return filepath.Join(dataDir, "member", "snap", "db") }

// DataDirLocked reports whether a process holds the flock etcd (through
// bbolt) takes on member/snap/db while it runs. A missing db is an error:
// there is nothing to copy.
func DataDirLocked(dataDir string) (bool, error) {
	f, err := os.Open(DBPath(dataDir))
	if err != nil {
		return false, fmt.Errorf("etcd data dir %s: %w", dataDir, err)
	}
	defer f.Close()
	err = unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB)
	switch {
	case err == nil:
		_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
		return false, nil
	case errors.Is(err, unix.EWOULDBLOCK):
		return true, nil
	default:
		return false, fmt.Errorf("etcd data dir %s: flock: %w", dataDir, err)
	}
}

// RawCopy copies member/snap/db of a data dir no etcd holds into w, marked
// source "raw". It keeps a shared flock for the whole copy, so an etcd that
// starts meanwhile waits for the copy instead of changing pages under it.
// A raw image has no trailer; the Info's SHA256 is over the copy. As with
// Snapshot, call Info.Check on the materialised copy before trusting it.
//
// A db left by a crashed etcd may lag its WAL by the last uncommitted batch
// (up to ~100 ms of writes): a raw copy is a fallback, not a substitute.
func RawCopy(ctx context.Context, dataDir string, w io.Writer) (snapread.Info, error) {
	info := snapread.Info{Source: snapread.SourceRaw, DataDir: dataDir, Started: time.Now()}
	fail := func(err error) (snapread.Info, error) {
		info.Error = err.Error()
		info.Duration = time.Since(info.Started).Seconds()
		return info, err
	}
	path := DBPath(dataDir)
	f, err := os.Open(path)
	if err != nil {
		return fail(&snapread.Error{Op: "raw copy", File: path, Kind: snapread.ErrCorruptDB, Err: err})
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			return fail(&snapread.Error{Op: "raw copy", File: path, Kind: snapread.ErrDataDirLocked,
				Err: errors.New("a running etcd holds the db; a copy would not be consistent")})
		}
		return fail(&snapread.Error{Op: "raw copy", File: path, Kind: snapread.ErrCorruptDB, Err: fmt.Errorf("flock: %w", err)})
	}
	defer unix.Flock(int(f.Fd()), unix.LOCK_UN) //nolint:errcheck // closing the fd drops it anyway
	h := sha256.New()
	sink := &sinkWriter{w: io.MultiWriter(w, h)}
	n, err := io.CopyBuffer(sink, ctxio.Reader(ctx, f), make([]byte, 1<<20))
	info.StreamBytes = n
	if err != nil {
		kind := snapread.ErrCorruptDB
		if sink.err != nil {
			kind = snapread.ErrSink
		}
		return fail(&snapread.Error{Op: "raw copy", File: path, Kind: kind, Err: err})
	}
	info.DBSize = n
	info.SHA256 = hex.EncodeToString(h.Sum(nil))
	info.Duration = time.Since(info.Started).Seconds()
	return info, nil
}

type sinkWriter struct {
	w   io.Writer
	err error
}

func (s *sinkWriter) Write(p []byte) (int, error) {
	n, err := s.w.Write(p)
	if err != nil {
		s.err = err
	}
	return n, err
}
