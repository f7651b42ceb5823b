// Fills the sandbox etcd to -size bytes of 1 MiB values, or with -churn
// rewrites that share of the keys.
package main

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"log"
	"path/filepath"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func main() {
	root := flag.String("root", "", "sandbox root")
	ep := flag.String("endpoint", "", "etcd endpoint")
	size := flag.Int64("size", 1<<30, "bytes of values")
	churn := flag.Float64("churn", 0, "share of keys to rewrite (0: fill)")
	round := flag.Int("round", 0, "churn round, picks which keys")
	flag.Parse()
	pki := filepath.Join(*root, "etc/kubernetes/pki/etcd")
	tc, err := transport.TLSInfo{CertFile: filepath.Join(pki, "healthcheck-client.crt"), KeyFile: filepath.Join(pki, "healthcheck-client.key"),
		TrustedCAFile: filepath.Join(pki, "ca.crt")}.ClientConfig()
	if err != nil {
		log.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{*ep}, TLS: tc, DialTimeout: 5 * time.Second, MaxCallSendMsgSize: 4 << 20})
	if err != nil {
		log.Fatal(err)
	}
	defer cli.Close()
	const val = 1 << 20
	n := int(*size / val)
	buf := make([]byte, val)
	ctx := context.Background()
	if *churn == 0 {
		for i := 0; i < n; i++ {
			_, _ = rand.Read(buf)
			if _, err := cli.Put(ctx, fmt.Sprintf("/registry/bench/k%06d", i), string(buf)); err != nil {
				log.Fatal(err)
			}
		}
		return
	}
	m := max(1, int(float64(n)**churn))
	for j := 0; j < m; j++ {
		_, _ = rand.Read(buf[:4096]) // a page-sized change inside the value
		i := (*round*m*7 + j*97) % n
		if _, err := cli.Put(ctx, fmt.Sprintf("/registry/bench/k%06d", i), string(buf)); err != nil {
			log.Fatal(err)
		}
	}
}
