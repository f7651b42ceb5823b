package main

import (
	"github.com/spf13/cobra"
)

func init() { registerCommand(newRestoreCommand) }

// newRestoreCommand groups the restore stories; each subcommand lives in its
// own restore_<what>.go file and registers itself under "restore".
func newRestoreCommand(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "restore",
		Short: "Restore files, etcd or the whole control plane from a store version",
		Long: `Restore from a version in the store on the second disk.

  kubekeep restore files --version ID --to DIR    the version's files under DIR
  kubekeep restore etcd  --version ID --to DIR    an etcd data dir (snapshot + deltas)

Every restore writes only below its target directory: a stored path that would
escape it is refused.`,
	}
}
