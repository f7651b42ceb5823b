package objects

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.etcd.io/etcd/api/v3/mvccpb"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubekeep/kubekeep/etcdsnap/snapread"
	"github.com/kubekeep/kubekeep/internal/testetcd"
)

// seedConfigMap is a stored ConfigMap as an apiserver writes it.
func seedConfigMap(tb testing.TB, ns, name, data string) []byte {
	tb.Helper()
	v, err := testetcd.Encode(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Data: map[string]string{"k": data}})
	if err != nil {
		tb.Fatal(err)
	}
	return v
}

// seedImages are small etcd images: empty, a history with overwrites,
// deletions, a compaction and a bump marker, enough entries for branch
// pages, a value spilling onto overflow pages, and an etcdctl snapshot's
// sha256 trailer.
func seedImages(tb testing.TB) [][]byte {
	history := []testetcd.BoltEntry{
		{Main: 2, Key: "/registry/configmaps/kube-system/a", Value: seedConfigMap(tb, "kube-system", "a", "1")},
		{Main: 3, Key: "/registry/namespaces/default", Value: []byte(`{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"default"}}`)},
		{Main: 4, Key: "/registry/configmaps/kube-system/a", Value: seedConfigMap(tb, "kube-system", "a", "2")},
		{Main: 4, Sub: 1, Key: "/registry/example.com/widgets/default/w1", Value: []byte(widgetJSON)},
		{Main: 5, Tombstone: true, Key: "/registry/namespaces/default"},
		{Main: 6, Key: "compact_rev_key", Value: []byte("x")},
		{Main: 1_000_000_006, Marker: true},
	}
	var many []testetcd.BoltEntry
	for i := range 24 {
		key := fmt.Sprintf("/registry/configmaps/ns%d/c%d", i%3, i)
		many = append(many, testetcd.BoltEntry{Main: int64(10 + i), Key: key, Value: seedConfigMap(tb, fmt.Sprintf("ns%d", i%3), fmt.Sprintf("c%d", i), "v")})
	}
	many = append(many, testetcd.BoltEntry{Main: 40, Key: "/registry/configmaps/big/big", Value: seedConfigMap(tb, "big", "big", string(bytes.Repeat([]byte("z"), 1500)))})
	many = append(many, testetcd.BoltEntry{Main: 41, Tombstone: true, Key: "/registry/configmaps/ns0/c0"})
	withTrailer := testetcd.BoltImage(tb, 1024, 0, history[:2])
	sum := sha256.Sum256(withTrailer)
	return [][]byte{
		testetcd.BoltImage(tb, 1024, 0, nil),
		testetcd.BoltImage(tb, 1024, 3, history),
		testetcd.BoltImage(tb, 1024, 0, many),
		append(withTrailer, sum[:]...),
	}
}

// FuzzOpen opens arbitrary bytes as an etcd snapshot and reads everything
// out of what opens: get and diff meet such files when a stored snapshot
// is damaged. Errors must be errors, never a crash; and what opens must
// agree with itself and with etcdsnap's independent full read of the same
// file (ReadKeys unmarshals every entry whole where Open reads heads):
// the same live keys, the same stored bytes for each, listings sorted and
// in the revision range, and the same view when reopened at its own
// revision.
func FuzzOpen(f *testing.F) {
	for _, img := range seedImages(f) {
		f.Add(img)
	}
	f.Fuzz(func(t *testing.T, img []byte) {
		if len(img) > 256<<10 {
			return // the seeds are a few KiB; bound the work per input
		}
		testetcd.Within(10*time.Second, func() { checkImage(t, img) })
	})
}

func checkImage(t *testing.T, img []byte) {
	p := filepath.Join(t.TempDir(), "snap.db")
	if err := os.WriteFile(p, img, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Open(p)
	if err != nil {
		return
	}
	defer s.Close()
	if s.Revision() < s.CompactRevision() {
		t.Fatalf("revision %d before compaction %d", s.Revision(), s.CompactRevision())
	}
	live := map[string]bool{}
	for key, i := range s.keys {
		e := s.entries[i]
		if e.rev.Main > s.Revision() {
			t.Fatalf("%s at revision %d, after the snapshot's %d", key, e.rev.Main, s.Revision())
		}
		if e.rev.Tombstone {
			continue
		}
		live[key] = true
		o, err := s.GetKey(key)
		if err == nil && (o.Key != key || o.ModRevision != e.rev.Main || o.Kind() == "") {
			t.Fatalf("GetKey(%q) = key %q at %d kind %q; indexed at %d", key, o.Key, o.ModRevision, o.Kind(), e.rev.Main)
		}
	}
	if s.Len() != len(live) {
		t.Fatalf("Len %d, %d live keys", s.Len(), len(live))
	}
	items := s.List(Filter{})
	if !slices.IsSortedFunc(items, func(a, b Item) int { return strings.Compare(a.Key, b.Key) }) {
		t.Fatal("List not sorted by key")
	}
	for _, it := range items {
		if ref, ok := RefFromKey(it.Key); !ok || ref != it.Ref || !live[it.Key] {
			t.Fatalf("listed %q as %+v (RefFromKey %+v %v, live %v)", it.Key, it.Ref, ref, ok, live[it.Key])
		}
	}
	if want, ok := liveValues(p); ok {
		if len(want) != len(live) {
			t.Fatalf("Open has %d live keys, a plain read %d", len(live), len(want))
		}
		for key, v := range want {
			if !live[key] {
				t.Fatalf("a plain read has %q, Open does not", key)
			}
			// A damaged branch page can hide a value from a lookup that a
			// walk of the leaves finds: an error then, never other bytes.
			if raw, err := s.RawValue(key); err == nil && !bytes.Equal(raw, v) {
				t.Fatalf("RawValue(%q) = %q, a plain read %q", key, raw, v)
			}
		}
	}
	if s.Revision() > s.CompactRevision() {
		again, err := OpenAt(p, s.Revision())
		if err != nil {
			t.Fatalf("reopen at its own revision %d: %v", s.Revision(), err)
		}
		defer again.Close()
		if again.Revision() != s.Revision() || !slices.Equal(again.List(Filter{}), items) {
			t.Fatalf("reopened at %d: revision %d, %d items, want %d", s.Revision(), again.Revision(), len(again.List(Filter{})), len(items))
		}
	}
}

// liveValues reads the image the plain way, as an oracle for Open: every
// entry of bucket "key" unmarshalled whole with etcd's own type, in
// revision order, a later revision of a key replacing an earlier, a
// deletion removing it, a bump marker (no bytes) skipped. ok is false when
// that reading fails anywhere (bbolt's panics and faults included).
func liveValues(path string) (live map[string][]byte, ok bool) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	db, err := bolt.Open(path, 0o400, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		return nil, false
	}
	defer db.Close()
	live = map[string][]byte{}
	err = db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("key"))
		if b == nil {
			return fmt.Errorf("no key bucket")
		}
		return b.ForEach(func(k, v []byte) error {
			r, err := snapread.ParseRevision(k)
			if err != nil {
				return err
			}
			if len(v) == 0 {
				return nil
			}
			var kv mvccpb.KeyValue
			if err := kv.Unmarshal(v); err != nil {
				return err
			}
			if r.Tombstone {
				delete(live, string(kv.Key))
			} else {
				live[string(kv.Key)] = kv.Value
			}
			return nil
		})
	})
	return live, err == nil
}

// FuzzOpenEntries is FuzzOpen on images bbolt itself writes from what the
// fuzzer gives: pages are always sound, so every input reaches kubekeep's
// own reading of etcd's buckets (revision keys, entry heads, deletions,
// bump markers, the compaction record, values) instead of stopping at
// bbolt. The input is a list of records:
//
//	flags u8 | main u16 | sub u8 | klen u8 | key | vlen u16 | value
//
// stored as etcd stores a revision (key bucket: the revision, an
// mvccpb.KeyValue of key and value; flags&1 a deletion), or with flags&2
// under key as given instead of a revision, flags&4 with value as given
// instead of a KeyValue, flags&8 in bucket meta as key=value.
func FuzzOpenEntries(f *testing.F) {
	rec := func(flags byte, main uint16, sub byte, key string, value []byte) []byte {
		b := []byte{flags, byte(main >> 8), byte(main), sub, byte(len(key))}
		b = append(b, key...)
		b = append(b, byte(len(value)>>8), byte(len(value)))
		return append(b, value...)
	}
	cat := func(recs ...[]byte) []byte { return bytes.Join(recs, nil) }
	cm := seedConfigMap(f, "kube-system", "a", "1")
	f.Add(cat(
		rec(0, 2, 0, "/registry/configmaps/kube-system/a", cm),
		rec(0, 3, 0, "/registry/example.com/widgets/default/w1", []byte(widgetJSON)),
		rec(1, 4, 0, "/registry/configmaps/kube-system/a", nil),
		rec(0, 5, 1, "/registry/configmaps/kube-system/a", cm),
		rec(8, 0, 0, "finishedCompactRev", snapread.Revision{Main: 3}.Bytes()),
	))
	f.Add(cat(
		rec(4, 7, 0, "", nil), // a bump marker
		rec(0, 6, 0, "/registry/namespaces/default", []byte(`{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"default"}}`)),
		rec(8, 0, 0, "scheduledCompactRev", snapread.Revision{Main: 7}.Bytes()),
	))
	f.Add(cat(
		rec(2, 0, 0, "not-a-revision", []byte("x")),
		rec(4, 9, 0, "", []byte("\x0a\x03abc\x2a\x01v")),
		rec(0, 10, 0, "/registry/secrets/a/b", []byte("k8s:enc:aescbc:v1:key1:0123456789abcdef0123456789abcdef")),
	))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 64<<10 {
			return
		}
		testetcd.Within(10*time.Second, func() { checkImage(t, entriesImage(t, data)) })
	})
}

// entriesImage writes FuzzOpenEntries' records into a fresh bbolt file
// and returns the image. Records bbolt refuses (an empty key) are left out.
func entriesImage(t *testing.T, data []byte) []byte {
	p := filepath.Join(t.TempDir(), "db")
	db, err := bolt.Open(p, 0o600, &bolt.Options{PageSize: 1024, NoSync: true, NoFreelistSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		kb, _ := tx.CreateBucket([]byte("key"))
		meta, _ := tx.CreateBucket([]byte("meta"))
		for len(data) >= 5 {
			flags, main, sub, klen := data[0], int64(data[1])<<8|int64(data[2]), int64(data[3]), int(data[4])
			data = data[5:]
			if len(data) < klen+2 {
				break
			}
			key := data[:klen]
			vlen := int(data[klen])<<8 | int(data[klen+1])
			data = data[klen+2:]
			value := data[:min(vlen, len(data))]
			data = data[len(value):]
			bk, bv := snapread.Revision{Main: main, Sub: sub, Tombstone: flags&1 != 0}.Bytes(), value
			if flags&2 != 0 {
				bk = key
			}
			if flags&4 == 0 {
				kv := mvccpb.KeyValue{Key: key, CreateRevision: main, ModRevision: main, Version: 1}
				if flags&1 == 0 {
					kv.Value = value
				}
				bv, _ = kv.Marshal()
			}
			b := kb
			if flags&8 != 0 {
				b, bk, bv = meta, key, value
			}
			_ = b.Put(bk, bv) // an empty key is refused: leave it out
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := db.View(func(tx *bolt.Tx) error { _, err := tx.WriteTo(&buf); return err }); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestSeedImages: the images FuzzOpen starts from open and read as built,
// so the fuzzer starts from files that reach every reader, not from ones
// Open refuses at once.
func TestSeedImages(t *testing.T) {
	imgs := seedImages(t)
	want := []struct {
		size     int // bytes, at most
		rev, len int64
		listed   []string
	}{
		{6 << 10, 0, 0, nil},
		{8 << 10, 1_000_000_006, 3, []string{"/registry/configmaps/kube-system/a", "/registry/example.com/widgets/default/w1"}},
		{20 << 10, 41, 24, nil},
		{8<<10 + 32, 3, 2, []string{"/registry/configmaps/kube-system/a", "/registry/namespaces/default"}},
	}
	for i, img := range imgs {
		p := filepath.Join(t.TempDir(), "db")
		if err := os.WriteFile(p, img, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := Open(p)
		if err != nil {
			t.Fatalf("seed %d: %v", i, err)
		}
		var listed []string
		for _, it := range s.List(Filter{}) {
			listed = append(listed, it.Key)
		}
		w := want[i]
		if len(img) > w.size || s.Revision() != w.rev || int64(s.Len()) != w.len || (w.listed != nil && !slices.Equal(listed, w.listed)) {
			t.Errorf("seed %d: %d bytes, revision %d, %d keys, listed %q; want at most %d bytes, %d, %d, %q",
				i, len(img), s.Revision(), s.Len(), listed, w.size, w.rev, w.len, w.listed)
		}
		if i == 2 {
			if o, err := s.Get(Ref{Resource: "configmaps", Namespace: "big", Name: "big"}); err != nil || len(o.Content()["data"].(map[string]any)["k"].(string)) != 1500 {
				t.Errorf("seed 2: the overflowing value: %v", err)
			}
		}
		s.Close()
	}
}

// TestOpenDamagedImages: two kinds of damage Open met only by chance
// before FuzzOpen. A file cut short of the pages its meta page counts
// killed the process with SIGBUS (bbolt maps past the end and reads
// there, or trips on a page of zeros); a revision key changed in place
// left keys out of order, which Open indexed as if sorted, the newest entry
// by position winning over the newest by revision (here ConfigMap a's
// entry at revision 99 read first, then lost to the one at 4).
func TestOpenDamagedImages(t *testing.T) {
	img := seedImages(t)[1]
	open := func(b []byte) error {
		p := filepath.Join(t.TempDir(), "db")
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := Open(p)
		if err == nil {
			s.Close()
		}
		return err
	}
	for _, n := range []int{5 * 1024, 4*1024 + 100} {
		if err := open(img[:n]); err == nil || !strings.Contains(err.Error(), "truncated") {
			t.Errorf("cut to %d of %d bytes: %v", n, len(img), err)
		}
	}
	rev2, rev99 := snapread.Revision{Main: 2}.Bytes(), snapread.Revision{Main: 99}.Bytes()
	if bytes.Count(img, rev2) != 1 {
		t.Fatalf("revision 2's key is in the image %d times", bytes.Count(img, rev2))
	}
	moved := bytes.Replace(img, rev2, rev99, 1)
	if err := open(moved); err == nil || !strings.Contains(err.Error(), "out of order") {
		t.Errorf("revision 2 rewritten as 99: %v", err)
	}
}
