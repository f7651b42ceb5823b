package cloudsnap

import (
	"context"
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
