package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

func newConfigCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Check and show kubekeep's configuration",
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "validate",
		Short: "Check a config file; every problem is reported as file:line: key: problem",
		Example: `  kubekeep config validate --config /etc/kubekeep/kubekeep.yaml
  kubekeep config validate --config examples/kubeadm.yaml`,
		Args: cobra.NoArgs,
		// The file was loaded and validated when flags were resolved; an
		// invalid file never reaches RunE.
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintln(g.stdout, "config OK")
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
