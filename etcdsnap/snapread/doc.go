// Package snapread reads what package etcdsnap writes, with no etcd client,
// server or gRPC linked: a snapshot image (bbolt: keys at a revision, the
// kubeadm documents, DBStats from a consistency check run in a child
// process), its key index (keyindex*.go: every key's newest revision and
// where its value lies in the image, so one key comes out of a stored
// snapshot without materialising it), delta segments (segment.go), and the
// Info recorded for each snapshot.
//
// A delta segment carries its own crc32c. Segments read out of the store's
// journal have passed the journal file's blake3 seal over the same bytes
// first, so the store's readers decode them with DecodeSegmentSealed and
// ReplayEventsSealed, which skip the second checksum and check the rest.
//
// It is split from etcdsnap so that the read-only commands (get, objects,
// diff) link only what reading needs: their process starts in a fraction
// of the full binary's time, which is most of what a `get` costs.
package snapread
