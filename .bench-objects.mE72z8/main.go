// Command benchobjects serves a kubeadm sandbox root whose etcd holds
// -size bytes of ConfigMaps, saves a snapshot file as `etcdctl snapshot
// save` would, and on each SIGUSR1 rewrites the target ConfigMap (its
// payload 4096+round bytes) and -churn of all the others (each at its own
// size, a new payload; each round the next keys of a fixed shuffle).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubekeep/kubekeep/internal/sandbox"
	"github.com/kubekeep/kubekeep/internal/testetcd"
)

func main() {
	dir := flag.String("dir", "", "work dir: root/, snapshot.db")
	size := flag.Int64("size", 1<<30, "db bytes to fill to")
	small := flag.Float64("small", 0.25, "share of the db in 1-16 KiB ConfigMaps")
	churn := flag.Float64("churn", 0.01, "share of the ConfigMaps rewritten per SIGUSR1, besides the target")
	flag.Parse()
	ctx := context.Background()
	cp, err := sandbox.FreePort()
	if err != nil {
		log.Fatal(err)
	}
	pp, err := sandbox.FreePort()
	if err != nil {
		log.Fatal(err)
	}
	r, err := sandbox.Build(filepath.Join(*dir, "root"), sandbox.Options{EtcdClientPort: cp, EtcdPeerPort: pp})
	if err != nil {
		log.Fatal(err)
	}
	srv, err := testetcd.StartWith(ctx, r, testetcd.Options{QuotaBackendBytes: max(4<<30, 2**size)})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Stop()
	if _, err := srv.LoadCluster(ctx); err != nil {
		log.Fatal(err)
	}
	cli, err := srv.Client()
	if err != nil {
		log.Fatal(err)
	}
	rnd := rand.New(rand.NewPCG(1, 2))
	text := make([]byte, 2<<20)
	const alpha = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	for i := range text {
		text[i] = alpha[rnd.IntN(len(alpha))]
	}
	put := func(rnd *rand.Rand, ns, name string, n int) error {
		off := rnd.IntN(len(text) - n)
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, UID: "bench",
			Labels: map[string]string{"bench": "objects"}}, Data: map[string]string{"payload": string(text[off : off+n])}}
		_, err := testetcd.PutObject(ctx, cli, "configmaps", cm)
		return err
	}
	const targetNS, targetName = "ns-7", "target"
	if err := put(rnd, targetNS, targetName, 4096); err != nil {
		log.Fatal(err)
	}
	t0 := time.Now()
	type cmKey struct {
		ns, name string
		n        int
	}
	var written, puts, smalls atomic.Int64
	var mu sync.Mutex
	var keys []cmKey
	var wg sync.WaitGroup
	errc := make(chan error, 8)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(uint64(w), 3))
			var mine []cmKey
			for i := 0; ; i++ {
				done := written.Load()
				if done >= *size {
					break
				}
				var ns, name string
				n := 256 << 10
				if float64(done) < *small*float64(*size) {
					ns, name, n = fmt.Sprintf("ns-%d", i%50), fmt.Sprintf("cm-%d-%d", w, i), 1024+rnd.IntN(15<<10)
					smalls.Add(1)
				} else {
					ns, name = "bulk", fmt.Sprintf("big-%d-%d", w, i)
				}
				if err := put(rnd, ns, name, n); err != nil {
					errc <- err
					return
				}
				mine = append(mine, cmKey{ns, name, n})
				puts.Add(1)
				if written.Add(int64(n)+200) >= *size {
					if st, err := cli.Status(ctx, srv.Endpoint()); err == nil && st.DbSize < *size {
						written.Store(st.DbSize)
					}
				}
			}
			mu.Lock()
			keys = append(keys, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	select {
	case err := <-errc:
		log.Fatal(err)
	default:
	}
	st, err := cli.Status(ctx, srv.Endpoint())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("filled: %d ConfigMaps (%d of 1-16 KiB) in %s, db %.2f GiB at revision %d\n",
		puts.Load(), smalls.Load(), time.Since(t0).Round(time.Second), float64(st.DbSize)/(1<<30), st.Header.Revision)

	// The operator's snapshot file, as `etcdctl snapshot save` writes it.
	t0 = time.Now()
	rc, err := cli.Snapshot(ctx)
	if err != nil {
		log.Fatal(err)
	}
	f, err := os.Create(filepath.Join(*dir, "snapshot.db"))
	if err != nil {
		log.Fatal(err)
	}
	n, err := io.Copy(f, rc)
	if err == nil {
		err = f.Close()
	}
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("snapshot: %.2f GiB saved in %s\n", float64(n)/(1<<30), time.Since(t0).Round(time.Millisecond))
	fmt.Printf("ready: root=%s etcd=%s key=configmaps/%s/%s\n", r.Dir, srv.Endpoint(), targetNS, targetName)

	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGUSR1, syscall.SIGTERM, syscall.SIGINT)
	// Each round rewrites the next m keys of a fixed shuffle, so rounds
	// touch different keys until the shuffle wraps.
	slices.SortFunc(keys, func(a, b cmKey) int { return strings.Compare(a.ns+"/"+a.name, b.ns+"/"+b.name) })
	perm := rand.New(rand.NewPCG(4, 5)).Perm(len(keys))
	m := min(len(keys), int(*churn*float64(len(keys))+0.5))
	round := 0
	for s := range sig {
		if s != syscall.SIGUSR1 {
			return
		}
		round++
		t0 := time.Now()
		if err := put(rnd, targetNS, targetName, 4096+round); err != nil {
			log.Fatal(err)
		}
		var bytes atomic.Int64
		var wg sync.WaitGroup
		for w := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rnd := rand.New(rand.NewPCG(uint64(round), uint64(w)))
				for j := w; j < m; j += 8 {
					k := keys[perm[((round-1)*m+j)%len(keys)]]
					if err := put(rnd, k.ns, k.name, k.n); err != nil {
						errc <- err
						return
					}
					bytes.Add(int64(k.n))
				}
			}()
		}
		wg.Wait()
		select {
		case err := <-errc:
			log.Fatal(err)
		default:
		}
		resp, err := cli.Get(ctx, "/registry/configmaps/"+targetNS+"/"+targetName)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("churned: round=%d target=%d keys=%d of %d payload=%d rev=%d in %s at=%s\n", round, 4096+round, m, len(keys), bytes.Load(),
			resp.Header.Revision, time.Since(t0).Round(time.Millisecond), time.Now().UTC().Format(time.RFC3339Nano))
	}
}
