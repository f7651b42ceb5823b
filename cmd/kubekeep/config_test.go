package main

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/kubekeep/kubekeep/config"
)

// Flags override the file key by key: what a flag names changes, the
// rest of the file stays.
func TestEtcdFlagsOverrideTheFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "kubekeep.yaml")
	if err := os.WriteFile(file, []byte("etcd:\n  endpoints: [\"https://file:2379\"]\n  caFile: /file/ca.crt\n  certFile: /file/client.crt\n  keyFile: /file/client.key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, _, err := runKubekeep(t, "", "config", "show", "--config", file,
		"--etcd-endpoints", "https://flag-a:2379,https://flag-b:2379", "--etcd-certfile", "/flag/client.crt")
	if err != nil {
		t.Fatal(err)
	}
	var got config.Config
	if err := yaml.NewDecoder(strings.NewReader(out)).Decode(&got); err != nil {
		t.Fatalf("config show output: %v\n%s", err, out)
	}
	want := config.Etcd{Endpoints: []string{"https://flag-a:2379", "https://flag-b:2379"}, CAFile: "/file/ca.crt",
		CertFile: "/flag/client.crt", KeyFile: "/file/client.key"}
	e := got.Etcd
	if strings.Join(e.Endpoints, ",") != strings.Join(want.Endpoints, ",") || e.CAFile != want.CAFile || e.CertFile != want.CertFile || e.KeyFile != want.KeyFile {
		t.Errorf("etcd settings %+v, want %+v", e, want)
	}
}

// Issue 13: `config validate` reports every problem of a file at once, as
// file:line: key: problem, in the order of the file.
func TestConfigValidateReportsEveryProblem(t *testing.T) {
	file := filepath.Join(t.TempDir(), "kubekeep.yaml")
	doc := "store:\n  pth: /x\n  blockSize: 48KiB\n  path: /a\n  path: /b\nschedules:\n  backup: often\n  prune: 10ms\nlog:\n  level: loud\n"
	if err := os.WriteFile(file, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	out, _, err := runKubekeep(t, "", "config", "validate", "--config", file)
	if err == nil || strings.Contains(out, "config OK") {
		t.Fatalf("an invalid file passed: %q %v", out, err)
	}
	want := []string{
		file + ":2: store.pth: unknown setting",
		file + ":3: store.blockSize: must be a power of two",
		file + ":5: store.path: set twice (first at line 4)",
		file + ":7: schedules.backup: wrong type",
		file + ":8: schedules.prune: must be at least 1s",
		file + ":10: log.level: must be debug",
	}
	got := strings.Split(err.Error(), "\n")
	if len(got) != len(want) {
		t.Fatalf("want %d problems, got %d:\n%s", len(want), len(got), err)
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("problem %d: got %q, want %q…", i+1, got[i], want[i])
		}
	}
}

// Issue 13: metrics on every interface is valid, but validate says what it
// exposes; the file still passes.
func TestConfigValidatePrintsWarnings(t *testing.T) {
	file := filepath.Join(t.TempDir(), "kubekeep.yaml")
	if err := os.WriteFile(file, []byte("root: /\nmetrics:\n  listen: \":9477\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, stderr, err := runKubekeep(t, "", "config", "validate", "--config", file)
	if err != nil || out != "config OK\n" {
		t.Fatalf("a valid file with a warning must pass: %q %v", out, err)
	}
	want := file + `:3: metrics.listen: warning: ":9477" listens on every interface`
	if !strings.HasPrefix(stderr, want) || strings.Count(stderr, "\n") != 1 {
		t.Fatalf("stderr %q, want one line starting %q", stderr, want)
	}

	if err := os.WriteFile(file, []byte("metrics:\n  listen: 127.0.0.1:9477\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, stderr, err := runKubekeep(t, "", "config", "validate", "--config", file); err != nil || stderr != "" {
		t.Fatalf("loopback: %q %v", stderr, err)
	}
}

// The agent logs the same warning for the settings it runs with (the
// --metrics-listen flag included), at start and on every reload: both go
// through agentSettings.
func TestConfigWarningsLoggedByAgent(t *testing.T) {
	file := filepath.Join(t.TempDir(), "kubekeep.yaml")
	if err := os.WriteFile(file, []byte("root: /\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	g := &globalOptions{configFile: file, stdout: io.Discard, stderr: io.Discard,
		logger: slog.New(slog.NewJSONHandler(&logs, nil))}
	cmd := newAgentCommand(g)
	if err := cmd.ParseFlags([]string{"--metrics-listen", "0.0.0.0:9477"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := agentSettings(cmd, g, &agentOptions{metricsListen: "0.0.0.0:9477"}); err != nil {
		t.Fatal(err)
	}
	var entry map[string]any
	if err := json.Unmarshal(logs.Bytes(), &entry); err != nil {
		t.Fatalf("want one JSON log line, got %q: %v", logs.String(), err)
	}
	if entry["level"] != "WARN" || entry["setting"] != "metrics.listen" ||
		!strings.Contains(entry["msg"].(string), `"0.0.0.0:9477" listens on every interface`) {
		t.Fatalf("log %v", entry)
	}
}

// --store completes a config file that names only store.mountpoint; the
// two are judged together once the flag is in. Before, every command with
// such a file failed on the default store.path before --store applied.
func TestStoreFlagUnderFileMountpoint(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "k.yaml")
	mnt := filepath.Join(dir, "disk")
	os.MkdirAll(mnt, 0o700)
	if err := os.WriteFile(cfg, []byte("store:\n  mountpoint: "+mnt+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := runCLI(t, "--config", cfg, "--store", filepath.Join(mnt, "kk"), "config", "show")
	if err != nil || !strings.Contains(out, filepath.Join(mnt, "kk")) {
		t.Errorf("--store under the file's mountpoint: %v\n%s", err, out)
	}
	if _, err := runCLI(t, "--config", cfg, "--store", filepath.Join(dir, "elsewhere"), "config", "show"); err == nil || !strings.Contains(err.Error(), "not under the mountpoint") {
		t.Errorf("--store outside the file's mountpoint: %v", err)
	}
}
