// Package snapread reads what package etcdsnap writes, with no etcd client,
// server or gRPC linked: a snapshot image (bbolt: keys at a revision, the
// kubeadm documents, DBStats from a consistency check run in a child
// process), its key index (keyindex*.go: every key's newest revision and
// where its value lies in the image, so one key comes out of a stored
// snapshot without materialising it), delta segments (segment.go), and the
// Info recorded for each snapshot.
//
// It is split from etcdsnap so that the read-only commands (get, objects,
// diff) link only what reading needs: their process starts in a fraction
// of the full binary's time, which is most of what a `get` costs.
package snapread
