// Package versionread is the read side of what package backup writes: the
// names of a version's streams and meta keys, its recorded status (State,
// the good and degraded rules are in backup's state.go), whether its etcd
// part is a full snapshot or a journal version and on which base
// (EtcdSourceOf), what "latest" means for readers of etcd state (Resolve:
// the newest good version whose journal chain reads), the journal key
// index (one key's last change since the base, and which segment holds
// it: JournalValues), the chain checks (ChainIntact, ChainSegments), the
// snapshot file a reader materialises, and what a prune's trim left
// (TrimmedAt).
//
// It links no etcd client, server or gRPC: `kubekeep get`, objects and
// diff read versions through it, in the front binary that starts in a
// fraction of the whole CLI's time. Backup writes through the same names,
// so the two cannot drift.
package versionread
