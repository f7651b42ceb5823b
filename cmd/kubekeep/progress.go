//go:build !kubekeep_front

package main

import (
	"errors"
	"io"

	"github.com/spf13/cobra"

	"github.com/kubekeep/kubekeep/internal/progress"
)

// startProgress returns the progress reporter for the command's stderr
// (internal/progress: a bar at a terminal, a line per step otherwise,
// KUBEKEEP_PROGRESS to choose). While a bar is drawn, the logger and a
// stdout on the same terminal write through it, so their lines never land
// inside the bar (the log format that would be auto turns text, as it is
// at a terminal).
func startProgress(g *globalOptions) (progress.Reporter, error) {
	rep, err := progress.For(g.stderr)
	if err != nil {
		return nil, err
	}
	if progress.IsBar(rep) {
		lc := g.cfg.Log
		if lc.Format == "" || lc.Format == "auto" {
			lc.Format = "text"
		}
		g.logger = newLogger(progress.Wrap(rep, g.stderr), lc)
		if progress.IsTerminal(g.stdout) {
			g.stdout = progress.Wrap(rep, g.stdout)
		}
	}
	return rep, nil
}

// confirm asks before a destructive change (internal/progress.Confirm):
// the summary and "Proceed? [y/N]" at a terminal; without one and without
// --yes, a refusal naming --yes. Not going on exits 2.
func confirm(cmd *cobra.Command, g *globalOptions, yes bool, what string, summary []string, expect string) error {
	var in io.Reader = cmd.InOrStdin()
	err := progress.Confirm(progress.ConfirmOptions{Yes: yes, What: what, Summary: summary, In: in, Out: g.stderr, Expect: expect,
		Context: cmd.Context()})
	if errors.Is(err, progress.ErrNotConfirmed) {
		return &exitError{code: 2, msg: err.Error()}
	}
	return err
}
