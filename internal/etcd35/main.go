// Command etcd35 is the etcd 3.5 server, built from go.etcd.io/etcd/server/v3
// v3.5.x, for tests only: kubeadm up to 1.33 runs etcd 3.5, so a restored
// data dir must start under it, not only under the 3.6 server the main
// module embeds (internal/testetcd). It is a module of its own so that its
// 3.5 dependencies never meet the main module's 3.6 ones; `go test ./...`
// of the main module skips it, and internal/testetcd builds it on demand
// (StartEtcd35).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
