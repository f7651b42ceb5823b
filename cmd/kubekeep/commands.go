//go:build !kubekeep_front

package main

import "github.com/spf13/cobra"

// addCommands adds every command, listed here (restic's way: no init()
// registries); each lives in <verb>.go as a constructor and a run<Verb>.
// This is kubekeep-core, and `go build ./cmd/kubekeep` with no tags: the
// whole CLI in one binary. The installed kubekeep is the front
// (commands_front.go), which runs the read-only commands itself and hands
// every other to this one.
func addCommands(cmd *cobra.Command, g *globalOptions) {
	restore := newRestoreCommand(g)
	restore.AddCommand(newRestoreFilesCommand(g), newRestoreEtcdCommand(g))
	cloud := newCloudCommand(g)
	cloud.AddCommand(newCloudListCommand(g), newCloudSnapshotCommand(g), newCloudPruneCommand(g),
		newCloudPolicyCommand(g), newCloudRollbackCommand(g))
	offsite := newOffsiteCommand(g)
	offsite.AddCommand(newOffsiteKeygenCommand(g), newOffsiteSyncCommand(g), newOffsiteVersionsCommand(g), newOffsitePullCommand(g),
		newOffsiteVerifyCommand(g))
	offsite.AddCommand(newOffsitePruneCommand(g))
	cmd.AddCommand(
		newVersionCommand(g),
		newConfigCommand(g),
		newPlanCommand(g),
		newBackupCommand(g),
		newVersionsCommand(g),
		newVerifyCommand(g),
		newRepairCommand(g),
		newPruneCommand(g),
		newGetCommand(g),
		newObjectsCommand(g),
		newServeCommand(g),
		newDiffCommand(g),
		restore,
		newDrillCommand(g),
		newAgentCommand(g),
		newStatusCommand(g),
		cloud,
		offsite,
	)
}

// handOff: the whole CLI is here, nothing is handed off.
func handOff(*cobra.Command, []string) error { return nil }
