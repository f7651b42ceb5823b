package cloudsnap

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strconv"

	"github.com/aliyun/alibaba-cloud-sdk-go/services/ecs"
)

// PolicyOptions describe the native automatic snapshot policy.
type PolicyOptions struct {
	// TimePoints are hours of the day in UTC+8, as ECS reads them.
	TimePoints []int
	// RetentionDays defaults to Options.RetentionDays.
	RetentionDays int
	// Name defaults to kubekeep-<cluster or instance>.
	Name string
}

// PolicyResult says which policy now covers which disks.
type PolicyResult struct {
	PolicyID string
	Name     string
	Created  bool
	Disks    []string
}

// ApplyPolicy makes ECS take the snapshots itself: it finds (or creates)
// the kubekeep automatic snapshot policy and applies it to the chosen
// disks. Refused in agent mode, where it would double the snapshots.
func (c *Client) ApplyPolicy(ctx context.Context, po PolicyOptions) (*PolicyResult, error) {
	if c.opts.Mode != "policy" {
		return nil, fmt.Errorf("cloud.mode is %q: the agent already takes snapshots, and a policy as well would double them; set cloud.mode: policy first", c.opts.Mode)
	}
	if len(po.TimePoints) == 0 {
		return nil, fmt.Errorf("no policy time points given")
	}
	points := slices.Clone(po.TimePoints)
	sort.Ints(points)
	var hours []string
	for _, h := range points {
		if h < 0 || h > 23 {
			return nil, fmt.Errorf("policy time point %d is not an hour 0..23 (UTC+8)", h)
		}
		hours = append(hours, strconv.Itoa(h))
	}
	if po.RetentionDays <= 0 {
		po.RetentionDays = c.opts.RetentionDays
	}
	if po.Name == "" {
		po.Name = "kubekeep-" + c.instance
		if c.opts.Cluster != "" {
			po.Name = "kubekeep-" + c.opts.Cluster
		}
	}
	disks, err := c.Disks(ctx)
	if err != nil {
		return nil, err
	}
	hoursJSON, _ := json.Marshal(hours)
	res := &PolicyResult{Name: po.Name}

	var found *ecs.DescribeAutoSnapshotPolicyExResponse
	err = c.do(ctx, "DescribeAutoSnapshotPolicyEx", false, func() (err error) {
		r := ecs.CreateDescribeAutoSnapshotPolicyExRequest()
		r.AutoSnapshotPolicyName = po.Name
		r.PageSize = "100"
		found, err = c.ecs.DescribeAutoSnapshotPolicyEx(r)
		return err
	})
	if err != nil {
		return nil, err
	}
	for _, p := range found.AutoSnapshotPolicies.AutoSnapshotPolicy {
		if p.AutoSnapshotPolicyName != po.Name {
			continue
		}
		var have []string
		_ = json.Unmarshal([]byte(p.TimePoints), &have)
		if !slices.Equal(have, hours) || p.RetentionDays != po.RetentionDays {
			return nil, fmt.Errorf("automatic snapshot policy %s (%s) exists with time points %s and %d retention days, not %s and %d: change it in the console or pick another name",
				po.Name, p.AutoSnapshotPolicyId, p.TimePoints, p.RetentionDays, hoursJSON, po.RetentionDays)
		}
		res.PolicyID = p.AutoSnapshotPolicyId
	}
	if res.PolicyID == "" {
		var created *ecs.CreateAutoSnapshotPolicyResponse
		err = c.do(ctx, "CreateAutoSnapshotPolicy", false, func() (err error) {
			r := ecs.CreateCreateAutoSnapshotPolicyRequest()
			r.AutoSnapshotPolicyName = po.Name
			r.TimePoints = string(hoursJSON)
			r.RepeatWeekdays = `["1","2","3","4","5","6","7"]`
			r.RetentionDays = requestsInt(po.RetentionDays)
			created, err = c.ecs.CreateAutoSnapshotPolicy(r)
			return err
		})
		if err != nil {
			return nil, err
		}
		res.PolicyID, res.Created = created.AutoSnapshotPolicyId, true
	}
	for _, d := range disks {
		res.Disks = append(res.Disks, d.ID)
	}
	err = c.do(ctx, "ApplyAutoSnapshotPolicy", false, func() error {
		r := ecs.CreateApplyAutoSnapshotPolicyRequest()
		r.AutoSnapshotPolicyId = res.PolicyID
		r.DiskIds = jsonArray(res.Disks)
		_, err := c.ecs.ApplyAutoSnapshotPolicy(r)
		return err
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}
