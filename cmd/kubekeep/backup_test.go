package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kubekeep/kubekeep/internal/sandbox"
	"github.com/kubekeep/kubekeep/internal/testetcd"
)

// `kubekeep backup` exits 0 only for a good version and 3 for one it
// committed that is not good (etcd not backed up, files lost), saying why;
// `kubekeep versions` shows each version's status, which one "latest" is,
// and the problems of a degraded one. Before, an etcd-failed backup exited
// 0 and the table had no status at all.
func TestBackupExitStatusAndVersionsStatus(t *testing.T) {
	root := testetcd.SandboxT(t)
	testetcd.StartT(t, root)
	store := filepath.Join(t.TempDir(), "store")
	kk := func(args ...string) (string, error) {
		t.Helper()
		return runCLI(t, append([]string{"--root", root.Dir, "--store", store, "--allow-same-filesystem", "--log-level", "error"}, args...)...)
	}
	backup := func(wantCode int, args ...string) (string, error) {
		t.Helper()
		out, err := kk(append([]string{"backup"}, args...)...)
		if exitCode(err) != wantCode {
			t.Fatalf("backup %v: exit %d (%v), want %d\n%s", args, exitCode(err), err, wantCode, out)
		}
		return strings.TrimSpace(out), err
	}

	good, _ := backup(0)

	// etcd refuses our CA: the files commit, the exit status says etcd was
	// not backed up.
	other, err := sandbox.Build(t.TempDir(), sandbox.Options{})
	if err != nil {
		t.Fatal(err)
	}
	foreign, _ := os.ReadFile(other.Path(other.EtcdCAFile))
	if err := os.WriteFile(root.Path("/etc/kubernetes/pki/etcd/foreign-ca.crt"), foreign, 0o600); err != nil {
		t.Fatal(err)
	}
	failed, err := backup(3, "--etcd-cafile", "/etc/kubernetes/pki/etcd/foreign-ca.crt")
	if !strings.Contains(err.Error(), failed) || !strings.Contains(err.Error(), "etcd-failed") || !strings.Contains(err.Error(), "etcd not backed up") {
		t.Errorf("exit 3 message: %v", err)
	}

	// The service-account key vanishes: degraded, exit 3, JSON says why.
	if err := os.Remove(root.Path("/etc/kubernetes/pki/sa.key")); err != nil {
		t.Fatal(err)
	}
	out, err := backup(3, "-o", "json")
	var res struct {
		ID       string   `json:"id"`
		Status   string   `json:"status"`
		Good     bool     `json:"good"`
		Degraded bool     `json:"degraded"`
		Problems []string `json:"problems"`
	}
	if jerr := json.Unmarshal([]byte(out), &res); jerr != nil || res.Status != "degraded" || res.Good || !res.Degraded ||
		!strings.Contains(strings.Join(res.Problems, " "), "/etc/kubernetes/pki/sa.key") {
		t.Fatalf("backup -o json of a degraded version: %v %s", jerr, out)
	}
	if !strings.Contains(err.Error(), "sa.key") {
		t.Errorf("exit 3 message does not name the lost key: %v", err)
	}
	degraded := res.ID

	out, err = kk("versions", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var vs []struct {
		ID       string   `json:"id"`
		Status   string   `json:"status"`
		Good     bool     `json:"good"`
		Degraded bool     `json:"degraded"`
		Problems []string `json:"problems"`
		Origin   string   `json:"origin"`
		Latest   bool     `json:"latest"`
		Verified bool     `json:"verified"`
	}
	if err := json.Unmarshal([]byte(out), &vs); err != nil || len(vs) != 3 {
		t.Fatalf("versions -o json: %v %s", err, out)
	}
	for i, want := range []struct {
		id, status    string
		good, latest  bool
		degraded      bool
		problemsAbout string
	}{
		{good, "ok", true, true, false, ""},
		{failed, "etcd-failed", false, false, false, ""},
		{degraded, "degraded", false, false, true, "sa.key"},
	} {
		v := vs[i]
		if v.ID != want.id || v.Status != want.status || v.Good != want.good || v.Latest != want.latest || v.Degraded != want.degraded ||
			v.Origin != "cli" || !strings.Contains(strings.Join(v.Problems, " "), want.problemsAbout) {
			t.Errorf("version %d = %+v, want %+v", i, v, want)
		}
	}

	table, err := kk("versions")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(table, "STATUS") || !lineHasAll(table, good, " ok ") || !lineHasAll(table, failed, "etcd-failed") ||
		!lineHasAll(table, degraded, "degraded") || !lineHasAll(table, "latest", good) || !strings.Contains(table, "DEGRADED") ||
		!lineHasAll(table, "/etc/kubernetes/pki/sa.key") {
		t.Errorf("versions table:\n%s", table)
	}

	// The key went away on purpose: one backup accepts it, and exits 0.
	backup(0, "--accept-missing")
	backup(0)
}
