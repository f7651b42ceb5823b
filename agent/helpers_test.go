package agent

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kubekeep/kubekeep/config"
	"github.com/kubekeep/kubekeep/internal/sandbox"
	"github.com/kubekeep/kubekeep/rsyncish"
)

// syncBuffer collects the agent's log; it is printed when a test fails.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testSettings is a fast schedule on a sandbox root and a store in a temp
// dir on the same filesystem (allowed for tests only).
func testSettings(root *sandbox.Root, storeDir string) config.Config {
	cfg := config.Default()
	cfg.Root = root.Dir
	cfg.Store.Path = storeDir
	cfg.Store.AllowSameFilesystem = true
	cfg.Store.MinFree = 0
	cfg.Schedules = config.Schedules{Backup: 2 * time.Second, Debounce: 300 * time.Millisecond}
	cfg.Etcd.DeltaFlush = 200 * time.Millisecond
	cfg.Etcd.DialTimeout = time.Second
	cfg.Metrics.Listen = "127.0.0.1:0"
	return cfg
}

type running struct {
	a      *Agent
	log    *syncBuffer
	cancel context.CancelFunc
	done   chan error
}

func newAgent(t *testing.T, cfg config.Config, mutate func(*Config)) (*Agent, *syncBuffer) {
	t.Helper()
	buf := &syncBuffer{}
	c := Config{
		Settings:        cfg,
		Logger:          slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})),
		StoreProbe:      300 * time.Millisecond,
		CatchUpCheck:    200 * time.Millisecond,
		NoSignals:       true,
		ShutdownTimeout: 20 * time.Second,
	}
	if mutate != nil {
		mutate(&c)
	}
	a, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agent log:\n%s", buf.String())
		}
	})
	return a, buf
}

func start(t *testing.T, a *Agent, buf *syncBuffer) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{a: a, log: buf, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- a.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	waitFor(t, 10*time.Second, "agent to open the store and serve metrics", func() bool {
		return a.MetricsAddr() != "" && agentIsRunning(a)
	})
	return r
}

func agentIsRunning(a *Agent) bool {
	a.stMu.Lock()
	defer a.stMu.Unlock()
	return !a.state.Started.IsZero()
}

// stop cancels the agent and returns what Run returned (once).
func (r *running) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	select {
	case err, ok := <-r.done:
		if ok {
			close(r.done)
		}
		return err
	case <-time.After(40 * time.Second):
		t.Fatal("agent did not stop within 40s")
		return nil
	}
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func openStore(t *testing.T, dir string) *rsyncish.Store {
	t.Helper()
	s, err := rsyncish.Open(dir, rsyncish.Options{AllowSameFilesystem: true, NoCreate: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func versions(t *testing.T, dir string) []rsyncish.VersionInfo {
	t.Helper()
	if _, err := os.Stat(filepath.Join(dir, "config.json")); os.IsNotExist(err) {
		return nil
	}
	vs, err := openStore(t, dir).Versions()
	if err != nil {
		t.Fatal(err)
	}
	return vs
}

func scrape(t *testing.T, a *Agent, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + a.MetricsAddr() + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// metricValue returns the value of the first sample line that starts with
// series (name plus labels), or "" when absent.
func metricValue(body, series string) string {
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, series+" ") {
			return strings.TrimSpace(strings.TrimPrefix(line, series))
		}
	}
	return ""
}

func jobState(a *Agent, name string) JobState {
	a.stMu.Lock()
	defer a.stMu.Unlock()
	if js := a.state.Jobs[name]; js != nil {
		return *js
	}
	return JobState{}
}

func etcdState(a *Agent) EtcdState {
	a.stMu.Lock()
	defer a.stMu.Unlock()
	return a.state.Etcd
}

func storeDir(t *testing.T) string { return filepath.Join(t.TempDir(), "store") }
