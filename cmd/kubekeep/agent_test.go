package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kubekeep/kubekeep/internal/testetcd"
)

// The agent command runs with no config file at all (flags only), stops
// cleanly when its context ends, and `kubekeep status -o json` then shows
// the contract keys from the store and the agent's status file.
func TestAgentCommandThenStatus(t *testing.T) {
	t.Setenv("KUBEKEEP_CONFIG", "")
	root := testetcd.SandboxT(t) // etcd not running: versions hold the files, the etcd failure is recorded
	dir := filepath.Join(t.TempDir(), "store")
	cmd := newRootCommand()
	cmd.SetOut(io.Discard)
	var logs bytes.Buffer
	cmd.SetErr(&logs)
	cmd.SetArgs([]string{"agent", "--root", root.Dir, "--store", dir, "--allow-same-filesystem",
		"--backup-interval", "1s", "--metrics-listen", "127.0.0.1:0", "--config", filepath.Join(t.TempDir(), "missing.yaml")})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	// An explicit --config that does not exist must fail: the operator
	// named it.
	if err := cmd.ExecuteContext(ctx); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Fatalf("agent with a missing explicit config: %v", err)
	}
	cmd = newRootCommand()
	cmd.SetOut(io.Discard)
	cmd.SetErr(&logs)
	cmd.SetArgs([]string{"agent", "--root", root.Dir, "--store", dir, "--allow-same-filesystem",
		"--backup-interval", "1s", "--metrics-listen", "127.0.0.1:0"})
	go func() { done <- cmd.ExecuteContext(ctx) }()
	time.Sleep(6 * time.Second)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("agent returned %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("agent did not stop")
	}

	out, err := runCLI(t, "status", "--store", dir, "-o", "json")
	if err != nil {
		t.Fatalf("status: %v\n%s", err, logs.String())
	}
	var st map[string]json.RawMessage
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status JSON: %v\n%s", err, out)
	}
	for _, k := range []string{"jobs", "newestVersion", "newestVerified", "etcdDeltaLagSeconds", "store"} {
		if _, ok := st[k]; !ok {
			t.Errorf("status JSON lacks %q: %s", k, out)
		}
	}
	var jobs map[string]map[string]any
	if err := json.Unmarshal(st["jobs"], &jobs); err != nil {
		t.Fatal(err)
	}
	b := jobs["backup"]
	for _, k := range []string{"lastSuccess", "lastFailure", "lastError", "nextRun"} {
		if _, ok := b[k]; !ok {
			t.Errorf("jobs.backup lacks %q: %v", k, b)
		}
	}
	if b["lastSuccess"] == nil {
		t.Errorf("no successful backup recorded: %v\n%s", b, logs.String())
	}
	if string(st["newestVersion"]) == "null" {
		t.Error("no newest version")
	}
	text, err := runCLI(t, "status", "--store", dir)
	if err != nil || !strings.Contains(text, "NOT RUNNING") || !strings.Contains(text, "backup") {
		t.Errorf("status table: %v\n%s", err, text)
	}
}
