//go:build !kubekeep_front

package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kubekeep/kubekeep/cloudsnap"
	"github.com/kubekeep/kubekeep/internal/progress"
)

// backupBeforeCloudSnapshot takes one store version and returns its id and
// etcd revision (backupForCloudSnapshot; tests replace it).
var backupBeforeCloudSnapshot func(ctx context.Context, g *globalOptions) (versionID string, etcdRevision int64, err error) = backupForCloudSnapshot

type cloudSnapshotOptions struct {
	skipBackup bool
	wait       bool
	output     string
}

func newCloudSnapshotCommand(g *globalOptions) *cobra.Command {
	var opts cloudSnapshotOptions
	cmd := &cobra.Command{
		Use:   "snapshot",
		Short: "Take one ECS snapshot set of the VM's disks",
		Long: `Take one snapshot set of the instance's disks (system and data).

First a local kubekeep version is written to the store (--root, --store), so
the set is application-consistent: its tags record that version's id and
etcd revision. --skip-backup snapshots without it (crash-consistent only).

All-ESSD instances get one snapshot-consistent group; otherwise one snapshot
per disk, sharing a set id. Each snapshot keeps cloud.retentionDays days.
Without --wait the command returns once ECS accepted the set.

Prints the set id and status, or with -o json:
  {"id","time","status","disks":[{"diskId","snapshotId"}],"etcdRevision","version","expires"}`,
		Example: `  kubekeep cloud snapshot --wait
  kubekeep cloud snapshot --root / --store /data/backup/kubekeep --wait -o json
  kubekeep cloud snapshot --skip-backup --endpoint http://127.0.0.1:8080 --metadata-url http://127.0.0.1:8080`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(opts.output, "text", "json"); err != nil {
				return err
			}
			return runCloudSnapshot(cmd, opts, g)
		},
	}
	cmd.Flags().BoolVar(&opts.skipBackup, "skip-backup", false, "do not take a local kubekeep version first (the set is then only crash-consistent)")
	cmd.Flags().BoolVar(&opts.wait, "wait", false, "wait until every snapshot is accomplished (bounded by cloud.waitTimeout)")
	outputFlag(cmd, &opts.output, "text", "json")
	return cmd
}

func runCloudSnapshot(cmd *cobra.Command, opts cloudSnapshotOptions, g *globalOptions) error {
	ctx := cmd.Context()
	// Reach ECS before the backup: no point writing a version for a set
	// that cannot be taken.
	client, err := newCloudClient(ctx, cmd, g)
	if err != nil {
		return err
	}
	req := cloudsnap.CreateRequest{Purpose: cloudsnap.PurposeManual, Wait: opts.wait}
	if !opts.skipBackup {
		if backupBeforeCloudSnapshot == nil {
			return errors.New("the local backup is unavailable in this build, so the set cannot be application-consistent; use --skip-backup to take a crash-consistent set anyway")
		}
		id, rev, err := backupBeforeCloudSnapshot(ctx, g)
		if err != nil {
			return fmt.Errorf("local backup before the cloud snapshot: %w", err)
		}
		req.Version, req.EtcdRevision = id, rev
		g.logger.Info("local version taken before the cloud snapshot", "version", id, "etcdRevision", rev)
	}
	var bar *progress.Percent
	if opts.wait {
		// At a terminal a bar of the disks' mean progress; otherwise a
		// line each time a disk's progress or the set's status changes.
		mode, err := progress.ModeFor(g.stderr)
		if err != nil {
			return err
		}
		bar = progress.NewPercent(g.stderr, mode, "cloud snapshot")
		req.Progress = func(s cloudsnap.Set) {
			var parts []string
			sum := 0
			for _, d := range s.Disks {
				parts = append(parts, d.DiskID+" "+d.Progress)
				n, _ := strconv.Atoi(strings.TrimSuffix(d.Progress, "%"))
				sum += n
			}
			pct := 0
			if len(s.Disks) > 0 {
				pct = sum / len(s.Disks)
			}
			bar.Set(pct, "set "+s.ID+" "+s.Status+": "+strings.Join(parts, ", "))
		}
	}
	set, err := client.CreateSet(ctx, req)
	if bar != nil {
		bar.Done()
	}
	if err != nil {
		return err
	}
	if opts.output == "json" {
		return writeJSON(g.stdout, toCloudSetJSON(*set))
	}
	_, err = fmt.Fprintf(g.stdout, "%s %s\n", set.ID, set.Status)
	return err
}
