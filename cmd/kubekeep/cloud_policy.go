//go:build !kubekeep_front

package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kubekeep/kubekeep/cloudsnap"
)

func newCloudPolicyCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Use ECS's native automatic snapshot policy instead of the agent's schedule",
	}
	apply := &cobra.Command{
		Use:   "apply",
		Short: "Create (or reuse) the kubekeep automatic snapshot policy and apply it to the disks",
		Long: `Let ECS take the snapshots itself, at cloud.policyTimePoints (hours in
UTC+8, as ECS reads them) every day, kept cloud.retentionDays days.

Refused unless cloud.mode is "policy": the agent's own schedule and a policy
together would take every snapshot twice. Snapshots made by a policy are not
application-consistent and carry no kubekeep tags.`,
		Example: `  kubekeep cloud policy apply --config /etc/kubekeep/kubekeep.yaml`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if g.cfg.Cloud.Mode != "policy" {
				return fmt.Errorf("cloud.mode is %q: set cloud.mode: policy in the config first (the agent's schedule and a policy together double the snapshots)", g.cfg.Cloud.Mode)
			}
			client, err := newCloudClient(cmd.Context(), cmd, g)
			if err != nil {
				return err
			}
			res, err := client.ApplyPolicy(cmd.Context(), cloudsnap.PolicyOptions{TimePoints: g.cfg.Cloud.PolicyTimePoints, RetentionDays: g.cfg.Cloud.RetentionDays})
			if err != nil {
				return err
			}
			verb := "reused"
			if res.Created {
				verb = "created"
			}
			_, err = fmt.Fprintf(g.stdout, "%s policy %s (%s), applied to %s\n", verb, res.Name, res.PolicyID, strings.Join(res.Disks, ", "))
			return err
		},
	}
	cmd.AddCommand(apply)
	return cmd
}
