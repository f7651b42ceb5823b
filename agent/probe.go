package agent

import (
	"fmt"
	"os"

	"github.com/kubekeep/kubekeep/backup/versionread"
	"github.com/kubekeep/kubekeep/config"
	"github.com/kubekeep/kubekeep/rsyncish"
)

// storeOptions turns the store settings into rsyncish options.
func storeOptions(sc config.Store, a *Agent, noCreate bool) rsyncish.Options {
	return rsyncish.Options{
		BlockSize:           int(sc.BlockSize),
		Mountpoint:          sc.Mountpoint,
		AllowSameFilesystem: sc.AllowSameFilesystem,
		MinFree:             int64(sc.MinFree),
		NoCreate:            noCreate,
		Logger:              a.log,
		SegmentSpan:         versionread.SegmentSpan,
	}
}

// probeStore checks that the second disk is still there and writable before
// anything is written: reopening without create re-checks the mountpoint
// and the store's config file (an unmounted disk leaves an empty mountpoint
// directory on the root disk, which must never receive backups), and a
// synced temp file proves writes land.
func probeStore(sc config.Store, a *Agent) error {
	if _, err := rsyncish.Open(sc.Path, storeOptions(sc, a, true)); err != nil {
		return fmt.Errorf("second disk unavailable: %w", err)
	}
	f, err := a.store.CreateTemp("agent-probe")
	if err != nil {
		return fmt.Errorf("second disk not writable: %w", err)
	}
	name := f.Name()
	_, werr := f.Write([]byte{0})
	if werr == nil {
		werr = f.Sync()
	}
	cerr := f.Close()
	_ = os.Remove(name)
	if werr == nil {
		werr = cerr
	}
	if werr != nil {
		return fmt.Errorf("second disk not writable: %w", werr)
	}
	return nil
}
