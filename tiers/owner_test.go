package tiers_test

import (
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"

	"github.com/kubekeep/kubekeep/config"
	"github.com/kubekeep/kubekeep/rsyncish"
	"github.com/kubekeep/kubekeep/rsyncish/backend"
	"github.com/kubekeep/kubekeep/tiers"
	"github.com/kubekeep/kubekeep/tiers/oss/ossfake"
)

// A tier holding another cluster's store is refused, naming the tier,
// before anything is uploaded: a store without offsite state meeting a
// tier key; a store with its own state for the tier name pointed at
// another store's prefix (the tier key is not the one it made); a store
// whose offsite state was copied from another (same keys, another store
// id). The owner still syncs.
func TestSyncRefusesAnotherStoresTier(t *testing.T) {
	fake := ossfake.New(ossfake.Options{})
	fake.AddAccessKey("LTAI5tKubekeepTestKey", "kubekeep-test-secret")
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	fake.CreateBucket("kk-dr")
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	getenv := func(k string) string {
		return map[string]string{"ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAI5tKubekeepTestKey", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "kubekeep-test-secret"}[k]
	}
	cfgAt := func(prefix string) config.Offsite {
		return config.Offsite{Name: "dr", URL: "oss://kk-dr/" + prefix, Endpoint: srv.URL, Region: fake.Region(), Recipients: []string{id.Recipient().String()}}
	}
	newStore := func() string {
		dir := filepath.Join(t.TempDir(), "store")
		if _, err := rsyncish.Open(dir, rsyncish.Options{AllowSameFilesystem: true}); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	sync := func(storeDir string, cfg config.Offsite) error {
		tr, err := tiers.Open(ctxT(t), cfg, tiers.OpenOptions{StoreDir: storeDir, Getenv: getenv, Scratch: t.TempDir()})
		if err != nil {
			return err
		}
		defer tr.Sealed.Close()
		src, err := backend.OpenLocal(storeDir)
		if err != nil {
			t.Fatal(err)
		}
		_, err = tiers.Sync(ctxT(t), src, tr.Sealed, tr.Catalogue, tiers.SyncOptions{Tier: "dr"})
		return err
	}
	a, b, c := newStore(), newStore(), newStore()
	if err := sync(a, cfgAt("cluster-a")); err != nil {
		t.Fatal(err)
	}
	if err := sync(b, cfgAt("cluster-b")); err != nil {
		t.Fatal(err)
	}
	// c's offsite state is a copy of a's (a cloned disk).
	if err := os.CopyFS(tiers.StateDir(c), os.DirFS(tiers.StateDir(a))); err != nil {
		t.Fatal(err)
	}
	objects := len(fake.Objects("kk-dr"))
	for _, tc := range []struct {
		name, store, prefix, want string
	}{
		{"no state, a tier key there", newStore(), "cluster-a", "belongs to another store"},
		{"own state, another store's prefix", b, "cluster-a", "not the tier key this store made"},
		{"copied state, another store id", c, "cluster-a", "holds store "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := sync(tc.store, cfgAt(tc.prefix))
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "tier dr") {
				t.Fatalf("sync to another store's tier: %v, want an error naming tier dr and containing %q", err, tc.want)
			}
		})
	}
	if got := len(fake.Objects("kk-dr")); got != objects {
		t.Errorf("the refused syncs left %d objects in the bucket, %d before", got, objects)
	}
	if err := sync(a, cfgAt("cluster-a")); err != nil {
		t.Errorf("the owner's sync: %v", err)
	}
}
