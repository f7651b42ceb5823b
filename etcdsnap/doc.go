// Package etcdsnap takes consistent, verified etcd snapshots through the
// Maintenance API, falls back to a raw copy of member/snap/db only when no
// etcd holds it, streams watch deltas between snapshots, and restores data
// directories (snapshot + replayed deltas) with the revision bump
// Kubernetes needs.
//
// What reads the bytes these produce, with no etcd client or server linked
// (the snapshot image, its key index, delta segments, the Info of a
// snapshot), is package snapread: the read path of `kubekeep get` imports
// only that, so the command starts in a fraction of the full binary's time.
//
// It knows nothing of where bytes are stored: snapshots go to an io.Writer
// and delta segments to a SegmentSink, so the store stays free of etcd and
// this package free of the store.
package etcdsnap
