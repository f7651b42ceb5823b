//go:build !kubekeep_front

package main

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kubekeep/kubekeep/internal/progress"
	"github.com/kubekeep/kubekeep/restore"
)

type restoreOptions struct {
	version       string
	dryRun        bool
	phases        []string
	at            string
	revision      int64
	hostname      string
	nodeIPs       []string
	forceKubeadm  bool
	deltaJournal  string
	stopTimeout   time.Duration
	verifyTimeout time.Duration
	readyzTimeout time.Duration
	apiServer     string
	output        string
	yes           bool
}

// newRestoreCommand rebuilds the control plane in phases; its subcommands
// (restore files, restore etcd) live in restore_<what>.go; root.go
// attaches them.
func newRestoreCommand(g *globalOptions) *cobra.Command {
	o := &restoreOptions{}
	var phaseList strings.Builder
	for _, p := range restore.Phases {
		fmt.Fprintf(&phaseList, "  %-10s %s\n", p, restore.PhaseHelp(p))
	}
	cmd := &cobra.Command{
		Use:   "restore",
		Short: "Rebuild the control plane from a store version, in phases (or restore files / etcd alone)",
		Long: `Rebuild the control plane under --root from a version in the store, through
kubeadm, in named phases modelled on 'kubeadm init phase'. Each phase can be
run alone (--phase, repeatable) and re-run; --dry-run prints every action of
every phase and changes nothing. A failed phase prints the command that
resumes from it.

Phases, in order:
` + phaseList.String() + `
Nothing is deleted: the old etcd data dir (or, when it is a mount point, its
contents, inside the mount), the manifests, and every file a phase replaces
(certificates, keys, kubeconfigs…, also when --phase files runs alone) are
moved or kept aside under names that say when; the output says where.
Nothing is written outside --root.

A restore that replaces what the node holds (a running control plane's
manifests, files that differ from the version, the etcd data dir) first
shows what it replaces, from its own dry run, and asks "Proceed? [y/N]" at
a terminal; --yes goes on without asking, and without a terminal and
without --yes it refuses (exit 2). A restore into an empty root, and
--dry-run, never ask. At a terminal each phase shows a progress bar (bytes,
rate, time left); otherwise one line per phase with its bytes and duration
(KUBEKEEP_PROGRESS=bar|plain|off to choose).

verify waits up to --readyz-timeout for
the apiserver's /readyz and fails, saying it timed out, when it never gets
ready.

  kubekeep restore files --version ID --to DIR    only the version's files under DIR
  kubekeep restore etcd  --version ID --to DIR    only an etcd data dir (snapshot + deltas)`,
		Example: `  kubekeep restore --store /data/backup/kubekeep --version latest --dry-run
  kubekeep restore --store /data/backup/kubekeep --version latest
  kubekeep restore --store /data/backup/kubekeep --version latest --yes   # a script: no question
  kubekeep restore --store /data/backup/kubekeep --version 20261123T112831Z --phase etcd --phase kubeadm --phase verify`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(o.output, "text", "json"); err != nil {
				return err
			}
			return runRestore(cmd, g, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.version, "version", "latest", "version ID (or unique prefix), or latest")
	f.BoolVar(&o.dryRun, "dry-run", false, "print every action of every phase, change nothing")
	f.BoolVar(&o.yes, "yes", false, "do not ask before replacing what the node holds (needed without a terminal)")
	f.StringArrayVar(&o.phases, "phase", nil, "run only this phase (repeatable, or comma-separated): "+strings.Join(restore.Phases, ", "))
	f.StringVar(&o.at, "at", "", "replay etcd deltas up to this time (RFC 3339)")
	f.Int64Var(&o.revision, "revision", 0, "replay etcd deltas up to this revision (the original cluster's)")
	f.StringVar(&o.hostname, "hostname", "", "this node's hostname (default: the OS's)")
	f.StringSliceVar(&o.nodeIPs, "node-ip", nil, "this node's addresses (default: every non-loopback interface address)")
	f.BoolVar(&o.forceKubeadm, "force-kubeadm", false, "run kubeadm init even when the node is unchanged")
	f.StringVar(&o.deltaJournal, "delta-journal", restore.DefaultDeltaJournal, "store journal holding the etcd deltas")
	f.DurationVar(&o.stopTimeout, "stop-timeout", restore.DefaultStopTimeout, "how long the stop phase waits for the control plane to go")
	f.DurationVar(&o.verifyTimeout, "verify-timeout", restore.DefaultVerifyTimeout, "how long verify waits for etcd to answer")
	f.DurationVar(&o.readyzTimeout, "readyz-timeout", restore.DefaultReadyzTimeout, "how long verify then waits for the apiserver's /readyz to answer ok (0: do not check it)")
	f.StringVar(&o.apiServer, "apiserver", "", "host:port verify asks for /readyz (default: the saved controlPlaneEndpoint when usable here, else 127.0.0.1:6443)")
	outputFlag(cmd, &o.output, "text", "json")
	return cmd
}

func runRestore(cmd *cobra.Command, g *globalOptions, o *restoreOptions) error {
	s, err := openStoreMode(g, false)
	if err != nil {
		return err
	}
	opts := restore.Options{
		Root: g.cfg.Root, Store: s, Version: o.version, Phases: o.phases, DryRun: o.dryRun,
		Logger: g.logger, Revision: o.revision, DeltaJournal: o.deltaJournal,
		Hostname: o.hostname, ForceKubeadm: o.forceKubeadm, Etcd: g.cfg.Etcd,
		StopTimeout: o.stopTimeout, VerifyTimeout: o.verifyTimeout,
		ReadyzTimeout: o.readyzTimeout, APIServer: o.apiServer,
	}
	if o.readyzTimeout == 0 {
		opts.ReadyzTimeout = -1 // the library's 0 is its default
	}
	if o.at != "" {
		if opts.At, err = time.Parse(time.RFC3339Nano, o.at); err != nil {
			return fmt.Errorf("--at: %w", err)
		}
	}
	for _, ip := range o.nodeIPs {
		p := net.ParseIP(ip)
		if p == nil {
			return fmt.Errorf("--node-ip %q is not an IP address", ip)
		}
		opts.HostIPs = append(opts.HostIPs, p)
	}
	// One clock for the plan and the run: the dirs the summary names are
	// the ones the run keeps things in.
	now := time.Now()
	opts.Now = func() time.Time { return now }
	if err := confirmRestore(cmd, g, o, opts); err != nil {
		return err
	}
	rep, err := startProgress(g)
	if err != nil {
		return err
	}
	opts.Logger, opts.Progress = g.logger, rep
	// The account of actions is the text output; with -o json it goes to
	// stderr so stdout stays one JSON document. Both are wrapped while a
	// bar is drawn.
	opts.Out = g.stdout
	if o.output == "json" {
		opts.Out = progress.Wrap(rep, g.stderr)
	}
	res, err := restore.Run(cmd.Context(), opts)
	if o.output == "json" && res != nil {
		if jerr := writeJSON(g.stdout, res); jerr != nil && err == nil {
			err = jerr
		}
	}
	if err != nil {
		return err
	}
	if o.output == "text" {
		verb := "restored"
		if o.dryRun {
			verb = "dry run of the restore of"
		}
		fmt.Fprintf(g.stdout, "%s version %s under %s: phases %s\n", verb, res.Version, g.cfg.Root, phaseNames(res))
	}
	return nil
}

// confirmRestore asks before a restore that replaces what the node holds:
// a dry run of the phases that change the node (stop, files, etcd,
// kubeadm) says what they would replace (restore.Result.Replaces). A dry
// run, --yes, or nothing to replace (an empty new root) goes on at once.
func confirmRestore(cmd *cobra.Command, g *globalOptions, o *restoreOptions, opts restore.Options) error {
	if o.dryRun || o.yes {
		return nil
	}
	selected, err := restore.SelectPhases(o.phases)
	if err != nil {
		return err
	}
	var changing []string
	for _, p := range selected {
		switch p {
		case restore.PhaseStop, restore.PhaseFiles, restore.PhaseEtcd, restore.PhaseKubeadm:
			changing = append(changing, p)
		}
	}
	if len(changing) == 0 {
		return nil
	}
	plan := opts
	plan.DryRun, plan.Phases, plan.Out, plan.Progress = true, changing, io.Discard, nil
	plan.Logger = slog.New(slog.DiscardHandler)
	res, err := restore.Run(cmd.Context(), plan)
	if res == nil {
		return err // no version, no store: the run would say the same
	}
	if len(res.Replaces) == 0 {
		return nil
	}
	summary := []string{fmt.Sprintf("The restore of version %s (phases %s) replaces what the node under %s holds:", res.Version, strings.Join(selected, ", "), g.cfg.Root)}
	for _, r := range res.Replaces {
		summary = append(summary, "  - "+r)
	}
	summary = append(summary, "Nothing is deleted: what it replaces is kept where the lines say (--dry-run shows every action).")
	return confirm(cmd, g, o.yes, fmt.Sprintf("the restore of version %s over what the node under %s holds", res.Version, g.cfg.Root), summary, "")
}

func phaseNames(res *restore.Result) string {
	var n []string
	for _, p := range res.Phases {
		n = append(n, p.Name)
	}
	return strings.Join(n, ", ")
}
