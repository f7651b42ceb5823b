package etcdsnap_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kubekeep/kubekeep/etcdsnap/snapread"
	"github.com/kubekeep/kubekeep/internal/testetcd"
)

// TestKeyIndexMatchesEtcd: the index Info.Check writes beside a real API
// snapshot holds, for every key etcd serves at the snapshot's revision, the
// revisions, version and lease etcd reports, and a location in the image
// whose bytes are that key's stored KeyValue (values larger than a page,
// on overflow pages, included); a deleted key is recorded as a deletion.
func TestKeyIndexMatchesEtcd(t *testing.T) {
	r := testetcd.SandboxT(t)
	srv := testetcd.StartT(t, r)
	ctx := ctxT(t)
	if _, err := srv.LoadCluster(ctx); err != nil {
		t.Fatal(err)
	}
	cli := srv.ClientT(t)
	lease, err := cli.Grant(ctx, 3600)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3000 {
		v := strings.Repeat(fmt.Sprint(i%10), 10+i%300)
		if i%500 == 0 {
			v = strings.Repeat("big", 30000) // overflow pages
		}
		var opts []clientv3.OpOption
		if i%7 == 0 {
			opts = append(opts, clientv3.WithLease(lease.ID))
		}
		if _, err := cli.Put(ctx, fmt.Sprintf("/registry/configmaps/ns%d/cm-%04d", i%5, i), v, opts...); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 3000; i += 97 {
		if _, err := cli.Put(ctx, fmt.Sprintf("/registry/configmaps/ns%d/cm-%04d", i%5, i), "again"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cli.Delete(ctx, "/registry/configmaps/ns1/cm-0001"); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "snap.db")
	info := snapshotToFile(t, clientConfig(r, srv.Endpoint()), path)
	if info.KeyIndexPath != snapread.KeyIndexPathFor(path) {
		t.Fatalf("KeyIndexPath %q, want %q", info.KeyIndexPath, snapread.KeyIndexPathFor(path))
	}
	fi, err := os.Stat(info.KeyIndexPath)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("index mode %v, want 0600", fi.Mode().Perm())
	}
	x, image := openIndex(t, info.KeyIndexPath, path)
	if h := x.Header(); h.Revision != info.Revision || h.Keys != info.Keys {
		t.Errorf("header %+v, check says revision %d keys %d", h, info.Revision, info.Keys)
	}
	resp, err := cli.Get(ctx, "", clientv3.WithPrefix(), clientv3.WithRev(info.Revision))
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, want := range resp.Kvs {
		got, ok, err := x.Lookup(string(want.Key))
		if err != nil || !ok {
			t.Fatalf("Lookup %s: ok=%v err=%v", want.Key, ok, err)
		}
		if got.Revision.Main != want.ModRevision || got.CreateRevision != want.CreateRevision || got.Version != want.Version || got.Lease != want.Lease || got.Revision.Tombstone {
			t.Errorf("%s: index %+v, etcd mod %d create %d version %d lease %d", want.Key, got, want.ModRevision, want.CreateRevision, want.Version, want.Lease)
		}
		var kv mvccpb.KeyValue
		if err := kv.Unmarshal(image[got.ValueOffset : got.ValueOffset+got.ValueLength]); err != nil {
			t.Fatalf("%s: bytes at %d+%d: %v", want.Key, got.ValueOffset, got.ValueLength, err)
		}
		if !bytes.Equal(kv.Key, want.Key) || !bytes.Equal(kv.Value, want.Value) || kv.ModRevision != want.ModRevision {
			t.Errorf("%s: bytes at %d hold key %q mod %d (%d value bytes), want %d value bytes", want.Key, got.ValueOffset, kv.Key, kv.ModRevision, len(kv.Value), len(want.Value))
		}
		seen++
	}
	if seen != int(info.Keys) {
		t.Errorf("etcd serves %d keys, the check counted %d", seen, info.Keys)
	}
	del, ok, err := x.Lookup("/registry/configmaps/ns1/cm-0001")
	if err != nil || !ok || !del.Revision.Tombstone {
		t.Errorf("deleted key: %+v ok=%v err=%v", del, ok, err)
	}
	// A prefix range is the keys etcd lists under it, in order.
	pre := "/registry/configmaps/ns3/"
	var ranged []string
	if err := x.Range(pre, snapread.PrefixEnd(pre), func(r snapread.IndexedKey) bool {
		if !r.Revision.Tombstone {
			ranged = append(ranged, r.Key)
		}
		return true
	}); err != nil {
		t.Fatal(err)
	}
	lr, err := cli.Get(ctx, pre, clientv3.WithPrefix(), clientv3.WithRev(info.Revision), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	if len(ranged) != len(lr.Kvs) {
		t.Fatalf("range %s: %d keys, etcd lists %d", pre, len(ranged), len(lr.Kvs))
	}
	for i, kv := range lr.Kvs {
		if ranged[i] != string(kv.Key) {
			t.Fatalf("range %s: key %d is %s, etcd says %s", pre, i, ranged[i], kv.Key)
		}
	}

	// CheckDB (restore, drill) writes no index: it checks images in data
	// dirs that are not kubekeep's to write into.
	if err := os.Remove(info.KeyIndexPath); err != nil {
		t.Fatal(err)
	}
	if _, err := snapread.CheckDB(path); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(info.KeyIndexPath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("CheckDB wrote %s (err %v)", info.KeyIndexPath, err)
	}
}

func openIndex(t *testing.T, indexPath, imagePath string) (*snapread.KeyIndex, []byte) {
	t.Helper()
	f, err := os.Open(indexPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	fi, _ := f.Stat()
	x, err := snapread.OpenKeyIndex(f, fi.Size())
	if err != nil {
		t.Fatal(err)
	}
	image, err := os.ReadFile(imagePath)
	if err != nil {
		t.Fatal(err)
	}
	return x, image
}

func synthetic(n int) []snapread.IndexedKey {
	recs := make([]snapread.IndexedKey, n)
	for i := range recs {
		recs[i] = snapread.IndexedKey{
			Key:            fmt.Sprintf("/registry/pods/ns%02d/pod-%06d", i%37, i),
			Revision:       snapread.Revision{Main: int64(1000 + i)},
			CreateRevision: int64(10 + i),
			Version:        1,
			ValueOffset:    int64(i) * 100,
			ValueLength:    100,
		}
	}
	// Sorted by key.
	for i := 1; i < len(recs); i++ {
		for j := i; j > 0 && recs[j].Key < recs[j-1].Key; j-- {
			recs[j], recs[j-1] = recs[j-1], recs[j]
		}
	}
	return recs
}

func encodeIndex(t testing.TB, recs []snapread.IndexedKey) []byte {
	t.Helper()
	var b bytes.Buffer
	h := snapread.KeyIndexHeader{Revision: 5000, ImageSize: int64(len(recs)+1) * 100, Keys: int64(len(recs)), Records: int64(len(recs))}
	if err := snapread.WriteKeyIndex(&b, h, recs); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestKeyIndexDeterministicBlocks: the same records give the same bytes,
// and changing one record rewrites its block and the small tail (chunks,
// root), not the other blocks: the store's page-level dedupe keeps them.
func TestKeyIndexDeterministicBlocks(t *testing.T) {
	recs := synthetic(20000)
	a := encodeIndex(t, recs)
	if b := encodeIndex(t, recs); !bytes.Equal(a, b) {
		t.Fatal("two encodings of the same records differ")
	}
	recs[10000].Revision.Main = 9999
	b := encodeIndex(t, recs)
	if len(a) != len(b) {
		t.Fatalf("one changed revision moved the tail: %d -> %d bytes", len(a), len(b))
	}
	pages, differ := 0, 0
	for off := 0; off < len(a); off += 4096 {
		end := min(off+4096, len(a))
		pages++
		if !bytes.Equal(a[off:end], b[off:end]) {
			differ++
		}
	}
	// One block (at most 64 KiB + padding) and the tail.
	if differ > 20+3 {
		t.Errorf("%d of %d pages differ after one record changed", differ, pages)
	}
	t.Logf("%d records: %d bytes, %d pages, %d differ", len(recs), len(a), pages, differ)
}

// TestKeyIndexDamage: a flipped byte in a block, a chunk or the root is
// an error wrapping ErrKeyIndex that says where, never another answer.
func TestKeyIndexDamage(t *testing.T) {
	recs := synthetic(20000)
	good := encodeIndex(t, recs)
	x, err := snapread.OpenKeyIndex(bytes.NewReader(good), int64(len(good)))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs[:50] {
		got, ok, err := x.Lookup(r.Key)
		if err != nil || !ok || got != r {
			t.Fatalf("Lookup %s: %+v ok=%v err=%v", r.Key, got, ok, err)
		}
	}
	if _, ok, err := x.Lookup("/registry/pods/ns00/nope"); ok || err != nil {
		t.Errorf("absent key: ok=%v err=%v", ok, err)
	}
	for _, off := range []int{100, len(good) / 2, len(good) - 100} {
		bad := bytes.Clone(good)
		bad[off] ^= 0x40
		x, err := snapread.OpenKeyIndex(bytes.NewReader(bad), int64(len(bad)))
		if err == nil {
			err = x.Range("", "", func(snapread.IndexedKey) bool { return true })
		}
		if !errors.Is(err, snapread.ErrKeyIndex) {
			t.Errorf("byte %d flipped: err %v, want ErrKeyIndex", off, err)
		} else if !strings.Contains(err.Error(), "checksum") {
			t.Errorf("byte %d flipped: %v does not say checksum", off, err)
		}
	}
}

// FuzzKeyIndex: any bytes either fail to open or read as an index whose
// every record is in order and inside the image; nothing panics or hangs.
func FuzzKeyIndex(f *testing.F) {
	f.Add(encodeIndex(f, synthetic(3)))
	f.Add(encodeIndex(f, synthetic(600)))
	f.Add(encodeIndex(f, nil))
	f.Add([]byte("KKKEYS01"))
	f.Fuzz(func(t *testing.T, data []byte) {
		x, err := snapread.OpenKeyIndex(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return
		}
		h := x.Header()
		prev := ""
		n := 0
		err = x.Range("", "", func(r snapread.IndexedKey) bool {
			if n > 0 && r.Key <= prev {
				t.Fatalf("key %q after %q", r.Key, prev)
			}
			if !r.Revision.Tombstone && (r.ValueOffset < 0 || r.ValueLength <= 0 || r.ValueOffset+r.ValueLength > h.ImageSize) {
				t.Fatalf("value %d+%d outside %d", r.ValueOffset, r.ValueLength, h.ImageSize)
			}
			prev = r.Key
			n++
			return true
		})
		if err == nil && n > 0 {
			if _, ok, err := x.Lookup(prev); err != nil || !ok {
				t.Fatalf("Lookup of the last key %q: ok=%v err=%v", prev, ok, err)
			}
		}
	})
}
