// Command benchsnap measures reading one Kubernetes object out of a large
// etcd snapshot with package objects, against what an operator does
// without it: etcdutl snapshot restore, start etcd on the result, get the
// key. scripts/bench-objects.sh drives it.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/kubekeep/kubekeep/objects"
	"github.com/kubekeep/kubekeep/objects/internal/plainetcd"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "benchsnap:", err)
		os.Exit(1)
	}
}

func run() error {
	dir := flag.String("dir", "", "work directory (required; gets the etcd data, the snapshot and the restore)")
	target := flag.Int64("size", 1<<30, "snapshot size to build, bytes")
	budget := flag.Duration("budget", 3*time.Minute, "stop filling etcd after this long, whatever the size")
	etcdutl := flag.String("etcdutl", "", "etcdutl binary for the operator's path (empty: skip it)")
	reuse := flag.Bool("reuse", false, "reuse DIR/snapshot.db from an earlier run instead of building one")
	etcdctl := flag.String("etcdctl", "", "etcdctl binary for the operator's get (empty: the Go client, as etcdctl does it)")
	flag.Parse()
	if *dir == "" {
		return errors.New("-dir is required")
	}
	ctx := context.Background()

	snap := filepath.Join(*dir, "snapshot.db")
	var keys []string
	if st, err := os.Stat(snap); *reuse && err == nil {
		s, err := objects.Open(snap)
		if err != nil {
			return err
		}
		for _, it := range s.List(objects.Filter{Resource: "configmaps"}) {
			keys = append(keys, it.Key)
		}
		_ = s.Close()
		fmt.Printf("reused: snapshot %.2f GiB with %d configmaps\n", float64(st.Size())/(1<<30), len(keys))
	} else if keys, err = build(ctx, snap, *dir, *target, *budget); err != nil {
		return err
	}
	if len(keys) == 0 {
		return errors.New("snapshot holds no configmaps")
	}

	// The object asked for: one written early and overwritten later, so
	// the answer depends on picking the right revision.
	key := keys[len(keys)/7]
	ref, _ := objects.RefFromKey(key)

	cold, coldGet, err := timeObjects(snap, ref, true)
	if err != nil {
		return err
	}
	warm, _, err := timeObjects(snap, ref, false)
	if err != nil {
		return err
	}
	fmt.Printf("objects: Open+Get+YAML of %s: cold (file evicted from page cache) %s, warm %s (Get alone %s)\n",
		ref, cold.Round(time.Millisecond), warm.Round(time.Millisecond), coldGet.Round(time.Microsecond))
	fmt.Printf("objects: Go heap in use with the snapshot open %d MiB (index of %d keys)\n", heapInUse>>20, len(keys))

	if *etcdutl == "" {
		fmt.Println("operator path skipped: no -etcdutl")
		return nil
	}
	restore, start, get, err := timeOperator(ctx, *etcdutl, *etcdctl, *dir, snap, key)
	if err != nil {
		return err
	}
	total := restore + start + get
	fmt.Printf("operator: etcdutl snapshot restore %s + start etcd %s + get %s = %s\n",
		restore.Round(time.Millisecond), start.Round(time.Millisecond), get.Round(time.Millisecond), total.Round(time.Millisecond))
	fmt.Printf("RATIO operator/objects (cold) = %.1fx; goal: objects <= 1s: %s\n",
		float64(total)/float64(cold), verdict(cold <= time.Second))
	return nil
}

// build fills a fresh etcd and snapshots it to snap.
func build(ctx context.Context, snap, dir string, target int64, budget time.Duration) ([]string, error) {
	e, err := plainetcd.Start(filepath.Join(dir, "source"), plainetcd.Options{QuotaBytes: 16 << 30})
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	n, keys, err := fill(ctx, e, target, budget)
	if err != nil {
		e.Stop()
		return nil, err
	}
	fillTime := time.Since(t0)
	t0 = time.Now()
	size, err := e.SnapshotTo(ctx, snap)
	e.Stop()
	if err != nil {
		return nil, err
	}
	// The source etcd is done with; its data would only compete for disk.
	if err := os.RemoveAll(filepath.Join(dir, "source")); err != nil {
		return nil, err
	}
	fmt.Printf("built: %d puts (%d objects) in %s, snapshot %.2f GiB in %s\n",
		n, len(keys), fillTime.Round(time.Second), float64(size)/(1<<30), time.Since(t0).Round(time.Millisecond))
	if size < target {
		fmt.Printf("note: snapshot is smaller than the %.2f GiB asked for: the %s fill budget ran out first\n", float64(target)/(1<<30), budget)
	}
	return keys, nil
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT met"
}

// fill writes ConfigMaps of 1-16 KiB (protobuf, as an apiserver stores
// them) and overwrites a fifth of them, until the backend reaches size or
// the budget runs out.
func fill(ctx context.Context, e *plainetcd.Etcd, size int64, budget time.Duration) (int64, []string, error) {
	ser := protobuf.NewSerializer(scheme.Scheme, scheme.Scheme)
	deadline := time.Now().Add(budget)
	var puts, written atomic.Int64
	var mu sync.Mutex
	var keys []string
	workers := 8
	errc := make(chan error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(uint64(w), 42))
			var mine []string
			for i := 0; ; i++ {
				if written.Load() >= size || time.Now().After(deadline) {
					break
				}
				var key string
				if len(mine) > 10 && rnd.IntN(5) == 0 {
					key = mine[rnd.IntN(len(mine))]
				} else {
					key = fmt.Sprintf("/registry/configmaps/ns-%d/cm-%d-%d", i%50, w, i)
					mine = append(mine, key)
				}
				ref, _ := objects.RefFromKey(key)
				cm := &corev1.ConfigMap{
					TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
					ObjectMeta: metav1.ObjectMeta{Name: ref.Name, Namespace: ref.Namespace, UID: "bench", Labels: map[string]string{"bench": "objects"}},
					Data:       map[string]string{"payload": randText(rnd, 1024+rnd.IntN(15*1024))},
				}
				var buf bytes.Buffer
				if err := ser.Encode(cm, &buf); err != nil {
					errc <- err
					return
				}
				if _, err := e.Client.Put(ctx, key, buf.String()); err != nil {
					errc <- fmt.Errorf("put %s: %w", key, err)
					return
				}
				puts.Add(1)
				// Each put costs its value plus bbolt overhead; the true
				// file size is checked below, this only paces the workers.
				if written.Add(int64(buf.Len())+64) >= size {
					st, err := e.Client.Status(ctx, e.Endpoint())
					if err == nil && st.DbSize < size {
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
		return 0, nil, err
	default:
	}
	return puts.Load(), keys, nil
}

func randText(rnd *rand.Rand, n int) string {
	const alpha = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	b := make([]byte, n)
	for i := range b {
		b[i] = alpha[rnd.IntN(len(alpha))]
	}
	return string(b)
}

// timeObjects opens the snapshot and renders one object. cold evicts the
// file from the page cache first (posix_fadvise on that file only: the
// machine is shared, so no global cache drop).
func timeObjects(path string, ref objects.Ref, cold bool) (time.Duration, time.Duration, error) {
	if cold {
		if err := evict(path); err != nil {
			return 0, 0, err
		}
	}
	t0 := time.Now()
	s, err := objects.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer s.Close()
	t1 := time.Now()
	o, err := s.Get(ref)
	if err != nil {
		return 0, 0, err
	}
	if _, err := o.YAML(objects.ManifestOptions{}); err != nil {
		return 0, 0, err
	}
	total, get := time.Since(t0), time.Since(t1)
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	heapInUse = ms.HeapInuse
	runtime.KeepAlive(s)
	return total, get, nil
}

// heapInUse is the Go heap after the last timeObjects, snapshot still open.
var heapInUse uint64

func evict(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	// Dirty pages (a snapshot just written) cannot be evicted: flush first.
	if err := f.Sync(); err != nil {
		return fmt.Errorf("flush %s: %w", path, err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		return fmt.Errorf("evict %s from page cache: %w", path, err)
	}
	return nil
}

func timeOperator(ctx context.Context, etcdutl, etcdctl, dir, snap, key string) (restore, start, get time.Duration, err error) {
	if err := evict(snap); err != nil {
		return 0, 0, 0, err
	}
	pu, err := plainetcd.FreeURL()
	if err != nil {
		return 0, 0, 0, err
	}
	dataDir := filepath.Join(dir, "restored")
	if err := os.RemoveAll(dataDir); err != nil {
		return 0, 0, 0, err
	}
	// As a Kubernetes restore must (DESIGN.md section 3).
	cmd := exec.Command(etcdutl, "snapshot", "restore", snap, "--data-dir", dataDir,
		"--name", plainetcd.Name, "--initial-cluster", plainetcd.Name+"="+pu.String(),
		"--initial-advertise-peer-urls", pu.String(), "--bump-revision", "1000000000", "--mark-compacted")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	t0 := time.Now()
	if err := cmd.Run(); err != nil {
		return 0, 0, 0, fmt.Errorf("etcdutl snapshot restore: %w\n%s", err, out.Bytes())
	}
	restore = time.Since(t0)
	t0 = time.Now()
	e, err := plainetcd.Start(dataDir, plainetcd.Options{PeerURL: pu, QuotaBytes: 16 << 30})
	if err != nil {
		return 0, 0, 0, err
	}
	defer e.Stop()
	start = time.Since(t0)
	t0 = time.Now()
	if etcdctl != "" {
		cmd := exec.Command(etcdctl, "--endpoints", e.Endpoint(), "get", key, "--print-value-only")
		cmd.Env = append(os.Environ(), "ETCDCTL_API=3")
		val, err := cmd.Output()
		if err != nil {
			return 0, 0, 0, fmt.Errorf("etcdctl get %s: %w", key, err)
		}
		if !bytes.HasPrefix(val, []byte("k8s\x00")) {
			return 0, 0, 0, fmt.Errorf("etcdctl get %s: no object in output (%d bytes)", key, len(val))
		}
	} else {
		resp, err := e.Client.Get(ctx, key)
		if err != nil {
			return 0, 0, 0, fmt.Errorf("get %s from restored etcd: %w", key, err)
		}
		if len(resp.Kvs) != 1 {
			return 0, 0, 0, fmt.Errorf("get %s from restored etcd: %d keys", key, len(resp.Kvs))
		}
	}
	get = time.Since(t0)
	return restore, start, get, nil
}
