package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kubekeep/kubekeep/internal/testetcd"
	"github.com/kubekeep/kubekeep/rsyncish"
)

// buildCLI builds the kubekeep binary as an operator installs it.
func buildCLI(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "kubekeep")
	buildBinary(t, bin, "")
	return bin
}

// buildBinary builds this command to out with the build tags given.
func buildBinary(t *testing.T, out, tags string) {
	t.Helper()
	cmd := exec.Command("go", "build", "-tags", tags, "-o", out, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build -tags %q: %v\n%s", tags, err, b)
	}
}

// A `kubekeep drill` killed with SIGKILL mid-run leaves its scratch data
// dir (a restored db and etcd's preallocated WAL) in the store's tmp; the
// next store Lock removes it whole, with the marker beside it. While the
// drill lives, a Lock leaves it alone. Before, the cleaning removed only
// files with temp names, so the dir (60-120 MB each on a real store)
// stayed through every restart.
func TestKilledDrillLeavesNothing(t *testing.T) {
	root := testetcd.SandboxT(t)
	srv := testetcd.StartT(t, root)
	ctx := context.Background()
	if _, err := srv.LoadCluster(ctx); err != nil {
		t.Fatal(err)
	}
	cli := srv.ClientT(t)
	for i := range 8 {
		if _, err := cli.Put(ctx, fmt.Sprintf("/registry/configmaps/load/big-%d", i), strings.Repeat(string(rune('a'+i)), 1<<20)); err != nil {
			t.Fatal(err)
		}
	}
	store := filepath.Join(t.TempDir(), "store")
	if out, err := runCLI(t, "--root", root.Dir, "--store", store, "--allow-same-filesystem", "--log-level", "error", "backup"); err != nil {
		t.Fatalf("backup: %v\n%s", err, out)
	}
	bin := buildCLI(t)

	tmp := filepath.Join(store, "tmp")
	drills := func() []string {
		ms, _ := filepath.Glob(filepath.Join(tmp, "drill-*"))
		return ms
	}
	var log bytes.Buffer
	s, err := rsyncish.Open(store, rsyncish.Options{AllowSameFilesystem: true, Logger: slog.New(slog.NewTextHandler(&log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	var scratch string
	for attempt := 1; scratch == "" && attempt <= 3; attempt++ {
		cmd := exec.Command(bin, "drill", "--store", store, "--allow-same-filesystem", "--log-level", "error")
		cmd.Env = append(os.Environ(), "KUBEKEEP_CONFIG=")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		// Kill it once etcd's WAL is in the scratch data dir.
		deadline := time.After(time.Minute)
	poll:
		for scratch == "" {
			for _, m := range drills() {
				if wals, _ := filepath.Glob(filepath.Join(m, "etcd/member/wal/*.wal")); len(wals) > 0 {
					scratch = m
				}
			}
			select {
			case <-done:
				break poll
			case <-deadline:
				break poll
			case <-time.After(2 * time.Millisecond):
			}
		}
		if scratch != "" {
			// The drill is alive: a writer's Lock must not touch its dir.
			unlock, err := s.Lock(ctx)
			if err != nil {
				t.Fatal(err)
			}
			unlock()
			if _, err := os.Stat(scratch); err != nil {
				t.Fatalf("a Lock while the drill runs removed its scratch dir: %v", err)
			}
		}
		cmd.Process.Signal(syscall.SIGKILL)
		<-done
		if scratch == "" {
			t.Logf("attempt %d: the drill ended before it could be killed mid-run:\n%s", attempt, out.String())
			for _, m := range drills() {
				os.RemoveAll(m)
			}
		}
	}
	if scratch == "" {
		t.Fatal("never caught the drill mid-run")
	}
	if _, err := os.Stat(filepath.Join(scratch, "etcd/member")); err != nil {
		t.Fatalf("the killed drill left no data dir to clean (%v): the test proves nothing", err)
	}
	left := drills()
	t.Logf("the killed drill left %v", left)

	unlock, err := s.Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	unlock()
	if rest := drills(); len(rest) > 0 {
		t.Errorf("after the next Lock the store still holds %v", rest)
	}
	if !strings.Contains(log.String(), "removed leftovers") || !strings.Contains(log.String(), filepath.Base(scratch)+"/") {
		t.Errorf("the Lock's log does not name the removed dir %s:\n%s", filepath.Base(scratch), log.String())
	}
}
