//go:build !kubekeep_front

package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/kubekeep/kubekeep/restore"
)

func newRestoreEtcdCommand(g *globalOptions) *cobra.Command {
	var (
		o        restore.EtcdOptions
		at       string
		peerURLs []string
		output   string
	)
	cmd := &cobra.Command{
		Use:   "etcd",
		Short: "Write an etcd data dir from a version's snapshot (and deltas up to a point in time)",
		Long: `Write a new etcd data dir at --to from a version's snapshot: the snapshot is
checked whole (sha256 trailer, bbolt consistency) first, then restored
in-process with etcdutl, revision bumped by 1,000,000,000 and marked compacted
so Kubernetes informers relist. --at or --revision replays the etcd deltas
streamed after the snapshot up to that point; with --at and no --version the
newest good version taken before that time is used.

The member (name, initial cluster, peer URLs) is the one the backed-up etcd
manifest describes; flags override it. --to must not exist or be empty.`,
		Example: `  kubekeep restore etcd --store /data/backup/kubekeep --version latest --to /var/lib/etcd-restored
  kubekeep restore etcd --store /data/backup/kubekeep --at 2026-11-23T10:04:00Z --to /var/lib/etcd-restored`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output, "text", "json"); err != nil {
				return err
			}
			if o.To == "" {
				return fmt.Errorf("--to is required")
			}
			if at != "" {
				t, err := time.Parse(time.RFC3339Nano, at)
				if err != nil {
					return fmt.Errorf("--at: %w", err)
				}
				o.At = t
			}
			if o.Version == "" && o.At.IsZero() {
				o.Version = "latest"
			}
			s, err := openStoreMode(g, false)
			if err != nil {
				return err
			}
			rep, err := startProgress(g)
			if err != nil {
				return err
			}
			o.Store, o.Logger, o.PeerURLs, o.Progress = s, g.logger, peerURLs, rep
			rep.Step("restore etcd")
			res, err := restore.RestoreEtcd(cmd.Context(), o)
			rep.Done()
			if err != nil {
				return err
			}
			if output == "json" {
				return writeJSON(g.stdout, res)
			}
			fmt.Fprintf(g.stdout, "restored etcd of version %s into %s: revision %d (original %d), %d keys\n",
				res.Version, res.DataDir, res.Revision, res.ReplayedToRevision, res.Keys)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Version, "version", "", "version ID (or unique prefix), or latest (default latest, or the newest before --at)")
	f.StringVar(&at, "at", "", "replay deltas up to this time (RFC 3339)")
	f.Int64Var(&o.Revision, "revision", 0, "replay deltas up to this revision (the original cluster's)")
	f.StringVar(&o.Journal, "delta-journal", restore.DefaultDeltaJournal, "store journal holding the etcd deltas")
	f.StringVar(&o.To, "to", "", "the new data dir (must not exist or be empty)")
	f.StringVar(&o.Name, "name", "", "member name (default: the backed-up manifest's --name)")
	f.StringVar(&o.InitialCluster, "initial-cluster", "", "initial cluster (default: the backed-up manifest's)")
	f.StringSliceVar(&peerURLs, "initial-advertise-peer-urls", nil, "peer URLs (default: the backed-up manifest's)")
	outputFlag(cmd, &output, "text", "json")
	return cmd
}
