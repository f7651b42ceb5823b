//go:build kubekeep_front

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"
)

// The front: the kubekeep binary an operator runs, built with
// -tags kubekeep_front. It holds the read-only commands that must answer
// in milliseconds (get, objects, diff, versions, version) and links only
// what they read with: the store, the snapshot and journal readers, the
// Kubernetes scheme. No etcd client or server, gRPC, cloud SDK or metrics
// library is in it, so its process starts in ~13 ms against ~40 ms for the
// whole CLI, which was most of what a `get` cost. Every other command, and
// help, is handed to kubekeep-core (the whole CLI, commands.go) with the
// same arguments, by exec: same process, same PID, signals and exit code,
// so `kubekeep agent` under systemd is unchanged.
func addCommands(cmd *cobra.Command, g *globalOptions) {
	cmd.AddCommand(
		newVersionCommand(g),
		newVersionsCommand(g),
		newGetCommand(g),
		newObjectsCommand(g),
		newDiffCommand(g),
	)
}

// coreEnv names the kubekeep-core binary to hand off to; by default it is
// kubekeep-core beside this binary.
const coreEnv = "KUBEKEEP_CORE"

// handOff execs kubekeep-core with args unless the front runs them itself:
// a command added above, without a help flag. It returns only on error.
func handOff(root *cobra.Command, args []string) error {
	if c, _, err := root.Find(args); err == nil && c != root && !wantsHelp(args) {
		return nil
	}
	core := os.Getenv(coreEnv)
	if core == "" {
		self, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find kubekeep-core: %w", err)
		}
		core = filepath.Join(filepath.Dir(self), "kubekeep-core")
	}
	err := syscall.Exec(core, append([]string{core}, args...), os.Environ())
	return fmt.Errorf("this command is in kubekeep-core, installed beside kubekeep (or named by $%s): %w", coreEnv, err)
}

// wantsHelp: help text comes from kubekeep-core, which knows every command.
func wantsHelp(args []string) bool {
	for _, a := range args {
		switch a {
		case "--":
			return false
		case "-h", "--help":
			return true
		}
	}
	return false
}
