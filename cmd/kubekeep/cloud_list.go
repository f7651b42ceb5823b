//go:build !kubekeep_front

package main

import (
	"fmt"
	"strconv"

	"github.com/spf13/cobra"
)

func newCloudListCommand(g *globalOptions) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the ECS snapshot sets kubekeep made of this instance",
		Long: `List the snapshot sets kubekeep made of this instance, oldest first.

Only snapshots tagged managed-by=kubekeep for this instance are shown. With
-o json:
  [{"id","time","status","disks":[{"diskId","snapshotId"}],"etcdRevision","version","expires"}]`,
		Example: `  kubekeep cloud list
  kubekeep cloud list -o json --region cn-hangzhou --instance-id i-bp1...`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output, "table", "json"); err != nil {
				return err
			}
			client, err := newCloudClient(cmd.Context(), cmd, g)
			if err != nil {
				return err
			}
			sets, err := client.ListSets(cmd.Context())
			if err != nil {
				return err
			}
			if output == "json" {
				out := make([]cloudSetJSON, 0, len(sets))
				for _, s := range sets {
					out = append(out, toCloudSetJSON(s))
				}
				return writeJSON(g.stdout, out)
			}
			tw := newTable(g.stdout)
			fmt.Fprintln(tw, "ID\tTIME\tSTATUS\tDISKS\tVERSION\tETCD REV\tPURPOSE\tEXPIRES")
			for _, s := range sets {
				rev, version := "-", "-"
				if s.EtcdRevision > 0 {
					rev = strconv.FormatInt(s.EtcdRevision, 10)
				}
				if s.Version != "" {
					version = s.Version
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", s.ID, s.Time.UTC().Format("2006-01-02 15:04Z"), s.Status,
					len(s.Disks), version, rev, s.Purpose, s.Expires.UTC().Format("2006-01-02 15:04Z"))
			}
			return tw.Flush()
		},
	}
	outputFlag(cmd, &output, "table", "json")
	return cmd
}
