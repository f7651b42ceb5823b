package e2e

import (
	"context"
	"encoding/base64"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kubekeep/kubekeep/internal/kubenode"
)

const (
	shopApply = `apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: target
  namespace: shop
data:
  currency: EUR
  rate: "1.08"
---
apiVersion: v1
kind: Secret
metadata:
  name: db
  namespace: shop
stringData:
  password: s3cr3t-e2e-password
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: app
  namespace: shop
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names:
    plural: widgets
    singular: widget
    kind: Widget
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            x-kubernetes-preserve-unknown-fields: true
`
	widgetApply = `apiVersion: example.com/v1
kind: Widget
metadata:
  name: w1
  namespace: shop
spec:
  size: 3
  colour: teal
`
	// what the stories compare; widgets need the CRD established first.
	resources = "namespaces,configmaps,secrets,serviceaccounts,widgets.example.com"
)

// node makes the kubeadm node, the second disk with the store on it, and
// the config file, and loads the shop objects.
func node(t *testing.T, opts kubenode.Options) *kubenode.Node {
	t.Helper()
	n := kubenode.Init(t, opts)
	kubeadmOnPath(t, n)
	disk := filepath.Join(t.TempDir(), "backup")
	secondDisk(t, disk, 768)
	writeConfig(t, disk+"/kubekeep", disk, "")
	n.Apply(t, shopApply)
	n.Kubectl(t, "wait", "--for=condition=established", "--timeout=60s", "crd/widgets.example.com")
	n.Apply(t, widgetApply)
	return n
}

// secretStoredEncrypted checks the Secret really is encrypted at rest
// in etcd, so the get story decrypts what kube-apiserver encrypted.
func secretStoredEncrypted(t *testing.T, n *kubenode.Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := n.Etcd(t).Get(ctx, "/registry/secrets/shop/db")
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("the Secret in etcd: %v %v", err, resp)
	}
	if v := resp.Kvs[0].Value; !strings.HasPrefix(string(v), "k8s:enc:aescbc:v1:key1:") {
		t.Fatalf("the Secret is not encrypted at rest: %q", v[:min(len(v), 40)])
	}
}

// TestRealNodeObjectBack is story 1: delete a ConfigMap, a Secret
// encrypted at rest and a custom resource; get each out of the backup and
// kubectl apply it back; it comes back equal.
func TestRealNodeObjectBack(t *testing.T) {
	kubenode.RunIsolated(t, func(t *testing.T) {
		n := node(t, kubenode.Options{SkipAddons: true})
		secretStoredEncrypted(t, n)
		id := backup(t)

		before := map[string]string{
			"configmaps/shop/target":      jsonPath(t, n, "{.data}", "configmap", "-n", "shop", "target"),
			"secrets/shop/db":             jsonPath(t, n, "{.data}", "secret", "-n", "shop", "db"),
			"widgets.example.com/shop/w1": jsonPath(t, n, "{.spec}", "widgets.example.com", "-n", "shop", "w1"),
		}
		n.Kubectl(t, "delete", "-n", "shop", "configmap/target", "secret/db", "widgets.example.com/w1")
		for ref, want := range before {
			r := must(t, "get", "--version", "latest", ref)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			out, errOut, err := kubenode.KubectlInput(ctx, n.Bins.Kubectl, kubenode.AdminConf, strings.NewReader(r.stdout), "apply", "-f", "-")
			cancel()
			if err != nil {
				t.Fatalf("kubekeep get %s | kubectl apply -f -: %v\n%s%s\nthe YAML was:\n%s", ref, err, out, errOut, r.stdout)
			}
			parts := strings.Split(ref, "/")
			kind := strings.TrimSuffix(parts[0], "s")
			field := "{.data}"
			if strings.HasPrefix(ref, "widgets") {
				kind, field = "widgets.example.com", "{.spec}"
			}
			if got := jsonPath(t, n, field, kind, "-n", parts[1], parts[2]); got != want {
				t.Errorf("%s after get | apply: %s, before the delete: %s", ref, got, want)
			}
		}
		// The Secret's bytes, decoded: what the application reads.
		pw := jsonPath(t, n, "{.data.password}", "secret", "-n", "shop", "db")
		if b, _ := base64.StdEncoding.DecodeString(pw); string(b) != "s3cr3t-e2e-password" {
			t.Errorf("restored Secret password %q", b)
		}
		t.Logf("objects back from version %s", id)
	})
}

// TestRealNodeRebuild is story 2 with /var/lib/etcd a plain directory.
func TestRealNodeRebuild(t *testing.T) {
	kubenode.RunIsolated(t, func(t *testing.T) {
		rebuild(t, false)
	})
}

// TestRealNodeRebuildEtcdMount is story 2 with /var/lib/etcd the mount
// point of a disk of its own (common on ECS): it cannot be moved aside.
func TestRealNodeRebuildEtcdMount(t *testing.T) {
	kubenode.RunIsolated(t, func(t *testing.T) {
		rebuild(t, true)
	})
}

func rebuild(t *testing.T, etcdMount bool) {
	if etcdMount {
		// Before kubeadm: the etcd disk is mounted where the data dir goes.
		secondDisk(t, kubenode.EtcdDataDir, 256)
	}
	n := node(t, kubenode.Options{SkipAddons: true})

	// What must come back: every object with its UID, and a token the
	// apiserver issued before the disaster.
	want := uids(t, n, kubenode.AdminConf, resources)
	token := strings.TrimSpace(n.Kubectl(t, "create", "token", "app", "-n", "shop", "--duration", "2h"))
	if whoami(t, n, token) != "system:serviceaccount:shop:app" {
		t.Fatal("the token does not authenticate before the disaster")
	}
	good := backup(t)

	// The agent runs through the disaster, as on a master. It backs up
	// once as it starts: wait for that one, so what follows it is the
	// broken state.
	nVersions := len(versions(t))
	agent := startAgent(t)
	if waitFor(60*time.Second, func() bool { return len(versions(t)) > nVersions }) {
		nVersions = len(versions(t))
	}
	for _, v := range versions(t) {
		if v.Good {
			good = v.ID // the newest good version before the disaster
		}
	}

	// The disaster: etcd's data, the PKI and admin.conf gone.
	wipe(t, kubenode.EtcdDataDir, etcdMount)
	for _, p := range []string{kubenode.PKIDir, kubenode.AdminConf} {
		if err := os.RemoveAll(p); err != nil {
			t.Fatal(err)
		}
	}
	// The agent notices (the PKI watch, debounce 10 s) and commits the
	// broken state; it must not become latest.
	if !waitFor(90*time.Second, func() bool { return len(versions(t)) > nVersions }) {
		t.Fatalf("the agent committed no version of the broken state in 90 s\n%s", agent.log())
	}
	for _, v := range versions(t)[nVersions:] {
		if v.Good || v.Status == "ok" {
			t.Errorf("version %s of the broken state is %q (good=%v): it must be degraded or etcd-failed", v.ID, v.Status, v.Good)
		}
	}
	if r := must(t, "get", "--version", "latest", "configmaps/shop/target"); !strings.Contains(r.stdout, "currency: EUR") {
		t.Errorf("get --version latest after the disaster:\n%s", r)
	}

	// The rebuild: one command, the defaults, no phase picked by hand.
	start := time.Now()
	r := kk(t, "restore", "--version", "latest", "--yes") // no terminal: --yes, as a script passes it
	if r.code != 0 {
		t.Fatalf("%s\nagent:\n%s", r, agent.log())
	}
	if !strings.Contains(r.stdout, good) {
		t.Errorf("restore --version latest did not restore %s, the newest good version:\n%s", good, r.stdout)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := kubenode.WaitAPIServer(ctx, kubenode.AdminConf); err != nil {
		t.Fatal(err)
	}
	t.Logf("RTO: restore --version latest to the apiserver ready with the restored admin.conf: %s", time.Since(start).Round(100*time.Millisecond))

	got := uids(t, n, kubenode.AdminConf, resources)
	for _, k := range sortedKeys(want) {
		if got[k] != want[k] {
			t.Errorf("%s: uid %q after the rebuild, %q before", k, got[k], want[k])
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d objects after the rebuild, %d before", len(got), len(want))
	}
	if who := whoami(t, n, token); who != "system:serviceaccount:shop:app" {
		t.Errorf("the token issued before the disaster: %q", who)
	}
	rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer rcancel()
	resp, err := n.Etcd(t).Get(rctx, "health")
	if err != nil {
		t.Fatal(err)
	}
	if resp.Header.Revision < 1_000_000_000 {
		t.Errorf("etcd revision %d after the restore: not bumped by 1e9", resp.Header.Revision)
	}
	if etcdMount {
		if err := exec.Command("mountpoint", "-q", kubenode.EtcdDataDir).Run(); err != nil {
			t.Errorf("%s is no longer a mount point after the restore", kubenode.EtcdDataDir)
		}
		// The damaged member's WAL is kept, inside the mount.
		kept, _ := filepath.Glob(filepath.Join(kubenode.EtcdDataDir, ".kubekeep-old-*", "member", "wal", "*.wal"))
		if len(kept) == 0 {
			t.Errorf("the old data dir's WAL was not kept inside the mount:\n%s", run(t, "find", kubenode.EtcdDataDir, "-maxdepth", "3"))
		}
	}

	// Life goes on: new versions read back.
	stopAgent(t, agent)
	n.Kubectl(t, "create", "configmap", "-n", "shop", "after", "--from-literal=k=v")
	after := backup(t)
	for _, args := range [][]string{
		{"get", "--version", after, "configmaps/shop/target"},
		{"get", "--version", after, "configmaps/shop/after"},
		{"get", "--version", after, "secrets/shop/db"},
		{"get", "--version", after, "widgets.example.com/shop/w1"},
		{"objects", "--version", after, "configmaps", "-n", "shop"},
		{"diff", good, after},
	} {
		r := must(t, args...)
		if args[0] == "diff" && !strings.Contains(r.stdout, "after") {
			t.Errorf("diff %s %s does not show the ConfigMap added after the restore:\n%s", good, after, r.stdout)
		}
	}

	// The kubeadm phase on a changed node runs kubeadm init with the saved
	// ClusterConfiguration. A kubelet cannot run here, so kubeadm (the
	// real one) runs with --dry-run added; everything it checks is real.
	kubeadmDryRun(t, n)
}

// whoami is the username the apiserver sees for a bearer token.
func whoami(t *testing.T, n *kubenode.Node, token string) string {
	t.Helper()
	empty := filepath.Join(t.TempDir(), "empty.conf")
	os.WriteFile(empty, []byte("apiVersion: v1\nkind: Config\n"), 0o600)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, errOut, err := kubenode.Kubectl(ctx, n.Bins.Kubectl, empty, "--server", "https://"+kubenode.Address+":6443",
		"--certificate-authority", kubenode.PKIDir+"/ca.crt", "--token", token, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
	if err != nil {
		t.Logf("kubectl auth whoami with the token: %v\n%s", err, errOut)
		return ""
	}
	return out
}

// wipe removes the etcd data dir; when it is a mount point, the db goes
// and the WAL stays (damage, not an empty disk), so the restore has old
// data to keep inside the mount.
func wipe(t *testing.T, dir string, mount bool) {
	t.Helper()
	if !mount {
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
		return
	}
	if err := os.Remove(filepath.Join(dir, "member", "snap", "db")); err != nil {
		t.Fatal(err)
	}
}

type agentProc struct {
	cmd *exec.Cmd
	out *os.File
}

func (a *agentProc) log() string {
	b, _ := os.ReadFile(a.out.Name())
	return tail(string(b), 6000)
}

// startAgent runs `kubekeep agent` (the default config) in the
// background; the test stops it.
func startAgent(t *testing.T) *agentProc {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "agent-*.log")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(kubekeepBinary(t), "agent", "--log-level", "info")
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	a := &agentProc{cmd: cmd, out: f}
	t.Cleanup(func() {
		if a.cmd.ProcessState == nil {
			a.cmd.Process.Kill()
			a.cmd.Wait()
		}
		if t.Failed() {
			t.Logf("agent log:\n%s", a.log())
		}
	})
	return a
}

func stopAgent(t *testing.T, a *agentProc) {
	t.Helper()
	a.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- a.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("agent exit after SIGTERM: %v\n%s", err, a.log())
		}
	case <-time.After(60 * time.Second):
		a.cmd.Process.Kill()
		t.Errorf("agent did not stop within 60 s of SIGTERM\n%s", a.log())
	}
}

// kubeadmDryRun runs the restore's kubeadm phase as on a new VM
// (--force-kubeadm) with a kubeadm that is the real binary plus
// --dry-run, and checks real kubeadm accepted the config kubekeep wrote.
func kubeadmDryRun(t *testing.T, n *kubenode.Node) {
	t.Helper()
	dir := t.TempDir()
	wrapper := filepath.Join(dir, "kubeadm")
	// The real kubeadm, with --dry-run added (no kubelet can run here, so
	// its version check is the one preflight error let pass) and its dry-run
	// files (copies of the CA key) kept out of /etc/kubernetes.
	script := "#!/bin/sh\nKUBEADM_INIT_DRYRUN_DIR=" + t.TempDir() + " exec " + n.Bins.Kubeadm +
		" \"$@\" --dry-run --ignore-preflight-errors=KubeletVersion\n"
	// ip_forward is this network namespace's own.
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	r := kk(t, "restore", "--version", "latest", "--phase", "kubeadm", "--force-kubeadm", "--yes")
	if r.code != 0 {
		t.Fatalf("%s", r)
	}
	cfgs, _ := filepath.Glob("/etc/kubernetes/kubekeep-restore/kubeadm-init-*.yaml")
	if len(cfgs) == 0 {
		t.Fatalf("no kubeadm config written under /etc/kubernetes/kubekeep-restore:\n%s", r)
	}
	for _, want := range []string{"[dryrun]", "Your Kubernetes control-plane has initialized successfully"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("kubeadm init --dry-run output lacks %q:\n%s", want, tail(r.stdout, 4000))
		}
	}
	cfg, _ := os.ReadFile(cfgs[len(cfgs)-1])
	if !strings.Contains(string(cfg), "name: \"cp1\"") || !strings.Contains(string(cfg), "encryption-provider-config") {
		t.Errorf("the kubeadm config kubekeep wrote lacks the node name or the saved apiserver flags:\n%s", cfg)
	}
}
