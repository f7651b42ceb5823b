// Package ecsfake is an in-memory Alibaba Cloud ECS endpoint (API version
// 2014-05-26) and instance metadata service, faithful enough that the real
// alibaba-cloud-sdk-go talks to it unchanged: RPC-style requests with every
// parameter in the query or form, HMAC-SHA1 signatures over
// "POST&%2F&<params>" keyed with secret+"&", nonce-reuse and timestamp-window
// checks, and errors as JSON {RequestId, HostId, Code, Message} with the HTTP
// statuses ECS uses, so the SDK builds its real ServerError from them.
//
// Resources move on an injectable Clock: snapshots go progressing →
// accomplished, instances Running → Stopping → Stopped → Starting →
// Running, and snapshots with RetentionDays disappear when they expire. No
// public ECS emulator exists; this one covers the calls kubekeep makes.
package ecsfake

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"
)

// APIVersion is the only ECS API version the fake answers.
const APIVersion = "2014-05-26"

// SnapshotQuota is ECS's limit of manual snapshots per disk.
const SnapshotQuota = 256

// Options configure a Server. Zero values take the defaults noted.
type Options struct {
	// Region is the only region the fake serves (default cn-hangzhou).
	Region string
	// Zone of instances and disks (default <region>-h).
	Zone string
	// Clock moves resources along (default: the wall clock).
	Clock Clock
	// WallClock checks request timestamps and nonce lifetimes (default
	// time.Now); only tests of the timestamp window set it.
	WallClock func() time.Time
	// SnapshotDuration is how long a snapshot stays progressing (default 2m).
	SnapshotDuration time.Duration
	// StopDuration and StartDuration are how long an instance stays
	// Stopping / Starting (default 20s each).
	StopDuration  time.Duration
	StartDuration time.Duration
	// TimestampWindow is how far a request's Timestamp may be from the wall
	// clock (default 15m, as ECS).
	TimestampWindow time.Duration
	// RequireIMDSv2 makes metadata GETs without a token fail with 401.
	RequireIMDSv2 bool
}

// Server is the fake. Build one with New, add resources and credentials,
// and serve it with net/http (it is an http.Handler).
type Server struct {
	opts Options

	mu        sync.Mutex
	keys      map[string]accessKey
	nonces    map[string]time.Time
	instances map[string]*instance
	disks     map[string]*disk
	snapshots map[string]*snapshot
	groups    map[string]*group
	policies  map[string]*policy
	tokens    map[string]idempotent // ClientToken -> earlier answer
	imdsToks  map[string]time.Time
	ramRole   string
	ramKey    accessKey
	selfID    string
	seq       int
	faults    []Fault
	latency   time.Duration
	failNext  map[string]int // disk id -> snapshots that will end failed
	calls     map[string]int
	hooks     []func(action string, params url.Values)
	before    []func(action string, params url.Values)
}

type accessKey struct {
	id, secret, token string
}

type instance struct {
	id, name, zone, status string
	// until is when a transitional status (Stopping, Starting) ends.
	until time.Time
}

type disk struct {
	id, instanceID, typ, category, device, zone string
	size                                        int
	policyID                                    string
	// content stands for the bytes on the disk: snapshots capture it and
	// ResetDisk restores it, so tests can tell which snapshot a disk holds.
	content string
}

type snapshot struct {
	id, name, description, diskID, typ, groupID string
	created                                     time.Time
	retentionDays                               int
	status                                      string
	willFail                                    bool
	tags                                        []tag
	content                                     string
}

type group struct {
	id, name, description, instanceID string
	created                           time.Time
	snapshotIDs                       []string
	tags                              []tag
}

type policy struct {
	id, name, timePoints, weekdays string
	retentionDays                  int
	created                        time.Time
}

type tag struct{ Key, Value string }

type idempotent struct {
	action, fingerprint string
	result              map[string]any
}

// New returns an empty fake.
func New(opts Options) *Server {
	if opts.Region == "" {
		opts.Region = "cn-hangzhou"
	}
	if opts.Zone == "" {
		opts.Zone = opts.Region + "-h"
	}
	if opts.Clock == nil {
		opts.Clock = wallClock{}
	}
	if opts.WallClock == nil {
		opts.WallClock = time.Now
	}
	if opts.SnapshotDuration <= 0 {
		opts.SnapshotDuration = 2 * time.Minute
	}
	if opts.StopDuration <= 0 {
		opts.StopDuration = 20 * time.Second
	}
	if opts.StartDuration <= 0 {
		opts.StartDuration = 20 * time.Second
	}
	if opts.TimestampWindow <= 0 {
		opts.TimestampWindow = 15 * time.Minute
	}
	return &Server{
		opts:      opts,
		keys:      map[string]accessKey{},
		nonces:    map[string]time.Time{},
		instances: map[string]*instance{},
		disks:     map[string]*disk{},
		snapshots: map[string]*snapshot{},
		groups:    map[string]*group{},
		policies:  map[string]*policy{},
		tokens:    map[string]idempotent{},
		imdsToks:  map[string]time.Time{},
		failNext:  map[string]int{},
		calls:     map[string]int{},
	}
}

// Region is the region the fake serves.
func (s *Server) Region() string { return s.opts.Region }

// AddAccessKey makes the fake accept requests signed with this key pair.
func (s *Server) AddAccessKey(id, secret string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys[id] = accessKey{id: id, secret: secret}
}

// SetRAMRole makes the metadata service hand out STS credentials for role
// (an ECS RAM role attached to the instance); requests signed with them must
// carry the matching SecurityToken.
func (s *Server) SetRAMRole(role, id, secret, token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ramRole = role
	s.ramKey = accessKey{id: id, secret: secret, token: token}
	s.keys[id] = s.ramKey
}

// InstanceSpec describes an instance to add.
type InstanceSpec struct {
	ID, Name string
	// Status defaults to Running.
	Status string
}

// AddInstance adds an instance; the first one added is the one the
// metadata service describes.
func (s *Server) AddInstance(spec InstanceSpec) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if spec.Status == "" {
		spec.Status = "Running"
	}
	s.instances[spec.ID] = &instance{id: spec.ID, name: spec.Name, zone: s.opts.Zone, status: spec.Status}
	if s.selfID == "" {
		s.selfID = spec.ID
	}
}

// DiskSpec describes a disk to attach to an instance.
type DiskSpec struct {
	ID, InstanceID string
	// Type is "system" or "data".
	Type string
	// Category is e.g. cloud_essd (snapshot groups need it) or cloud_efficiency.
	Category string
	SizeGiB  int
	Device   string
	Content  string
}

// AddDisk attaches a disk.
func (s *Server) AddDisk(spec DiskSpec) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if spec.SizeGiB == 0 {
		spec.SizeGiB = 40
	}
	s.disks[spec.ID] = &disk{id: spec.ID, instanceID: spec.InstanceID, typ: spec.Type, category: spec.Category,
		device: spec.Device, zone: s.opts.Zone, size: spec.SizeGiB, content: spec.Content}
}

// SnapshotSpec describes a snapshot made outside kubekeep (by a person, by
// another tool, by an automatic policy).
type SnapshotSpec struct {
	DiskID, Name string
	// Type is "user" (manual, the default) or "auto".
	Type          string
	Tags          map[string]string
	RetentionDays int
	// Age puts its creation time this far in the past.
	Age time.Duration
}

// AddSnapshot adds an accomplished snapshot and returns its id.
func (s *Server) AddSnapshot(spec SnapshotSpec) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if spec.Type == "" {
		spec.Type = "user"
	}
	d := s.disks[spec.DiskID]
	content := ""
	if d != nil {
		content = d.content
	}
	snap := &snapshot{id: s.newID("s-"), name: spec.Name, diskID: spec.DiskID, typ: spec.Type,
		created: s.opts.Clock.Now().Add(-spec.Age), retentionDays: spec.RetentionDays,
		status: "accomplished", content: content}
	for _, k := range sortedKeys(spec.Tags) {
		snap.tags = append(snap.tags, tag{k, spec.Tags[k]})
	}
	s.snapshots[snap.id] = snap
	return snap.id
}

// SetDiskContent changes what a disk "holds".
func (s *Server) SetDiskContent(diskID, content string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d := s.disks[diskID]; d != nil {
		d.content = content
	}
}

// DiskContent is what a disk holds now.
func (s *Server) DiskContent(diskID string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d := s.disks[diskID]; d != nil {
		return d.content
	}
	return ""
}

// InstanceStatus is an instance's status at the clock's current time.
func (s *Server) InstanceStatus(id string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance()
	if in := s.instances[id]; in != nil {
		return in.status
	}
	return ""
}

// SnapshotInfo is what tests see of a snapshot.
type SnapshotInfo struct {
	ID, DiskID, Name, Type, Status, GroupID, Content string
	Created                                          time.Time
	RetentionDays                                    int
	Tags                                             map[string]string
}

// Snapshots lists every snapshot that exists at the clock's current time,
// oldest first.
func (s *Server) Snapshots() []SnapshotInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance()
	var out []SnapshotInfo
	for _, snap := range s.sortedSnapshots(false) {
		tags := map[string]string{}
		for _, t := range snap.tags {
			tags[t.Key] = t.Value
		}
		out = append(out, SnapshotInfo{ID: snap.id, DiskID: snap.diskID, Name: snap.name, Type: snap.typ,
			Status: snap.status, GroupID: snap.groupID, Content: snap.content, Created: snap.created,
			RetentionDays: snap.retentionDays, Tags: tags})
	}
	return out
}

// GroupCount is how many snapshot groups exist.
func (s *Server) GroupCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance()
	return len(s.groups)
}

// Fault is an error the fake returns instead of handling a call.
type Fault struct {
	// Action limits the fault to one API action; empty means any action.
	Action string
	// Code, Status and Message make the error body; Status defaults to 400.
	Code    string
	Status  int
	Message string
	// Count is how many calls fail (default 1).
	Count int
}

// Inject queues a fault. Faults apply after authentication, in the order
// injected.
func (s *Server) Inject(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f.Count <= 0 {
		f.Count = 1
	}
	if f.Status == 0 {
		f.Status = http.StatusBadRequest
	}
	if f.Message == "" {
		f.Message = "Injected fault."
	}
	s.faults = append(s.faults, f)
}

// Throttle makes the next n calls fail the way ECS flow control does.
func (s *Server) Throttle(n int) {
	s.Inject(Fault{Code: "Throttling.User", Status: http.StatusBadRequest,
		Message: "Request was denied due to user flow control.", Count: n})
}

// Unavailable makes the next n calls fail with 503 ServiceUnavailable.
func (s *Server) Unavailable(n int) {
	s.Inject(Fault{Code: "ServiceUnavailable", Status: http.StatusServiceUnavailable,
		Message: "The request has failed due to a temporary failure of the server.", Count: n})
}

// SetLatency delays every API answer by d of wall time.
func (s *Server) SetLatency(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.latency = d
}

// FailSnapshots makes the next n snapshots of a disk end in status failed.
func (s *Server) FailSnapshots(diskID string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failNext[diskID] += n
}

// OnAction registers a hook run after each successful API call, with the
// call's parameters; tests use it to "kill" a client half-way.
func (s *Server) OnAction(f func(action string, params url.Values)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hooks = append(s.hooks, f)
}

// BeforeAction registers a hook run before each API call is handled, with
// the call's parameters; tests use it to change the world between two of a
// client's calls (another tool taking snapshots between a count and a
// create). It may call the Server's methods.
func (s *Server) BeforeAction(f func(action string, params url.Values)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.before = append(s.before, f)
}

// Calls is how many calls of an action were answered successfully.
func (s *Server) Calls(action string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[action]
}

// ServeHTTP answers ECS API calls and, under /latest/, the metadata service.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/latest/") {
		s.serveMetadata(w, r)
		return
	}
	s.serveAPI(w, r)
}

// apiError is an ECS error answer.
type apiError struct {
	status        int
	code, message string
}

func errorf(status int, code, format string, args ...any) *apiError {
	return &apiError{status: status, code: code, message: fmt.Sprintf(format, args...)}
}

func missing(name string) *apiError {
	return errorf(http.StatusBadRequest, "MissingParameter",
		"The input parameter %q that is mandatory for processing this request is not supplied.", name)
}

func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request) {
	requestID := s.requestID()
	if r.Method != http.MethodPost && r.Method != http.MethodGet {
		s.writeError(w, requestID, errorf(http.StatusMethodNotAllowed, "UnsupportedHTTPMethod", "This http method is not supported."))
		return
	}
	if err := r.ParseForm(); err != nil {
		s.writeError(w, requestID, errorf(http.StatusBadRequest, "InvalidParameter", "The request could not be parsed."))
		return
	}
	params := url.Values{}
	for k, v := range r.Form {
		if len(v) > 0 {
			params.Set(k, v[0])
		}
	}
	s.mu.Lock()
	latency := s.latency
	before := append([]func(string, url.Values){}, s.before...)
	s.mu.Unlock()
	for _, h := range before {
		h(params.Get("Action"), params)
	}
	if latency > 0 {
		select {
		case <-time.After(latency):
		case <-r.Context().Done():
			return
		}
	}

	s.mu.Lock()
	result, aerr := s.handleLocked(r.Method, params)
	var hooks []func(string, url.Values)
	if aerr == nil {
		s.calls[params.Get("Action")]++
		hooks = append(hooks, s.hooks...)
	}
	s.mu.Unlock()
	if aerr != nil {
		s.writeError(w, requestID, aerr)
		return
	}
	result["RequestId"] = requestID
	w.Header().Set("Content-Type", "application/json;charset=utf-8")
	w.Header().Set("x-acs-request-id", requestID)
	_ = json.NewEncoder(w).Encode(result)
	for _, h := range hooks {
		h(params.Get("Action"), params)
	}
}

func (s *Server) writeError(w http.ResponseWriter, requestID string, e *apiError) {
	w.Header().Set("Content-Type", "application/json;charset=utf-8")
	w.Header().Set("x-acs-request-id", requestID)
	w.WriteHeader(e.status)
	_ = json.NewEncoder(w).Encode(map[string]string{
		"RequestId": requestID,
		"HostId":    "ecs." + s.opts.Region + ".aliyuncs.com",
		"Code":      e.code,
		"Message":   e.message,
		"Recommend": "https://api.aliyun.com/troubleshoot?q=" + e.code + "&product=Ecs",
	})
}

// handleLocked authenticates, applies faults, and dispatches. s.mu is held.
func (s *Server) handleLocked(method string, p url.Values) (map[string]any, *apiError) {
	if e := s.authenticate(method, p); e != nil {
		return nil, e
	}
	action := p.Get("Action")
	for i := range s.faults {
		f := &s.faults[i]
		if f.Action != "" && f.Action != action {
			continue
		}
		f.Count--
		e := &apiError{status: f.Status, code: f.Code, message: f.Message}
		if f.Count <= 0 {
			s.faults = append(s.faults[:i], s.faults[i+1:]...)
		}
		return nil, e
	}
	if rid := p.Get("RegionId"); rid != s.opts.Region {
		return nil, errorf(http.StatusNotFound, "InvalidRegionId.NotFound", "The specified RegionId %q does not exist.", rid)
	}
	s.advance()
	h, ok := handlers[action]
	if !ok {
		return nil, errorf(http.StatusNotFound, "InvalidAction.NotFound", "Specified api is not found, please check your url and method.")
	}
	return h(s, p)
}

var commonParams = map[string]bool{
	"Action": true, "Version": true, "Format": true, "Timestamp": true, "SignatureMethod": true,
	"SignatureVersion": true, "SignatureType": true, "SignatureNonce": true, "AccessKeyId": true,
	"Signature": true, "SecurityToken": true, "BearerToken": true, "RegionId": true,
}

// authenticate checks what ECS checks before looking at a request's
// action: version, access key, timestamp window, nonce and signature.
func (s *Server) authenticate(method string, p url.Values) *apiError {
	for _, name := range []string{"Action", "Version", "AccessKeyId", "Signature", "SignatureMethod", "SignatureNonce", "Timestamp"} {
		if p.Get(name) == "" {
			return missing(name)
		}
	}
	if p.Get("Version") != APIVersion {
		return errorf(http.StatusBadRequest, "InvalidVersion", "Specified parameter Version is not valid.")
	}
	if f := p.Get("Format"); f != "" && !strings.EqualFold(f, "JSON") {
		return errorf(http.StatusBadRequest, "InvalidParameter.Format", "The fake only answers Format=JSON.")
	}
	if p.Get("SignatureMethod") != "HMAC-SHA1" {
		return errorf(http.StatusBadRequest, "InvalidSignatureMethod", "Specified signature method is not valid.")
	}
	if v := p.Get("SignatureVersion"); v != "1.0" {
		return errorf(http.StatusBadRequest, "InvalidSignatureVersion", "Specified signature version is not valid.")
	}
	key, ok := s.keys[p.Get("AccessKeyId")]
	if !ok {
		return errorf(http.StatusNotFound, "InvalidAccessKeyId.NotFound", "Specified access key is not found.")
	}
	ts, err := time.Parse("2006-01-02T15:04:05Z", p.Get("Timestamp"))
	if err != nil {
		return errorf(http.StatusBadRequest, "InvalidTimeStamp.Format", "Specified time stamp or date value is not well formatted.")
	}
	now := s.opts.WallClock()
	if d := now.Sub(ts); d > s.opts.TimestampWindow || d < -s.opts.TimestampWindow {
		return errorf(http.StatusBadRequest, "InvalidTimeStamp.Expired", "Specified time stamp or date value is expired.")
	}
	want := Sign(method, p, key.secret)
	if !hmac.Equal([]byte(want), []byte(p.Get("Signature"))) {
		return errorf(http.StatusBadRequest, "SignatureDoesNotMatch",
			"Specified signature is not matched with our calculation. server string to sign is:%s", StringToSign(method, p))
	}
	if key.token != "" && p.Get("SecurityToken") != key.token {
		return errorf(http.StatusBadRequest, "InvalidSecurityToken.Mismatch", "Specified SecurityToken mismatch with the AccessKey.")
	}
	for n, at := range s.nonces {
		if now.Sub(at) > 2*s.opts.TimestampWindow {
			delete(s.nonces, n)
		}
	}
	nonce := p.Get("SignatureNonce")
	if _, used := s.nonces[nonce]; used {
		return errorf(http.StatusBadRequest, "SignatureNonceUsed", "Specified signature nonce was used already.")
	}
	s.nonces[nonce] = now
	return nil
}

// StringToSign is the RPC string to sign: every parameter but Signature,
// sorted, percent-encoded per RFC 3986, then encoded again behind
// "<METHOD>&%2F&".
func StringToSign(method string, p url.Values) string {
	keys := make([]string, 0, len(p))
	for k := range p {
		if k != "Signature" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, percentEncode(k)+"="+percentEncode(p.Get(k)))
	}
	return method + "&" + percentEncode("/") + "&" + percentEncode(strings.Join(parts, "&"))
}

// Sign computes the signature ECS expects for p.
func Sign(method string, p url.Values, secret string) string {
	mac := hmac.New(sha1.New, []byte(secret+"&"))
	mac.Write([]byte(StringToSign(method, p)))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// percentEncode is RFC 3986 encoding: unreserved characters stay, every
// other byte becomes %XX (so space is %20, * is %2A, ~ stays).
func percentEncode(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == '~' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

func (s *Server) requestID() string {
	s.mu.Lock()
	s.seq++
	n := s.seq
	s.mu.Unlock()
	return fmt.Sprintf("F4KE0000-0000-4000-8000-%012X", n)
}

func (s *Server) newID(prefix string) string {
	s.seq++
	return fmt.Sprintf("%sfake%012d", prefix, s.seq)
}

// advance moves every resource to where the clock says it is. s.mu is held.
func (s *Server) advance() {
	now := s.opts.Clock.Now()
	for _, in := range s.instances {
		switch {
		case in.status == "Stopping" && !now.Before(in.until):
			in.status = "Stopped"
		case in.status == "Starting" && !now.Before(in.until):
			in.status = "Running"
		}
	}
	for id, snap := range s.snapshots {
		if snap.status == "progressing" {
			switch {
			case snap.willFail && !now.Before(snap.created.Add(s.opts.SnapshotDuration/2)):
				snap.status = "failed"
			case !snap.willFail && !now.Before(snap.created.Add(s.opts.SnapshotDuration)):
				snap.status = "accomplished"
			}
		}
		if snap.retentionDays > 0 && !now.Before(snap.created.Add(time.Duration(snap.retentionDays)*24*time.Hour)) {
			delete(s.snapshots, id)
		}
	}
	for id, g := range s.groups {
		live := g.snapshotIDs[:0]
		for _, sid := range g.snapshotIDs {
			if _, ok := s.snapshots[sid]; ok {
				live = append(live, sid)
			}
		}
		g.snapshotIDs = live
		if len(live) == 0 {
			delete(s.groups, id)
		}
	}
}

func (s *Server) progress(snap *snapshot) string {
	switch snap.status {
	case "accomplished":
		return "100%"
	case "failed":
		return "0%"
	}
	elapsed := s.opts.Clock.Now().Sub(snap.created)
	pct := int(100 * elapsed / s.opts.SnapshotDuration)
	if pct > 99 {
		pct = 99
	}
	if pct < 0 {
		pct = 0
	}
	return fmt.Sprintf("%d%%", pct)
}

// sortedSnapshots returns snapshots newest first (as DescribeSnapshots
// pages them) or oldest first.
func (s *Server) sortedSnapshots(newestFirst bool) []*snapshot {
	out := make([]*snapshot, 0, len(s.snapshots))
	for _, snap := range s.snapshots {
		out = append(out, snap)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if !a.created.Equal(b.created) {
			return a.created.Before(b.created) != newestFirst
		}
		return a.id < b.id != newestFirst
	})
	return out
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
