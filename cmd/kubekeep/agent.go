//go:build !kubekeep_front

package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/kubekeep/kubekeep/agent"
	"github.com/kubekeep/kubekeep/cloudsnap"
	"github.com/kubekeep/kubekeep/config"
	"github.com/kubekeep/kubekeep/restore"
	"github.com/kubekeep/kubekeep/rsyncish"
)

type agentOptions struct {
	backupInterval  time.Duration
	backupBudget    config.Percent
	metricsListen   string
	shutdownTimeout time.Duration
}

func newAgentCommand(g *globalOptions) *cobra.Command {
	o := &agentOptions{}
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the long-lived service: scheduled and change-triggered backups, etcd deltas, status, metrics",
		Long: `Run kubekeep as a service (see examples/kubekeep.service).

It takes a version every schedules.backup (and when a certificate,
kubeconfig or manifest changes, after schedules.debounce), streams etcd
changes into the store in between, prunes, verifies the store, runs the
restore drill, and takes ECS snapshot sets when cloud.enabled and
cloud.mode is agent. A failed job is retried with backoff; the agent
does not exit because of one. If the second disk goes missing or
read-only, nothing is written until it is back.

Flags override the config file; with no config file the defaults apply.
SIGHUP (or editing the config file) reloads the configuration; a bad one
is refused and the running one kept. SIGTERM/SIGINT stop it: running jobs
get --shutdown-timeout to finish, then are abandoned cleanly.

'kubekeep status' shows what it did; Prometheus metrics and /healthz are
served on metrics.listen. /healthz answers 503, listing why, while the
second disk cannot be written or is full (below store.minFree, or writes
fail for space: kubekeep_store_full 1), the last backup run failed, no
backup succeeded for three intervals, the newest version is not good
(etcd-failed, degraded: kubekeep_backup_degraded is then 1), the etcd API
has not answered or the delta stream has made nothing durable for over a
minute (plus two etcd.deltaFlush), or the restore drill cannot run for
lack of space.`,
		Example: `  kubekeep agent --config /etc/kubekeep/kubekeep.yaml
  kubekeep agent --root / --store /data/backup/kubekeep --backup-interval 5m --metrics-listen 127.0.0.1:9477`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runAgent(cmd, g, o) },
	}
	f := cmd.Flags()
	f.DurationVar(&o.backupInterval, "backup-interval", 5*time.Minute, "time between scheduled backups (overrides schedules.backup)")
	o.backupBudget = config.Default().Schedules.BackupCPUBudget
	f.Var(&o.backupBudget, "backup-cpu-budget", "average CPU scheduled backups may use, e.g. 1%; over it, scheduled runs are skipped (0% disables; overrides schedules.backupCPUBudget)")
	f.StringVar(&o.metricsListen, "metrics-listen", "127.0.0.1:9477", "address of the Prometheus /metrics and /healthz endpoint, empty to disable (overrides metrics.listen)")
	f.DurationVar(&o.shutdownTimeout, "shutdown-timeout", 30*time.Second, "how long a running job may take to finish after SIGTERM before it is abandoned")
	return cmd
}

func runAgent(cmd *cobra.Command, g *globalOptions, o *agentOptions) error {
	cfg, cfgFile, err := agentSettings(cmd, g, o)
	if err != nil {
		return err
	}
	a, err := agent.New(agent.Config{
		Settings:        cfg,
		Reload:          func() (config.Config, error) { c, _, err := agentSettings(cmd, g, o); return c, err },
		ConfigFile:      cfgFile,
		Logger:          g.logger,
		Drill:           agentDrill(g),
		CloudSnapshot:   agentCloudSnapshot(g),
		ShutdownTimeout: o.shutdownTimeout,
	})
	if err != nil {
		return err
	}
	return a.Run(cmd.Context())
}

// agentSettings resolves the configuration the way every command does
// (file, then global flags) plus the agent's own flags. It is called again
// on reload, so it reads nothing but the file and the parsed flags, and
// changes nothing in g.
func agentSettings(cmd *cobra.Command, g *globalOptions, o *agentOptions) (config.Config, string, error) {
	cfg, path, err := g.settings(cmd)
	if err != nil {
		return config.Config{}, "", err
	}
	flags := cmd.Flags()
	if flags.Changed("backup-interval") {
		cfg.Schedules.Backup = o.backupInterval
	}
	if flags.Changed("backup-cpu-budget") {
		cfg.Schedules.BackupCPUBudget = o.backupBudget
	}
	if flags.Changed("metrics-listen") {
		cfg.Metrics.Listen = o.metricsListen
	}
	if err := cfg.Validate("flags", nil); err != nil {
		return config.Config{}, "", err
	}
	logConfigWarnings(g.logger, cfg)
	return cfg, path, nil
}

// agentDrill runs the restore drill of package restore on the version the
// agent picks.
func agentDrill(g *globalOptions) agent.DrillFunc {
	return func(ctx context.Context, s *rsyncish.Store, version string) error {
		res, err := restore.Drill(ctx, s, version, g.logger)
		if err != nil {
			return err
		}
		if !res.Verified {
			return fmt.Errorf("drill of %s did not verify", res.Version)
		}
		return nil
	}
}

// agentCloudSnapshot takes one scheduled ECS snapshot set and then deletes
// expired ones, with the cloud settings the agent currently runs with.
func agentCloudSnapshot(g *globalOptions) agent.CloudSnapshotFunc {
	return func(ctx context.Context, req agent.CloudRequest) error {
		c := req.Cloud
		client, err := cloudsnap.New(ctx, cloudsnap.Options{
			Endpoint: c.Endpoint, Region: c.Region, InstanceID: c.InstanceID, MetadataURL: c.MetadataURL,
			Disks: c.Disks, Cluster: c.Cluster, Mode: c.Mode, RetentionDays: c.RetentionDays,
			WaitTimeout: c.WaitTimeout, Logger: g.logger,
		})
		if err != nil {
			return err
		}
		// Waited for: Prune does nothing while a set is progressing, so
		// pruning right after starting one (ECS takes minutes) would never
		// delete an expired set.
		set, err := client.CreateSet(ctx, cloudsnap.CreateRequest{
			Version: req.Version, EtcdRevision: req.EtcdRevision, Purpose: cloudsnap.PurposeScheduled, Wait: true,
		})
		if err != nil {
			return err
		}
		g.logger.Info("cloud snapshot set taken", "set", set.ID, "status", set.Status, "version", req.Version)
		if res, err := client.Prune(ctx, false); err != nil {
			g.logger.Warn("pruning expired cloud snapshot sets failed; next run retries", "err", err)
		} else if res != nil {
			g.logger.Info("cloud snapshot sets pruned", "result", res)
		}
		return nil
	}
}
