package main

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
)

func init() { registerSubcommand("restore", newRestoreFilesCommand) }

type restoreFilesOptions struct {
	version string
	to      string
	paths   []string
}

func newRestoreFilesCommand(g *globalOptions) *cobra.Command {
	o := &restoreFilesOptions{}
	cmd := &cobra.Command{
		Use:   "files",
		Short: "Write a version's files under a directory at their host paths",
		Long: `Write the files, directories and symlinks of a store version under --to at
their host paths (DIR/etc/kubernetes/pki/ca.crt), with mode, owner, mtime
and symlinks, each file atomically. Nothing is written outside DIR: a
version holding a path that would escape it is refused.

  kubekeep restore files --store /data/backup/kubekeep --version latest --to /tmp/r
  kubekeep restore files --version 20261123T112831Z-3f2a9c1b --to /tmp/r --path /etc/kubernetes/pki`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.to == "" {
				return fmt.Errorf("--to is required")
			}
			s, err := openStoreMode(g, false)
			if err != nil {
				return err
			}
			id, err := s.Resolve(o.version)
			if err != nil {
				return err
			}
			var filter func(string) bool
			if len(o.paths) > 0 {
				filter = func(p string) bool {
					for _, want := range o.paths {
						want = filepath.Clean(want)
						if p == want || strings.HasPrefix(p, want+"/") || want == "/" {
							return true
						}
					}
					return false
				}
			}
			if err := s.RestoreFiles(cmd.Context(), id, o.to, filter); err != nil {
				return err
			}
			g.logger.Info("restored files", "version", id, "to", o.to)
			fmt.Fprintf(g.stdout, "restored version %s under %s\n", id, o.to)
			return nil
		},
	}
	cmd.Flags().StringVar(&o.version, "version", "latest", "version ID (or unique prefix), or latest")
	cmd.Flags().StringVar(&o.to, "to", "", "directory to restore under (created if missing)")
	cmd.Flags().StringSliceVar(&o.paths, "path", nil, "restore only these host paths and what is below them")
	return cmd
}
