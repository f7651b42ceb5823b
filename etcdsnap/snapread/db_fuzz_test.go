package snapread

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// dbFuzzEntry is one stored revision of bucket "key" for dbFuzzImage.
type dbFuzzEntry struct {
	rev   Revision
	key   string
	value []byte
	// marker stores no bytes at all: a restore's revision bump.
	marker bool
}

// dbFuzzImage builds an etcd backend image directly with bbolt, with 1 KiB
// pages so that a few entries make branch, leaf and overflow pages: the
// buckets "key" (the given revisions) and "meta" (a finished compaction
// when compact > 0), written out with Tx.WriteTo as etcd's snapshot is.
func dbFuzzImage(tb testing.TB, compact int64, entries []dbFuzzEntry) []byte {
	tb.Helper()
	p := filepath.Join(tb.TempDir(), "db")
	db, err := bolt.Open(p, 0o600, &bolt.Options{PageSize: 1024})
	if err != nil {
		tb.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		kb, err := tx.CreateBucket(bucketKey)
		if err != nil {
			return err
		}
		meta, err := tx.CreateBucket(bucketMeta)
		if err != nil {
			return err
		}
		if compact > 0 {
			if err := meta.Put(metaFinishedCompact, Revision{Main: compact}.Bytes()); err != nil {
				return err
			}
		}
		for _, e := range entries {
			var v []byte
			if !e.marker {
				kv := mvccpb.KeyValue{Key: []byte(e.key), ModRevision: e.rev.Main, CreateRevision: e.rev.Main, Version: 1}
				if !e.rev.Tombstone {
					kv.Value = e.value
				}
				if v, err = kv.Marshal(); err != nil {
					return err
				}
			}
			if err := kb.Put(e.rev.Bytes(), v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	var buf bytes.Buffer
	if err := db.View(func(tx *bolt.Tx) error { _, err := tx.WriteTo(&buf); return err }); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// FuzzReadImage reads arbitrary bytes as a stored snapshot image through
// every in-process reader (ReadKeys, ReadKeysAt, Scan, Get,
// NewestRevision), as a restore or a drill would read a damaged one. Each
// must return an error of kind ErrCorruptDB, never crash the process or
// hang; and what reads must agree: Scan folded by hand is ReadKeys, Get
// finds each of its keys with the same value, and ReadKeysAt the newest
// revision is ReadKeys again.
func FuzzReadImage(f *testing.F) {
	rev := func(main, sub int64) Revision { return Revision{Main: main, Sub: sub} }
	history := []dbFuzzEntry{
		{rev: rev(2, 0), key: "/registry/configmaps/kube-system/a", value: []byte("v1")},
		{rev: rev(3, 0), key: "/registry/namespaces/default", value: []byte(`{"kind":"Namespace"}`)},
		{rev: rev(4, 0), key: "/registry/configmaps/kube-system/a", value: []byte("v2")},
		{rev: rev(4, 1), key: "/registry/example.com/widgets/default/w1", value: []byte(`{"kind":"Widget"}`)},
		{rev: Revision{Main: 5, Tombstone: true}, key: "/registry/namespaces/default"},
		{rev: rev(1_000_000_005, 0), marker: true},
	}
	var many []dbFuzzEntry
	for i := range 24 {
		many = append(many, dbFuzzEntry{rev: rev(int64(10+i), 0), key: fmt.Sprintf("/registry/configmaps/ns%d/c%d", i%3, i), value: bytes.Repeat([]byte{byte(i)}, 40)})
	}
	many = append(many, dbFuzzEntry{rev: rev(40, 0), key: "/registry/configmaps/big/big", value: bytes.Repeat([]byte("z"), 3000)})
	snap := dbFuzzImage(f, 0, history[:3])
	sum := sha256.Sum256(snap)
	f.Add(dbFuzzImage(f, 0, nil))
	f.Add(dbFuzzImage(f, 3, history))
	f.Add(dbFuzzImage(f, 0, many))
	f.Add(append(snap, sum[:]...))
	f.Fuzz(func(t *testing.T, img []byte) {
		if len(img) > 256<<10 {
			return // the seeds are a few KiB; bound the work per input
		}
		p := filepath.Join(t.TempDir(), "snap.db")
		if err := os.WriteFile(p, img, 0o600); err != nil {
			t.Fatal(err)
		}
		dbFuzzWithin(10*time.Second, func() { checkReadImage(t, p) })
	})
}

func checkReadImage(t *testing.T, p string) {
	corrupt := func(what string, err error) {
		t.Helper()
		if err != nil && !errors.Is(err, ErrCorruptDB) {
			t.Fatalf("%s: an error not of kind ErrCorruptDB: %v", what, err)
		}
	}
	kvs, err := ReadKeys(p)
	corrupt("ReadKeys", err)
	folded := map[string][]byte{}
	serr := Scan(p, func(key, value []byte, tomb bool) bool {
		if tomb {
			delete(folded, string(key))
		} else {
			folded[string(key)] = bytes.Clone(value)
		}
		return true
	})
	corrupt("Scan", serr)
	_, _, gerr := Get(p, "/registry/configmaps/kube-system/a")
	corrupt("Get", gerr)
	newest, nerr := NewestRevision(p)
	corrupt("NewestRevision", nerr)
	if err != nil {
		return
	}
	if serr != nil || len(folded) != len(kvs) {
		t.Fatalf("ReadKeys has %d keys, Scan folds to %d (%v)", len(kvs), len(folded), serr)
	}
	for _, kv := range kvs {
		if v, ok := folded[kv.Key]; !ok || !bytes.Equal(v, kv.Value) {
			t.Fatalf("%q: ReadKeys %q, Scan %q", kv.Key, kv.Value, v)
		}
		got, found, err := Get(p, kv.Key)
		if err != nil || !found || !bytes.Equal(got.Value, kv.Value) || got.ModRevision != kv.ModRevision {
			t.Fatalf("Get(%q) = %+v %v %v, ReadKeys %+v", kv.Key, got, found, err, kv)
		}
	}
	if nerr == nil && newest > 0 {
		at, err := ReadKeysAt(p, newest)
		if err != nil {
			// Only a compaction after the newest revision may refuse it.
			return
		}
		if len(at) != len(kvs) {
			t.Fatalf("ReadKeysAt(newest %d) has %d keys, ReadKeys %d", newest, len(at), len(kvs))
		}
	}
}

// dbFuzzWithin crashes the fuzzing process with every goroutine's stack
// when fn runs longer than d: go's fuzzer has no time limit per input, so
// a hang would only show as a run that stops counting executions. The
// crash makes the fuzzer save the input.
func dbFuzzWithin(d time.Duration, fn func()) {
	timer := time.AfterFunc(d, func() {
		debug.SetTraceback("all")
		panic(fmt.Sprintf("input still running after %s", d))
	})
	defer timer.Stop()
	fn()
}
