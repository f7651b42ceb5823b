package ecsfake

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

type handler func(s *Server, p url.Values) (map[string]any, *apiError)

var handlers = map[string]handler{
	"DescribeInstances":            (*Server).describeInstances,
	"DescribeDisks":                (*Server).describeDisks,
	"StopInstance":                 (*Server).stopInstance,
	"StartInstance":                (*Server).startInstance,
	"CreateSnapshot":               (*Server).createSnapshot,
	"CreateSnapshotGroup":          (*Server).createSnapshotGroup,
	"DescribeSnapshots":            (*Server).describeSnapshots,
	"DescribeSnapshotGroups":       (*Server).describeSnapshotGroups,
	"DeleteSnapshot":               (*Server).deleteSnapshot,
	"DeleteSnapshotGroup":          (*Server).deleteSnapshotGroup,
	"ResetDisk":                    (*Server).resetDisk,
	"CreateAutoSnapshotPolicy":     (*Server).createAutoSnapshotPolicy,
	"ApplyAutoSnapshotPolicy":      (*Server).applyAutoSnapshotPolicy,
	"DescribeAutoSnapshotPolicyEx": (*Server).describeAutoSnapshotPolicyEx,
}

const isoSeconds = "2006-01-02T15:04:05Z"

func iso(t time.Time) string { return t.UTC().Format(isoSeconds) }

// jsonList parses the JSON-array-in-a-string parameters ECS takes
// (DiskIds, SnapshotIds, InstanceIds).
func jsonList(p url.Values, name string) ([]string, *apiError) {
	raw := p.Get(name)
	if raw == "" {
		return nil, nil
	}
	var out []string
	if err := json.Unmarshal([]byte(raw), &out); err != nil {
		return nil, errorf(http.StatusBadRequest, "InvalidParameter", "The specified parameter %q is not a JSON array of strings.", name)
	}
	return out, nil
}

var indexed = regexp.MustCompile(`^([A-Za-z]+)\.([0-9]+)(?:\.([A-Za-z]+))?$`)

// repeated collects Name.N (or Name.N.Field) parameters in order of N.
func repeated(p url.Values, name string) map[int]map[string]string {
	out := map[int]map[string]string{}
	for k := range p {
		m := indexed.FindStringSubmatch(k)
		if m == nil || m[1] != name {
			continue
		}
		n, err := strconv.Atoi(m[2])
		if err != nil {
			continue
		}
		if out[n] == nil {
			out[n] = map[string]string{}
		}
		out[n][m[3]] = p.Get(k)
	}
	return out
}

func orderedKeys(m map[int]map[string]string) []int {
	keys := make([]int, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	return keys
}

func parseTags(p url.Values) ([]tag, *apiError) {
	r := repeated(p, "Tag")
	if len(r) > 20 {
		return nil, errorf(http.StatusBadRequest, "InvalidTagCount", "The specified tags are beyond the permitted range.")
	}
	var tags []tag
	for _, n := range orderedKeys(r) {
		k := r[n]["Key"]
		if k == "" {
			return nil, errorf(http.StatusBadRequest, "InvalidTagKey.Malformed", "The specified Tag.n.Key is not valid.")
		}
		if strings.HasPrefix(k, "aliyun") || strings.HasPrefix(k, "acs:") || len(k) > 128 {
			return nil, errorf(http.StatusBadRequest, "InvalidTagKey.Malformed", "The specified Tag.n.Key is not valid.")
		}
		tags = append(tags, tag{k, r[n]["Value"]})
	}
	return tags, nil
}

func stringList(p url.Values, name string) []string {
	r := repeated(p, name)
	var out []string
	for _, n := range orderedKeys(r) {
		out = append(out, r[n][""])
	}
	return out
}

func matchTags(have, want []tag) bool {
	for _, w := range want {
		found := false
		for _, h := range have {
			if h.Key == w.Key && (w.Value == "" || h.Value == w.Value) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func tagsJSON(tags []tag) map[string]any {
	list := make([]map[string]string, 0, len(tags))
	for _, t := range tags {
		list = append(list, map[string]string{"TagKey": t.Key, "TagValue": t.Value})
	}
	return map[string]any{"Tag": list}
}

// page cuts a list for NextToken/MaxResults paging. The token is the
// offset, hex, behind a prefix so that a token from another listing or a
// mangled one is refused the way ECS refuses it.
func page(total int, p url.Values) (start, end int, next string, e *apiError) {
	max := 10
	if v := p.Get("MaxResults"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			return 0, 0, "", errorf(http.StatusBadRequest, "InvalidParameter.MaxResults", "The specified parameter MaxResults is not valid: it must be 1 to 100.")
		}
		max = n
	}
	if tok := p.Get("NextToken"); tok != "" {
		off, err := strconv.ParseInt(strings.TrimPrefix(tok, "caeba0bbb2be03f8"), 16, 32)
		if !strings.HasPrefix(tok, "caeba0bbb2be03f8") || err != nil || off < 0 || int(off) > total {
			return 0, 0, "", errorf(http.StatusBadRequest, "InvalidParameter.NextToken", "The specified NextToken is not valid.")
		}
		start = int(off)
	} else if v := p.Get("PageNumber"); v != "" {
		pn, err := strconv.Atoi(v)
		size := 10
		if ps := p.Get("PageSize"); ps != "" {
			size, _ = strconv.Atoi(ps)
		}
		if err != nil || pn < 1 || size < 1 || size > 100 {
			return 0, 0, "", errorf(http.StatusBadRequest, "InvalidParameter", "The specified PageNumber or PageSize is not valid.")
		}
		start, max = (pn-1)*size, size
		if start > total {
			start = total
		}
	}
	end = start + max
	if end > total {
		end = total
	}
	if end < total {
		next = "caeba0bbb2be03f8" + strconv.FormatInt(int64(end), 16)
	}
	return start, end, next, nil
}

func (s *Server) instanceOf(id string) (*instance, *apiError) {
	if id == "" {
		return nil, missing("InstanceId")
	}
	in := s.instances[id]
	if in == nil {
		return nil, errorf(http.StatusNotFound, "InvalidInstanceId.NotFound", "The specified InstanceId does not exist.")
	}
	return in, nil
}

func (s *Server) describeInstances(p url.Values) (map[string]any, *apiError) {
	ids, e := jsonList(p, "InstanceIds")
	if e != nil {
		return nil, e
	}
	var list []*instance
	for _, in := range s.instances {
		if len(ids) > 0 && !contains(ids, in.id) {
			continue
		}
		if st := p.Get("Status"); st != "" && st != in.status {
			continue
		}
		list = append(list, in)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].id < list[j].id })
	start, end, next, e := page(len(list), p)
	if e != nil {
		return nil, e
	}
	out := []map[string]any{}
	for _, in := range list[start:end] {
		out = append(out, map[string]any{
			"InstanceId": in.id, "InstanceName": in.name, "Status": in.status,
			"RegionId": s.opts.Region, "ZoneId": in.zone,
		})
	}
	return map[string]any{"Instances": map[string]any{"Instance": out}, "TotalCount": len(list), "NextToken": next,
		"PageSize": end - start}, nil
}

func contains(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

func (s *Server) describeDisks(p url.Values) (map[string]any, *apiError) {
	ids, e := jsonList(p, "DiskIds")
	if e != nil {
		return nil, e
	}
	var list []*disk
	for _, d := range s.disks {
		if len(ids) > 0 && !contains(ids, d.id) {
			continue
		}
		if v := p.Get("InstanceId"); v != "" && v != d.instanceID {
			continue
		}
		if v := p.Get("DiskType"); v != "" && v != "all" && v != d.typ {
			continue
		}
		list = append(list, d)
	}
	sort.Slice(list, func(i, j int) bool {
		// ECS lists the system disk first.
		if (list[i].typ == "system") != (list[j].typ == "system") {
			return list[i].typ == "system"
		}
		return list[i].id < list[j].id
	})
	start, end, next, e := page(len(list), p)
	if e != nil {
		return nil, e
	}
	out := []map[string]any{}
	for _, d := range list[start:end] {
		status := "Available"
		if d.instanceID != "" {
			status = "In_use"
		}
		out = append(out, map[string]any{
			"DiskId": d.id, "InstanceId": d.instanceID, "Type": d.typ, "Category": d.category,
			"Device": d.device, "Size": d.size, "Status": status, "RegionId": s.opts.Region, "ZoneId": d.zone,
			"AutoSnapshotPolicyId": d.policyID, "EnableAutoSnapshot": d.policyID != "", "Portable": d.typ == "data",
		})
	}
	return map[string]any{"Disks": map[string]any{"Disk": out}, "TotalCount": len(list), "NextToken": next,
		"PageSize": end - start}, nil
}

func (s *Server) stopInstance(p url.Values) (map[string]any, *apiError) {
	in, e := s.instanceOf(p.Get("InstanceId"))
	if e != nil {
		return nil, e
	}
	if in.status != "Running" {
		return nil, errorf(http.StatusForbidden, "IncorrectInstanceStatus", "The current status of the resource does not support this operation.")
	}
	in.status = "Stopping"
	in.until = s.opts.Clock.Now().Add(s.opts.StopDuration)
	// Stopping an instance fails the snapshots its disks are taking.
	for _, snap := range s.snapshots {
		if d := s.disks[snap.diskID]; d != nil && d.instanceID == in.id && snap.status == "progressing" {
			snap.status = "failed"
		}
	}
	return map[string]any{}, nil
}

func (s *Server) startInstance(p url.Values) (map[string]any, *apiError) {
	in, e := s.instanceOf(p.Get("InstanceId"))
	if e != nil {
		return nil, e
	}
	if in.status != "Stopped" {
		return nil, errorf(http.StatusForbidden, "IncorrectInstanceStatus", "The current status of the resource does not support this operation.")
	}
	in.status = "Starting"
	in.until = s.opts.Clock.Now().Add(s.opts.StartDuration)
	return map[string]any{}, nil
}

// fingerprint identifies a request's own parameters, so a ClientToken
// reused with different parameters is told apart from a retry.
func fingerprint(p url.Values) string {
	keys := make([]string, 0, len(p))
	for k := range p {
		if !commonParams[k] {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	h := sha256.New()
	for _, k := range keys {
		h.Write([]byte(k + "=" + p.Get(k) + "\n"))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// idempotency answers a retried create with the first answer.
func (s *Server) idempotency(p url.Values) (map[string]any, bool, *apiError) {
	tok := p.Get("ClientToken")
	if tok == "" {
		return nil, false, nil
	}
	if len(tok) > 64 {
		return nil, false, errorf(http.StatusBadRequest, "InvalidClientToken.Malformed", "The specified ClientToken is not valid.")
	}
	prev, ok := s.tokens[tok]
	if !ok {
		return nil, false, nil
	}
	if prev.action != p.Get("Action") || prev.fingerprint != fingerprint(p) {
		return nil, false, errorf(http.StatusBadRequest, "IdempotentParameterMismatch", "The request uses the same client token as a previous, but non-identical request.")
	}
	return prev.result, true, nil
}

func (s *Server) remember(p url.Values, result map[string]any) {
	if tok := p.Get("ClientToken"); tok != "" {
		s.tokens[tok] = idempotent{action: p.Get("Action"), fingerprint: fingerprint(p), result: result}
	}
}

// checkSnapshottable applies the per-disk limits a new snapshot must pass.
func (s *Server) checkSnapshottable(d *disk) *apiError {
	manual := 0
	for _, snap := range s.snapshots {
		if snap.diskID != d.id {
			continue
		}
		if snap.status == "progressing" {
			return errorf(http.StatusForbidden, "IncorrectDiskStatus.CreatingSnapshot", "A snapshot is being created for the specified disk.")
		}
		if snap.typ == "user" {
			manual++
		}
	}
	if manual >= SnapshotQuota {
		return errorf(http.StatusForbidden, "QuotaExceed.Snapshot", "The maximum number of snapshots for the disk is exceeded.")
	}
	if in := s.instances[d.instanceID]; in != nil && (in.status == "Stopping" || in.status == "Starting") {
		return errorf(http.StatusForbidden, "IncorrectInstanceStatus", "The current status of the resource does not support this operation.")
	}
	return nil
}

func (s *Server) newSnapshot(d *disk, name, desc string, retention int, tags []tag, groupID string) *snapshot {
	snap := &snapshot{id: s.newID("s-"), name: name, description: desc, diskID: d.id, typ: "user",
		groupID: groupID, created: s.opts.Clock.Now(), retentionDays: retention, status: "progressing",
		tags: tags, content: d.content}
	if s.failNext[d.id] > 0 {
		s.failNext[d.id]--
		snap.willFail = true
	}
	s.snapshots[snap.id] = snap
	return snap
}

func (s *Server) createSnapshot(p url.Values) (map[string]any, *apiError) {
	if prev, ok, e := s.idempotency(p); e != nil || ok {
		return prev, e
	}
	id := p.Get("DiskId")
	if id == "" {
		return nil, missing("DiskId")
	}
	d := s.disks[id]
	if d == nil {
		return nil, errorf(http.StatusNotFound, "InvalidDiskId.NotFound", "The specified disk does not exist.")
	}
	name := p.Get("SnapshotName")
	if strings.HasPrefix(name, "auto") || strings.HasPrefix(name, "http://") || strings.HasPrefix(name, "https://") || len(name) > 128 {
		return nil, errorf(http.StatusBadRequest, "InvalidSnapshotName.Malformed", "Specified snapshot name is not valid.")
	}
	retention := 0
	if v := p.Get("RetentionDays"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 65536 {
			return nil, errorf(http.StatusBadRequest, "InvalidRetentionDays", "The specified RetentionDays is not valid.")
		}
		retention = n
	}
	tags, e := parseTags(p)
	if e != nil {
		return nil, e
	}
	if e := s.checkSnapshottable(d); e != nil {
		return nil, e
	}
	snap := s.newSnapshot(d, name, p.Get("Description"), retention, tags, "")
	result := map[string]any{"SnapshotId": snap.id}
	s.remember(p, result)
	return result, nil
}

func (s *Server) createSnapshotGroup(p url.Values) (map[string]any, *apiError) {
	if prev, ok, e := s.idempotency(p); e != nil || ok {
		return prev, e
	}
	in, e := s.instanceOf(p.Get("InstanceId"))
	if e != nil {
		return nil, e
	}
	want := stringList(p, "DiskId")
	exclude := stringList(p, "ExcludeDiskId")
	var members []*disk
	for _, d := range s.disks {
		if d.instanceID != in.id || contains(exclude, d.id) || (len(want) > 0 && !contains(want, d.id)) {
			continue
		}
		members = append(members, d)
	}
	for _, id := range want {
		if d := s.disks[id]; d == nil || d.instanceID != in.id {
			return nil, errorf(http.StatusNotFound, "InvalidDiskId.NotFound", "The specified disk does not exist or is not attached to the instance.")
		}
	}
	if len(members) == 0 || len(members) > 16 {
		return nil, errorf(http.StatusBadRequest, "InvalidParameter.DiskIds", "A snapshot-consistent group takes 1 to 16 disks.")
	}
	sort.Slice(members, func(i, j int) bool { return members[i].id < members[j].id })
	for _, d := range members {
		if !strings.HasPrefix(d.category, "cloud_essd") {
			return nil, errorf(http.StatusForbidden, "OperationDenied.DiskCategory", "The category of disk %s does not support snapshot-consistent groups.", d.id)
		}
		if e := s.checkSnapshottable(d); e != nil {
			return nil, e
		}
	}
	tags, e := parseTags(p)
	if e != nil {
		return nil, e
	}
	g := &group{id: s.newID("ssg-"), name: p.Get("Name"), description: p.Get("Description"), instanceID: in.id,
		created: s.opts.Clock.Now(), tags: tags}
	for _, d := range members {
		// Snapshots in a group carry no tags of their own and never expire
		// by themselves: CreateSnapshotGroup takes no RetentionDays.
		snap := s.newSnapshot(d, "", g.description, 0, nil, g.id)
		g.snapshotIDs = append(g.snapshotIDs, snap.id)
	}
	s.groups[g.id] = g
	result := map[string]any{"SnapshotGroupId": g.id}
	s.remember(p, result)
	return result, nil
}

func (s *Server) snapshotJSON(snap *snapshot) map[string]any {
	srcType, size := "data", 0
	if d := s.disks[snap.diskID]; d != nil {
		srcType, size = d.typ, d.size
	}
	return map[string]any{
		"SnapshotId": snap.id, "SnapshotName": snap.name, "Description": snap.description,
		"SourceDiskId": snap.diskID, "SourceDiskType": srcType, "SourceDiskSize": strconv.Itoa(size),
		"SnapshotType": snap.typ, "Status": snap.status, "Progress": s.progress(snap),
		"CreationTime": iso(snap.created), "LastModifiedTime": iso(snap.created),
		"RetentionDays": snap.retentionDays, "Available": snap.status == "accomplished",
		"RegionId": s.opts.Region, "Usage": "none", "Category": "standard", "Tags": tagsJSON(snap.tags),
	}
}

func (s *Server) describeSnapshots(p url.Values) (map[string]any, *apiError) {
	ids, e := jsonList(p, "SnapshotIds")
	if e != nil {
		return nil, e
	}
	want, e := parseTags(p)
	if e != nil {
		return nil, e
	}
	status := p.Get("Status")
	if status != "" && status != "all" && status != "progressing" && status != "accomplished" && status != "failed" {
		return nil, errorf(http.StatusBadRequest, "InvalidStatus.ValueNotSupported", "The specified Status is not valid.")
	}
	typ := p.Get("SnapshotType")
	var list []*snapshot
	for _, snap := range s.sortedSnapshots(true) {
		if len(ids) > 0 && !contains(ids, snap.id) {
			continue
		}
		if v := p.Get("DiskId"); v != "" && v != snap.diskID {
			continue
		}
		if v := p.Get("InstanceId"); v != "" {
			if d := s.disks[snap.diskID]; d == nil || d.instanceID != v {
				continue
			}
		}
		if status != "" && status != "all" && status != snap.status {
			continue
		}
		if typ != "" && typ != "all" && typ != snap.typ {
			continue
		}
		if !matchTags(snap.tags, want) {
			continue
		}
		list = append(list, snap)
	}
	start, end, next, e := page(len(list), p)
	if e != nil {
		return nil, e
	}
	out := []map[string]any{}
	for _, snap := range list[start:end] {
		out = append(out, s.snapshotJSON(snap))
	}
	return map[string]any{"Snapshots": map[string]any{"Snapshot": out}, "TotalCount": len(list),
		"NextToken": next, "PageSize": end - start}, nil
}

func (s *Server) groupStatus(g *group) string {
	status := "accomplished"
	for _, id := range g.snapshotIDs {
		switch s.snapshots[id].status {
		case "failed":
			return "failed"
		case "progressing":
			status = "progressing"
		}
	}
	return status
}

func (s *Server) describeSnapshotGroups(p url.Values) (map[string]any, *apiError) {
	ids := stringList(p, "SnapshotGroupId")
	statuses := stringList(p, "Status")
	want, e := parseTags(p)
	if e != nil {
		return nil, e
	}
	var list []*group
	for _, g := range s.groups {
		if len(ids) > 0 && !contains(ids, g.id) {
			continue
		}
		if v := p.Get("InstanceId"); v != "" && v != g.instanceID {
			continue
		}
		if len(statuses) > 0 && !contains(statuses, s.groupStatus(g)) {
			continue
		}
		if !matchTags(g.tags, want) {
			continue
		}
		list = append(list, g)
	}
	sort.Slice(list, func(i, j int) bool {
		if !list[i].created.Equal(list[j].created) {
			return list[i].created.After(list[j].created)
		}
		return list[i].id > list[j].id
	})
	start, end, next, e := page(len(list), p)
	if e != nil {
		return nil, e
	}
	out := []map[string]any{}
	for _, g := range list[start:end] {
		snaps := []map[string]any{}
		for _, id := range g.snapshotIDs {
			snaps = append(snaps, s.snapshotJSON(s.snapshots[id]))
		}
		out = append(out, map[string]any{
			"SnapshotGroupId": g.id, "Name": g.name, "Description": g.description, "InstanceId": g.instanceID,
			"CreationTime": iso(g.created), "Status": s.groupStatus(g), "Tags": tagsJSON(g.tags),
			"Snapshots": map[string]any{"Snapshot": snaps},
		})
	}
	return map[string]any{"SnapshotGroups": map[string]any{"SnapshotGroup": out}, "NextToken": next}, nil
}

func (s *Server) deleteSnapshot(p url.Values) (map[string]any, *apiError) {
	id := p.Get("SnapshotId")
	if id == "" {
		return nil, missing("SnapshotId")
	}
	// An unknown id is not an error (ECS answers success), and deleting a
	// progressing snapshot cancels it.
	if snap := s.snapshots[id]; snap != nil {
		delete(s.snapshots, id)
		// advance drops the id from its group, and the group once empty.
		s.advance()
	}
	return map[string]any{}, nil
}

func (s *Server) deleteSnapshotGroup(p url.Values) (map[string]any, *apiError) {
	id := p.Get("SnapshotGroupId")
	if id == "" {
		return nil, missing("SnapshotGroupId")
	}
	g := s.groups[id]
	if g == nil {
		return nil, errorf(http.StatusNotFound, "InvalidSnapshotGroupId.NotFound", "The specified snapshot-consistent group does not exist.")
	}
	progress := []map[string]any{}
	for _, sid := range g.snapshotIDs {
		delete(s.snapshots, sid)
		progress = append(progress, map[string]any{"OperationStatus": "Success", "RelatedItemSet": map[string]any{
			"RelatedItem": []map[string]string{{"Name": "SnapshotId", "Value": sid}}}})
	}
	delete(s.groups, id)
	return map[string]any{"OperationProgressSet": map[string]any{"OperationProgress": progress}}, nil
}

func (s *Server) resetDisk(p url.Values) (map[string]any, *apiError) {
	diskID, snapID := p.Get("DiskId"), p.Get("SnapshotId")
	if diskID == "" {
		return nil, missing("DiskId")
	}
	if snapID == "" {
		return nil, missing("SnapshotId")
	}
	d := s.disks[diskID]
	if d == nil {
		return nil, errorf(http.StatusNotFound, "InvalidDiskId.NotFound", "The specified disk does not exist.")
	}
	snap := s.snapshots[snapID]
	if snap == nil {
		return nil, errorf(http.StatusNotFound, "InvalidSnapshotId.NotFound", "The specified snapshot does not exist.")
	}
	if snap.diskID != d.id {
		return nil, errorf(http.StatusForbidden, "OperationDenied", "The specified snapshot was not created from the specified disk.")
	}
	if snap.status != "accomplished" {
		return nil, errorf(http.StatusForbidden, "IncorrectSnapshotStatus", "The current status of the snapshot does not support this operation.")
	}
	if in := s.instances[d.instanceID]; in != nil && in.status != "Stopped" {
		return nil, errorf(http.StatusForbidden, "IncorrectInstanceStatus", "The current status of the resource does not support this operation.")
	}
	if p.Get("DryRun") == "true" {
		return nil, errorf(http.StatusBadRequest, "DryRunOperation", "Request validation has been passed with DryRun flag set.")
	}
	d.content = snap.content
	return map[string]any{}, nil
}

func (s *Server) createAutoSnapshotPolicy(p url.Values) (map[string]any, *apiError) {
	var points, days []string
	if err := json.Unmarshal([]byte(p.Get("timePoints")), &points); err != nil || len(points) == 0 {
		return nil, errorf(http.StatusBadRequest, "InvalidTimePoints.Malformed", "The specified parameter timePoints is not valid.")
	}
	for _, v := range points {
		if h, err := strconv.Atoi(v); err != nil || h < 0 || h > 23 {
			return nil, errorf(http.StatusBadRequest, "InvalidTimePoints.ValueNotSupported", "The specified timePoints is out of range.")
		}
	}
	if err := json.Unmarshal([]byte(p.Get("repeatWeekdays")), &days); err != nil || len(days) == 0 {
		return nil, errorf(http.StatusBadRequest, "InvalidRepeatWeekdays.Malformed", "The specified parameter repeatWeekdays is not valid.")
	}
	retention, err := strconv.Atoi(p.Get("retentionDays"))
	if err != nil || retention == 0 || retention < -1 || retention > 65536 {
		return nil, errorf(http.StatusBadRequest, "InvalidRetentionDays.Malformed", "The specified parameter retentionDays is not valid.")
	}
	pol := &policy{id: s.newID("sp-"), name: p.Get("autoSnapshotPolicyName"), timePoints: p.Get("timePoints"),
		weekdays: p.Get("repeatWeekdays"), retentionDays: retention, created: s.opts.Clock.Now()}
	s.policies[pol.id] = pol
	return map[string]any{"AutoSnapshotPolicyId": pol.id}, nil
}

func (s *Server) applyAutoSnapshotPolicy(p url.Values) (map[string]any, *apiError) {
	pol := s.policies[p.Get("autoSnapshotPolicyId")]
	if pol == nil {
		return nil, errorf(http.StatusNotFound, "InvalidAutoSnapshotPolicyId.NotFound", "The specified automatic snapshot policy does not exist.")
	}
	ids, e := jsonList(p, "diskIds")
	if e != nil {
		return nil, e
	}
	if len(ids) == 0 {
		return nil, missing("diskIds")
	}
	for _, id := range ids {
		if s.disks[id] == nil {
			return nil, errorf(http.StatusNotFound, "InvalidDiskIds.NotFound", "The specified disk %s does not exist.", id)
		}
	}
	for _, id := range ids {
		s.disks[id].policyID = pol.id
	}
	return map[string]any{}, nil
}

func (s *Server) describeAutoSnapshotPolicyEx(p url.Values) (map[string]any, *apiError) {
	var list []*policy
	for _, pol := range s.policies {
		if v := p.Get("AutoSnapshotPolicyId"); v != "" && v != pol.id {
			continue
		}
		if v := p.Get("AutoSnapshotPolicyName"); v != "" && v != pol.name {
			continue
		}
		list = append(list, pol)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].id < list[j].id })
	out := []map[string]any{}
	for _, pol := range list {
		n := 0
		for _, d := range s.disks {
			if d.policyID == pol.id {
				n++
			}
		}
		out = append(out, map[string]any{
			"AutoSnapshotPolicyId": pol.id, "AutoSnapshotPolicyName": pol.name, "TimePoints": pol.timePoints,
			"RepeatWeekdays": pol.weekdays, "RetentionDays": pol.retentionDays, "DiskNums": n,
			"Status": "Normal", "CreationTime": iso(pol.created), "RegionId": s.opts.Region,
		})
	}
	return map[string]any{"AutoSnapshotPolicies": map[string]any{"AutoSnapshotPolicy": out}, "TotalCount": len(list),
		"PageNumber": 1, "PageSize": len(list)}, nil
}
