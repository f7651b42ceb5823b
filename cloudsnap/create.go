package cloudsnap

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/services/ecs"
)

// CreateRequest says what to record on a new set.
type CreateRequest struct {
	// Version and EtcdRevision identify the kubekeep store version taken
	// just before (application-consistent point); empty/0 when none was.
	Version      string
	EtcdRevision int64
	// Purpose defaults to manual.
	Purpose string
	// Disks overrides Options.Disks for this set.
	Disks []string
	// Wait blocks until every snapshot is accomplished (or failed, or
	// WaitTimeout passes).
	Wait bool
	// Progress, when set, is called with the set after each poll.
	Progress func(Set)
	// id fixes the set id (rollback's safety set, so a resumed rollback
	// finds the set it started instead of taking another).
	id string
}

// NewSetID makes a set id: sortable by time, unique by a random suffix.
func NewSetID(t time.Time) string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return "kk-" + t.UTC().Format("20060102-150405") + "-" + hex.EncodeToString(b[:])
}

// clientToken is the idempotency token of one create: the same set and
// disk always give the same token, so a retried create returns the first
// snapshot instead of making a second one. ECS allows 64 ASCII characters.
func clientToken(parts ...string) string {
	h := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return "kk-" + hex.EncodeToString(h[:16])
}

func (c *Client) tags(setID string, req CreateRequest, retention int) []ecsTag {
	tags := []ecsTag{
		{TagManagedBy, ManagedByValue},
		{TagSet, setID},
		{TagInstance, c.instance},
		{TagPurpose, req.Purpose},
		{TagRetention, strconv.Itoa(retention)},
	}
	if c.opts.Cluster != "" {
		tags = append(tags, ecsTag{TagCluster, c.opts.Cluster})
	}
	if req.Version != "" {
		tags = append(tags, ecsTag{TagVersion, req.Version})
	}
	if req.EtcdRevision > 0 {
		tags = append(tags, ecsTag{TagEtcdRevision, strconv.FormatInt(req.EtcdRevision, 10)})
	}
	return tags
}

type ecsTag struct{ Key, Value string }

// PolicyConflictError refuses a set in agent mode on disks an automatic
// snapshot policy already snapshots: both together double the snapshots.
type PolicyConflictError struct {
	DiskID, PolicyID string
}

func (e *PolicyConflictError) Error() string {
	return fmt.Sprintf("disk %s already has automatic snapshot policy %s while cloud.mode is agent: running both doubles the snapshots; set cloud.mode: policy, or cancel the policy on the disk",
		e.DiskID, e.PolicyID)
}

// CreateSet takes one snapshot set of the chosen disks.
func (c *Client) CreateSet(ctx context.Context, req CreateRequest) (*Set, error) {
	if req.Purpose == "" {
		req.Purpose = PurposeManual
	}
	only := c.opts.Disks
	if len(req.Disks) > 0 {
		only = req.Disks
	}
	disks, err := c.disks(ctx, only)
	if err != nil {
		return nil, err
	}
	if c.opts.Mode == "agent" && req.Purpose != PurposePreRollback {
		for _, d := range disks {
			if d.AutoSnapshotPolicyID != "" {
				return nil, &PolicyConflictError{DiskID: d.ID, PolicyID: d.AutoSnapshotPolicyID}
			}
		}
	}
	if err := c.checkQuota(ctx, disks); err != nil {
		return nil, err
	}
	setID := req.id
	if setID == "" {
		setID = NewSetID(c.clock.Now())
	}
	grouped := len(disks) <= 16
	for _, d := range disks {
		if !strings.HasPrefix(d.Category, "cloud_essd") {
			grouped = false
		}
	}
	retention := c.opts.RetentionDays
	tags := c.tags(setID, req, retention)
	if grouped {
		err = c.createGroup(ctx, setID, disks, tags)
	} else {
		err = c.createPerDisk(ctx, setID, disks, tags, retention)
	}
	if err != nil {
		return nil, err
	}
	c.log.Info("snapshot set started", "set", setID, "disks", len(disks), "group", grouped)
	if !req.Wait {
		return c.GetSet(ctx, setID)
	}
	return c.WaitSet(ctx, setID, req.Progress)
}

func (c *Client) createGroup(ctx context.Context, setID string, disks []Disk, tags []ecsTag) error {
	ids := make([]string, len(disks))
	for i, d := range disks {
		ids[i] = d.ID
	}
	groupTags := make([]ecs.CreateSnapshotGroupTag, len(tags))
	for i, t := range tags {
		groupTags[i] = ecs.CreateSnapshotGroupTag{Key: t.Key, Value: t.Value}
	}
	err := c.do(ctx, "CreateSnapshotGroup", true, func() error {
		r := ecs.CreateCreateSnapshotGroupRequest()
		r.InstanceId = c.instance
		r.DiskId = &ids
		r.Name = setID
		r.Description = "kubekeep snapshot set " + setID
		r.Tag = &groupTags
		r.ClientToken = clientToken(setID, "group")
		_, err := c.ecs.CreateSnapshotGroup(r)
		return err
	})
	if IsCode(err, quotaCode) {
		// Something took snapshots since the count; say which disk is full.
		return c.groupQuotaError(ctx, disks, err)
	}
	return err
}

func (c *Client) createPerDisk(ctx context.Context, setID string, disks []Disk, tags []ecsTag, retention int) error {
	snapTags := make([]ecs.CreateSnapshotTag, len(tags))
	for i, t := range tags {
		snapTags[i] = ecs.CreateSnapshotTag{Key: t.Key, Value: t.Value}
	}
	var made []string
	for _, d := range disks {
		var resp *ecs.CreateSnapshotResponse
		err := c.do(ctx, "CreateSnapshot", true, func() (err error) {
			r := ecs.CreateCreateSnapshotRequest()
			r.DiskId = d.ID
			r.SnapshotName = "kubekeep-" + setID + "-" + d.ID
			r.Description = "kubekeep snapshot set " + setID
			r.RetentionDays = requestsInt(retention)
			r.Tag = &snapTags
			r.ClientToken = clientToken(setID, d.ID)
			resp, err = c.ecs.CreateSnapshot(r)
			return err
		})
		if err != nil {
			// A set missing a disk cannot roll the VM back; do not leave
			// its other snapshots to look like a usable set.
			cerr := c.deleteSnapshots(context.WithoutCancel(ctx), made)
			if IsCode(err, quotaCode) {
				// Something took snapshots since the count.
				n, _ := c.manualSnapshotCount(ctx, d.ID)
				err = c.quotaError(ctx, d.ID, max(n, SnapshotQuota), err)
			}
			err = fmt.Errorf("snapshot of disk %s for set %s: %w", d.ID, setID, err)
			if cerr != nil {
				return errors.Join(err, fmt.Errorf("cleaning up the incomplete set %s also failed (delete %v by hand): %w", setID, made, cerr))
			}
			return err
		}
		made = append(made, resp.SnapshotId)
	}
	return nil
}

func (c *Client) deleteSnapshots(ctx context.Context, ids []string) error {
	var errs []error
	for _, id := range ids {
		err := c.do(ctx, "DeleteSnapshot", false, func() error {
			r := ecs.CreateDeleteSnapshotRequest()
			r.SnapshotId = id
			r.Force = "true"
			_, err := c.ecs.DeleteSnapshot(r)
			return err
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("delete snapshot %s: %w", id, err))
		}
	}
	return errors.Join(errs...)
}
