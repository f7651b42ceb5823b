//go:build !kubekeep_front

package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kubekeep/kubekeep/backup"
)

type pruneOptions struct {
	dryRun bool
	output string
	wait   time.Duration
}

func newPruneCommand(g *globalOptions) *cobra.Command {
	o := &pruneOptions{}
	cmd := &cobra.Command{
		Use:   "prune",
		Short: "Drop versions the retention policy does not keep and reclaim their space",
		Long: `Apply the retention policy (retention.keepLast/keepHourly/keepDaily/keepWeekly,
buckets in UTC) to the store's versions, never dropping the newest version
that passed verification, then reclaim blocks no remaining version uses.
--dry-run prints what would go and changes nothing.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runPrune(cmd, g, o) },
	}
	cmd.Flags().BoolVar(&o.dryRun, "dry-run", false, "show what would be removed, remove nothing")
	cmd.Flags().DurationVar(&o.wait, "wait", 5*time.Minute, "how long to wait for a running backup to finish")
	outputFlag(cmd, &o.output, "text", "json")
	return cmd
}

func runPrune(cmd *cobra.Command, g *globalOptions, o *pruneOptions) error {
	if err := checkOutput(o.output, "text", "json"); err != nil {
		return err
	}
	s, err := openStoreMode(g, false)
	if err != nil {
		return err
	}
	unlock, err := s.LockWait(cmd.Context(), o.wait)
	if err != nil {
		return err
	}
	defer unlock()
	res, err := backup.Prune(cmd.Context(), s, g.cfg.Retention, o.dryRun)
	if err != nil {
		return err
	}
	if o.output == "json" {
		return writeJSON(g.stdout, res)
	}
	verb, freed := "removed", "freed"
	if res.DryRun {
		verb, freed = "would remove", "would free"
	}
	tw := newTable(g.stdout)
	for _, k := range res.Keep {
		fmt.Fprintf(tw, "keep\t%s\t%s\t%s\n", k.ID, k.Time.Format("2006-01-02 15:04:05"), strings.Join(k.Reasons, ","))
	}
	for _, v := range res.Remove {
		fmt.Fprintf(tw, "%s\t%s\t%s\t\n", verb, v.ID, v.Time.Format("2006-01-02 15:04:05"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	trimmed := "trimmed"
	if res.DryRun {
		trimmed = "would be trimmed"
	}
	window := ""
	if !res.DeltaWindowFromTime.IsZero() {
		window = fmt.Sprintf("; point-in-time reads (--at) kept from %s (version %s) on", res.DeltaWindowFromTime.UTC().Format(time.RFC3339), res.DeltaWindowFrom)
	}
	fmt.Fprintf(g.stdout, "%d kept, %d %s; packs: %d deleted, %d rewritten; %s %s; %d etcd delta segments %s (%s)%s\n",
		len(res.Keep), len(res.Remove), verb, res.PacksDeleted, res.PacksRewritten, freed, humanBytes(res.BytesFreed),
		res.DeltaSegmentsTrimmed, trimmed, humanBytes(res.DeltaBytesTrimmed), window)
	return nil
}
