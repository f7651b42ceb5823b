package agent

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/minio/minio-go/v7"

	"github.com/kubekeep/kubekeep/config"
	"github.com/kubekeep/kubekeep/internal/s3test"
	"github.com/kubekeep/kubekeep/internal/testetcd"
	"github.com/kubekeep/kubekeep/rsyncish/backend"
	"github.com/kubekeep/kubekeep/tiers"
)

// The agent opens a tier once and keeps it across its syncs (the
// journal shipping's every second included), and a full sync lists the
// tier once per reconcile period: a pack the tier lost is trusted until
// then (no LIST on the hot path), and uploaded again by the first full
// sync after it.
func TestAgentOffsiteCacheAndReconcile(t *testing.T) {
	srv := s3test.StartT(t)
	mc := srv.Bucket(t, "kk-cache", false)
	ctx := context.Background()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	root := testetcd.SandboxT(t)
	etcd := testetcd.StartT(t, root)
	if _, err := etcd.LoadCluster(ctx); err != nil {
		t.Fatal(err)
	}
	cli := etcd.ClientT(t)
	dir := storeDir(t)
	cfg := testSettings(root, dir)
	cfg.Schedules.Backup = time.Hour
	tc := config.Offsite{Name: "dr", URL: "s3://kk-cache/cp1", Endpoint: "http://" + srv.Endpoint, Region: "us-east-1",
		Recipients: []string{id.Recipient().String()}, Every: time.Hour}
	cfg.Offsite = []config.Offsite{tc}
	a, buf := newAgent(t, cfg, func(c *Config) {
		c.OffsiteJournalEvery = 500 * time.Millisecond
		c.OffsiteVersionDelay = 100 * time.Millisecond
	})
	const period = time.Hour
	tier := a.offsiteTier("dr")
	tier.reconcileEvery = period
	start(t, a, buf)
	opens := func() int {
		tier.mu.Lock()
		defer tier.mu.Unlock()
		return tier.opens
	}
	// The tier's packs in the bucket (sealed names).
	packs := func() map[string]bool {
		out := map[string]bool{}
		for oi := range mc.ListObjects(ctx, "kk-cache", minio.ListObjectsOptions{Prefix: "cp1/packs/", Recursive: true}) {
			if oi.Err != nil {
				t.Fatal(oi.Err)
			}
			out[oi.Key] = true
		}
		return out
	}
	waitFor(t, 30*time.Second, "the first version", func() bool { return len(versions(t, dir)) == 1 })
	v0 := versions(t, dir)[0].ID
	catHas := func() bool {
		cat, err := tiers.OpenCatalogue(catalogueFile(dir, "dr"))
		return err == nil && cat.Has(backend.Handle{Type: backend.ManifestFile, Name: v0 + ".manifest"})
	}
	waitFor(t, 15*time.Second, "the first version in the tier", catHas)
	// Journal segments ship (a sync each) while the tier stays open.
	for i := range 5 {
		if _, err := cli.Put(ctx, fmt.Sprintf("/registry/configmaps/default/cache-%d", i), "v"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(600 * time.Millisecond)
	}
	if n := opens(); n != 1 {
		t.Errorf("the tier was opened %d times for its syncs, want once", n)
	}

	// The tier loses a pack.
	before := packs()
	var lost string
	for k := range before {
		lost = k
		break
	}
	if lost == "" {
		t.Fatal("no pack in the tier")
	}
	if err := mc.RemoveObject(ctx, "kk-cache", lost, minio.RemoveObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	setReconciled := func(at time.Time) {
		tier.mu.Lock()
		defer tier.mu.Unlock()
		tier.reconciled = at
	}
	// Within the period a full sync trusts the catalogue: no LIST, the
	// pack is not noticed.
	setReconciled(time.Now())
	if err := a.syncTier(a.jobCtx, "dr", nil); err != nil {
		t.Fatal(err)
	}
	if packs()[lost] {
		t.Fatal("the lost pack came back before a reconcile was due")
	}
	// Once the period has run, the full sync lists the tier first.
	setReconciled(time.Now().Add(-period - time.Second))
	if err := a.syncTier(a.jobCtx, "dr", nil); err != nil {
		t.Fatal(err)
	}
	if !packs()[lost] {
		t.Fatalf("the pack the tier lost (%s) was not uploaded again by the full sync after the reconcile period", lost)
	}
	if !strings.Contains(buf.String(), "the tier lacks objects its catalogue recorded") {
		t.Error("the reconcile that found the loss logged nothing")
	}
	if n := opens(); n != 1 {
		t.Errorf("the tier was opened %d times, want once", n)
	}
}
