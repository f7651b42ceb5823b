package cloudsnap

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/kubekeep/kubekeep/cloudsnap/ecsfake"
)

// A week and a half of 8-hour cycles (snapshot, then prune) must leave
// exactly the sets younger than the 7-day retention, every foreign snapshot
// untouched, in both shapes of set: ESSD snapshot groups (which ECS never
// expires by itself, so prune must) and per-disk snapshots with
// RetentionDays (which ECS expires).
func TestWeekOfEightHourCycles(t *testing.T) {
	for _, category := range []string{"cloud_essd", "cloud_efficiency"} {
		t.Run(category, func(t *testing.T) {
			e := newEnv(t, category)
			foreign := []string{
				e.fake.AddSnapshot(ecsfake.SnapshotSpec{DiskID: "d-system0001", Name: "by-hand", Age: 30 * 24 * time.Hour}),
				e.fake.AddSnapshot(ecsfake.SnapshotSpec{DiskID: "d-data000002", Name: "other-tool", Tags: map[string]string{"managed-by": "velero"}, Age: 20 * 24 * time.Hour}),
				e.fake.AddSnapshot(ecsfake.SnapshotSpec{DiskID: "d-data000002", Name: "other-instance", Tags: map[string]string{
					TagManagedBy: ManagedByValue, TagSet: "kk-elsewhere", TagInstance: "i-someoneelse"}, Age: 20 * 24 * time.Hour}),
				e.fake.AddSnapshot(ecsfake.SnapshotSpec{DiskID: "d-system0001", Type: "auto", Age: 10 * 24 * time.Hour}),
			}
			c := e.client(t)
			ctx := context.Background()
			var created []Set
			const cycles = 31 // ten days and a bit
			for i := range cycles {
				cycleStart := testStart.Add(time.Duration(i) * 8 * time.Hour)
				if now := e.clock.Now(); now.Before(cycleStart) {
					e.clock.Advance(cycleStart.Sub(now))
				}
				set, err := c.CreateSet(ctx, CreateRequest{Version: fmt.Sprintf("v%03d", i), EtcdRevision: int64(1000 + i), Purpose: PurposeScheduled, Wait: true})
				if err != nil {
					t.Fatalf("cycle %d: CreateSet: %v", i, err)
				}
				if set.Status != StatusAccomplished || len(set.Disks) != 2 {
					t.Fatalf("cycle %d: set %+v", i, set)
				}
				created = append(created, *set)
				if _, err := c.Prune(ctx, false); err != nil {
					t.Fatalf("cycle %d: Prune: %v", i, err)
				}
			}
			now := e.clock.Now()
			var want []string
			for _, s := range created {
				if now.Before(s.Time.Add(7 * 24 * time.Hour)) {
					want = append(want, s.ID)
				}
			}
			if len(want) != 21 {
				t.Fatalf("expected 21 sets within 7 days of 8-hourly snapshots, computed %d", len(want))
			}
			sets, err := c.ListSets(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, s := range sets {
				got = append(got, s.ID)
			}
			if strings.Join(got, ",") != strings.Join(want, ",") {
				t.Fatalf("sets left:\n got %v\nwant %v", got, want)
			}
			last := sets[len(sets)-1]
			if last.Version != "v030" || last.EtcdRevision != 1030 || last.Cluster != "prod" || last.InstanceID != testInstance || last.Purpose != PurposeScheduled {
				t.Errorf("newest set lost its tags: %+v", last)
			}
			if !last.Expires.Equal(last.Time.Add(7 * 24 * time.Hour)) {
				t.Errorf("expires %v, want time+7d %v", last.Expires, last.Time.Add(7*24*time.Hour))
			}
			have := map[string]bool{}
			for _, s := range e.fake.Snapshots() {
				have[s.ID] = true
			}
			for _, id := range foreign {
				if !have[id] {
					t.Errorf("foreign snapshot %s was deleted", id)
				}
			}
			if got, want := len(e.fake.Snapshots()), 2*21+len(foreign); got != want {
				t.Errorf("fake holds %d snapshots, want %d", got, want)
			}
		})
	}
}

func TestPruneKeepsNewestAndWaitsForProgressing(t *testing.T) {
	e := newEnv(t, "cloud_efficiency")
	c := e.client(t)
	ctx := context.Background()
	first, err := c.CreateSet(ctx, CreateRequest{Wait: true})
	if err != nil {
		t.Fatal(err)
	}
	// Per-disk snapshots expire in ECS itself; a longer ECS retention than
	// kubekeep's would leave them for prune. Pretend the agent's own
	// retention has passed by moving beyond it while ECS keeps them.
	e.clock.Advance(7*24*time.Hour - time.Minute)
	second, err := c.CreateSet(ctx, CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if second.Status != StatusProgressing {
		t.Fatalf("second set %s, want progressing", second.Status)
	}
	res, err := c.Prune(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if res.Deferred == "" || len(res.Deleted) != 0 {
		t.Fatalf("prune during a progressing create: %+v", res)
	}
	if _, err := c.WaitSet(ctx, second.ID, nil); err != nil {
		t.Fatal(err)
	}
	res, err = c.Prune(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	// The first set's snapshots expired in ECS at the same instant.
	if len(res.Deleted) != 0 || len(res.Kept) != 1 || res.Kept[0].Set.ID != second.ID {
		t.Fatalf("dry-run prune: %+v (first was %s)", res, first.ID)
	}
}

func TestPruneNeverDeletesNewestAccomplishedEvenExpired(t *testing.T) {
	e := newEnv(t, "cloud_essd")
	c := e.client(t)
	ctx := context.Background()
	old, err := c.CreateSet(ctx, CreateRequest{Wait: true})
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(8 * 24 * time.Hour)
	e.fake.FailSnapshots("d-data000002", 1)
	failed, err := c.CreateSet(ctx, CreateRequest{Wait: true})
	var fe *SetFailedError
	if !errors.As(err, &fe) {
		t.Fatalf("want SetFailedError, got %v", err)
	}
	res, err := c.Prune(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Deleted) != 1 || res.Deleted[0].ID != failed.ID {
		t.Fatalf("prune deleted %+v, want only the failed set %s", res.Deleted, failed.ID)
	}
	sets, _ := c.ListSets(ctx)
	if len(sets) != 1 || sets[0].ID != old.ID {
		t.Fatalf("sets left %+v, want the expired but newest accomplished %s", sets, old.ID)
	}
}

func TestThrottlingStorm(t *testing.T) {
	e := newEnv(t, "cloud_efficiency")
	c := e.client(t)
	ctx := context.Background()
	e.fake.Throttle(3)
	e.fake.Unavailable(2)
	set, err := c.CreateSet(ctx, CreateRequest{Wait: true})
	if err != nil {
		t.Fatalf("CreateSet through a throttling storm: %v", err)
	}
	if e.clock.Slept() < 5*time.Second/2 {
		t.Errorf("retries slept only %s of backoff", e.clock.Slept())
	}
	if n := len(e.fake.Snapshots()); n != 2 || len(set.Disks) != 2 {
		t.Fatalf("%d snapshots after retries, want 2 (one per disk)", n)
	}

	e.fake.Throttle(100)
	_, err = c.ListSets(ctx)
	var ae *APIError
	if !errors.As(err, &ae) || ae.Code != "Throttling.User" || ae.RequestID == "" || ae.HTTPStatus != 400 {
		t.Fatalf("a storm longer than the retries must surface the ECS error, got %v", err)
	}
	if !strings.Contains(err.Error(), "giving up after 6 attempts") {
		t.Errorf("error does not say it retried: %v", err)
	}
}

func TestCreateRetryIsIdempotent(t *testing.T) {
	e := newEnv(t, "cloud_efficiency")
	c := e.client(t)
	// The first CreateSnapshot succeeds in ECS but its answer is lost (a
	// 503 on the way back is what the client sees): the retry carries the
	// same ClientToken and must not make a second snapshot.
	lost := false
	e.fake.OnAction(func(action string, _ url.Values) {
		if action == "CreateSnapshot" && !lost {
			lost = true
			e.fake.Unavailable(1)
		}
	})
	if _, err := c.CreateSet(context.Background(), CreateRequest{Wait: true}); err != nil {
		t.Fatal(err)
	}
	if n := len(e.fake.Snapshots()); n != 2 {
		t.Fatalf("%d snapshots, want 2", n)
	}
}

func TestCreateThatFailsCleansUp(t *testing.T) {
	e := newEnv(t, "cloud_efficiency")
	c := e.client(t)
	injected := false
	e.fake.OnAction(func(action string, _ url.Values) {
		if action == "CreateSnapshot" && !injected {
			injected = true
			e.fake.Inject(ecsfake.Fault{Action: "CreateSnapshot", Code: "OperationDenied.NoStock", Status: 403, Message: "The disk cannot be snapshotted now."})
		}
	})
	_, err := c.CreateSet(context.Background(), CreateRequest{Wait: true})
	var ae *APIError
	if !errors.As(err, &ae) || ae.Code != "OperationDenied.NoStock" || ae.RequestID == "" || !strings.Contains(err.Error(), "The disk cannot be snapshotted now.") {
		t.Fatalf("want the ECS error with code, message and RequestId, got %v", err)
	}
	if n := len(e.fake.Snapshots()); n != 0 {
		t.Fatalf("%d snapshots of the incomplete set left behind", n)
	}
}

func TestBusyDiskWaits(t *testing.T) {
	e := newEnv(t, "cloud_essd")
	c := e.client(t)
	ctx := context.Background()
	if _, err := c.CreateSet(ctx, CreateRequest{}); err != nil {
		t.Fatal(err)
	}
	before := e.clock.Now()
	second, err := c.CreateSet(ctx, CreateRequest{Wait: true})
	if err != nil {
		t.Fatalf("second set while the first is progressing: %v", err)
	}
	if e.clock.Now().Sub(before) < 2*time.Minute {
		t.Errorf("second set did not wait for the first (%s)", e.clock.Now().Sub(before))
	}
	if second.GroupID == "" {
		t.Errorf("ESSD disks should make a snapshot group")
	}
}

func TestQuotaCheckedBeforeCreate(t *testing.T) {
	e := newEnv(t, "cloud_efficiency")
	for range SnapshotQuota {
		e.fake.AddSnapshot(ecsfake.SnapshotSpec{DiskID: "d-data000002", Name: "old"})
	}
	c := e.client(t)
	_, err := c.CreateSet(context.Background(), CreateRequest{})
	var qe *QuotaError
	if !errors.As(err, &qe) || qe.DiskID != "d-data000002" || qe.Count != SnapshotQuota {
		t.Fatalf("want QuotaError for d-data000002, got %v", err)
	}
	if n := e.fake.Calls("CreateSnapshot"); n != 0 {
		t.Fatalf("%d CreateSnapshot calls despite the quota", n)
	}
}

func TestPagingThroughManySets(t *testing.T) {
	e := newEnv(t, "cloud_efficiency")
	for i := range 130 {
		e.fake.AddSnapshot(ecsfake.SnapshotSpec{DiskID: "d-data000002", Age: time.Duration(i) * time.Minute, Tags: map[string]string{
			TagManagedBy: ManagedByValue, TagSet: fmt.Sprintf("kk-%03d", i), TagInstance: testInstance}})
	}
	c := e.client(t)
	sets, err := c.ListSets(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(sets) != 130 {
		t.Fatalf("listed %d sets across pages, want 130", len(sets))
	}
	if sets[0].ID != "kk-129" || sets[129].ID != "kk-000" {
		t.Fatalf("not oldest first: %s .. %s", sets[0].ID, sets[129].ID)
	}
}

func TestWrongCredentialsGiveTheSDKError(t *testing.T) {
	e := newEnv(t, "cloud_essd")
	t.Setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "not-the-secret")
	c := e.client(t, func(o *Options) { o.Region, o.InstanceID = "cn-hangzhou", testInstance })
	_, err := c.ListSets(context.Background())
	var ae *APIError
	if !errors.As(err, &ae) || ae.Code != "SignatureDoesNotMatch" || ae.HTTPStatus != 400 || ae.RequestID == "" {
		t.Fatalf("want SignatureDoesNotMatch, got %v", err)
	}
	// The SDK compares our string to sign with the server's and, when equal,
	// blames the secret: that is the real SDK path, not ours.
	if !strings.Contains(ae.Recommend, "InvalidAccessKeySecret") {
		t.Errorf("SDK recommend = %q", ae.Recommend)
	}
	if strings.Contains(err.Error(), testKeyID) || strings.Contains(err.Error(), "AccessKeyId%3D") {
		t.Errorf("error quotes the signed request: %v", err)
	}

	t.Setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAIunknown")
	_, err = c.ListSets(context.Background())
	if !errors.As(err, &ae) || ae.Code != "InvalidAccessKeyId.NotFound" || ae.HTTPStatus != 404 {
		t.Fatalf("want InvalidAccessKeyId.NotFound, got %v", err)
	}

	t.Setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "")
	_, err = c.ListSets(context.Background())
	if err == nil || !strings.Contains(err.Error(), "ALIBABA_CLOUD_ACCESS_KEY_ID") {
		t.Fatalf("want a no-credentials error naming the variables, got %v", err)
	}
}

func TestRAMRoleFromMetadataWithIMDSv2(t *testing.T) {
	clock := ecsfake.NewManualClock(testStart)
	fake := ecsfake.New(ecsfake.Options{Region: "cn-shanghai", Clock: clock, RequireIMDSv2: true})
	fake.AddInstance(ecsfake.InstanceSpec{ID: "i-roleinstance"})
	fake.AddDisk(ecsfake.DiskSpec{ID: "d-roledisk", InstanceID: "i-roleinstance", Type: "system", Category: "cloud_essd"})
	fake.SetRAMRole("KubekeepSnapshots", "STS.fakekeyid", "sts-secret", "sts-token-value")
	srv := newServer(t, fake)
	t.Setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "")
	t.Setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "")
	t.Setenv("ALIBABA_CLOUD_ECS_METADATA", "")
	c, err := New(context.Background(), Options{Endpoint: srv, MetadataURL: srv, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	if c.Region() != "cn-shanghai" || c.InstanceID() != "i-roleinstance" {
		t.Fatalf("discovered %s/%s", c.Region(), c.InstanceID())
	}
	set, err := c.CreateSet(context.Background(), CreateRequest{Wait: true})
	if err != nil {
		t.Fatalf("CreateSet with RAM role credentials: %v", err)
	}
	if set.Status != StatusAccomplished {
		t.Fatalf("set %s", set.Status)
	}
}

func TestLoopbackEndpointIgnoresProxy(t *testing.T) {
	e := newEnv(t, "cloud_essd")
	// A proxy that refuses everything: were the SDK to use it for the
	// loopback endpoint, every call would fail.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	proxy := "http://" + ln.Addr().String()
	ln.Close()
	t.Setenv("HTTP_PROXY", proxy)
	t.Setenv("http_proxy", proxy)
	c := e.client(t)
	if _, err := c.ListSets(context.Background()); err != nil {
		t.Fatalf("loopback endpoint went through HTTP_PROXY: %v", err)
	}
}

func TestTransportErrorsAreRedacted(t *testing.T) {
	e := newEnv(t, "cloud_essd")
	t.Setenv("ALIBABA_CLOUD_SECURITY_TOKEN", "secret-sts-token")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()
	c := e.client(t, func(o *Options) { o.Endpoint, o.Region, o.InstanceID = dead, "cn-hangzhou", testInstance })
	_, err = c.ListSets(context.Background())
	if err == nil {
		t.Fatal("call to a closed port succeeded")
	}
	for _, secret := range []string{testKeyID, "secret-sts-token"} {
		if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), url.QueryEscape(secret)) {
			t.Fatalf("transport error leaks %q: %v", secret, err)
		}
	}
	if !strings.Contains(err.Error(), "giving up after") {
		t.Errorf("transport errors should be retried: %v", err)
	}
}

func TestPolicyModeAndConflict(t *testing.T) {
	e := newEnv(t, "cloud_essd")
	ctx := context.Background()
	agent := e.client(t)
	if _, err := agent.ApplyPolicy(ctx, PolicyOptions{TimePoints: []int{0, 8, 16}}); err == nil {
		t.Fatal("ApplyPolicy in agent mode must be refused")
	}
	policy := e.client(t, func(o *Options) { o.Mode = "policy" })
	res, err := policy.ApplyPolicy(ctx, PolicyOptions{TimePoints: []int{16, 0, 8}})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Created || len(res.Disks) != 2 || res.Name != "kubekeep-prod" {
		t.Fatalf("policy result %+v", res)
	}
	again, err := policy.ApplyPolicy(ctx, PolicyOptions{TimePoints: []int{0, 8, 16}})
	if err != nil || again.Created || again.PolicyID != res.PolicyID {
		t.Fatalf("re-applying should reuse %s: %+v, %v", res.PolicyID, again, err)
	}
	if _, err := policy.ApplyPolicy(ctx, PolicyOptions{TimePoints: []int{1}}); err == nil {
		t.Fatal("a policy of the same name with other time points must not be silently reused")
	}
	_, err = agent.CreateSet(ctx, CreateRequest{})
	var pc *PolicyConflictError
	if !errors.As(err, &pc) {
		t.Fatalf("agent-mode set on policy disks: want PolicyConflictError, got %v", err)
	}
}

func TestRollbackKilledHalfWayAndResumed(t *testing.T) {
	e := newEnv(t, "cloud_efficiency")
	c := e.client(t)
	bg := context.Background()
	target, err := c.CreateSet(bg, CreateRequest{Version: "v1", EtcdRevision: 42, Wait: true})
	if err != nil {
		t.Fatal(err)
	}
	// The VM breaks after the snapshot.
	e.fake.SetDiskContent("d-system0001", "sys-broken")
	e.fake.SetDiskContent("d-data000002", "data-broken")
	statePath := filepath.Join(t.TempDir(), "rollback.json")

	plan, err := c.PlanRollback(bg, RollbackOptions{SetID: target.ID, StatePath: statePath})
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Disks) != 2 || !plan.Safety || plan.Resume != nil || len(plan.Steps) != 5 {
		t.Fatalf("plan %+v", plan)
	}
	if e.fake.Calls("StopInstance") != 0 || e.fake.Calls("CreateSnapshot") != 2 {
		t.Fatal("planning changed something")
	}

	// Kill the rollback right after the first disk is reset.
	ctx, cancel := context.WithCancel(bg)
	e.fake.OnAction(func(action string, _ url.Values) {
		if action == "ResetDisk" {
			cancel()
		}
	})
	_, err = c.Rollback(ctx, RollbackOptions{SetID: target.ID, StatePath: statePath})
	var mixed *MixedDisksError
	if !errors.As(err, &mixed) || !strings.Contains(err.Error(), "DIFFERENT POINTS IN TIME") || !strings.Contains(err.Error(), "d-system0001: NOT reset") {
		t.Fatalf("half-way rollback must say loudly that disks differ, got %v", err)
	}
	if got := e.fake.InstanceStatus(testInstance); got != "Stopped" {
		t.Fatalf("instance %s after the interrupted rollback, want left Stopped", got)
	}
	st, err := LoadRollbackState(statePath)
	if err != nil || st == nil || st.Phase != PhaseReset || !st.SafetyDone || resetFrom(st, "d-data000002") != target.ID || resetFrom(st, "d-system0001") != "" {
		t.Fatalf("state after kill: %+v, %v", st, err)
	}
	plan, err = c.PlanRollback(bg, RollbackOptions{SetID: target.ID, StatePath: statePath})
	if err != nil || plan.Resume == nil || len(plan.Warnings) == 0 {
		t.Fatalf("plan of the resume: %+v, %v", plan, err)
	}

	if _, err := c.Rollback(bg, RollbackOptions{SetID: target.ID, StatePath: statePath}); err != nil {
		t.Fatalf("resumed rollback: %v", err)
	}
	if a, b := e.fake.DiskContent("d-system0001"), e.fake.DiskContent("d-data000002"); a != "sys-v1" || b != "data-v1" {
		t.Fatalf("disks hold %q, %q after rollback", a, b)
	}
	if got := e.fake.InstanceStatus(testInstance); got != "Running" {
		t.Fatalf("instance %s after rollback", got)
	}
	if n := e.fake.Calls("ResetDisk"); n != 2 {
		t.Errorf("%d ResetDisk calls, want 2 (the resumed run skips the disk already reset)", n)
	}
	if n := e.fake.Calls("StopInstance"); n != 1 {
		t.Errorf("%d StopInstance calls, want 1", n)
	}
	sets, _ := c.ListSets(bg)
	var safety []Set
	for _, s := range sets {
		if s.Purpose == PurposePreRollback {
			safety = append(safety, s)
		}
	}
	if len(safety) != 1 || safety[0].ID != st.SafetySetID {
		t.Fatalf("safety sets %+v, want exactly %s", safety, st.SafetySetID)
	}
	var contents []string
	for _, sn := range e.fake.Snapshots() {
		if sn.Tags[TagSet] == st.SafetySetID {
			contents = append(contents, sn.Content)
		}
	}
	sort.Strings(contents)
	if strings.Join(contents, ",") != "data-broken,sys-broken" {
		t.Errorf("safety set holds %v, want the broken disks as they were", contents)
	}
	if st, _ := LoadRollbackState(statePath); st != nil {
		t.Errorf("state file left after a finished rollback: %+v", st)
	}
}

func TestRollbackRefusesUnfinishedSet(t *testing.T) {
	e := newEnv(t, "cloud_essd")
	c := e.client(t)
	set, err := c.CreateSet(context.Background(), CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Rollback(context.Background(), RollbackOptions{SetID: set.ID, StatePath: filepath.Join(t.TempDir(), "s.json")})
	if err == nil || !strings.Contains(err.Error(), "not accomplished") {
		t.Fatalf("rollback to a progressing set: %v", err)
	}
	if e.fake.Calls("StopInstance") != 0 {
		t.Fatal("instance stopped for an unusable set")
	}
	_, err = c.Rollback(context.Background(), RollbackOptions{SetID: "kk-nope", StatePath: filepath.Join(t.TempDir(), "s.json")})
	var nf *NotFoundError
	if !errors.As(err, &nf) {
		t.Fatalf("unknown set: %v", err)
	}
}

func resetFrom(st *RollbackState, diskID string) string {
	for _, d := range st.Disks {
		if d.DiskID == diskID {
			return d.ResetFrom
		}
	}
	return "(absent)"
}
