// Package etcdsnap takes consistent, verified etcd snapshots through the
// Maintenance API, falls back to a raw copy of member/snap/db only when no
// etcd holds it, streams watch deltas between snapshots, reads objects out
// of snapshot files, and restores data directories (snapshot + replayed
// deltas) with the revision bump Kubernetes needs. The backup's check of a
// snapshot also writes its key index (keyindex.go: every key's newest
// revision and where its value lies in the image), so a reader can take
// one key out of a stored snapshot without materialising it.
//
// It knows nothing of where bytes are stored: snapshots go to an io.Writer
// and delta segments to a SegmentSink, so the store stays free of etcd and
// this package free of the store.
package etcdsnap
