package ecsfake

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk"
	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/auth/credentials"
	sdkerrors "github.com/aliyun/alibaba-cloud-sdk-go/sdk/errors"
	"github.com/aliyun/alibaba-cloud-sdk-go/services/ecs"
)

// recorder keeps the URL of every request the real SDK sends, so a test
// can replay one byte for byte.
type recorder struct {
	mu   sync.Mutex
	urls []string
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	r.mu.Lock()
	r.urls = append(r.urls, req.URL.String())
	r.mu.Unlock()
	return http.DefaultTransport.RoundTrip(req)
}

func (r *recorder) last() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.urls[len(r.urls)-1]
}

func newSDK(t *testing.T, url, id, secret string) (*ecs.Client, *recorder) {
	t.Helper()
	rec := &recorder{}
	cfg := sdk.NewConfig()
	cfg.Transport = rec
	c, err := ecs.NewClientWithOptions("cn-hangzhou", cfg, credentials.NewStaticAKCredentialsProvider(id, secret))
	if err != nil {
		t.Fatal(err)
	}
	c.Domain = strings.TrimPrefix(url, "http://")
	return c, rec
}

func setup(t *testing.T, opts Options) (*Server, string) {
	t.Helper()
	f := New(opts)
	f.AddAccessKey("AKID", "SECRET")
	f.AddInstance(InstanceSpec{ID: "i-1"})
	f.AddDisk(DiskSpec{ID: "d-1", InstanceID: "i-1", Type: "system", Category: "cloud_essd"})
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv.URL
}

func serverErr(t *testing.T, err error) *sdkerrors.ServerError {
	t.Helper()
	var se *sdkerrors.ServerError
	if !errors.As(err, &se) {
		t.Fatalf("want an SDK ServerError, got %T %v", err, err)
	}
	return se
}

func post(t *testing.T, url string) (int, map[string]string) {
	t.Helper()
	resp, err := http.Post(url, "application/x-www-form-urlencoded", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var m map[string]string
	_ = json.Unmarshal(body, &m)
	return resp.StatusCode, m
}

func TestSDKSignatureAcceptedAndReplayRejected(t *testing.T) {
	_, url := setup(t, Options{})
	c, rec := newSDK(t, url, "AKID", "SECRET")
	if _, err := c.DescribeInstances(ecs.CreateDescribeInstancesRequest()); err != nil {
		t.Fatalf("real SDK request refused: %v", err)
	}
	status, body := post(t, rec.last())
	if status != 400 || body["Code"] != "SignatureNonceUsed" {
		t.Fatalf("replayed request: %d %v", status, body)
	}
	tampered := strings.Replace(rec.last(), "DescribeInstances", "DescribeDisks", 1)
	status, body = post(t, tampered)
	if status != 400 || body["Code"] != "SignatureDoesNotMatch" || body["RequestId"] == "" || body["HostId"] == "" {
		t.Fatalf("tampered request: %d %v", status, body)
	}
}

func TestTimestampWindow(t *testing.T) {
	_, url := setup(t, Options{WallClock: func() time.Time { return time.Now().Add(20 * time.Minute) }})
	c, _ := newSDK(t, url, "AKID", "SECRET")
	_, err := c.DescribeInstances(ecs.CreateDescribeInstancesRequest())
	if se := serverErr(t, err); se.ErrorCode() != "InvalidTimeStamp.Expired" || se.HttpStatus() != 400 {
		t.Fatalf("stale timestamp: %v", err)
	}
}

func TestWrongSecretAndUnknownKey(t *testing.T) {
	_, url := setup(t, Options{})
	c, _ := newSDK(t, url, "AKID", "WRONG")
	_, err := c.DescribeDisks(ecs.CreateDescribeDisksRequest())
	se := serverErr(t, err)
	if se.ErrorCode() != "SignatureDoesNotMatch" || !strings.Contains(se.Recommend(), "InvalidAccessKeySecret") {
		t.Fatalf("wrong secret: code %s recommend %q", se.ErrorCode(), se.Recommend())
	}
	c, _ = newSDK(t, url, "NOPE", "SECRET")
	_, err = c.DescribeDisks(ecs.CreateDescribeDisksRequest())
	if se := serverErr(t, err); se.ErrorCode() != "InvalidAccessKeyId.NotFound" || se.HttpStatus() != 404 {
		t.Fatalf("unknown key: %v", err)
	}
}

func TestSnapshotLifecycleOnTheClock(t *testing.T) {
	clock := NewManualClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	f, url := setup(t, Options{Clock: clock, SnapshotDuration: time.Minute})
	c, _ := newSDK(t, url, "AKID", "SECRET")
	req := ecs.CreateCreateSnapshotRequest()
	req.DiskId = "d-1"
	req.RetentionDays = "1"
	req.ClientToken = "tok-1"
	tags := []ecs.CreateSnapshotTag{{Key: "managed-by", Value: "kubekeep"}}
	req.Tag = &tags
	resp, err := c.CreateSnapshot(req)
	if err != nil {
		t.Fatal(err)
	}
	again := ecs.CreateCreateSnapshotRequest()
	again.DiskId, again.RetentionDays, again.ClientToken, again.Tag = "d-1", "1", "tok-1", &tags
	if r2, err := c.CreateSnapshot(again); err != nil || r2.SnapshotId != resp.SnapshotId {
		t.Fatalf("same ClientToken should return the same snapshot: %v %v", r2, err)
	}
	other := ecs.CreateCreateSnapshotRequest()
	other.DiskId = "d-1"
	_, err = c.CreateSnapshot(other)
	if se := serverErr(t, err); se.ErrorCode() != "IncorrectDiskStatus.CreatingSnapshot" || se.HttpStatus() != 403 {
		t.Fatalf("second in-flight snapshot: %v", err)
	}
	auto := ecs.CreateCreateSnapshotRequest()
	auto.DiskId, auto.SnapshotName = "d-1", "auto-nope"
	_, err = c.CreateSnapshot(auto)
	if se := serverErr(t, err); se.ErrorCode() != "InvalidSnapshotName.Malformed" {
		t.Fatalf("name starting with auto: %v", err)
	}

	describe := func() []ecs.Snapshot {
		r := ecs.CreateDescribeSnapshotsRequest()
		ft := []ecs.DescribeSnapshotsTag{{Key: "managed-by", Value: "kubekeep"}}
		r.Tag = &ft
		out, err := c.DescribeSnapshots(r)
		if err != nil {
			t.Fatal(err)
		}
		return out.Snapshots.Snapshot
	}
	if s := describe(); len(s) != 1 || s[0].Status != "progressing" || s[0].Tags.Tag[0].TagKey != "managed-by" || s[0].Tags.Tag[0].TagValue != "kubekeep" {
		t.Fatalf("after create: %+v", s)
	}
	clock.Advance(time.Minute)
	if s := describe(); len(s) != 1 || s[0].Status != "accomplished" || s[0].Progress != "100%" {
		t.Fatalf("after a minute: %+v", s)
	}
	clock.Advance(24 * time.Hour)
	if s := describe(); len(s) != 0 {
		t.Fatalf("after RetentionDays: %+v", s)
	}
	if len(f.Snapshots()) != 0 {
		t.Fatal("expired snapshot still held")
	}
	del := ecs.CreateDeleteSnapshotRequest()
	del.SnapshotId = "s-unknown"
	if _, err := c.DeleteSnapshot(del); err != nil {
		t.Fatalf("deleting an unknown snapshot is not an error in ECS: %v", err)
	}
}

func TestResetDiskRules(t *testing.T) {
	clock := NewManualClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	f, url := setup(t, Options{Clock: clock})
	f.AddDisk(DiskSpec{ID: "d-2", InstanceID: "i-1", Type: "data", Category: "cloud_essd"})
	s1 := f.AddSnapshot(SnapshotSpec{DiskID: "d-1"})
	c, _ := newSDK(t, url, "AKID", "SECRET")
	reset := func(disk, snap string) error {
		r := ecs.CreateResetDiskRequest()
		r.DiskId, r.SnapshotId = disk, snap
		_, err := c.ResetDisk(r)
		return err
	}
	if se := serverErr(t, reset("d-1", s1)); se.ErrorCode() != "IncorrectInstanceStatus" {
		t.Fatalf("reset while Running: %v", se)
	}
	stop := ecs.CreateStopInstanceRequest()
	stop.InstanceId = "i-1"
	if _, err := c.StopInstance(stop); err != nil {
		t.Fatal(err)
	}
	if f.InstanceStatus("i-1") != "Stopping" {
		t.Fatal("StopInstance should be asynchronous")
	}
	clock.Advance(time.Minute)
	if f.InstanceStatus("i-1") != "Stopped" {
		t.Fatal("instance did not stop on the clock")
	}
	if se := serverErr(t, reset("d-2", s1)); se.ErrorCode() != "OperationDenied" {
		t.Fatalf("reset from another disk's snapshot: %v", se)
	}
	if err := reset("d-1", s1); err != nil {
		t.Fatal(err)
	}
}

func TestInjectedFaultsAndPaging(t *testing.T) {
	f, url := setup(t, Options{})
	for range 25 {
		f.AddSnapshot(SnapshotSpec{DiskID: "d-1"})
	}
	c, _ := newSDK(t, url, "AKID", "SECRET")
	f.Unavailable(1)
	_, err := c.DescribeSnapshots(ecs.CreateDescribeSnapshotsRequest())
	if se := serverErr(t, err); se.HttpStatus() != 503 || se.ErrorCode() != "ServiceUnavailable" {
		t.Fatalf("injected 503: %v", err)
	}
	seen := map[string]bool{}
	token := ""
	pages := 0
	for {
		r := ecs.CreateDescribeSnapshotsRequest()
		r.MaxResults = "10"
		r.NextToken = token
		resp, err := c.DescribeSnapshots(r)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, s := range resp.Snapshots.Snapshot {
			seen[s.SnapshotId] = true
		}
		if token = resp.NextToken; token == "" {
			break
		}
	}
	if len(seen) != 25 || pages != 3 {
		t.Fatalf("paged %d snapshots in %d pages", len(seen), pages)
	}
	r := ecs.CreateDescribeSnapshotsRequest()
	r.MaxResults = "101"
	if _, err := c.DescribeSnapshots(r); err == nil {
		t.Fatal("MaxResults over 100 accepted")
	}
}

func TestMetadataIMDSv2(t *testing.T) {
	f, url := setup(t, Options{Region: "cn-beijing", RequireIMDSv2: true})
	f.SetRAMRole("role", "STS.id", "sts-secret", "sts-token")
	resp, err := http.Get(url + "/latest/meta-data/instance-id")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("GET without token under IMDSv2: %d", resp.StatusCode)
	}
	req, _ := http.NewRequest(http.MethodPut, url+"/latest/api/token", nil)
	req.Header.Set("X-aliyun-ecs-metadata-token-ttl-seconds", "60")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	get := func(path string) string {
		req, _ := http.NewRequest(http.MethodGet, url+"/latest/meta-data/"+path, nil)
		req.Header.Set("X-aliyun-ecs-metadata-token", string(tok))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	if get("instance-id") != "i-1" || get("region-id") != "cn-beijing" || get("ram/security-credentials/") != "role" {
		t.Fatal("metadata values wrong")
	}
	if !strings.Contains(get("ram/security-credentials/role"), `"SecurityToken":"sts-token"`) {
		t.Fatal("role credentials missing")
	}
}
