//go:build !kubekeep_front

package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/kubekeep/kubekeep/restore"
)

func newDrillCommand(g *globalOptions) *cobra.Command {
	var version, output string
	cmd := &cobra.Command{
		Use:   "drill",
		Short: "Prove a version restores: etcd restored into scratch, served, compared, version marked verified",
		Long: `Restore a version's etcd snapshot into a scratch data dir on the store's own
filesystem, start an embedded etcd on it on loopback ports, and compare its
revision, key count and a sha256 over every key and value with what the
backup recorded and the snapshot holds. On success the version is marked
verified: the newest verified version is the real recovery point. The scratch
dir is removed either way (one left by a killed drill goes with the next
store lock: a backup, prune or drill). The agent runs this daily.

The scratch dir needs free space on the store's filesystem: the db, the two
WAL segments etcd preallocates (61 MiB each) and a margin. With less, the
drill fails before it writes anything, saying how much it needs.

A journal version (see 'kubekeep versions': its etcd state is a base
version's snapshot plus the delta journal up to its revision) is drilled
by restoring the base's snapshot and replaying the journal to that
revision; the drill then also checks that the replay lands on exactly that
revision, that the key count is the one etcd reported there, that every key
the journal changed since the base is there or not, last changed at the
same revision and version as etcd said, and that the values of the keys
changed since the previous version hash as etcd's did (recorded at backup
time). A journal with a change lost, dropped or altered fails it. Keys the
journal never touched come from the base snapshot, checked by its sha256 and bbolt.`,
		Example: `  kubekeep drill --store /data/backup/kubekeep
  kubekeep drill --store /data/backup/kubekeep --version 20261123T112831Z -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output, "text", "json"); err != nil {
				return err
			}
			s, err := openStoreMode(g, false)
			if err != nil {
				return err
			}
			// The bytes are the snapshot's, read out of the store into
			// the scratch data dir; serving and comparing it follow.
			rep, err := startProgress(g)
			if err != nil {
				return err
			}
			rep.Step("drill") // the snapshot restored into scratch, served, compared
			rep.Bytes(restore.SnapshotBytes(s, version))
			s.SetProgress(rep)
			res, err := restore.Drill(cmd.Context(), s, version, g.logger)
			s.SetProgress(nil)
			rep.Done()
			if output == "json" && res.Version != "" {
				if jerr := writeJSON(g.stdout, res); jerr != nil && err == nil {
					err = jerr
				}
			}
			if err != nil {
				return err
			}
			if output == "text" {
				fmt.Fprintf(g.stdout, "version %s verified: etcd %s served revision %d with %d keys, key/value sha256 %s (%.1fs)\n",
					res.Version, res.EtcdVersion, res.ServedRevision, res.ServedKeys, res.KVHash, res.Seconds)
				if res.Base != "" {
					fmt.Fprintf(g.stdout, "  journal version on base %s (revision %d): %d changed keys match etcd's values at revision %d (sha256 %s)\n",
						res.Base, res.BaseRevision, res.ChangedKeys, res.RecordedRevision, res.ChangedSHA256)
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&version, "version", "latest", "version ID (or unique prefix), or latest")
	outputFlag(cmd, &output, "text", "json")
	return cmd
}
