//go:build !kubekeep_front

package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kubekeep/kubekeep/restore"
)

type restoreFilesOptions struct {
	version string
	to      string
	paths   []string
	output  string
}

func newRestoreFilesCommand(g *globalOptions) *cobra.Command {
	o := &restoreFilesOptions{}
	cmd := &cobra.Command{
		Use:   "files",
		Short: "Write a version's files under a directory at their host paths",
		Long: `Write the files, directories and symlinks of a store version under --to at
their host paths (DIR/etc/kubernetes/pki/ca.crt), with mode, owner, mtime
and symlinks, each file atomically. Nothing is written outside DIR: a
version holding a path that would escape it is refused, and so is a DIR
whose directories lead out of it through a symlink, before anything is
written. A --path under which the version holds nothing is an error.

Nothing is lost: whatever the restore replaces (a file with other content,
a symlink with another target, anything in the way) is first kept under
DIR/etc/kubernetes/kubekeep-replaced-<time>/ at its host path, and listed.

A file damaged in the store (a block that no longer matches its hash) does
not stop the rest: every intact file is restored, each damaged one is named
with the newest version that still holds an intact copy and the command that
restores it from there, and the command exits 1.`,
		Example: `  kubekeep restore files --store /data/backup/kubekeep --version latest --to /tmp/r
  kubekeep restore files --version 20261123T112831Z-3f2a9c1b --to /tmp/r --path /etc/kubernetes/pki`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(o.output, "text", "json"); err != nil {
				return err
			}
			if o.to == "" {
				return fmt.Errorf("--to is required")
			}
			s, err := openStoreMode(g, false)
			if err != nil {
				return err
			}
			rep, err := startProgress(g)
			if err != nil {
				return err
			}
			rep.Step("restore files")
			res, err := restore.RestoreFiles(cmd.Context(), restore.FilesOptions{
				Store: s, Version: o.version, To: o.to, Paths: o.paths, Logger: g.logger, Progress: rep,
			})
			rep.Done()
			// Damaged files leave the rest restored: say what was, then
			// fail with the list of what was not.
			if err != nil && !errors.Is(err, restore.ErrDamagedFiles) {
				return err
			}
			g.logger.Info("restored files", "version", res.Version, "to", o.to, "entries", res.Entries, "kept", len(res.Kept), "damaged", len(res.Damaged))
			if o.output == "json" {
				if jerr := writeJSON(g.stdout, res); jerr != nil {
					return jerr
				}
				return err
			}
			if len(res.Kept) > 0 {
				fmt.Fprintf(g.stdout, "kept %d replaced paths under %s: %s\n", len(res.Kept), filepath.Join(o.to, res.KeptDir), strings.Join(res.Kept, ", "))
			}
			fmt.Fprintf(g.stdout, "restored version %s under %s (%d files, dirs and symlinks)\n", res.Version, o.to, res.Entries)
			return err
		},
	}
	cmd.Flags().StringVar(&o.version, "version", "latest", "version ID (or unique prefix), or latest")
	cmd.Flags().StringVar(&o.to, "to", "", "directory to restore under (created if missing)")
	cmd.Flags().StringSliceVar(&o.paths, "path", nil, "restore only these host paths and what is below them (each must match something in the version)")
	outputFlag(cmd, &o.output, "text", "json")
	return cmd
}
