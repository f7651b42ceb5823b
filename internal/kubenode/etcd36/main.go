// Command etcd36 is the etcd 3.6 server (go.etcd.io/etcd/server/v3
// v3.6.16, the release the main module's client and embedded server are
// at), for tests only: the etcd.yaml that kubeadm 1.34 writes runs
// `etcd ...` from the 3.6 image, and internal/kubenode's stand-in kubelet
// starts this binary with that manifest's flags. It is a module of its own
// because etcdmain needs modules (the grpc proxy's) the main module's
// go.sum does not carry, and so that it resolves etcd's own dependency
// versions (bbolt 1.4.x, as the released etcd binary has) rather than the
// main module's; kubenode.Binaries builds it on demand.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
