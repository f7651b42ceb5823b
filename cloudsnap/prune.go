package cloudsnap

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/services/ecs"
)

// PruneResult says what Prune deleted (or would delete) and kept.
type PruneResult struct {
	Deleted []Set
	Kept    []KeptSet
	// Deferred, when set, says why nothing was pruned this time.
	Deferred string
}

// KeptSet is a set Prune left alone, and why.
type KeptSet struct {
	Set    Set
	Reason string
}

// Prune deletes kubekeep's expired and failed sets of this instance. It
// only ever sees snapshots tagged managed-by=kubekeep for this instance, it
// never deletes the newest accomplished set (even expired: it may be the
// only way back), and it does nothing while a set is still progressing
// (the newest set might be about to replace the one it would keep).
func (c *Client) Prune(ctx context.Context, dryRun bool) (*PruneResult, error) {
	sets, err := c.ListSets(ctx)
	if err != nil {
		return nil, err
	}
	res := &PruneResult{}
	for _, s := range sets {
		if s.Status == StatusProgressing {
			res.Deferred = fmt.Sprintf("set %s is still progressing; pruning waits until it is done", s.ID)
			for _, s := range sets {
				res.Kept = append(res.Kept, KeptSet{Set: s, Reason: "prune deferred"})
			}
			return res, nil
		}
	}
	plan := prunePlan(sets, c.clock.Now())
	res.Kept = plan.Kept
	var errs []error
	for _, s := range plan.Deleted {
		if !dryRun {
			if err := c.deleteSet(ctx, s); err != nil {
				errs = append(errs, err)
				continue
			}
			c.log.Info("pruned snapshot set", "set", s.ID, "status", s.Status, "expired", s.Expires)
		}
		res.Deleted = append(res.Deleted, s)
	}
	return res, errors.Join(errs...)
}

// prunePlan splits sets (oldest first) into those Prune deletes (expired
// or failed) and those it keeps (the newest accomplished set, even expired:
// it may be the only way back; and every set not expired yet).
func prunePlan(sets []Set, now time.Time) PruneResult {
	var plan PruneResult
	newest := ""
	for _, s := range sets {
		if s.Status == StatusAccomplished {
			newest = s.ID
		}
	}
	for _, s := range sets {
		reason := ""
		switch {
		case s.ID == newest:
			reason = "newest accomplished set"
		case s.Status == StatusFailed:
		case now.Before(s.Expires):
			reason = "not expired"
		}
		if reason != "" {
			plan.Kept = append(plan.Kept, KeptSet{Set: s, Reason: reason})
			continue
		}
		plan.Deleted = append(plan.Deleted, s)
	}
	return plan
}

func (c *Client) deleteSet(ctx context.Context, s Set) error {
	if s.GroupID != "" {
		err := c.do(ctx, "DeleteSnapshotGroup", false, func() error {
			r := ecs.CreateDeleteSnapshotGroupRequest()
			r.SnapshotGroupId = s.GroupID
			_, err := c.ecs.DeleteSnapshotGroup(r)
			return err
		})
		if err != nil && !IsCode(err, "InvalidSnapshotGroupId.NotFound") {
			return fmt.Errorf("deleting set %s (group %s): %w", s.ID, s.GroupID, err)
		}
	}
	// Group members are gone with their group; ECS ignores unknown ids, so
	// this also sweeps per-disk members.
	ids := make([]string, 0, len(s.Disks))
	for _, d := range s.Disks {
		ids = append(ids, d.SnapshotID)
	}
	if err := c.deleteSnapshots(ctx, ids); err != nil {
		return fmt.Errorf("deleting set %s: %w", s.ID, err)
	}
	return nil
}
