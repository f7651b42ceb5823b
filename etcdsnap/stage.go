package etcdsnap

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// stagePrefix names the dir a restore builds a data dir in, inside the
// data dir itself (so the last rename never crosses a filesystem, also
// when the data dir is a mount point). A killed restore leaves only this.
const stagePrefix = ".kubekeep-restore.tmp-"

// checkEmptyDataDir refuses a data dir that holds anything but what a
// killed restore left (its staging dirs), which it removes.
func checkEmptyDataDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("restore etcd: data dir %s: %w", dir, err)
	}
	var stale []string
	for _, e := range entries {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), stagePrefix) {
			return fmt.Errorf("restore etcd: data dir %s is not empty; refusing to overwrite it", dir)
		}
		stale = append(stale, filepath.Join(dir, e.Name()))
	}
	for _, p := range stale {
		if err := os.RemoveAll(p); err != nil {
			return fmt.Errorf("restore etcd: remove what a killed restore left: %w", err)
		}
	}
	return nil
}

// stageDataDir creates dir (0700) and a fresh staging dir inside it, and
// returns both with a cleanup that removes the staging dir (a no-op once
// publishDataDir moved its member dir out).
func stageDataDir(dir string) (target, staged string, cleanup func(), err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", nil, fmt.Errorf("restore etcd: %w", err)
	}
	staged, err = os.MkdirTemp(dir, stagePrefix+fmt.Sprintf("%d-", os.Getpid()))
	if err != nil {
		return "", "", nil, fmt.Errorf("restore etcd: %w", err)
	}
	return dir, staged, func() { os.RemoveAll(staged) }, nil
}

// publishDataDir moves the staged member dir into the data dir and makes
// the rename durable: before it, the data dir holds no member dir at all.
func publishDataDir(staged, target string) error {
	if err := os.Rename(filepath.Join(staged, "member"), filepath.Join(target, "member")); err != nil {
		return err
	}
	if err := os.Remove(staged); err != nil {
		return err
	}
	d, err := os.Open(target)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
