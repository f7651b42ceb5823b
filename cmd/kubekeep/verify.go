//go:build !kubekeep_front

package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/kubekeep/kubekeep/rsyncish"
)

// checkerOptions are the flags verify and repair share.
type checkerOptions struct {
	readData bool
	output   string
	wait     time.Duration
}

func newVerifyCommand(g *globalOptions) *cobra.Command {
	o := &checkerOptions{}
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Check the store; exit 1 when anything is damaged, 2 when it cannot check",
		Long: `Check the store on the second disk: every manifest, pack index, journal
segment and verification mark against its checksum, every pack against its
index, every block a version references for presence. With --read-data,
every stored block is read back and re-hashed (catches bit rot).

Each problem names the version(s) and path(s) it damages. The rotten
blocks --read-data finds are recorded in the store, so that no later
backup builds on them and every later verify keeps naming them;
kubekeep repair makes the store consistent again.

Exit status: 0 clean (warnings are printed but are no damage), 1 damage
found, 2 the check could not run: a usage or config error, no store at
the path, the store locked by a backup or prune for longer than --wait,
an I/O error. Scripts can treat 1 alone as "the backups are damaged".

-o json prints {"versions", "packs", "blobs", "segments", "bytesRead",
"readData", "problems": [{"kind", "object", "detail", "versions",
"paths"}], "warnings"}.`,
		RunE: func(cmd *cobra.Command, _ []string) error { return runVerify(cmd, g, o) },
	}
	checkerFlags(cmd, g, o, "read and re-hash every stored block")
	return cmd
}

func runVerify(cmd *cobra.Command, g *globalOptions, o *checkerOptions) error {
	s, unlock, err := openChecked(cmd, g, o)
	if err != nil {
		return err
	}
	defer unlock()
	// --read-data reads every pack: a bar at a terminal, a line otherwise.
	prog, err := startProgress(g)
	if err != nil {
		return operational(err)
	}
	if o.readData {
		prog.Step("verify --read-data")
		s.SetProgress(prog)
	}
	rep, err := s.Verify(cmd.Context(), o.readData)
	s.SetProgress(nil)
	prog.Done()
	if err != nil {
		return operational(err)
	}
	if o.output == "json" {
		if err := writeJSON(g.stdout, rep); err != nil {
			return operational(err)
		}
	} else {
		for _, p := range rep.Problems {
			fmt.Fprintln(g.stdout, "DAMAGE:", p.String())
		}
		for _, w := range rep.Warnings {
			fmt.Fprintln(g.stdout, "warning:", w)
		}
		what := "structure and references"
		if rep.ReadData {
			what = fmt.Sprintf("all data (%s read)", humanBytes(rep.BytesRead))
		}
		status := "clean"
		if !rep.Clean() {
			status = fmt.Sprintf("%d problem(s)", len(rep.Problems))
		}
		fmt.Fprintf(g.stdout, "%s: %d versions, %d packs, %d blocks, %d journal segments; checked %s\n",
			status, rep.Versions, rep.Packs, rep.Blobs, rep.Segments, what)
	}
	if !rep.Clean() {
		return &exitError{code: 1}
	}
	return nil
}

// checkerFlags wires what verify and repair share: exit 2 for every
// operational failure (arguments, flags, config), --read-data, --wait and
// -o text|json.
func checkerFlags(cmd *cobra.Command, g *globalOptions, o *checkerOptions, readHelp string) {
	cmd.Args = func(cmd *cobra.Command, args []string) error { return operational(cobra.NoArgs(cmd, args)) }
	// Its own config resolution, so that a bad config exits 2 too.
	cmd.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error { return operational(g.resolve(cmd)) }
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return operational(err) })
	cmd.Flags().BoolVar(&o.readData, "read-data", false, readHelp)
	cmd.Flags().DurationVar(&o.wait, "wait", 5*time.Minute, "how long to wait for a running backup or prune to finish")
	outputFlag(cmd, &o.output, "text", "json")
}

// openChecked is what verify and repair do before they check: refuse a
// bad -o, open the store and take its lock (waiting up to --wait), every
// failure an operational one (exit 2). The lock keeps a prune from
// removing what is being checked, and lets the checker record what it
// found.
func openChecked(cmd *cobra.Command, g *globalOptions, o *checkerOptions) (*rsyncish.Store, func() error, error) {
	if err := checkOutput(o.output, "text", "json"); err != nil {
		return nil, nil, operational(err)
	}
	s, err := openStoreMode(g, false)
	if err != nil {
		return nil, nil, operational(err)
	}
	unlock, err := s.LockWait(cmd.Context(), o.wait)
	if err != nil {
		return nil, nil, operational(err)
	}
	return s, unlock, nil
}
