package objects

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/kubekeep/kubekeep/etcdsnap/snapread"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// indexedOf opens the image at path through the key index the backup's
// check writes beside it.
func indexedOf(t *testing.T, path, base string) *Indexed {
	t.Helper()
	info := snapread.Info{Source: snapread.SourceAPI}
	if _, err := info.Check(path); err != nil {
		t.Fatal(err)
	}
	if info.KeyIndexPath == "" {
		t.Fatal("the check wrote no key index")
	}
	xf, err := os.Open(info.KeyIndexPath)
	if err != nil {
		t.Fatal(err)
	}
	img, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := xf.Stat()
	s, err := OpenIndexed(IndexedConfig{Index: xf, IndexSize: fi.Size(), Image: img, Base: base, OnClose: func() error {
		xf.Close()
		return img.Close()
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// sameAsEtcd: every key etcd serves at rev (and only those) reads out of r
// with etcd's value and revisions.
func sameAsEtcd(t *testing.T, what string, c *clientv3.Client, rev int64, r Reader) {
	t.Helper()
	resp, err := c.Get(context.Background(), "/registry/", clientv3.WithPrefix(), clientv3.WithRev(rev))
	if err != nil {
		t.Fatal(err)
	}
	if r.Revision() != rev {
		t.Errorf("%s: revision %d, want %d", what, r.Revision(), rev)
	}
	items, err := r.Items(Filter{})
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]Item{}
	for _, it := range items {
		listed[it.Key] = it
	}
	n := 0
	for _, kv := range resp.Kvs {
		if _, ok := RefFromKey(string(kv.Key)); !ok {
			continue
		}
		n++
		raw, err := r.RawValue(string(kv.Key))
		if err != nil || !bytes.Equal(raw, kv.Value) {
			t.Errorf("%s: %s: %d bytes, err %v; etcd has %d bytes", what, kv.Key, len(raw), err, len(kv.Value))
			continue
		}
		obj, err := r.GetKey(string(kv.Key))
		if err != nil {
			t.Errorf("%s: %s: %v", what, kv.Key, err)
			continue
		}
		if obj.ModRevision != kv.ModRevision || obj.CreateRevision != kv.CreateRevision || obj.Version != kv.Version || obj.Lease != kv.Lease {
			t.Errorf("%s: %s: mod %d create %d version %d lease %d; etcd %d %d %d %d", what, kv.Key, obj.ModRevision, obj.CreateRevision, obj.Version, obj.Lease, kv.ModRevision, kv.CreateRevision, kv.Version, kv.Lease)
		}
		if it := listed[string(kv.Key)]; it.ModRevision != kv.ModRevision {
			t.Errorf("%s: %s listed at %d, etcd %d", what, kv.Key, it.ModRevision, kv.ModRevision)
		}
	}
	if n != len(items) {
		t.Errorf("%s: %d objects listed, etcd serves %d", what, len(items), n)
	}
}

// TestIndexedMatchesEtcd: an Indexed over a real snapshot and its key
// index reads what etcd serves at the snapshot's revision (values on
// overflow pages, leases, deleted keys absent), lists what Snapshot lists
// for each filter, and moved forward by the watch's events reads what
// etcd serves at the later revision; Diff over Indexed readers (different
// bases: a merge of the two indexes; one base: only the events) gives what
// Diff over Snapshots does.
func TestIndexedMatchesEtcd(t *testing.T) {
	e := startEtcd(t)
	c := e.Client
	ctx := context.Background()
	lease, err := c.Grant(ctx, 3600)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 400 {
		data := map[string]string{"i": fmt.Sprint(i)}
		if i%100 == 0 {
			data["big"] = strings.Repeat("x", 20000)
		}
		key := fmt.Sprintf("/registry/configmaps/ns%d/cm%03d", i%4, i)
		if i%9 == 0 {
			if _, err := c.Put(ctx, key, string(configMap(t, fmt.Sprintf("ns%d", i%4), fmt.Sprintf("cm%03d", i), data)), clientv3.WithLease(lease.ID)); err != nil {
				t.Fatal(err)
			}
			continue
		}
		put(t, c, key, configMap(t, fmt.Sprintf("ns%d", i%4), fmt.Sprintf("cm%03d", i), data))
	}
	for i := range 30 {
		put(t, c, fmt.Sprintf("/registry/secrets/ns%d/s%02d", i%3, i), configMap(t, "x", "y", map[string]string{"s": fmt.Sprint(i)}))
	}
	del(t, c, "/registry/configmaps/ns1/cm001")
	rev1 := put(t, c, "/registry/configmaps/ns2/cm002", configMap(t, "ns2", "cm002", map[string]string{"again": "1"}))
	p1 := snapshotFile(t, e, "one.db")
	ix1 := indexedOf(t, p1, "v1")
	sn1, err := Open(p1)
	if err != nil {
		t.Fatal(err)
	}
	defer sn1.Close()
	sameAsEtcd(t, "indexed", c, rev1, ix1)

	if _, err := ix1.GetKey("/registry/configmaps/ns1/cm001"); !isDeletedAt(err, rev1-1) {
		t.Errorf("deleted key: %v, want deleted at %d", err, rev1-1)
	}
	for _, f := range []Filter{{}, {Resource: "configmaps"}, {Resource: "configmaps", Namespace: "ns3"}, {Resource: "secrets", Namespace: "ns0"}, {Namespace: "ns1"}, {Resource: "pods"}, {Group: "apps", Resource: "deployments"}} {
		got, err := ix1.Items(f)
		if err != nil {
			t.Fatal(err)
		}
		if want := sn1.List(f); !equalJSON(got, want) {
			t.Errorf("Items(%+v): %d items, Snapshot lists %d", f, len(got), len(want))
		}
	}

	// Later changes, as the journal records them.
	put(t, c, "/registry/configmaps/ns0/new", configMap(t, "ns0", "new", nil))
	del(t, c, "/registry/configmaps/ns3/cm003")
	put(t, c, "/registry/configmaps/ns0/cm004", configMap(t, "ns0", "cm004", map[string]string{"v": "2"}))
	del(t, c, "/registry/configmaps/ns2/cm002")
	rev2 := put(t, c, "/registry/configmaps/ns1/cm001", configMap(t, "ns1", "cm001", map[string]string{"back": "yes"}))
	evs := watchEvents(t, c, rev1+1, rev2)
	ix1j := indexedOf(t, p1, "v1")
	if err := ix1j.ApplyEvents(evs); err != nil {
		t.Fatal(err)
	}
	sameAsEtcd(t, "indexed+journal", c, rev2, ix1j)

	sn1j, err := Open(p1)
	if err != nil {
		t.Fatal(err)
	}
	defer sn1j.Close()
	if err := sn1j.ApplyEvents(evs); err != nil {
		t.Fatal(err)
	}
	want, err := Diff(sn1, sn1j)
	if err != nil {
		t.Fatal(err)
	}
	if len(want) != 5 {
		t.Fatalf("Snapshot diff: %s", toJSON(want))
	}
	// One base: only the journal's keys.
	if got, err := Diff(ix1, ix1j); err != nil || !equalJSON(got, want) {
		t.Errorf("Diff on one base: %s %v\nwant %s", toJSON(got), err, toJSON(want))
	}
	// Two bases: a second snapshot at rev2, merged with the first's index.
	p2 := snapshotFile(t, e, "two.db")
	ix2 := indexedOf(t, p2, "v2")
	sameAsEtcd(t, "second snapshot", c, rev2, ix2)
	if got, err := Diff(ix1, ix2); err != nil || !equalJSON(got, want) {
		t.Errorf("Diff of two indexes: %s %v\nwant %s", toJSON(got), err, toJSON(want))
	}
	if got, err := Diff(ix2, ix1j); err != nil || len(got) != 0 {
		t.Errorf("Diff of the journal's state and a snapshot of it: %s %v", toJSON(got), err)
	}
}

func isDeletedAt(err error, rev int64) bool {
	var nf *NotFoundError
	return errors.As(err, &nf) && nf.DeletedAt == rev
}

// TestIndexedDamage: a damaged block of the key index, and an index that
// points at the wrong bytes of the image, are errors wrapping
// snapread.ErrKeyIndex, never another object.
func TestIndexedDamage(t *testing.T) {
	e := startEtcd(t)
	for i := range 50 {
		put(t, e.Client, fmt.Sprintf("/registry/configmaps/default/cm%02d", i), configMap(t, "default", fmt.Sprintf("cm%02d", i), map[string]string{"i": fmt.Sprint(i)}))
	}
	p := snapshotFile(t, e, "snap.db")
	_ = indexedOf(t, p, "")
	index, err := os.ReadFile(snapread.KeyIndexPathFor(p))
	if err != nil {
		t.Fatal(err)
	}
	image, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	open := func(index, image []byte) *Indexed {
		s, err := OpenIndexed(IndexedConfig{Index: bytes.NewReader(index), IndexSize: int64(len(index)), Image: bytes.NewReader(image)})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	bad := bytes.Clone(index)
	bad[20] ^= 0xff // inside the first (only) block
	if _, err := open(bad, image).Get(Ref{Resource: "configmaps", Namespace: "default", Name: "cm07"}); !errors.Is(err, snapread.ErrKeyIndex) || !strings.Contains(err.Error(), "checksum") {
		t.Errorf("damaged block: %v", err)
	}
	// The image changed under the index (another version's image).
	s := open(index, image)
	st, ok, err := s.lookup("/registry/configmaps/default/cm07")
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	other, _, err := s.lookup("/registry/configmaps/default/cm08")
	if err != nil {
		t.Fatal(err)
	}
	swapped := bytes.Clone(image)
	copy(swapped[st.off:st.off+min(st.n, other.n)], image[other.off:other.off+min(st.n, other.n)])
	if _, err := open(index, swapped).GetKey("/registry/configmaps/default/cm07"); !errors.Is(err, snapread.ErrKeyIndex) {
		t.Errorf("value bytes of another key: %v", err)
	}
}
