package rsyncish

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
)

// readLockFile coordinates readers with what removes or rewrites packs:
// every reader holds a shared flock on it from the moment it reads a
// manifest until it closes what it opened, and Prune and Repair hold an
// exclusive one while they remove manifests and packs. A reader therefore
// never finds a pack gone that its index named (which it would report as
// damage), and prune never pulls a pack from under a restore that started
// before it. The writer lock is a separate file: readers must not wait for
// a backup.
const readLockFile = "readlock"

// readerWait bounds how long a reader waits for a prune's rewrite and how
// long a prune waits for the readers that started before it.
const readerWait = 10 * time.Minute

// readLock takes the shared lock (waiting while a prune or repair holds it
// exclusively) and returns its release. A store where the lock file cannot
// be opened or created (a read-only mount, a rescue disk) is read without
// it: nothing can prune a store nobody can write.
func (s *Store) readLock(ctx context.Context) (release func(), err error) {
	f, err := openLockFile(s.path(readLockFile), os.O_RDONLY)
	if err != nil {
		if errors.Is(err, ErrNotRegular) {
			return nil, fmt.Errorf("store read lock: %w", err)
		}
		s.log.Debug("reading without the read lock", "store", s.dir, "err", err)
		return func() {}, nil
	}
	if err := s.flockWait(ctx, f, syscall.LOCK_SH, "a prune or repair to finish"); err != nil {
		f.Close()
		return nil, err
	}
	return func() { f.Close() }, nil
}

// exclusive takes the exclusive read lock for Prune and Repair, waiting for
// the readers that hold it (a restore, get, objects, a drill) to finish.
func (s *Store) exclusive(ctx context.Context) (release func(), err error) {
	f, err := openLockFile(s.path(readLockFile), os.O_RDONLY)
	if err != nil {
		return nil, fmt.Errorf("store read lock: %w", err)
	}
	if err := s.flockWait(ctx, f, syscall.LOCK_EX, "readers (restore, get, objects, drill) to finish"); err != nil {
		f.Close()
		return nil, err
	}
	return func() { f.Close() }, nil
}

// flockWait polls for the lock (a blocking flock could not be cancelled),
// up to readerWait or ctx.
func (s *Store) flockWait(ctx context.Context, f *os.File, how int, what string) error {
	deadline := time.Now().Add(readerWait)
	logged := false
	for {
		err := syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return fmt.Errorf("store read lock: %w", err)
		}
		if !time.Now().Before(deadline) {
			return fmt.Errorf("%w: waited %s for %s in store %s; try again later", ErrLocked, readerWait, what, s.dir)
		}
		if !logged {
			s.log.Info("waiting for "+what, "store", s.dir)
			logged = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}
