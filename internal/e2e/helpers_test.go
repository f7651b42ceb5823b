package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/kubekeep/kubekeep/internal/kubenode"
)

// kkEnv names a kubekeep binary to run instead of building one (a
// release, another checkout); TestMain sets it for the isolated children.
const kkEnv = "KUBEKEEP_E2E_BIN"

// TestMain builds the kubekeep CLI once for the whole run, without -race,
// as an operator installs it (the front and kubekeep-core), and hands it to every isolated child through
// the environment (each child would otherwise link and leave its own
// ~90 MB copy).
func TestMain(m *testing.M) {
	if os.Getenv(kkEnv) != "" || kubenode.Isolated() || os.Geteuid() != 0 || os.Getenv(kubenode.SkipEnv) == "1" {
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "kubekeep-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// As `make install` lays it out: the front as kubekeep (get, objects,
	// diff and versions run in it) and the whole CLI as kubekeep-core
	// beside it, which the front execs for every other command.
	bin := filepath.Join(dir, "kubekeep")
	_, file, _, _ := runtime.Caller(0)
	for _, b := range []struct{ out, tags string }{{bin, "kubekeep_front"}, {filepath.Join(dir, "kubekeep-core"), ""}} {
		cmd := exec.Command("go", "build", "-trimpath", "-tags", b.tags, "-o", b.out, "./cmd/kubekeep")
		cmd.Dir = filepath.Join(filepath.Dir(file), "..", "..")
		cmd.Env = append(os.Environ(), "GOFLAGS=-buildvcs=false", "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "go build -tags %q ./cmd/kubekeep: %v\n%s", b.tags, err, out)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	os.Setenv(kkEnv, bin)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// kubekeepBinary is the CLI TestMain built (or $KUBEKEEP_E2E_BIN).
func kubekeepBinary(t testing.TB) string {
	t.Helper()
	p := os.Getenv(kkEnv)
	if p == "" {
		t.Fatalf("no kubekeep binary: %s is not set (TestMain builds it when running as root)", kkEnv)
	}
	return p
}

// result is one kubekeep run.
type result struct {
	args           []string
	stdout, stderr string
	code           int
	took           time.Duration
}

func (r result) String() string {
	return fmt.Sprintf("kubekeep %s: exit %d in %s\nstdout:\n%s\nstderr:\n%s", strings.Join(r.args, " "), r.code, r.took.Round(time.Millisecond), tail(r.stdout, 8000), tail(r.stderr, 8000))
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "[...]" + s[len(s)-n:]
}

// kk runs kubekeep with args as an operator would on the master: no --root
// (the default /), the config at /etc/kubekeep/kubekeep.yaml, kubeadm on
// PATH.
func kk(t testing.TB, args ...string) result {
	t.Helper()
	return kkIn(t, nil, args...)
}

func kkIn(t testing.TB, stdin []byte, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, kubekeepBinary(t), args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	start := time.Now()
	err := cmd.Run()
	r := result{args: args, stdout: o.String(), stderr: e.String(), took: time.Since(start)}
	if err != nil {
		r.code = -1
		if ee, ok := err.(*exec.ExitError); ok {
			r.code = ee.ExitCode()
		} else {
			r.stderr += "\n(exec: " + err.Error() + ")"
		}
	}
	return r
}

// must runs kubekeep and fails t unless it exits 0.
func must(t testing.TB, args ...string) result {
	t.Helper()
	r := kk(t, args...)
	if r.code != 0 {
		t.Fatalf("%s", r)
	}
	return r
}

// secondDisk loop-mounts a fresh ext4 image of sizeMiB at dir: a real
// filesystem of its own, as the master's second disk is.
func secondDisk(t testing.TB, dir string, sizeMiB int) {
	t.Helper()
	img := filepath.Join(t.TempDir(), "disk.img")
	run(t, "truncate", "-s", fmt.Sprintf("%dM", sizeMiB), img)
	run(t, "mkfs.ext4", "-q", "-F", img)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, "mount", "-o", "loop", img, dir)
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
}

func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// writeConfig writes /etc/kubekeep/kubekeep.yaml (the default config path;
// /etc is the isolated node's own overlay).
func writeConfig(t testing.TB, storePath, mountpoint string, extra string) {
	t.Helper()
	cfg := fmt.Sprintf(`root: /
store:
  path: %s
  mountpoint: %s
  minFree: 16MiB
log:
  level: warn
  format: text
metrics:
  listen: ""
%s`, storePath, mountpoint, extra)
	if err := os.MkdirAll("/etc/kubekeep", 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile("/etc/kubekeep/kubekeep.yaml", []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}

// kubeadmOnPath puts the real kubeadm first on PATH for kubekeep's
// preflight and kubeadm phase.
func kubeadmOnPath(t testing.TB, n *kubenode.Node) {
	t.Helper()
	dir := t.TempDir()
	if err := os.Symlink(n.Bins.Kubeadm, filepath.Join(dir, "kubeadm")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(n.Bins.Kubectl, filepath.Join(dir, "kubectl")); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
}

// version is what `kubekeep versions -o json` says of one version; only
// the fields the tests read.
type version struct {
	ID       string `json:"id"`
	Status   string `json:"status"`
	Good     bool   `json:"good"`
	Origin   string `json:"origin"`
	Verified bool   `json:"verified"`
	Etcd     *struct {
		Revision int64 `json:"revision"`
	} `json:"etcd"`
}

func versions(t testing.TB) []version {
	t.Helper()
	r := must(t, "versions", "-o", "json")
	var vs []version
	if err := json.Unmarshal([]byte(r.stdout), &vs); err != nil {
		var wrapped struct {
			Versions []version `json:"versions"`
		}
		if err2 := json.Unmarshal([]byte(r.stdout), &wrapped); err2 != nil {
			t.Fatalf("versions -o json: %v\n%s", err, r.stdout)
		}
		vs = wrapped.Versions
	}
	return vs
}

// backup takes one version and returns its ID, failing t unless the whole
// version is good (exit 0).
func backup(t testing.TB) string {
	t.Helper()
	r := must(t, "backup", "-o", "json")
	var res struct {
		ID     string `json:"id"`
		Status string `json:"status"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || res.ID == "" {
		t.Fatalf("backup -o json: %v\n%s", err, r)
	}
	if res.Status != "ok" {
		t.Fatalf("backup status %q:\n%s", res.Status, r)
	}
	return res.ID
}

// uids lists kind/namespace/name -> uid for what the apiserver serves of
// the given resource types, all namespaces.
func uids(t testing.TB, n *kubenode.Node, kubeconfig string, resources string) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, errOut, err := kubenode.Kubectl(ctx, n.Bins.Kubectl, kubeconfig, "get", resources, "-A", "-o", "json")
	if err != nil {
		t.Fatalf("kubectl get %s: %v\n%s", resources, err, errOut)
	}
	var list struct {
		Items []struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Namespace string `json:"namespace"`
				Name      string `json:"name"`
				UID       string `json:"uid"`
			} `json:"metadata"`
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("kubectl get %s -o json: %v", resources, err)
	}
	m := map[string]string{}
	for _, it := range list.Items {
		m[it.Kind+"/"+it.Metadata.Namespace+"/"+it.Metadata.Name] = it.Metadata.UID
	}
	return m
}

func sortedKeys(m map[string]string) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// jsonField runs kubectl get ... -o jsonpath=expr with admin.conf.
func jsonPath(t testing.TB, n *kubenode.Node, expr string, args ...string) string {
	t.Helper()
	return n.Kubectl(t, append(append([]string{"get"}, args...), "-o", "jsonpath="+expr)...)
}

// waitFor polls f every 200 ms until it returns true or d passes.
func waitFor(d time.Duration, f func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if f() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(200 * time.Millisecond)
	}
}
