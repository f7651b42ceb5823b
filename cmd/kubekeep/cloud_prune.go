//go:build !kubekeep_front

package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

func newCloudPruneCommand(g *globalOptions) *cobra.Command {
	var (
		dryRun bool
		output string
	)
	cmd := &cobra.Command{
		Use:   "prune",
		Short: "Delete expired and failed ECS snapshot sets kubekeep made",
		Long: `Delete this instance's kubekeep sets that are past cloud.retentionDays, and
failed ones. Snapshots kubekeep did not make are never touched, the newest
accomplished set is always kept (even expired), and nothing is deleted
while a set is still being made.

With -o json: {"deleted":[set...],"kept":[{"set","reason"}],"deferred"}`,
		Example: `  kubekeep cloud prune --dry-run
  kubekeep cloud prune`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output, "text", "json"); err != nil {
				return err
			}
			client, err := newCloudClient(cmd.Context(), cmd, g)
			if err != nil {
				return err
			}
			res, err := client.Prune(cmd.Context(), dryRun)
			if res == nil {
				return err
			}
			if output == "json" {
				type kept struct {
					Set    cloudSetJSON `json:"set"`
					Reason string       `json:"reason"`
				}
				out := struct {
					Deleted  []cloudSetJSON `json:"deleted"`
					Kept     []kept         `json:"kept"`
					Deferred string         `json:"deferred,omitempty"`
					DryRun   bool           `json:"dryRun"`
				}{Deleted: []cloudSetJSON{}, Kept: []kept{}, Deferred: res.Deferred, DryRun: dryRun}
				for _, s := range res.Deleted {
					out.Deleted = append(out.Deleted, toCloudSetJSON(s))
				}
				for _, k := range res.Kept {
					out.Kept = append(out.Kept, kept{Set: toCloudSetJSON(k.Set), Reason: k.Reason})
				}
				if werr := writeJSON(g.stdout, out); werr != nil {
					return werr
				}
				return err
			}
			verb := "deleted"
			if dryRun {
				verb = "would delete"
			}
			if res.Deferred != "" {
				fmt.Fprintln(g.stdout, "nothing pruned:", res.Deferred)
			}
			for _, s := range res.Deleted {
				fmt.Fprintf(g.stdout, "%s %s (%s, expired %s)\n", verb, s.ID, s.Status, s.Expires.UTC().Format("2006-01-02 15:04Z"))
			}
			for _, k := range res.Kept {
				fmt.Fprintf(g.stdout, "kept %s (%s)\n", k.Set.ID, k.Reason)
			}
			return err
		},
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "show what would be deleted, delete nothing")
	outputFlag(cmd, &output, "text", "json")
	return cmd
}
