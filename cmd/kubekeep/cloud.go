//go:build !kubekeep_front

package main

import (
	"context"
	"time"

	"github.com/spf13/cobra"

	"github.com/kubekeep/kubekeep/cloudsnap"
)

// newCloudCommand groups the ECS disk snapshot commands; each subcommand
// lives in its own cloud_<verb>.go; root.go attaches them.
func newCloudCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cloud",
		Short: "ECS disk snapshots of the whole VM: take, list, prune, roll back",
		Long: `Snapshot sets of the VM's ECS disks, the safety net for a broken VM.

  kubekeep cloud snapshot [--wait]          a set of every disk (after a local backup)
  kubekeep cloud list [-o json]             the sets kubekeep made of this instance
  kubekeep cloud prune [--dry-run]          delete expired and failed sets
  kubekeep cloud rollback --set ID          stop the VM, reset its disks, start it
  kubekeep cloud policy apply               let ECS snapshot on its own schedule instead

The instance and region come from the metadata service unless given; when
run from another machine (rollback), pass --instance-id and --region.
Credentials come from ALIBABA_CLOUD_ACCESS_KEY_ID / ALIBABA_CLOUD_ACCESS_KEY_SECRET
(and ALIBABA_CLOUD_SECURITY_TOKEN for STS) or the instance's RAM role; there
are deliberately no flags for them.`,
	}
	pf := cmd.PersistentFlags()
	pf.String("endpoint", "", "ECS API endpoint URL (default: the region's HTTPS endpoint; http://127.0.0.1:PORT for a local one)")
	pf.String("region", "", "region id (default: cloud.region, else the metadata service)")
	pf.String("instance-id", "", "instance id (default: cloud.instanceId, else the metadata service)")
	pf.String("metadata-url", "", "instance metadata service base URL (default: cloud.metadataURL)")
	return cmd
}

// cloudOptions merges cloud.* from the config with the cloud flags.
func cloudOptions(cmd *cobra.Command, g *globalOptions) cloudsnap.Options {
	c := g.cfg.Cloud
	o := cloudsnap.Options{
		Endpoint:      c.Endpoint,
		Region:        c.Region,
		InstanceID:    c.InstanceID,
		MetadataURL:   c.MetadataURL,
		Disks:         c.Disks,
		Cluster:       c.Cluster,
		Mode:          c.Mode,
		RetentionDays: c.RetentionDays,
		WaitTimeout:   c.WaitTimeout,
		Logger:        g.logger,
	}
	flags := cmd.Flags()
	for name, dst := range map[string]*string{"endpoint": &o.Endpoint, "region": &o.Region, "instance-id": &o.InstanceID, "metadata-url": &o.MetadataURL} {
		if flags.Changed(name) {
			*dst, _ = flags.GetString(name)
		}
	}
	return o
}

func newCloudClient(ctx context.Context, cmd *cobra.Command, g *globalOptions) (*cloudsnap.Client, error) {
	return cloudsnap.New(ctx, cloudOptions(cmd, g))
}

// cloudSetJSON is the -o json shape of a set; scripts depend on these keys.
type cloudSetJSON struct {
	ID           string          `json:"id"`
	Time         time.Time       `json:"time"`
	Status       string          `json:"status"`
	Disks        []cloudDiskJSON `json:"disks"`
	EtcdRevision int64           `json:"etcdRevision"`
	Version      string          `json:"version"`
	Expires      time.Time       `json:"expires"`
}

type cloudDiskJSON struct {
	DiskID     string `json:"diskId"`
	SnapshotID string `json:"snapshotId"`
}

func toCloudSetJSON(s cloudsnap.Set) cloudSetJSON {
	out := cloudSetJSON{ID: s.ID, Time: s.Time.UTC(), Status: s.Status, EtcdRevision: s.EtcdRevision,
		Version: s.Version, Expires: s.Expires.UTC(), Disks: []cloudDiskJSON{}}
	for _, d := range s.Disks {
		out.Disks = append(out.Disks, cloudDiskJSON{DiskID: d.DiskID, SnapshotID: d.SnapshotID})
	}
	return out
}
