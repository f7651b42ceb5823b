// Command benchtool measures etcdsnap against the tools an operator would
// use instead, on a real embedded etcd with kubeadm-style TLS:
//
//   - snapshot throughput of etcdsnap.Snapshot vs `etcdctl snapshot save`;
//   - how much of the second snapshot, after 1% of keys changed, differs in
//     64 KiB blocks (what a block-deduplicating store must write);
//   - delta RPO: time from a put returning to its event being fsynced by a
//     segment sink.
//
// scripts/bench-etcd.sh builds and runs it.
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kubekeep/kubekeep/etcdsnap"
	"github.com/kubekeep/kubekeep/etcdsnap/snapread"
	"github.com/kubekeep/kubekeep/internal/sandbox"
	"github.com/kubekeep/kubekeep/internal/testetcd"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "snapshot" {
		// Child mode: one snapshot, so that ours runs in its own process
		// exactly as etcdctl does and neither shares a scheduler or heap
		// with the etcd server.
		if err := childSnapshot(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "benchtool snapshot:", err)
			os.Exit(1)
		}
		return
	}
	size := flag.Int64("size", 1<<30, "bytes of values to load into etcd")
	valSize := flag.Int("value", 8<<10, "bytes per value")
	etcdctl := flag.String("etcdctl", "etcdctl", "etcdctl binary to compare with")
	dir := flag.String("dir", "", "work dir (default: a temp dir, removed afterwards)")
	rounds := flag.Int("rounds", 2, "snapshot rounds per tool")
	rpoPuts := flag.Int("rpo-puts", 40, "puts timed for the delta RPO")
	flag.Parse()
	if err := run(*size, *valSize, *etcdctl, *dir, *rounds, *rpoPuts); err != nil {
		fmt.Fprintln(os.Stderr, "benchtool:", err)
		os.Exit(1)
	}
}

func run(size int64, valSize int, etcdctl, dir string, rounds, rpoPuts int) error {
	if dir == "" {
		d, err := os.MkdirTemp("", "kubekeep-bench-etcd-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	cp, err := sandbox.FreePort()
	if err != nil {
		return err
	}
	pp, err := sandbox.FreePort()
	if err != nil {
		return err
	}
	r, err := sandbox.Build(filepath.Join(dir, "root"), sandbox.Options{EtcdClientPort: cp, EtcdPeerPort: pp})
	if err != nil {
		return err
	}
	ctx := context.Background()
	srv, err := testetcd.StartWith(ctx, r, testetcd.Options{QuotaBackendBytes: 8 << 30})
	if err != nil {
		return err
	}
	defer srv.Stop()
	cli, err := srv.Client()
	if err != nil {
		return err
	}

	nkeys := int(size / int64(valSize))
	start := time.Now()
	if err := fill(ctx, cli, nkeys, valSize, 0); err != nil {
		return err
	}
	st, err := cli.Status(ctx, srv.Endpoint())
	if err != nil {
		return err
	}
	fmt.Printf("fill: %d keys x %d B in %s; etcd db %s\n", nkeys, valSize, time.Since(start).Round(time.Millisecond), mib(st.DbSize))

	cc := etcdsnap.ClientConfig{Endpoints: []string{srv.Endpoint()}, CAFile: r.Path(r.EtcdCAFile),
		CertFile: r.Path(r.EtcdClientCert), KeyFile: r.Path(r.EtcdClientKey)}
	ours := filepath.Join(dir, "ours.db")
	theirs := filepath.Join(dir, "etcdctl.db")
	var bestOurs, bestTheirs time.Duration
	var info snapread.Info
	for i := range rounds {
		d, err := timeEtcdctl(etcdctl, cc, theirs)
		if err != nil {
			return err
		}
		os.Remove(theirs)
		fmt.Printf("round %d: etcdctl snapshot save %s\n", i+1, d.Round(time.Millisecond))
		if bestTheirs == 0 || d < bestTheirs {
			bestTheirs = d
		}
		os.Remove(ours)
		d, info, err = timeOurs(ctx, cc, ours)
		if err != nil {
			return err
		}
		fmt.Printf("round %d: etcdsnap.Snapshot     %s\n", i+1, d.Round(time.Millisecond))
		if bestOurs == 0 || d < bestOurs {
			bestOurs = d
		}
	}
	n := info.StreamBytes
	fmt.Printf("snapshot: %s; etcdsnap %.0f MiB/s, etcdctl %.0f MiB/s, ratio %.2fx (best of %d each)\n",
		mib(n), float64(n)/bestOurs.Seconds()/(1<<20), float64(n)/bestTheirs.Seconds()/(1<<20),
		bestTheirs.Seconds()/bestOurs.Seconds(), rounds)
	t0 := time.Now()
	if _, err := info.Check(ours); err != nil {
		return err
	}
	fmt.Printf("check (bbolt Tx.Check + key walk, child process): %s, revision %d, keys %d\n", time.Since(t0).Round(time.Millisecond), info.Revision, info.Keys)

	// 1% of keys change, picked at random, as objects do in a cluster.
	if err := fill(ctx, cli, nkeys/100, valSize, nkeys); err != nil {
		return err
	}
	second := filepath.Join(dir, "second.db")
	if _, _, err := timeOurs(ctx, cc, second); err != nil {
		return err
	}
	same, content, total, err := blockDiff(ours, second, 64<<10)
	if err != nil {
		return err
	}
	fmt.Printf("second snapshot after 1%% of keys changed: %d of %d 64 KiB blocks differ at the same offset (%.1f%%); %d blocks new by content (%.1f%% of db, %s to store)\n",
		same, total, 100*float64(same)/float64(total), content, 100*float64(content)/float64(total), mib(int64(content)*64<<10))
	os.Remove(theirs)

	for _, flush := range []time.Duration{2 * time.Second, 100 * time.Millisecond} {
		p50, p99, worst, err := rpo(ctx, cli, filepath.Join(dir, "deltas-"+flush.String()), flush, rpoPuts)
		if err != nil {
			return err
		}
		fmt.Printf("delta RPO (put returned -> event fsynced), flush %s, %d puts: p50 %s p99 %s max %s\n",
			flush, rpoPuts, p50.Round(time.Millisecond), p99.Round(time.Millisecond), worst.Round(time.Millisecond))
	}
	return nil
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// fill writes n keys of valSize random bytes, 64 per transaction, from
// four writers. With offset > 0 it rewrites n random existing keys.
func fill(ctx context.Context, cli *clientv3.Client, n, valSize, existing int) error {
	const batch, writers = 64, 4
	var wg sync.WaitGroup
	errc := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), uint64(existing)))
			val := make([]byte, valSize)
			for i := w * batch; i < n; i += writers * batch {
				ops := make([]clientv3.Op, 0, batch)
				for j := i; j < min(i+batch, n); j++ {
					for k := range val {
						val[k] = byte(rng.Uint32())
					}
					id := j
					if existing > 0 {
						id = rng.IntN(existing)
					}
					ops = append(ops, clientv3.OpPut(fmt.Sprintf("/registry/bench/ns-%03d/obj-%07d", id%500, id), string(val)))
				}
				if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	return <-errc
}

func timeEtcdctl(etcdctl string, cc etcdsnap.ClientConfig, path string) (time.Duration, error) {
	cmd := exec.Command(etcdctl, "--endpoints", cc.Endpoints[0], "--cacert", cc.CAFile, "--cert", cc.CertFile,
		"--key", cc.KeyFile, "snapshot", "save", path)
	cmd.Env = append(os.Environ(), "ETCDCTL_API=3")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	t := time.Now()
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("%s snapshot save: %w: %s", etcdctl, err, out.String())
	}
	return time.Since(t), nil
}

func childSnapshot(args []string) error {
	if len(args) != 5 {
		return fmt.Errorf("want endpoint ca cert key out, got %q", args)
	}
	cc := etcdsnap.ClientConfig{Endpoints: []string{args[0]}, CAFile: args[1], CertFile: args[2], KeyFile: args[3]}
	_, info, err := snapshotFile(context.Background(), cc, args[4])
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(info)
}

// timeOurs runs etcdsnap.Snapshot in a child process, like etcdctl.
func timeOurs(_ context.Context, cc etcdsnap.ClientConfig, path string) (time.Duration, snapread.Info, error) {
	var info snapread.Info
	cmd := exec.Command("/proc/self/exe", "snapshot", cc.Endpoints[0], cc.CAFile, cc.CertFile, cc.KeyFile, path)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	t := time.Now()
	if err := cmd.Run(); err != nil {
		return 0, info, fmt.Errorf("etcdsnap snapshot child: %w: %s", err, errb.String())
	}
	d := time.Since(t)
	if err := json.Unmarshal(out.Bytes(), &info); err != nil {
		return 0, info, err
	}
	return d, info, nil
}

// snapshotFile streams into a file and fsyncs it, as etcdctl does, so both
// sides pay for durability.
func snapshotFile(ctx context.Context, cc etcdsnap.ClientConfig, path string) (time.Duration, snapread.Info, error) {
	t := time.Now()
	f, err := os.Create(path)
	if err != nil {
		return 0, snapread.Info{}, err
	}
	defer f.Close()
	info, err := etcdsnap.Snapshot(ctx, cc, f)
	if err != nil {
		return 0, info, err
	}
	if err := f.Sync(); err != nil {
		return 0, info, err
	}
	return time.Since(t), info, nil
}

// blockDiff compares two images in fixed blocks: how many blocks of b
// differ from the block at the same offset in a, and how many have content
// found nowhere in a (what a content-addressed block store writes).
func blockDiff(a, b string, bs int) (sameOffset, byContent, total int, err error) {
	hashes := func(p string) ([][32]byte, error) {
		f, err := os.Open(p)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		var hs [][32]byte
		buf := make([]byte, bs)
		for {
			n, err := io.ReadFull(f, buf)
			if n > 0 {
				hs = append(hs, sha256.Sum256(buf[:n]))
			}
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				return hs, nil
			}
			if err != nil {
				return nil, err
			}
		}
	}
	ha, err := hashes(a)
	if err != nil {
		return 0, 0, 0, err
	}
	hb, err := hashes(b)
	if err != nil {
		return 0, 0, 0, err
	}
	seen := make(map[[32]byte]bool, len(ha))
	for _, h := range ha {
		seen[h] = true
	}
	for i, h := range hb {
		if i >= len(ha) || ha[i] != h {
			sameOffset++
		}
		if !seen[h] {
			byContent++
		}
	}
	return sameOffset, byContent, len(hb), nil
}

// fileSink appends segments to a file and fsyncs each, recording when each
// revision became durable.
type fileSink struct {
	f       *os.File
	mu      sync.Mutex
	durable map[int64]time.Time
}

func (s *fileSink) AppendSegment(data []byte, firstRev, lastRev int64, _ time.Time) error {
	if _, err := s.f.Write(data); err != nil {
		return err
	}
	if err := s.f.Sync(); err != nil {
		return err
	}
	now := time.Now()
	s.mu.Lock()
	for r := firstRev; r <= lastRev; r++ {
		s.durable[r] = now
	}
	s.mu.Unlock()
	return nil
}

func rpo(ctx context.Context, cli *clientv3.Client, path string, flush time.Duration, puts int) (p50, p99, worst time.Duration, err error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, 0, 0, err
	}
	defer f.Close()
	st, err := cli.Get(ctx, "/rpo-start")
	if err != nil {
		return 0, 0, 0, err
	}
	sink := &fileSink{f: f, durable: map[int64]time.Time{}}
	ds := etcdsnap.NewDeltaStreamer(cli, st.Header.Revision, time.Now(), sink, etcdsnap.DeltaConfig{Flush: flush})
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- ds.Run(sctx) }()
	type put struct {
		rev int64
		at  time.Time
	}
	var ps []put
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range puts {
		time.Sleep(time.Duration(rng.IntN(150)) * time.Millisecond)
		resp, err := cli.Put(ctx, fmt.Sprintf("/rpo/%d", i), strings.Repeat("r", 512))
		if err != nil {
			cancel()
			return 0, 0, 0, err
		}
		ps = append(ps, put{resp.Header.Revision, time.Now()})
	}
	last := ps[len(ps)-1].rev
	for ds.Covered().ToRev < last {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		return 0, 0, 0, err
	}
	var ds2 []time.Duration
	sink.mu.Lock()
	for _, p := range ps {
		ds2 = append(ds2, sink.durable[p.rev].Sub(p.at))
	}
	sink.mu.Unlock()
	sort.Slice(ds2, func(i, j int) bool { return ds2[i] < ds2[j] })
	return ds2[len(ds2)/2], ds2[(len(ds2)*99)/100], ds2[len(ds2)-1], nil
}
