package cloudsnap

import (
	"context"
	"fmt"
	"strings"

	"github.com/aliyun/alibaba-cloud-sdk-go/services/ecs"
)

// quotaCode is ECS's refusal of a snapshot on a disk that has SnapshotQuota.
const quotaCode = "QuotaExceed.Snapshot"

// QuotaError says a disk has no room for another manual snapshot, and what
// would make room. kubekeep's own snapshots are only part of the count: the
// quota is per disk, whoever took them, and `kubekeep cloud prune` rightly
// never touches snapshots kubekeep did not make, so the error says how many
// are whose.
type QuotaError struct {
	DiskID string
	// Count is how many manual snapshots the disk has, of Quota allowed.
	Count, Quota int
	// Kubekeep of them are in kubekeep's sets of this instance; Prunable
	// of those are expired or failed, which `kubekeep cloud prune` deletes.
	// Both are -1 when listing the sets failed (Breakdown says why).
	Kubekeep, Prunable int
	Breakdown          error
	// RetentionDays is what new sets keep (cloud.retentionDays).
	RetentionDays int
	// Refusal is ECS's own answer, when ECS refused the snapshot (someone
	// took snapshots between kubekeep's count and its create); nil when the
	// count stopped kubekeep before it asked.
	Refusal error
}

// Foreign is how many of the disk's snapshots are not in kubekeep's sets of
// this instance: taken by hand, by another tool, by an automatic snapshot
// policy, or by kubekeep for another instance the disk was attached to.
func (e *QuotaError) Foreign() int { return max(e.Count-e.Kubekeep, 0) }

func (e *QuotaError) Unwrap() error { return e.Refusal }

func (e *QuotaError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "disk %s already has %d of the %d manual snapshots ECS allows per disk", e.DiskID, e.Count, e.Quota)
	if e.Kubekeep < 0 {
		fmt.Fprintf(&b, " (how many are kubekeep's is unknown: %v). To make room, delete snapshots of the disk you no longer need "+
			"(ECS console, Snapshots, filtered by disk %s), or have the quota raised; `kubekeep cloud prune --dry-run` shows what "+
			"kubekeep's own retention would delete", e.Breakdown, e.DiskID)
		return b.String()
	}
	fmt.Fprintf(&b, ": %d in kubekeep's sets of this instance, %d not. To make room", e.Kubekeep, e.Foreign())
	var fixes []string
	if e.Prunable > 0 {
		fixes = append(fixes, fmt.Sprintf("run `kubekeep cloud prune`: %d of kubekeep's are expired or failed and it deletes them", e.Prunable))
	}
	if f := e.Foreign(); f > 0 {
		fixes = append(fixes, fmt.Sprintf("delete those of the other %d you no longer need (ECS console, Snapshots, filtered by disk %s; "+
			"`kubekeep cloud prune` never deletes snapshots kubekeep did not make) or have the quota raised", f, e.DiskID))
	}
	if kept := e.Kubekeep - e.Prunable; kept > 0 {
		fixes = append(fixes, fmt.Sprintf("keep fewer kubekeep sets (%d of its snapshots of the disk are within their retention): "+
			"lower cloud.retentionDays (now %d; sets already taken keep theirs) or take sets less often (schedules.cloudSnapshot)", kept, e.RetentionDays))
	}
	b.WriteString(": " + strings.Join(fixes, "; or "))
	return b.String()
}

// checkQuota counts each disk's manual snapshots before a set is made, and
// refuses the set (with the breakdown) when one disk is full: ECS would
// refuse that disk's snapshot after the others were taken.
func (c *Client) checkQuota(ctx context.Context, disks []Disk) error {
	for _, d := range disks {
		n, err := c.manualSnapshotCount(ctx, d.ID)
		if err != nil {
			return err
		}
		if n >= SnapshotQuota {
			return c.quotaError(ctx, d.ID, n, nil)
		}
		if n >= SnapshotQuota-SnapshotQuota/10 {
			c.log.Warn("disk is close to the ECS manual snapshot quota", "disk", d.ID, "count", n, "quota", SnapshotQuota)
		}
	}
	return nil
}

// quotaError says how many of a full disk's snapshots are kubekeep's and
// how many of those prune would delete.
func (c *Client) quotaError(ctx context.Context, diskID string, count int, refusal error) *QuotaError {
	e := &QuotaError{DiskID: diskID, Count: count, Quota: SnapshotQuota, RetentionDays: c.opts.RetentionDays, Refusal: refusal}
	sets, err := c.ListSets(ctx)
	if err != nil {
		e.Kubekeep, e.Prunable, e.Breakdown = -1, -1, err
		return e
	}
	prunable := map[string]bool{}
	for _, s := range prunePlan(sets, c.clock.Now()).Deleted {
		prunable[s.ID] = true
	}
	for _, s := range sets {
		for _, d := range s.Disks {
			if d.DiskID == diskID {
				e.Kubekeep++
				if prunable[s.ID] {
					e.Prunable++
				}
			}
		}
	}
	return e
}

// groupQuotaError is quotaError for a snapshot group ECS refused: the
// refusal does not say which disk is full, so each is counted again.
func (c *Client) groupQuotaError(ctx context.Context, disks []Disk, refusal error) error {
	full, most := "", -1
	for _, d := range disks {
		n, err := c.manualSnapshotCount(ctx, d.ID)
		if err != nil {
			return refusal
		}
		if n > most {
			full, most = d.ID, n
		}
	}
	return c.quotaError(ctx, full, most, refusal)
}

func (c *Client) manualSnapshotCount(ctx context.Context, diskID string) (int, error) {
	var resp *ecs.DescribeSnapshotsResponse
	err := c.do(ctx, "DescribeSnapshots", false, func() (err error) {
		r := ecs.CreateDescribeSnapshotsRequest()
		r.DiskId = diskID
		r.SnapshotType = "user"
		r.MaxResults = "1"
		resp, err = c.ecs.DescribeSnapshots(r)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("counting snapshots of disk %s: %w", diskID, err)
	}
	return resp.TotalCount, nil
}
