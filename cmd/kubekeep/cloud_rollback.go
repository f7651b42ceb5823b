//go:build !kubekeep_front

package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/kubekeep/kubekeep/cloudsnap"
)

type cloudRollbackOptions struct {
	set       string
	dryRun    bool
	yes       bool
	noSafety  bool
	stateFile string
}

func newCloudRollbackCommand(g *globalOptions) *cobra.Command {
	var opts cloudRollbackOptions
	cmd := &cobra.Command{
		Use:   "rollback",
		Short: "Roll the whole VM back to an ECS snapshot set",
		Long: `Roll the instance's disks back to a snapshot set. Meant to run from another
machine (with --region and --instance-id), since the VM is stopped.

Steps: take a safety set of the current disks (unless --no-safety-snapshot),
stop the instance and wait for Stopped, reset each disk from its snapshot in
the set, start the instance and wait for Running. Each step is recorded in a
local state file first: if the rollback dies half-way, running the same
command again continues where it stopped. If it stops with disks from
different points in time it says so loudly and leaves the instance stopped.

--dry-run shows the plan and changes nothing. Without --yes the plan is shown
and a person at a terminal must type the set id to go on; without a terminal
and without --yes it refuses (exit 2). Each step is a line when it ends.`,
		Example: `  kubekeep cloud rollback --set kk-20260302-080000-1a2b3c --dry-run --region cn-hangzhou --instance-id i-bp1...
  kubekeep cloud rollback --set kk-20260302-080000-1a2b3c --yes --region cn-hangzhou --instance-id i-bp1...`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runCloudRollback(cmd, opts, g)
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.set, "set", "", "id of the snapshot set to roll back to (see 'kubekeep cloud list')")
	f.BoolVar(&opts.dryRun, "dry-run", false, "show the plan, change nothing")
	f.BoolVar(&opts.yes, "yes", false, "do not ask for confirmation")
	f.BoolVar(&opts.noSafety, "no-safety-snapshot", false, "do not snapshot the current disks first (they are then lost)")
	f.StringVar(&opts.stateFile, "state-file", "", "where the resumable state is kept (default $XDG_STATE_HOME/kubekeep/rollback-<instance>.json)")
	_ = cmd.MarkFlagRequired("set")
	return cmd
}

func defaultStateFile(instance string) (string, error) {
	dir := os.Getenv("XDG_STATE_HOME")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("no --state-file and no home directory: %w", err)
		}
		dir = filepath.Join(home, ".local", "state")
	}
	return filepath.Join(dir, "kubekeep", "rollback-"+instance+".json"), nil
}

func runCloudRollback(cmd *cobra.Command, opts cloudRollbackOptions, g *globalOptions) error {
	ctx := cmd.Context()
	client, err := newCloudClient(ctx, cmd, g)
	if err != nil {
		return err
	}
	if opts.stateFile == "" {
		if opts.stateFile, err = defaultStateFile(client.InstanceID()); err != nil {
			return err
		}
	}
	ro := cloudsnap.RollbackOptions{SetID: opts.set, StatePath: opts.stateFile, NoSafetySnapshot: opts.noSafety}
	plan, err := client.PlanRollback(ctx, ro)
	if err != nil {
		return err
	}
	printRollbackPlan(g.stdout, plan, opts.stateFile)
	if opts.dryRun {
		_, err := fmt.Fprintln(g.stdout, "dry run: nothing changed")
		return err
	}
	// The plan is on stdout; a person at a terminal types the set id.
	if err := confirm(cmd, g, opts.yes, fmt.Sprintf("the rollback of instance %s to set %s (it stops the VM and overwrites its disks)", plan.InstanceID, plan.Set.ID),
		[]string{"This stops the instance and overwrites its disks."}, plan.Set.ID); err != nil {
		return err
	}
	// Each step of the rollback (stop, reset each disk, start) is a line
	// when it ends, on a terminal its name while it runs.
	rep, err := startProgress(g)
	if err != nil {
		return err
	}
	ro.Progress = func(step string) {
		if step == "done" {
			rep.Done()
			return
		}
		rep.Step("rollback: " + step)
	}
	_, err = client.Rollback(ctx, ro)
	rep.Done()
	if err != nil {
		var mixed *cloudsnap.MixedDisksError
		if errors.As(err, &mixed) {
			return &exitError{code: 3, msg: err.Error() + fmt.Sprintf("\n(state kept in %s; re-run: kubekeep cloud rollback --set %s --region %s --instance-id %s)",
				opts.stateFile, mixed.SetID, client.Region(), client.InstanceID())}
		}
		return fmt.Errorf("rollback to %s: %w (state kept in %s; running the same command again resumes)", opts.set, err, opts.stateFile)
	}
	_, err = fmt.Fprintf(g.stdout, "instance %s rolled back to set %s and running\n", client.InstanceID(), plan.Set.ID)
	return err
}

func printRollbackPlan(w io.Writer, plan *cloudsnap.RollbackPlan, stateFile string) {
	status := "unknown"
	if plan.Instance != nil {
		status = plan.Instance.Status
	}
	fmt.Fprintf(w, "Roll back instance %s (%s) to set %s taken %s\n", plan.InstanceID, status, plan.Set.ID, plan.Set.Time.UTC().Format("2006-01-02 15:04:05Z"))
	if plan.Set.Version != "" {
		fmt.Fprintf(w, "  kubekeep version %s, etcd revision %d\n", plan.Set.Version, plan.Set.EtcdRevision)
	}
	if plan.Resume != nil {
		fmt.Fprintf(w, "  resuming the rollback recorded in %s (phase %s)\n", stateFile, plan.Resume.Phase)
	}
	for i, s := range plan.Steps {
		fmt.Fprintf(w, "  %d. %s\n", i+1, s)
	}
	for _, warn := range plan.Warnings {
		fmt.Fprintln(w, "  WARNING:", warn)
	}
	if !plan.Safety {
		fmt.Fprintln(w, "  WARNING: no safety snapshot: the disks' current contents will be lost")
	}
}
