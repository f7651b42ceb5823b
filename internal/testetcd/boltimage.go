package testetcd

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"runtime/debug"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// BoltEntry is one stored revision of bucket "key" for BoltImage.
type BoltEntry struct {
	Main, Sub int64
	Tombstone bool
	Key       string
	Value     []byte
	// Marker writes no bytes at all: a restore's revision bump.
	Marker bool
}

// revKey is etcd's bucket key for a revision: 8 bytes main and 8 bytes
// sub, big-endian, joined by '_', with a trailing 't' for a tombstone.
// Written out here rather than taken from etcdsnap, whose tests use this
// package: the images are an independent truth for its readers.
func (e BoltEntry) revKey() []byte {
	b := make([]byte, 17, 18)
	binary.BigEndian.PutUint64(b, uint64(e.Main))
	b[8] = '_'
	binary.BigEndian.PutUint64(b[9:], uint64(e.Sub))
	if e.Tombstone {
		b = append(b, 't')
	}
	return b
}

// BoltImage builds an etcd backend image directly with bbolt, as small as
// pageSize allows: buckets "key" (the given revisions) and "meta" (a
// finished compaction when compact > 0), written out with Tx.WriteTo as
// etcd's snapshot does. Small images make fuzz seeds that mutate quickly
// yet hold every page kind: meta, freelist, branch, leaf, overflow.
func BoltImage(tb testing.TB, pageSize int, compact int64, entries []BoltEntry) []byte {
	tb.Helper()
	p := filepath.Join(tb.TempDir(), "db")
	db, err := bolt.Open(p, 0o600, &bolt.Options{PageSize: pageSize})
	if err != nil {
		tb.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		kb, err := tx.CreateBucket([]byte("key"))
		if err != nil {
			return err
		}
		meta, err := tx.CreateBucket([]byte("meta"))
		if err != nil {
			return err
		}
		if compact > 0 {
			if err := meta.Put([]byte("finishedCompactRev"), BoltEntry{Main: compact}.revKey()); err != nil {
				return err
			}
		}
		for _, e := range entries {
			var v []byte
			if !e.Marker {
				kv := mvccpb.KeyValue{Key: []byte(e.Key), ModRevision: e.Main, CreateRevision: e.Main, Version: 1}
				if !e.Tombstone {
					kv.Value = e.Value
				}
				if v, err = kv.Marshal(); err != nil {
					return err
				}
			}
			if err := kb.Put(e.revKey(), v); err != nil {
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

// Within crashes the fuzzing process with every goroutine's stack when fn
// runs longer than d: go's fuzzer has no time limit per input, so a hang
// would only show as a run that stops counting executions. The crash
// makes the fuzzer save the input.
func Within(d time.Duration, fn func()) {
	timer := time.AfterFunc(d, func() {
		debug.SetTraceback("all")
		panic(fmt.Sprintf("input still running after %s", d))
	})
	defer timer.Stop()
	fn()
}
