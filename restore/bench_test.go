package restore

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/kubekeep/kubekeep/backup"
	"github.com/kubekeep/kubekeep/backup/versionread"
	"github.com/kubekeep/kubekeep/config"
	"github.com/kubekeep/kubekeep/internal/testetcd"
	"github.com/kubekeep/kubekeep/rsyncish"
)

// TestBenchRestore is the measurement behind scripts/bench-restore.sh, not
// a regular test: it runs only when KUBEKEEP_BENCH_RESTORE_SIZE (bytes of
// etcd values) is set. It fills a real etcd, backs it up, then times the
// files and etcd phases into an empty root against `cp -a` of the very
// bytes they produced.
func TestBenchRestore(t *testing.T) {
	sizeEnv := os.Getenv("KUBEKEEP_BENCH_RESTORE_SIZE")
	if sizeEnv == "" {
		t.Skip("set KUBEKEEP_BENCH_RESTORE_SIZE to run the restore benchmark")
	}
	size, err := strconv.ParseInt(sizeEnv, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	work := os.Getenv("KUBEKEEP_BENCH_DIR")
	if work == "" {
		work = t.TempDir()
	}
	root := testetcd.SandboxT(t)
	srv := testetcd.StartWithT(t, root, testetcd.Options{QuotaBackendBytes: 8 << 30})
	cli := srv.ClientT(t)
	// Distinct values, as a real keyspace has: repeating ones would dedupe
	// in the store and leave the restore nothing to hash.
	val := make([]byte, 1<<20)
	rng := rand.NewChaCha8([32]byte{1})
	start := time.Now()
	var filled int64
	for i := 0; filled < size; i++ {
		rng.Read(val)
		if _, err := cli.Put(ctx, fmt.Sprintf("/registry/configmaps/bench/cm-%06d", i), string(val)); err != nil {
			t.Fatal(err)
		}
		filled += int64(len(val))
	}
	t.Logf("filled etcd with %d MiB of values in %s", filled>>20, time.Since(start).Round(time.Millisecond))
	store, err := rsyncish.Open(filepath.Join(work, "store"), rsyncish.Options{AllowSameFilesystem: true})
	if err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	res, err := backup.Run(ctx, backup.Options{Root: root.Dir, Store: store, Etcd: config.Default().Etcd})
	if err != nil || res.Status != versionread.StatusOK {
		t.Fatalf("backup: %v %v", err, res)
	}
	t.Logf("backup: %s, snapshot %d MiB", time.Since(start).Round(time.Millisecond), res.Etcd.DBSize>>20)
	srv.Stop()

	// Best of three rounds each, restore and cp alternating, so a slow
	// moment of the disk does not decide the ratio.
	dst := filepath.Join(work, "restored")
	cpDst := filepath.Join(work, "cp-copy")
	var restoreTime, cpTime time.Duration
	for round := range 3 {
		_ = os.RemoveAll(dst)
		syncAll(t)
		start = time.Now()
		rr, err := Run(ctx, Options{Root: dst, Store: store, Version: res.ID, Phases: []string{PhaseFiles, PhaseEtcd},
			Hostname: root.Opts.NodeName})
		if err != nil {
			t.Fatal(err)
		}
		d := time.Since(start)
		for _, p := range rr.Phases {
			t.Logf("round %d: phase %s %s", round+1, p.Name, p.Duration)
		}
		if round == 0 || d < restoreTime {
			restoreTime = d
		}
		d0 := d
		_ = os.RemoveAll(cpDst)
		syncAll(t)
		start = time.Now()
		out, err := exec.Command("cp", "-a", dst, cpDst).CombinedOutput()
		if err != nil {
			t.Fatalf("cp -a: %v %s", err, out)
		}
		syncAll(t) // restore fsyncs what it writes; make cp pay the same
		d = time.Since(start)
		if round == 0 || d < cpTime {
			cpTime = d
		}
		t.Logf("round %d: restore %s, cp -a %s", round+1, d0.Round(time.Millisecond), d.Round(time.Millisecond))
	}
	start = time.Now()
	if _, err := Run(ctx, Options{Root: filepath.Join(work, "preflight"), Store: store, Version: res.ID, Phases: []string{PhasePreflight},
		Hostname: root.Opts.NodeName}); err != nil {
		t.Fatal(err)
	}
	preflightTime := time.Since(start)
	du, _ := exec.Command("du", "-sh", dst).Output()
	ratio := restoreTime.Seconds() / cpTime.Seconds()
	fmt.Printf("bench-restore: %d MiB etcd db + %d files; restore (files+etcd phases) %s; cp -a of the result %s (incl. sync); best of 3 each; ratio %.2fx (goal <= 1.5x); preflight alone (reads + checks the snapshot) %s; restored tree %s",
		res.Etcd.DBSize>>20, res.Files, restoreTime.Round(time.Millisecond), cpTime.Round(time.Millisecond), ratio, preflightTime.Round(time.Millisecond), du)
}

func syncAll(t *testing.T) {
	if err := exec.Command("sync").Run(); err != nil {
		t.Logf("sync: %v", err)
	}
}
