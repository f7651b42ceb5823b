//go:build !kubekeep_front

package main

import (
	"context"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/kubekeep/kubekeep/backup"
	"github.com/kubekeep/kubekeep/backup/versionread"
	"github.com/kubekeep/kubekeep/layout"
)

// backupForCloudSnapshot takes the store version a cloud snapshot set is
// tagged with (`cloud snapshot` without --skip-backup).
func backupForCloudSnapshot(ctx context.Context, g *globalOptions) (string, int64, error) {
	res, err := runBackup(ctx, backupOptions{}, g)
	if err != nil {
		return "", 0, err
	}
	if !res.Good {
		return "", 0, fmt.Errorf("local backup %s is not a good version (%s): refusing to tag a cloud snapshot with it; use --skip-backup to snapshot anyway", res.ID, res.Status)
	}
	return res.ID, res.Etcd.Revision, nil
}

type backupOptions struct {
	paths         []string
	noDiscover    bool
	acceptMissing bool
	full          bool
	output        string
}

// exitNotGood is `kubekeep backup`'s exit status when the version was
// committed but is not good (etcd-failed, files-only, degraded).
const exitNotGood = 3

func newBackupCommand(g *globalOptions) *cobra.Command {
	var opts backupOptions
	cmd := &cobra.Command{
		Use:   "backup",
		Short: "Write one new version of the control plane to the store",
		Long: `Write one immutable version to the store on the second disk.

The backup set comes from the static-pod manifests under --root (see
'kubekeep plan'), plus paths.extra and --path. etcd is taken through its
snapshot API, streamed into the version and checked (sha256 trailer, bbolt
consistency) before the version commits; the etcd data dir itself is never
copied while etcd runs. If etcd cannot be reached the files are still
committed and the version is marked etcd-failed. A version that lost
files the previous complete version had (a CA or service-account key,
half of the files below one path, a quarter of all files), or whose
manifests discovery could not read, is committed and marked degraded.
Neither is good, and "latest" (restore, get, drill) skips both.

When the agent's etcd delta stream is running (its journal is written to
within the last seconds), the etcd part is a journal version: a reference
to the newest full version plus the delta journal up to etcd's revision,
checked and with etcd's key count and a digest of the changed keys' values
recorded, unless etcd.fullSnapshot says a full snapshot is due. --full
always takes a full snapshot.

Prints the new version's ID, or with -o json:
  {"id","time","files","bytesRead","bytesWritten","bytesNew","duration",
   "status","good","degraded","problems",...}

Exit status: 0 the version is good (status ok); 3 it was committed but is
not good (etcd-failed, files-only or degraded; the reason goes to stderr);
1 nothing was committed. When files went away on purpose, one backup with
--accept-missing makes the smaller set the new reference.`,
		Example: `  kubekeep backup --store /data/backup/kubekeep
  kubekeep backup --store /data/backup/kubekeep -o json
  kubekeep backup --store /mnt/b/kk --no-discover --path /etc/kubernetes/pki`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(opts.output, "text", "json"); err != nil {
				return err
			}
			res, err := runBackup(cmd.Context(), opts, g)
			if err != nil {
				return err
			}
			if opts.output == "json" {
				err = writeJSON(g.stdout, res)
			} else {
				_, err = fmt.Fprintln(g.stdout, res.ID)
			}
			if err != nil {
				return err
			}
			return notGood(res)
		},
	}
	cmd.Flags().StringArrayVar(&opts.paths, "path", nil, "host path to back up in addition to what discovery finds (repeatable)")
	cmd.Flags().BoolVar(&opts.noDiscover, "no-discover", false, "do not read the manifests: back up only --path (and etcd if etcd.endpoints is set)")
	cmd.Flags().BoolVar(&opts.acceptMissing, "accept-missing", false, "files gone since the previous complete version went away on purpose: do not mark this version degraded for them")
	cmd.Flags().BoolVar(&opts.full, "full", false, "take a full etcd snapshot even when a journal version (base + delta journal) would do")
	outputFlag(cmd, &opts.output, "text", "json")
	return cmd
}

func runBackup(ctx context.Context, opts backupOptions, g *globalOptions) (*backup.Result, error) {
	store, err := openStore(g)
	if err != nil {
		return nil, err
	}
	paths := append(append([]string{}, g.cfg.Paths.Extra...), opts.paths...)
	if opts.noDiscover && len(paths) == 0 {
		return nil, fmt.Errorf("--no-discover needs at least one --path")
	}
	// A --path the operator typed that names nothing is a mistake, not an
	// empty version: refuse before anything is committed. (A paths.extra
	// entry that is missing is a warning: the config outlives files.)
	for _, p := range opts.paths {
		real, err := layout.Real(g.cfg.Root, p)
		if err == nil {
			_, err = os.Lstat(real)
		}
		if err != nil {
			return nil, fmt.Errorf("--path %s: nothing there under the root %s (%v); nothing committed", p, g.cfg.Root, err)
		}
	}
	res, err := backup.Run(ctx, backup.Options{
		Root:          g.cfg.Root,
		Store:         store,
		Paths:         paths,
		Exclude:       g.cfg.Paths.Exclude,
		NoDiscover:    opts.noDiscover,
		AcceptMissing: opts.acceptMissing,
		ForceFull:     opts.full,
		Etcd:          g.cfg.Etcd,
		Origin:        versionread.OriginCLI,
		Logger:        g.logger,
	})
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	for _, w := range res.Warnings {
		g.logger.Warn(w)
	}
	return res, nil
}

// notGood is the exit status error for a version that committed but is
// not good, naming why; nil for a good one.
func notGood(res *backup.Result) error {
	if res.Good {
		return nil
	}
	var why []string
	if res.EtcdError != nil {
		why = append(why, "etcd not backed up: "+res.EtcdError.Error())
	} else if res.Status == versionread.StatusFilesOnly {
		why = append(why, "no etcd to back up")
	}
	why = append(why, res.Problems...)
	msg := fmt.Sprintf("version %s committed but it is %s, not a good version (\"latest\" still means the newest good one)", res.ID, res.Status)
	if res.Degraded && res.Status != versionread.StatusDegraded {
		msg = fmt.Sprintf("version %s committed but it is %s and degraded, not a good version (\"latest\" still means the newest good one)", res.ID, res.Status)
	}
	for _, w := range why {
		msg += "\n  - " + w
	}
	return &exitError{code: exitNotGood, msg: msg}
}
