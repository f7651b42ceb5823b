package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"
)

func init() { registerCommand(newVerifyCommand) }

type verifyOptions struct {
	readData bool
	output   string
	wait     time.Duration
}

func newVerifyCommand(g *globalOptions) *cobra.Command {
	o := &verifyOptions{}
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Check the store; exit 1 when anything is damaged",
		Long: `Check the store on the second disk: every manifest, pack index, journal
segment and verification mark against its checksum, every pack against its
index, every block a version references for presence. With --read-data,
every stored block is read back and re-hashed (catches bit rot).

Each problem names the version(s) and path(s) it damages. Exit status: 0
clean, 1 damage found, other values when the check could not run.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runVerify(cmd, g, o) },
	}
	cmd.Flags().BoolVar(&o.readData, "read-data", false, "read and re-hash every stored block")
	cmd.Flags().DurationVar(&o.wait, "wait", 5*time.Minute, "how long to wait for a running backup or prune to finish")
	outputFlag(cmd, &o.output, "text", "json")
	return cmd
}

func runVerify(cmd *cobra.Command, g *globalOptions, o *verifyOptions) error {
	if err := checkOutput(o.output, "text", "json"); err != nil {
		return err
	}
	s, err := openStoreMode(g, false)
	if err != nil {
		return err
	}
	// The lock keeps a prune from removing what is being checked.
	unlock, err := s.LockWait(cmd.Context(), o.wait)
	if err != nil {
		return err
	}
	defer unlock()
	rep, err := s.Verify(cmd.Context(), o.readData)
	if err != nil {
		return err
	}
	if o.output == "json" {
		if err := writeJSON(g.stdout, rep); err != nil {
			return err
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
