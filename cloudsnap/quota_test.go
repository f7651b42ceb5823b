package cloudsnap

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kubekeep/kubekeep/cloudsnap/ecsfake"
)

// fillWithForeign adds snapshots kubekeep did not make (taken by hand, no
// kubekeep tags) until the disk holds SnapshotQuota manual snapshots.
func fillWithForeign(t *testing.T, e *env, diskID string) int {
	t.Helper()
	have := 0
	for _, s := range e.fake.Snapshots() {
		if s.DiskID == diskID && s.Type == "user" {
			have++
		}
	}
	for i := have; i < SnapshotQuota; i++ {
		e.fake.AddSnapshot(ecsfake.SnapshotSpec{DiskID: diskID, Name: fmt.Sprintf("by-hand-%d", i), Age: time.Hour})
	}
	return SnapshotQuota - have
}

func wantInError(t *testing.T, err error, want []string, not []string) {
	t.Helper()
	if err == nil {
		t.Fatal("want an error")
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error does not say %q:\n%v", w, err)
		}
	}
	for _, n := range not {
		if strings.Contains(err.Error(), n) {
			t.Errorf("error says %q:\n%v", n, err)
		}
	}
}

// Issue 13 (item 20): a disk full of snapshots kubekeep did not make. The
// error advised `kubekeep cloud prune`, which rightly keeps them: it must
// say how many are whose and what does help, and the advice must work.
func TestCloudQuotaFullOfForeignSnapshots(t *testing.T) {
	e := newEnv(t, "cloud_efficiency")
	c := e.client(t)
	ctx := context.Background()
	for range 2 {
		if _, err := c.CreateSet(ctx, CreateRequest{Wait: true}); err != nil {
			t.Fatal(err)
		}
	}
	foreign := fillWithForeign(t, e, "d-data000002")
	if foreign != 254 {
		t.Fatalf("filled %d", foreign)
	}

	_, err := c.CreateSet(ctx, CreateRequest{})
	var qe *QuotaError
	if !errors.As(err, &qe) || qe.DiskID != "d-data000002" || qe.Count != SnapshotQuota {
		t.Fatalf("want QuotaError for d-data000002, got %v", err)
	}
	wantInError(t, err, []string{
		"256 of the 256 manual snapshots",
		"2 in kubekeep's sets of this instance, 254 not",
		"delete those of the other 254 you no longer need",
		"filtered by disk d-data000002",
		"`kubekeep cloud prune` never deletes snapshots kubekeep did not make",
		"have the quota raised",
		"lower cloud.retentionDays (now 7",
	}, []string{"run `kubekeep cloud prune`"})

	// What it says about prune is true: prune frees nothing here.
	res, err := c.Prune(ctx, false)
	if err != nil || len(res.Deleted) != 0 {
		t.Fatalf("prune: %+v %v", res, err)
	}
	if _, err := c.CreateSet(ctx, CreateRequest{}); !errors.As(err, &qe) {
		t.Fatalf("after prune: want the quota error still, got %v", err)
	}
	// What it says does help, helps: delete one of the others.
	var byHand string
	for _, s := range e.fake.Snapshots() {
		if strings.HasPrefix(s.Name, "by-hand-") {
			byHand = s.ID
			break
		}
	}
	if err := c.deleteSnapshots(ctx, []string{byHand}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateSet(ctx, CreateRequest{Wait: true}); err != nil {
		t.Fatalf("after deleting a snapshot kubekeep did not make: %v", err)
	}
}

// When kubekeep's own expired sets fill the quota (snapshot groups carry
// no ECS retention, so only prune deletes them), prune is the advice.
func TestCloudQuotaSaysPruneWhenKubekeepsExpired(t *testing.T) {
	e := newEnv(t, "cloud_essd")
	c := e.client(t)
	ctx := context.Background()
	for range 3 {
		if _, err := c.CreateSet(ctx, CreateRequest{Wait: true}); err != nil {
			t.Fatal(err)
		}
		e.clock.Advance(time.Hour)
	}
	e.clock.Advance(8 * 24 * time.Hour)
	if _, err := c.CreateSet(ctx, CreateRequest{Wait: true}); err != nil {
		t.Fatal(err)
	}
	fillWithForeign(t, e, "d-system0001")

	_, err := c.CreateSet(ctx, CreateRequest{})
	wantInError(t, err, []string{
		"disk d-system0001 already has 256 of the 256",
		"4 in kubekeep's sets of this instance, 252 not",
		"run `kubekeep cloud prune`: 3 of kubekeep's are expired or failed and it deletes them",
		"delete those of the other 252",
		"keep fewer kubekeep sets (1 of its snapshots of the disk are within their retention)",
	}, nil)

	res, err := c.Prune(ctx, false)
	if err != nil || len(res.Deleted) != 3 {
		t.Fatalf("prune: %+v %v", res, err)
	}
	if _, err := c.CreateSet(ctx, CreateRequest{Wait: true}); err != nil {
		t.Fatalf("after prune: %v", err)
	}
}

// All of the disk's snapshots are kubekeep's and none expired: neither
// prune nor the console helps; fewer sets do.
func TestCloudQuotaAllKubekeepsSaysKeepFewer(t *testing.T) {
	e := newEnv(t, "cloud_efficiency")
	for i := range SnapshotQuota {
		e.fake.AddSnapshot(ecsfake.SnapshotSpec{DiskID: "d-data000002", Age: time.Duration(i) * time.Minute, Tags: map[string]string{
			TagManagedBy: ManagedByValue, TagSet: fmt.Sprintf("kk-%03d", i), TagInstance: testInstance}})
	}
	c := e.client(t, func(o *Options) { o.RetentionDays = 30 })
	_, err := c.CreateSet(context.Background(), CreateRequest{})
	wantInError(t, err, []string{
		"256 in kubekeep's sets of this instance, 0 not",
		"keep fewer kubekeep sets (256 of its snapshots of the disk are within their retention): lower cloud.retentionDays (now 30",
		"schedules.cloudSnapshot",
	}, []string{"run `kubekeep cloud prune`", "delete those of the other"})
}

// Another tool takes snapshots between kubekeep's count and its create:
// ECS refuses the snapshot itself. That refusal gets the same breakdown,
// keeps ECS's code, and the set's snapshot already taken is removed.
func TestCloudQuotaRefusedByECSAfterTheCount(t *testing.T) {
	e := newEnv(t, "cloud_efficiency")
	var once sync.Once
	e.fake.BeforeAction(func(action string, p url.Values) {
		if action == "CreateSnapshot" && p.Get("DiskId") == "d-data000002" {
			once.Do(func() { fillWithForeign(t, e, "d-data000002") })
		}
	})
	c := e.client(t)
	_, err := c.CreateSet(context.Background(), CreateRequest{})
	var qe *QuotaError
	if !errors.As(err, &qe) || !IsCode(err, "QuotaExceed.Snapshot") {
		t.Fatalf("want a QuotaError carrying ECS's QuotaExceed.Snapshot, got %v", err)
	}
	wantInError(t, err, []string{"disk d-data000002 already has 256 of the 256", "0 in kubekeep's sets of this instance, 256 not",
		"delete those of the other 256"}, []string{"run `kubekeep cloud prune`"})
	for _, s := range e.fake.Snapshots() {
		if s.DiskID == "d-system0001" {
			t.Errorf("the incomplete set's snapshot %s of d-system0001 was left behind", s.ID)
		}
	}
}
