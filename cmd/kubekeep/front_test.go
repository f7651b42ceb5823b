package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// buildInstalled builds kubekeep as `make build` installs it: the front
// (-tags kubekeep_front) as kubekeep, the whole CLI as kubekeep-core
// beside it.
func buildInstalled(t *testing.T) (front, core string) {
	t.Helper()
	dir := t.TempDir()
	front, core = filepath.Join(dir, "kubekeep"), filepath.Join(dir, "kubekeep-core")
	buildBinary(t, front, "kubekeep_front")
	buildBinary(t, core, "")
	return front, core
}

// run runs bin with args and the environment extra; it returns stdout,
// stderr and the exit status.
func run(t *testing.T, bin string, extra []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(append(os.Environ(), "KUBEKEEP_CONFIG="), extra...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return out.String(), errb.String(), 0
	case errors.As(err, &ee):
		return out.String(), errb.String(), ee.ExitCode()
	}
	t.Fatalf("%s %v: %v", bin, args, err)
	return "", "", -1
}

// The front links only what the read-only commands read with: no etcd
// client or server, gRPC, cloud SDK, S3 client or metrics library. One
// import of any of them into the read path (objects, backup/versionread,
// etcdsnap/snapread, rsyncish, config) brings back the start-up cost the
// front exists to avoid (~40 ms against ~13 ms), and fails here.
func TestFrontLinksOnlyTheReadPath(t *testing.T) {
	out, err := exec.Command("go", "list", "-tags", "kubekeep_front", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	heavy := []string{"go.etcd.io/etcd/server/", "go.etcd.io/etcd/client/v3", "google.golang.org/grpc",
		"github.com/prometheus/client_golang", "github.com/minio/", "github.com/aliyun/", "github.com/go-co-op/gocron",
		"github.com/kubekeep/kubekeep/etcdsnap\n", "github.com/kubekeep/kubekeep/backup\n", "github.com/kubekeep/kubekeep/agent",
		"github.com/kubekeep/kubekeep/restore", "github.com/kubekeep/kubekeep/tiers", "github.com/kubekeep/kubekeep/cloudsnap"}
	deps := "\n" + string(out)
	for _, h := range heavy {
		if strings.Contains(deps, "\n"+h) {
			t.Errorf("the front links %s", strings.TrimSpace(h))
		}
	}
	if !strings.Contains(deps, "\ngithub.com/kubekeep/kubekeep/objects\n") {
		t.Errorf("the front does not link objects: is the tag still kubekeep_front?\n%s", out)
	}
}

// The installed pair: the front answers the read-only commands itself
// (they work with no core to hand off to) with exactly the core's output,
// and hands every other command and help to kubekeep-core, keeping its
// output and exit status (verify of a damaged store: 1). Without a core,
// a handed-off command says where it looked.
func TestFrontHandsOffToCore(t *testing.T) {
	store, ids, _ := storeWithVersions(t, 3)
	front, core := buildInstalled(t)
	noCore := []string{"KUBEKEEP_CORE=" + filepath.Join(t.TempDir(), "missing")}

	for _, args := range [][]string{
		{"--store", store, "--allow-same-filesystem", "versions", "-o", "json"},
		{"version"},
	} {
		want, _, code := run(t, core, nil, args...)
		if code != 0 || want == "" {
			t.Fatalf("core %v: exit %d, %q", args, code, want)
		}
		got, stderr, code := run(t, front, noCore, args...)
		if code != 0 || got != want {
			t.Errorf("front %v with no core: exit %d, stderr %q\n%q\nwant the core's\n%q", args, code, stderr, got, want)
		}
	}
	if !strings.Contains(func() string {
		s, _, _ := run(t, front, nil, "--store", store, "--allow-same-filesystem", "versions")
		return s
	}(), ids[2]) {
		t.Errorf("front versions does not list %s", ids[2])
	}

	help, _, code := run(t, front, nil, "--help")
	if code != 0 || !strings.Contains(help, "agent") || !strings.Contains(help, "restore") || !strings.Contains(help, "offsite") {
		t.Errorf("front --help: exit %d, want the core's list of every command:\n%s", code, help)
	}
	if h, _, code := run(t, front, nil, "get", "--help"); code != 0 || !strings.Contains(h, "RESOURCE[/NAMESPACE]/NAME") {
		t.Errorf("front get --help: exit %d\n%s", code, h)
	}

	verify := []string{"--store", store, "--allow-same-filesystem", "--log-level", "error", "verify"}
	if out, stderr, code := run(t, front, nil, verify...); code != 0 {
		t.Fatalf("front verify (handed off): exit %d\n%s\n%s", code, out, stderr)
	}
	packs, _ := filepath.Glob(filepath.Join(store, "packs", "*.pack"))
	if len(packs) == 0 {
		t.Fatal("no pack to damage")
	}
	if err := os.Truncate(packs[0], 10); err != nil {
		t.Fatal(err)
	}
	if out, stderr, code := run(t, front, nil, verify...); code != 1 {
		t.Errorf("front verify of a damaged store: exit %d, want the core's 1\n%s\n%s", code, out, stderr)
	}
	_, stderr, code := run(t, front, noCore, verify...)
	if code == 0 || !strings.Contains(stderr, "kubekeep-core") || !strings.Contains(stderr, "KUBEKEEP_CORE") {
		t.Errorf("front verify with no core: exit %d, stderr %q; want an error naming kubekeep-core and $KUBEKEEP_CORE", code, stderr)
	}
}
