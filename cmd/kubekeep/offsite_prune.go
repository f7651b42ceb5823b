//go:build !kubekeep_front

package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kubekeep/kubekeep/rsyncish/backend"
	"github.com/kubekeep/kubekeep/tiers"
)

type offsitePruneOptions struct {
	tier     string
	dryRun   bool
	identity string
	wait     time.Duration
	output   string
}

func newOffsitePruneCommand(g *globalOptions) *cobra.Command {
	o := &offsitePruneOptions{}
	cmd := &cobra.Command{
		Use:   "prune --tier NAME [--dry-run]",
		Short: "Apply a tier's retention: delete the versions it does not keep and the data only they used",
		Long: `Apply the tier's retention (offsite[].retention: keepLast, keepDaily,
keepWeekly, keepMonthly; UTC buckets, the newest version of each) to the
versions the tier holds, never deleting the newest version with a drill mark
in the tier nor anything a kept version needs (its packs, the base of a
journal version, the etcd journal above the oldest kept snapshot), nor what
the local store still holds. Objects still under Object Lock (S3) or the
bucket's WORM retention (OSS) are left and counted (lockedSkipped): the
prune after the lock ends deletes them. A version whose manifest is locked
stays whole in the tier.

Run it on the master: it lists the tier, and decides from the references each
sync recorded in <store>/offsite/. Versions uploaded without that record, which
the store no longer has, are read from the tier with --identity FILE; without
it, prune deletes nothing and says so.

Deleting needs credentials the agent must not have (give the agent put, get and
list only): prune reads the same variables as sync (AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY for s3://, ALIBABA_CLOUD_ACCESS_KEY_ID /
ALIBABA_CLOUD_ACCESS_KEY_SECRET for oss://), so pass it a key that may delete
in its own environment only. S3 needs s3:DeleteObject, s3:DeleteObjectVersion
and s3:ListBucketVersions; OSS oss:DeleteObject.

--dry-run prints what would be deleted (locks are not asked about) and deletes
nothing. With -o json:
  {"tier","dryRun","versionsKept","versionsDeleted","objectsDeleted","bytesDeleted","lockedSkipped","kept","deleted"}`,
		Example: `  kubekeep offsite prune --tier dr --dry-run
  env AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... kubekeep offsite prune --tier dr -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runOffsitePrune(cmd.Context(), g, o) },
	}
	cmd.Flags().StringVar(&o.tier, "tier", "", "the tier to prune")
	cmd.Flags().BoolVar(&o.dryRun, "dry-run", false, "show what would be deleted, delete nothing")
	cmd.Flags().StringVar(&o.identity, "identity", "", "age identity file: read from the tier what versions without a local record need")
	cmd.Flags().DurationVar(&o.wait, "wait", 5*time.Minute, "how long to wait for a running sync of the tier")
	outputFlag(cmd, &o.output, "text", "json")
	return cmd
}

func runOffsitePrune(ctx context.Context, g *globalOptions, o *offsitePruneOptions) error {
	if err := checkOutput(o.output, "text", "json"); err != nil {
		return err
	}
	if o.tier == "" {
		return &exitError{code: 2, msg: "--tier NAME is required: prune deletes from one tier at a time"}
	}
	list, err := offsiteTiers(g, o.tier, true)
	if err != nil {
		return err
	}
	tc := list[0]
	idx := 0
	for i, c := range g.cfg.Offsite {
		if c.Name == tc.Name {
			idx = i
		}
	}
	if r := tc.Retention; r.KeepLast+r.KeepDaily+r.KeepWeekly+r.KeepMonthly == 0 {
		file := g.configFile
		if file == "" {
			file = "the config"
		}
		return &exitError{code: 2, msg: fmt.Sprintf("%s: offsite[%d].retention keeps nothing: set keepLast, keepDaily, keepWeekly or keepMonthly for tier %s", file, idx, tc.Name)}
	}
	ids, err := readIdentities(o.identity)
	if err != nil {
		return err
	}
	store, err := openStoreMode(g, false)
	if err != nil {
		return err
	}
	src, err := backend.OpenLocal(store.Dir())
	if err != nil {
		return err
	}
	t, closeTier, err := tiers.OpenForStore(ctx, tc, store)
	if err != nil {
		return err
	}
	defer closeTier()
	opts := tiers.PruneOptions{Tier: tc.Name, Retention: tc.Retention, DryRun: o.dryRun, Store: src, LockWait: o.wait, Logger: g.logger}
	if len(ids) > 0 {
		r, err := t.Reader(ctx, ids)
		if err != nil {
			return err
		}
		opts.Reader = r
	}
	res, err := tiers.Prune(ctx, t, opts)
	if err != nil {
		return err
	}
	g.logger.Info("off-site prune", "tier", res.Tier, "dryRun", res.DryRun, "versionsKept", res.VersionsKept, "versionsDeleted", res.VersionsDeleted,
		"objectsDeleted", res.ObjectsDeleted, "bytesDeleted", res.BytesDeleted, "lockedSkipped", res.LockedSkipped)
	if o.output == "json" {
		return writeJSON(g.stdout, res)
	}
	verb := "deleted"
	if res.DryRun {
		verb = "would delete"
	}
	tw := newTable(g.stdout)
	for _, k := range res.Kept {
		fmt.Fprintf(tw, "keep\t%s\t%s\t%s\n", k.ID, k.Time.Format("2006-01-02 15:04:05"), strings.Join(k.Reasons, ","))
	}
	for _, id := range res.Deleted {
		fmt.Fprintf(tw, "%s\t%s\t\t\n", verb, id)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err = fmt.Fprintf(g.stdout, "%s: %d versions kept, %d %s; %d objects (%s) %s; %d still locked, left for a later prune\n",
		res.Tier, res.VersionsKept, res.VersionsDeleted, verb, res.ObjectsDeleted, humanBytes(res.BytesDeleted), verb, res.LockedSkipped)
	return err
}
