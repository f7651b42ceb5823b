package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/kubekeep/kubekeep/rsyncish"
)

// runCLI runs kubekeep with args and returns stdout and the error.
func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	t.Setenv("KUBEKEEP_CONFIG", "")
	cmd := newRootCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(io.Discard)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

func exitCode(err error) int {
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	if err != nil {
		return 1
	}
	return 0
}

// storeWithVersions writes n versions of a small tree with the library,
// the etcd meta on the last one.
func storeWithVersions(t *testing.T, n int) (dir string, ids []string, root string) {
	t.Helper()
	root, dir = t.TempDir(), filepath.Join(t.TempDir(), "store")
	s, err := rsyncish.Open(dir, rsyncish.Options{AllowSameFilesystem: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		p := filepath.Join(root, "etc/kubernetes/pki/ca.crt")
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(strings.Repeat("x", 100+i)), 0o644); err != nil {
			t.Fatal(err)
		}
		unlock, err := s.Lock(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		w, err := s.NewVersion(context.Background(), rsyncish.WriteOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := w.AddTree(root, []string{"/etc/kubernetes"}, nil); err != nil {
			t.Fatal(err)
		}
		if i == n-1 {
			if err := w.SetMeta("etcd", map[string]any{"revision": 99}); err != nil {
				t.Fatal(err)
			}
		}
		vi, err := w.Commit()
		if err != nil {
			t.Fatal(err)
		}
		unlock()
		ids = append(ids, vi.ID)
	}
	return dir, ids, root
}

func TestVersionsJSONContract(t *testing.T) {
	dir, ids, _ := storeWithVersions(t, 2)
	out, err := runCLI(t, "versions", "--store", dir, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var got []map[string]json.RawMessage
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(got) != 2 {
		t.Fatalf("%d versions", len(got))
	}
	for i, v := range got {
		var keys []string
		for k := range v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		// Fields are added, never renamed: id, time, files, size,
		// verified and etcd were the first contract.
		want := "degraded,files,good,id,latest,size,status,time,verified"
		if i == 1 {
			want = "degraded,etcd,files,good,id,latest,size,status,time,verified"
		}
		if strings.Join(keys, ",") != want {
			t.Errorf("version %d keys %v, want %s", i, keys, want)
		}
		if string(v["id"]) != `"`+ids[i]+`"` {
			t.Errorf("version %d id %s, want %s (oldest first)", i, v["id"], ids[i])
		}
	}
	var compact bytes.Buffer
	_ = json.Compact(&compact, got[1]["etcd"])
	if compact.String() != `{"revision":99}` {
		t.Errorf("etcd %s", got[1]["etcd"])
	}
	table, err := runCLI(t, "versions", "--store", dir)
	if err != nil || !strings.Contains(table, ids[1]) || !strings.Contains(table, "VERIFIED") {
		t.Errorf("table: %v\n%s", err, table)
	}
	if _, err := runCLI(t, "versions", "--store", filepath.Join(t.TempDir(), "nope")); err == nil {
		t.Error("versions of a missing store succeeded")
	}
}

func TestVerifyExitStatus(t *testing.T) {
	dir, ids, _ := storeWithVersions(t, 2)
	out, err := runCLI(t, "verify", "--store", dir, "--read-data")
	if err != nil || !strings.HasPrefix(out, "clean") {
		t.Fatalf("clean store: %v\n%s", err, out)
	}
	packs, _ := filepath.Glob(filepath.Join(dir, "packs", "*.pack"))
	data, _ := os.ReadFile(packs[0])
	data[len(data)/2] ^= 0xff
	os.WriteFile(packs[0], data, 0o600)
	if _, err := runCLI(t, "verify", "--store", dir); err != nil {
		t.Errorf("structure-only verify should not read data: %v", err)
	}
	out, err = runCLI(t, "verify", "--store", dir, "--read-data")
	if exitCode(err) != 1 {
		t.Fatalf("damaged store: exit %d (%v)\n%s", exitCode(err), err, out)
	}
	if !strings.Contains(out, "DAMAGE:") || !(strings.Contains(out, "version(s) "+ids[0]) || strings.Contains(out, "version(s) "+ids[1])) || !strings.Contains(out, "/etc/kubernetes/pki/ca.crt") {
		t.Errorf("problem does not name the version and path:\n%s", out)
	}
}

func TestPruneAndRestoreFiles(t *testing.T) {
	dir, ids, root := storeWithVersions(t, 4)
	cfg := filepath.Join(t.TempDir(), "kubekeep.yaml")
	os.WriteFile(cfg, []byte("retention:\n  keepLast: 2\n  keepHourly: 0\n  keepDaily: 0\n  keepWeekly: 0\n"), 0o600)
	out, err := runCLI(t, "prune", "--config", cfg, "--store", dir, "--dry-run")
	if err != nil || !strings.Contains(out, "would remove") {
		t.Fatalf("dry run: %v\n%s", err, out)
	}
	out, err = runCLI(t, "prune", "--config", cfg, "--store", dir, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var res rsyncish.PruneResult
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res.Remove) != 2 || len(res.Keep) != 2 {
		t.Fatalf("prune: %v %+v", err, res)
	}
	to := t.TempDir()
	out, err = runCLI(t, "restore", "files", "--store", dir, "--version", "latest", "--to", to)
	if err != nil || !strings.Contains(out, ids[3]) {
		t.Fatalf("restore: %v %s", err, out)
	}
	got, _ := os.ReadFile(filepath.Join(to, "etc/kubernetes/pki/ca.crt"))
	want, _ := os.ReadFile(filepath.Join(root, "etc/kubernetes/pki/ca.crt"))
	if !bytes.Equal(got, want) {
		t.Error("restored file differs")
	}
	if _, err := runCLI(t, "restore", "files", "--store", dir, "--version", ids[0], "--to", to); err == nil {
		t.Error("restore of a pruned version succeeded")
	}
}

// `backup --path` naming nothing is refused before anything is committed.
// Before, it committed an empty version (exit 0, later 3).
func TestBackupPathThatDoesNotExist(t *testing.T) {
	root := t.TempDir()
	store := filepath.Join(t.TempDir(), "store")
	os.MkdirAll(filepath.Join(root, "etc/kubernetes/pki"), 0o755)
	os.WriteFile(filepath.Join(root, "etc/kubernetes/pki/ca.key"), []byte("k"), 0o600)
	args := []string{"--root", root, "--store", store, "--allow-same-filesystem", "--log-level", "error", "backup", "--no-discover"}
	_, err := runCLI(t, append(args, "--path", "/etc/kubernetes/pki", "--path", "/nonexistent")...)
	if err == nil || !strings.Contains(err.Error(), "/nonexistent") {
		t.Fatalf("backup --path /nonexistent: %v", err)
	}
	out, err := runCLI(t, "--root", root, "--store", store, "--allow-same-filesystem", "versions", "-o", "json")
	if err != nil || strings.Contains(out, `"id"`) {
		t.Errorf("a version was committed anyway: %v %s", err, out)
	}
}
