package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kubekeep/kubekeep/rsyncish"
)

// TestRepairCommand: exit 0 on a whole store, 1 while versions lack data
// (named in text and JSON), 2 when it cannot run.
func TestRepairCommand(t *testing.T) {
	dir, ids, _ := storeWithVersions(t, 3)
	out, err := runCLI(t, "repair", "--store", dir)
	if exitCode(err) != 0 || !strings.Contains(out, "store whole") {
		t.Fatalf("whole store: exit %d (%v)\n%s", exitCode(err), err, out)
	}
	// The first version's pack goes; its content is no longer on the host.
	s, err := rsyncish.Open(dir, rsyncish.Options{NoCreate: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	packs, _ := filepath.Glob(filepath.Join(dir, "packs", "*.pack"))
	var lost string
	for _, p := range packs {
		os.Rename(p, p+".away")
		unlock, _ := s.Lock(context.Background())
		rep, _ := s.Verify(context.Background(), false)
		unlock()
		os.Rename(p+".away", p)
		for _, pr := range rep.Problems {
			if len(pr.Versions) == 1 && pr.Versions[0] == ids[0] {
				lost = p
			}
		}
	}
	if lost == "" {
		t.Fatal("no pack holds only the first version's data")
	}
	os.Remove(lost)
	out, err = runCLI(t, "repair", "--store", dir)
	if exitCode(err) != 1 || !strings.Contains(out, "DAMAGED: version "+ids[0]) || !strings.Contains(out, "/etc/kubernetes/pki/ca.crt") {
		t.Fatalf("damaged store: exit %d (%v)\n%s", exitCode(err), err, out)
	}
	out, err = runCLI(t, "repair", "--store", dir, "-o", "json")
	var res rsyncish.RepairResult
	if exitCode(err) != 1 || json.Unmarshal([]byte(out), &res) != nil || len(res.Damaged) != 1 || res.Damaged[0].ID != ids[0] {
		t.Fatalf("json: exit %d %+v\n%s", exitCode(err), res, out)
	}
	// The pack is gone from every index: verify names the lost version
	// only, and the later ones are whole.
	if out, err := runCLI(t, "verify", "--store", dir, "--read-data"); exitCode(err) != 1 || strings.Contains(out, ids[1]) || strings.Contains(out, ids[2]) || !strings.Contains(out, ids[0]) {
		t.Errorf("verify after repair: exit %d\n%s", exitCode(err), out)
	}

	if _, err := runCLI(t, "repair", "--store", filepath.Join(t.TempDir(), "nope")); exitCode(err) != 2 {
		t.Errorf("repair of no store: exit %d (%v), want 2", exitCode(err), err)
	}
	unlock, err := s.Lock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	if _, err := runCLI(t, "repair", "--store", dir, "--wait", "0s"); exitCode(err) != 2 {
		t.Errorf("repair of a locked store: exit %d (%v), want 2", exitCode(err), err)
	}
}

// TestDamagedConfigCommands: with one byte of config.json changed, the
// read-only commands still work (with a warning) and repair rebuilds it.
func TestDamagedConfigCommands(t *testing.T) {
	dir, ids, _ := storeWithVersions(t, 2)
	p := filepath.Join(dir, "config.json")
	data, _ := os.ReadFile(p)
	data[15] ^= 1
	os.WriteFile(p, data, 0o600)
	out, err := runCLI(t, "versions", "--store", dir)
	if err != nil || !strings.Contains(out, ids[1]) {
		t.Fatalf("versions with a damaged config.json: %v\n%s", err, out)
	}
	if _, err := runCLI(t, "restore", "files", "--store", dir, "--version", ids[0], "--to", t.TempDir()); err != nil {
		t.Fatalf("restore with a damaged config.json: %v", err)
	}
	out, err = runCLI(t, "verify", "--store", dir)
	if exitCode(err) != 1 || !strings.Contains(out, "config.json") {
		t.Fatalf("verify: exit %d\n%s", exitCode(err), out)
	}
	out, err = runCLI(t, "repair", "--store", dir)
	if exitCode(err) != 0 || !strings.Contains(out, "rebuilt") {
		t.Fatalf("repair: exit %d (%v)\n%s", exitCode(err), err, out)
	}
	if out, err := runCLI(t, "verify", "--store", dir, "--read-data"); err != nil {
		t.Fatalf("verify after repair: %v\n%s", err, out)
	}
}

// TestVerifyExitCodes: 1 means damage and nothing else; a check that
// cannot run exits 2.
func TestVerifyExitCodes(t *testing.T) {
	dir, _, _ := storeWithVersions(t, 1)
	badCfg := filepath.Join(t.TempDir(), "kubekeep.yaml")
	os.WriteFile(badCfg, []byte("store:\n  pth: x\n"), 0o600)
	for name, args := range map[string][]string{
		"no store":        {"verify", "--store", filepath.Join(t.TempDir(), "nope")},
		"no store path":   {"verify"},
		"bad flag":        {"verify", "--store", dir, "--no-such-flag"},
		"bad output":      {"verify", "--store", dir, "-o", "yaml"},
		"an argument":     {"verify", "--store", dir, "extra"},
		"bad config":      {"verify", "--store", dir, "--config", badCfg},
		"repair no store": {"repair", "--store", filepath.Join(t.TempDir(), "nope")},
	} {
		if _, err := runCLI(t, args...); exitCode(err) != 2 {
			t.Errorf("%s: exit %d (%v), want 2", name, exitCode(err), err)
		}
	}
	s, err := rsyncish.Open(dir, rsyncish.Options{NoCreate: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	unlock, err := s.Lock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	_, err = runCLI(t, "verify", "--store", dir, "--wait", "0s")
	unlock()
	if exitCode(err) != 2 || !strings.Contains(err.Error(), "in use") {
		t.Errorf("lock held: exit %d (%v), want 2", exitCode(err), err)
	}
	if _, err := runCLI(t, "verify", "--store", dir); exitCode(err) != 0 {
		t.Errorf("clean store: exit %d (%v)", exitCode(err), err)
	}
}
