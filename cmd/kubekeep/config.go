//go:build !kubekeep_front

package main

import (
	"fmt"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/kubekeep/kubekeep/config"
)

func newConfigCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Check and show kubekeep's configuration",
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "validate",
		Short: "Check a config file; every problem is reported as file:line: key: problem",
		Long: `Check a config file. Every problem in it is reported at once, in the
order of the file, as file:line: key: problem, and the command exits 1.

Settings that are valid but risky (metrics.listen beyond loopback,
cloud.endpoint over plain http) are printed to stderr as
file:line: key: warning: ...; they do not fail the check, and the agent
logs them when it starts and on every reload.`,
		Example: `  kubekeep config validate --config /etc/kubekeep/kubekeep.yaml
  kubekeep config validate --config examples/kubeadm.yaml`,
		Args: cobra.NoArgs,
		// The file was loaded and validated when flags were resolved; an
		// invalid file never reaches RunE.
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, path, err := g.settings(cmd)
			if err != nil {
				return err
			}
			if path != "" {
				_, warns, err := config.Check(path)
				if err != nil {
					return err
				}
				for _, w := range warns {
					fmt.Fprintln(g.stderr, w)
				}
			}
			_, err = fmt.Fprintln(g.stdout, "config OK")
			return err
		},
	})
	var output string
	show := &cobra.Command{
		Use:   "show",
		Short: "Print the effective configuration (file, defaults and flags merged)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output, "yaml", "json"); err != nil {
				return err
			}
			if output == "json" {
				return writeJSON(g.stdout, g.cfg)
			}
			return writeYAML(g.stdout, g.cfg)
		},
	}
	outputFlag(show, &output, "yaml", "json")
	cmd.AddCommand(show)
	return cmd
}

// logConfigWarnings logs the risky settings of the configuration a
// long-running command (the agent) runs with, once per (re)load: the
// effective settings, flags included, so without file lines.
func logConfigWarnings(log *slog.Logger, cfg config.Config) {
	for _, w := range cfg.Warnings("", nil) {
		log.Warn("risky setting: "+w.Msg, "setting", w.Key)
	}
}
