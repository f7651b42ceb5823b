package backup

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/kubekeep/kubekeep/rsyncish"
)

// Names of the rescue kit at the top of the store: with the master's root
// disk gone, the second disk alone must say how to restore and carry the
// tool that does it.
const (
	RescueBinary = "kubekeep"
	RescueGuide  = "RESTORE.md"
)

// writeRescueKit refreshes the binary copy (when it changed) and the guide.
// The running binary is the whole CLI (a backup runs in kubekeep-core, to
// which the installed front hands it): the copy needs nothing beside it.
func writeRescueKit(s *rsyncish.Store) error {
	if err := s.WriteAux(RescueGuide, []byte(restoreGuide), 0o600); err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own binary: %w", err)
	}
	exeInfo, err := os.Stat(exe)
	if err != nil {
		return fmt.Errorf("stat own binary: %w", err)
	}
	// A copy at least as new as the running binary, of the same size, is
	// the same build: skip re-reading ~40 MB every five minutes — unless
	// the store has no hash of it on record or verify found it damaged
	// (bit rot keeps size and mtime), in which case it is written again.
	if copyInfo, err := os.Stat(filepath.Join(s.Dir(), RescueBinary)); err == nil &&
		copyInfo.Size() == exeInfo.Size() && !copyInfo.ModTime().Before(exeInfo.ModTime()) &&
		!s.AuxNeedsWrite(RescueBinary) {
		return nil
	}
	data, err := os.ReadFile(exe)
	if err != nil {
		return fmt.Errorf("read own binary: %w", err)
	}
	return s.WriteAux(RescueBinary, data, 0o700)
}

const restoreGuide = `kubekeep rescue kit
===================

This disk holds kubekeep backups of a kubeadm control plane: immutable
versions of the PKI, kubeconfigs, kubelet config, extra files and a verified
etcd snapshot each, plus etcd changes streamed in between.

The kubekeep binary next to this file is the one that wrote the newest
version. Copy it somewhere executable first (this disk may be mounted noexec):

  install -m 0755 <this dir>/kubekeep /usr/local/bin/kubekeep

1. See what is here

  kubekeep versions --store <this dir>
  kubekeep verify   --store <this dir> --read-data

2. One object back (no apiserver needed)

  kubekeep get --store <this dir> --version latest configmaps/NAMESPACE/NAME -o yaml > obj.yaml
  kubectl apply -f obj.yaml

3. The files of a version, anywhere

  kubekeep restore files --store <this dir> --version ID --to /tmp/restore

4. An etcd data dir from a version (optionally at a point in time)

  kubekeep restore etcd --store <this dir> --version ID --to /var/lib/etcd-restored
  kubekeep restore etcd --store <this dir> --at 2026-11-23T10:04:00Z --to /var/lib/etcd-restored

5. The whole control plane, through kubeadm (same VM or a new one with this
   disk attached). Preview first; every phase can be re-run on its own.

  kubekeep restore --store <this dir> --version latest --dry-run
  kubekeep restore --store <this dir> --version latest

Never delete versions by hand: ` + "`kubekeep prune`" + ` keeps the newest verified one.
`
