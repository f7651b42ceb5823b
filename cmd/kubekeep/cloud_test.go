package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/kubekeep/kubekeep/agent"
	"github.com/kubekeep/kubekeep/cloudsnap"
	"github.com/kubekeep/kubekeep/cloudsnap/ecsfake"
	"github.com/kubekeep/kubekeep/config"
	"github.com/kubekeep/kubekeep/internal/progress"
)

// cloudFake starts the fake ECS (real SDK signatures and all) with one
// instance and two ESSD disks, and points the credential variables at it.
func cloudFake(t *testing.T) (*ecsfake.Server, string) {
	t.Helper()
	// Millisecond transitions: the CLI runs on the wall clock and polls
	// every 10s, so anything slower would make the test wait.
	fake := ecsfake.New(ecsfake.Options{Region: "cn-hangzhou", SnapshotDuration: time.Millisecond,
		StopDuration: time.Millisecond, StartDuration: time.Millisecond})
	fake.AddAccessKey("LTAIclitest", "cli-secret")
	fake.AddInstance(ecsfake.InstanceSpec{ID: "i-clitest"})
	fake.AddDisk(ecsfake.DiskSpec{ID: "d-clisys", InstanceID: "i-clitest", Type: "system", Category: "cloud_essd", Content: "before"})
	fake.AddDisk(ecsfake.DiskSpec{ID: "d-clidata", InstanceID: "i-clitest", Type: "data", Category: "cloud_essd", Content: "before"})
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	t.Setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAIclitest")
	t.Setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "cli-secret")
	t.Setenv("ALIBABA_CLOUD_SECURITY_TOKEN", "")
	t.Setenv("KUBEKEEP_CONFIG", filepath.Join(t.TempDir(), "none.yaml"))
	return fake, srv.URL
}

func runKubekeep(t *testing.T, stdin string, args ...string) (string, string, error) {
	t.Helper()
	cmd := newRootCommand()
	var out, errb bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errb)
	cmd.SetIn(strings.NewReader(stdin))
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), errb.String(), err
}

func TestCloudCommandsAgainstFake(t *testing.T) {
	fake, url := cloudFake(t)
	common := []string{"--config", "/dev/null", "--endpoint", url, "--metadata-url", url}

	saved := backupBeforeCloudSnapshot
	t.Cleanup(func() { backupBeforeCloudSnapshot = saved })
	backupBeforeCloudSnapshot = nil
	_, _, err := runKubekeep(t, "", append([]string{"cloud", "snapshot"}, common...)...)
	if err == nil || !strings.Contains(err.Error(), "--skip-backup") {
		t.Fatalf("snapshot without a backup seam must point at --skip-backup, got %v", err)
	}

	backupBeforeCloudSnapshot = func(ctx context.Context, g *globalOptions) (string, int64, error) {
		return "v-20260302-1", 4242, nil
	}
	t.Setenv(progress.EnvVar, "")
	out, stderr, err := runKubekeep(t, "", append([]string{"cloud", "snapshot", "--wait", "-o", "json", "--log-level", "error"}, common...)...)
	if err != nil {
		t.Fatalf("cloud snapshot: %v", err)
	}
	var made cloudSetJSON
	if err := json.Unmarshal([]byte(out), &made); err != nil || made.Status != "accomplished" || made.Version != "v-20260302-1" || made.EtcdRevision != 4242 {
		t.Fatalf("snapshot output %q: %+v %v", out, made, err)
	}
	// Without a terminal: a line per change of the disks' progress, then
	// the summary.
	if lines := strings.Split(strings.TrimSpace(stderr), "\n"); len(lines) < 2 ||
		!regexp.MustCompile(`^cloud snapshot: set `+made.ID+` \w+: d-cli\w+ \d+%, d-cli\w+ \d+%$`).MatchString(lines[0]) ||
		!regexp.MustCompile(`^cloud snapshot: done in \S+$`).MatchString(lines[len(lines)-1]) {
		t.Errorf("cloud snapshot --wait stderr:\n%s", stderr)
	}
	for _, sn := range fake.Snapshots() {
		if sn.Tags["kubekeep-version"] != "v-20260302-1" && sn.GroupID == "" {
			t.Errorf("snapshot %s lacks the version tag: %v", sn.ID, sn.Tags)
		}
	}

	out, _, err = runKubekeep(t, "", append([]string{"cloud", "list", "-o", "json"}, common...)...)
	if err != nil {
		t.Fatalf("cloud list: %v", err)
	}
	// Scripts depend on exactly these keys.
	var raw []map[string]json.RawMessage
	if err := json.Unmarshal([]byte(out), &raw); err != nil || len(raw) != 1 {
		t.Fatalf("list output %q: %v", out, err)
	}
	var keys []string
	for k := range raw[0] {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if want := []string{"disks", "etcdRevision", "expires", "id", "status", "time", "version"}; !reflect.DeepEqual(keys, want) {
		t.Fatalf("list keys %v, want %v", keys, want)
	}
	var disks []map[string]string
	_ = json.Unmarshal(raw[0]["disks"], &disks)
	if len(disks) != 2 || disks[0]["diskId"] == "" || disks[0]["snapshotId"] == "" {
		t.Fatalf("disks %v", disks)
	}

	out, _, err = runKubekeep(t, "", append([]string{"cloud", "prune", "--dry-run"}, common...)...)
	if err != nil || !strings.Contains(out, "kept "+made.ID+" (newest accomplished set)") {
		t.Fatalf("prune --dry-run: %q %v", out, err)
	}

	fake.SetDiskContent("d-clisys", "broken")
	rb := append([]string{"cloud", "rollback", "--set", made.ID, "--state-file", filepath.Join(t.TempDir(), "rb.json")}, common...)
	out, _, err = runKubekeep(t, "", append(rb, "--dry-run")...)
	if err != nil || !strings.Contains(out, "reset disk d-clisys") || !strings.Contains(out, "dry run: nothing changed") {
		t.Fatalf("rollback --dry-run: %q %v", out, err)
	}
	_, _, err = runKubekeep(t, made.ID+"\n", rb...)
	if err == nil || !strings.Contains(err.Error(), "--yes") || exitCode(err) != 2 {
		t.Fatalf("rollback without --yes and without a terminal must refuse (exit 2), got %v", err)
	}
	if fake.Calls("StopInstance") != 0 {
		t.Fatal("refused rollback stopped the instance")
	}
	out, stderr, err = runKubekeep(t, "", append(rb, "--yes", "--no-safety-snapshot", "--log-level", "error")...)
	if err != nil || !strings.Contains(out, "rolled back") {
		t.Fatalf("rollback --yes: %q %v", out, err)
	}
	// A line per step when it ends.
	for _, want := range []string{"rollback: stop instance i-clitest: done in ", "rollback: start instance i-clitest: done in "} {
		if !strings.Contains(stderr, "\n"+want) && !strings.HasPrefix(stderr, want) {
			t.Errorf("rollback stderr lacks %q:\n%s", want, stderr)
		}
	}
	if fake.DiskContent("d-clisys") != "before" || fake.InstanceStatus("i-clitest") != "Running" {
		t.Fatalf("after rollback: disk %q, instance %s", fake.DiskContent("d-clisys"), fake.InstanceStatus("i-clitest"))
	}
}

func TestCloudPolicyRefusedInAgentMode(t *testing.T) {
	_, url := cloudFake(t)
	_, _, err := runKubekeep(t, "", "cloud", "policy", "apply", "--config", "/dev/null", "--endpoint", url, "--metadata-url", url)
	if err == nil || !strings.Contains(err.Error(), "cloud.mode") {
		t.Fatalf("policy apply in agent mode: %v", err)
	}
}

func TestCloudBadEndpointFlag(t *testing.T) {
	_, url := cloudFake(t)
	_, _, err := runKubekeep(t, "", "cloud", "list", "--config", "/dev/null", "--endpoint", "ftp://x", "--metadata-url", url)
	var ee *exitError
	if err == nil || errors.As(err, &ee) || !strings.Contains(err.Error(), "endpoint") {
		t.Fatalf("bad endpoint: %v", err)
	}
}

// The agent's scheduled cloud job, through the real SDK against the fake:
// one set tagged with the version and etcd revision the agent hands it,
// then the expired kubekeep set pruned and a foreign snapshot untouched.
func TestAgentCloudSnapshotJob(t *testing.T) {
	fake, url := cloudFake(t)
	oldTags := map[string]string{cloudsnap.TagManagedBy: cloudsnap.ManagedByValue, cloudsnap.TagSet: "ks-expired",
		cloudsnap.TagInstance: "i-clitest", cloudsnap.TagRetention: "7"}
	expired := []string{
		fake.AddSnapshot(ecsfake.SnapshotSpec{DiskID: "d-clisys", Tags: oldTags, Age: 8 * 24 * time.Hour}),
		fake.AddSnapshot(ecsfake.SnapshotSpec{DiskID: "d-clidata", Tags: oldTags, Age: 8 * 24 * time.Hour}),
	}
	foreign := fake.AddSnapshot(ecsfake.SnapshotSpec{DiskID: "d-clisys", Age: 30 * 24 * time.Hour})

	cfg := config.Default().Cloud
	cfg.Enabled, cfg.Endpoint, cfg.MetadataURL = true, url, url
	g := &globalOptions{logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if err := agentCloudSnapshot(g)(t.Context(), agent.CloudRequest{Cloud: cfg, Version: "20261123T120000Z-abcd", EtcdRevision: 777}); err != nil {
		t.Fatalf("agent cloud job: %v", err)
	}
	ids := map[string]bool{}
	for _, sn := range fake.Snapshots() {
		ids[sn.ID] = true
	}
	out, _, err := runKubekeep(t, "", "cloud", "list", "-o", "json", "--config", "/dev/null", "--endpoint", url, "--metadata-url", url)
	if err != nil {
		t.Fatalf("cloud list: %v", err)
	}
	var sets []cloudSetJSON
	if err := json.Unmarshal([]byte(out), &sets); err != nil {
		t.Fatalf("cloud list output %q: %v", out, err)
	}
	if len(sets) != 1 || sets[0].Version != "20261123T120000Z-abcd" || sets[0].EtcdRevision != 777 || sets[0].Status != "accomplished" || len(sets[0].Disks) != 2 {
		t.Fatalf("after the agent's job, sets: %+v", sets)
	}
	for _, id := range expired {
		if ids[id] {
			t.Errorf("expired kubekeep snapshot %s was not pruned", id)
		}
	}
	if !ids[foreign] {
		t.Errorf("foreign snapshot %s was deleted", foreign)
	}
}

// At a terminal (a tmux pane) cloud rollback shows its plan and asks for
// the set id: another answer refuses (exit 2, the instance untouched),
// the id rolls back.
func TestCloudRollbackPromptInTerminal(t *testing.T) {
	fake, url := cloudFake(t)
	common := []string{"--config", "/dev/null", "--endpoint", url, "--metadata-url", url}
	out, _, err := runKubekeep(t, "", append([]string{"cloud", "snapshot", "--skip-backup", "--wait", "-o", "json"}, common...)...)
	if err != nil {
		t.Fatalf("cloud snapshot: %v", err)
	}
	var made cloudSetJSON
	if err := json.Unmarshal([]byte(out), &made); err != nil || made.ID == "" {
		t.Fatalf("snapshot output %q: %v", out, err)
	}
	fake.SetDiskContent("d-clisys", "broken")
	bin := buildCLI(t)
	args := append([]string{"cloud", "rollback", "--set", made.ID, "--state-file", filepath.Join(t.TempDir(), "rb.json"), "--no-safety-snapshot", "--log-level", "error"}, common...)
	question := regexp.MustCompile(`Type ` + made.ID + ` to proceed:`)

	capture, send := tmuxSession(t, shellLine(bin, args...))
	pane := waitPane(t, capture, question, 20*time.Millisecond)
	if !strings.Contains(pane, "reset disk d-clisys") || !strings.Contains(pane, "overwrites its disks") {
		t.Errorf("the plan is not shown before the question:\n%s", pane)
	}
	send("not-the-set", "Enter")
	pane = waitPane(t, capture, exitRe, 20*time.Millisecond)
	if m := exitRe.FindStringSubmatch(pane); m[1] != "2" || !strings.Contains(pane, "nothing changed") {
		t.Fatalf("a wrong answer: want exit 2 and nothing changed:\n%s", pane)
	}
	if fake.Calls("StopInstance") != 0 || fake.DiskContent("d-clisys") != "broken" {
		t.Fatal("a refused rollback touched the instance")
	}

	capture, send = tmuxSession(t, shellLine(bin, args...))
	waitPane(t, capture, question, 20*time.Millisecond)
	send(made.ID, "Enter")
	pane = waitPane(t, capture, exitRe, 20*time.Millisecond)
	if m := exitRe.FindStringSubmatch(pane); m[1] != "0" || !strings.Contains(pane, "rolled back to set "+made.ID) ||
		!strings.Contains(pane, "rollback: stop instance i-clitest: done in") {
		t.Fatalf("the set id typed: want the rollback done, a line per step:\n%s", pane)
	}
	if fake.DiskContent("d-clisys") != "before" || fake.InstanceStatus("i-clitest") != "Running" {
		t.Fatalf("after the rollback: disk %q, instance %s", fake.DiskContent("d-clisys"), fake.InstanceStatus("i-clitest"))
	}
	t.Logf("typed the set id:\n%s", strings.TrimRight(pane, "\n"))
}
