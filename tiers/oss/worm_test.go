package oss_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	alioss "github.com/aliyun/alibabacloud-oss-go-sdk-v2/oss"

	"github.com/kubekeep/kubekeep/rsyncish/backend"
	"github.com/kubekeep/kubekeep/tiers/oss"
	"github.com/kubekeep/kubekeep/tiers/oss/ossfake"
)

// With lockDays, Open requires a Locked WORM policy at least that long,
// and says what is wrong otherwise, naming the tier. It never creates or
// changes a policy.
func TestOSSWormCheckedAtOpen(t *testing.T) {
	e := newEnv(t, ossfake.Options{})
	for _, c := range []struct {
		name   string
		days   int32 // 0: no policy
		lock   bool
		want   string // "" for success
		policy string // the state expected after Open
	}{
		{"no policy", 0, false, "has no WORM retention policy", ""},
		{"in progress", 30, false, "is InProgress, not Locked", "InProgress"},
		{"too short", 7, true, "keeps objects only 7 days", "Locked"},
		{"locked and long enough", 14, true, "", "Locked"},
		{"locked and longer", 3650, true, "", "Locked"},
	} {
		t.Run(c.name, func(t *testing.T) {
			bucket := e.bucket()
			if c.days > 0 {
				e.worm(t, bucket, c.days, c.lock)
			}
			cfg := e.config(bucket)
			cfg.LockDays = 14
			_, err := oss.Open(ctxT(t), cfg)
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("open: %v", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("open = %v, want an error containing %q", err, c.want)
			case c.want != "" && !strings.Contains(err.Error(), "oss://127.0.0.1") && !strings.Contains(err.Error(), bucket):
				t.Errorf("the error does not name the tier: %v", err)
			}
			res, gerr := e.client().GetBucketWorm(ctxT(t), &alioss.GetBucketWormRequest{Bucket: &bucket})
			state := ""
			if gerr == nil {
				state = string(res.WormConfiguration.State)
				if d := *res.WormConfiguration.RetentionPeriodInDays; d != c.days {
					t.Errorf("the policy has %d days after Open, %d before", d, c.days)
				}
			}
			if state != c.policy {
				t.Errorf("the bucket's policy is %q after Open, want %q (Open must not touch it)", state, c.policy)
			}
			// Without lockDays the same bucket opens.
			cfg.LockDays = 0
			if _, err := oss.Open(ctxT(t), cfg); err != nil {
				t.Errorf("open without lockDays: %v", err)
			}
		})
	}
}

// Under a locked policy what the tier saved it cannot remove until the
// retention has run, and the bytes stay; after it, Remove works.
func TestOSSRemoveRefusedUnderWorm(t *testing.T) {
	e := newEnv(t, ossfake.Options{})
	bucket := e.bucket()
	e.worm(t, bucket, 1, true)
	cfg := e.config(bucket)
	cfg.LockDays = 1
	b := open(t, cfg)
	h := backend.Handle{Type: backend.ManifestFile, Name: "20261201T000000Z-abcd.manifest"}
	data := []byte("the version the attacker wants gone")
	if err := b.Save(ctxT(t), h, backend.NewByteReader(data)); err != nil {
		t.Fatal(err)
	}
	err := b.Remove(ctxT(t), h)
	if err == nil || !strings.Contains(err.Error(), "WORM") || !strings.Contains(err.Error(), h.Name) || !strings.Contains(err.Error(), "FileImmutable") {
		t.Fatalf("remove under retention = %v, want the WORM refusal naming the object", err)
	}
	// Not even the bucket owner's client gets it deleted.
	key := "cluster-a/store/versions/" + h.Name
	if _, err := e.client().DeleteObject(ctxT(t), &alioss.DeleteObjectRequest{Bucket: &bucket, Key: &key}); err == nil {
		t.Error("a plain DeleteObject of an object under retention succeeded")
	}
	if got, ok := e.fake.Object(bucket, key); !ok || !bytes.Equal(got, data) {
		t.Fatalf("after the removal attempts the object is %q (present %v)", got, ok)
	}
	e.clock.Advance(25 * time.Hour)
	if err := b.Remove(ctxT(t), h); err != nil {
		t.Fatalf("remove after the retention ran: %v", err)
	}
	if _, err := b.Stat(ctxT(t), h); !errors.Is(err, backend.ErrNotFound) {
		t.Errorf("stat after remove = %v", err)
	}
}
