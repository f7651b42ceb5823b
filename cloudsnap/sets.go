package cloudsnap

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/services/ecs"
)

// Set statuses. A set is as good as its worst snapshot.
const (
	StatusProgressing  = "progressing"
	StatusAccomplished = "accomplished"
	StatusFailed       = "failed"
)

// Set is one snapshot of each chosen disk, taken together.
type Set struct {
	ID     string
	Time   time.Time
	Status string
	Disks  []SetDisk
	// GroupID is the snapshot-consistent group, when the set is one.
	GroupID       string
	Cluster       string
	InstanceID    string
	Version       string
	EtcdRevision  int64
	Purpose       string
	RetentionDays int
	Expires       time.Time
	Tags          map[string]string
}

// SetDisk is one disk's snapshot in a set.
type SetDisk struct {
	DiskID     string
	SnapshotID string
	Status     string
	Progress   string
}

// Snapshot purposes, recorded in the kubekeep-purpose tag.
const (
	PurposeScheduled   = "scheduled"
	PurposeManual      = "manual"
	PurposePreRollback = "pre-rollback"
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

// QuotaError says a disk has no room for another manual snapshot.
type QuotaError struct {
	DiskID string
	Count  int
}

func (e *QuotaError) Error() string {
	return fmt.Sprintf("disk %s already has %d of the %d manual snapshots ECS allows per disk: run `kubekeep cloud prune` or delete snapshots of it before taking another",
		e.DiskID, e.Count, SnapshotQuota)
}

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
	for _, d := range disks {
		n, err := c.manualSnapshotCount(ctx, d.ID)
		if err != nil {
			return nil, err
		}
		if n >= SnapshotQuota {
			return nil, &QuotaError{DiskID: d.ID, Count: n}
		}
		if n >= SnapshotQuota-SnapshotQuota/10 {
			c.log.Warn("disk is close to the ECS manual snapshot quota", "disk", d.ID, "count", n, "quota", SnapshotQuota)
		}
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

func (c *Client) createGroup(ctx context.Context, setID string, disks []Disk, tags []ecsTag) error {
	ids := make([]string, len(disks))
	for i, d := range disks {
		ids[i] = d.ID
	}
	groupTags := make([]ecs.CreateSnapshotGroupTag, len(tags))
	for i, t := range tags {
		groupTags[i] = ecs.CreateSnapshotGroupTag{Key: t.Key, Value: t.Value}
	}
	return c.do(ctx, "CreateSnapshotGroup", true, func() error {
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
			err = fmt.Errorf("snapshot of disk %s for set %s: %w", d.ID, setID, err)
			// A set missing a disk cannot roll the VM back; do not leave
			// its other snapshots to look like a usable set.
			if cerr := c.deleteSnapshots(context.WithoutCancel(ctx), made); cerr != nil {
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

// ListSets lists the sets kubekeep made of this instance, oldest first.
func (c *Client) ListSets(ctx context.Context) ([]Set, error) {
	return c.listSets(ctx, nil)
}

// GetSet returns one set of this instance by id.
func (c *Client) GetSet(ctx context.Context, id string) (*Set, error) {
	sets, err := c.listSets(ctx, []ecsTag{{TagSet, id}})
	if err != nil {
		return nil, err
	}
	for i := range sets {
		if sets[i].ID == id {
			return &sets[i], nil
		}
	}
	return nil, &NotFoundError{SetID: id, InstanceID: c.instance}
}

// NotFoundError says no set with that id exists for the instance.
type NotFoundError struct{ SetID, InstanceID string }

func (e *NotFoundError) Error() string {
	return fmt.Sprintf("no kubekeep snapshot set %s for instance %s", e.SetID, e.InstanceID)
}

type snapInfo struct {
	id, diskID, status, progress string
	created                      time.Time
	retention                    int
	tags                         map[string]string
}

// listSets gathers sets from tagged snapshots and tagged snapshot groups:
// the snapshots inside a group carry no tags of their own.
func (c *Client) listSets(ctx context.Context, extra []ecsTag) ([]Set, error) {
	filter := append([]ecsTag{{TagManagedBy, ManagedByValue}, {TagInstance, c.instance}}, extra...)
	sets := map[string]*Set{}
	seen := map[string]bool{}
	add := func(tags map[string]string, groupID string, snaps []snapInfo, groupCreated time.Time) {
		id := tags[TagSet]
		if id == "" || tags[TagManagedBy] != ManagedByValue || tags[TagInstance] != c.instance {
			return
		}
		s := sets[id]
		if s == nil {
			s = setFromTags(id, tags)
			s.Time = groupCreated
			sets[id] = s
		}
		if groupID != "" {
			s.GroupID = groupID
		}
		for _, sn := range snaps {
			if seen[sn.id] {
				continue
			}
			seen[sn.id] = true
			s.Disks = append(s.Disks, SetDisk{DiskID: sn.diskID, SnapshotID: sn.id, Status: sn.status, Progress: sn.progress})
			if s.Time.IsZero() || sn.created.Before(s.Time) {
				s.Time = sn.created
			}
			if s.RetentionDays == 0 {
				s.RetentionDays = sn.retention
			}
		}
	}

	token := ""
	for {
		var resp *ecs.DescribeSnapshotsResponse
		err := c.do(ctx, "DescribeSnapshots", false, func() (err error) {
			r := ecs.CreateDescribeSnapshotsRequest()
			tags := make([]ecs.DescribeSnapshotsTag, len(filter))
			for i, t := range filter {
				tags[i] = ecs.DescribeSnapshotsTag{Key: t.Key, Value: t.Value}
			}
			r.Tag = &tags
			r.MaxResults = "100"
			r.NextToken = token
			resp, err = c.ecs.DescribeSnapshots(r)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("listing snapshots: %w", err)
		}
		for _, sn := range resp.Snapshots.Snapshot {
			tags := map[string]string{}
			for _, t := range sn.Tags.Tag {
				tags[t.TagKey] = t.TagValue
			}
			add(tags, "", []snapInfo{toSnapInfo(sn)}, time.Time{})
		}
		if token = resp.NextToken; token == "" {
			break
		}
	}

	token = ""
	for {
		var resp *ecs.DescribeSnapshotGroupsResponse
		err := c.do(ctx, "DescribeSnapshotGroups", false, func() (err error) {
			r := ecs.CreateDescribeSnapshotGroupsRequest()
			tags := make([]ecs.DescribeSnapshotGroupsTag, len(filter))
			for i, t := range filter {
				tags[i] = ecs.DescribeSnapshotGroupsTag{Key: t.Key, Value: t.Value}
			}
			r.Tag = &tags
			r.InstanceId = c.instance
			r.MaxResults = "100"
			r.NextToken = token
			resp, err = c.ecs.DescribeSnapshotGroups(r)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("listing snapshot groups: %w", err)
		}
		for _, g := range resp.SnapshotGroups.SnapshotGroup {
			tags := map[string]string{}
			for _, t := range g.Tags.Tag {
				tags[t.TagKey] = t.TagValue
			}
			var snaps []snapInfo
			for _, sn := range g.Snapshots.Snapshot {
				snaps = append(snaps, toSnapInfo(sn))
			}
			created, _ := time.Parse(isoSeconds, g.CreationTime)
			add(tags, g.SnapshotGroupId, snaps, created)
		}
		if token = resp.NextToken; token == "" {
			break
		}
	}

	out := make([]Set, 0, len(sets))
	for _, s := range sets {
		s.Status = setStatus(s.Disks)
		if s.RetentionDays <= 0 {
			s.RetentionDays = c.opts.RetentionDays
		}
		s.Expires = s.Time.Add(time.Duration(s.RetentionDays) * 24 * time.Hour)
		sort.Slice(s.Disks, func(i, j int) bool { return s.Disks[i].DiskID < s.Disks[j].DiskID })
		out = append(out, *s)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Time.Equal(out[j].Time) {
			return out[i].Time.Before(out[j].Time)
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

const isoSeconds = "2006-01-02T15:04:05Z"

func toSnapInfo(sn ecs.Snapshot) snapInfo {
	created, _ := time.Parse(isoSeconds, sn.CreationTime)
	return snapInfo{id: sn.SnapshotId, diskID: sn.SourceDiskId, status: sn.Status, progress: sn.Progress,
		created: created, retention: sn.RetentionDays}
}

func setFromTags(id string, tags map[string]string) *Set {
	s := &Set{ID: id, Cluster: tags[TagCluster], InstanceID: tags[TagInstance], Version: tags[TagVersion],
		Purpose: tags[TagPurpose], Tags: tags}
	if v, err := strconv.ParseInt(tags[TagEtcdRevision], 10, 64); err == nil {
		s.EtcdRevision = v
	}
	if v, err := strconv.Atoi(tags[TagRetention]); err == nil && v > 0 {
		s.RetentionDays = v
	}
	return s
}

func setStatus(disks []SetDisk) string {
	if len(disks) == 0 {
		return StatusFailed
	}
	status := StatusAccomplished
	for _, d := range disks {
		switch d.Status {
		case StatusFailed:
			return StatusFailed
		case StatusAccomplished:
		default:
			status = StatusProgressing
		}
	}
	return status
}

// SetFailedError says at least one snapshot of a set failed.
type SetFailedError struct{ Set Set }

func (e *SetFailedError) Error() string {
	var failed []string
	for _, d := range e.Set.Disks {
		if d.Status == StatusFailed {
			failed = append(failed, d.DiskID+" ("+d.SnapshotID+")")
		}
	}
	return fmt.Sprintf("snapshot set %s failed: snapshot of %s failed", e.Set.ID, strings.Join(failed, ", "))
}

// WaitSet polls a set until it is accomplished, failed, or WaitTimeout
// passes, calling progress after each poll.
func (c *Client) WaitSet(ctx context.Context, id string, progress func(Set)) (*Set, error) {
	deadline := c.clock.Now().Add(c.opts.WaitTimeout)
	for {
		s, err := c.GetSet(ctx, id)
		if err != nil {
			return nil, err
		}
		if progress != nil {
			progress(*s)
		}
		switch s.Status {
		case StatusAccomplished:
			return s, nil
		case StatusFailed:
			return s, &SetFailedError{Set: *s}
		}
		if !c.clock.Now().Before(deadline) {
			return s, fmt.Errorf("snapshot set %s still %s after %s: %w", id, s.Status, c.opts.WaitTimeout, ErrTimeout)
		}
		if err := c.clock.Sleep(ctx, c.opts.PollInterval); err != nil {
			return s, fmt.Errorf("waiting for snapshot set %s: %w", id, err)
		}
	}
}
