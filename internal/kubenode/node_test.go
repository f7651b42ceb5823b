package kubenode_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/kubekeep/kubekeep/internal/kubenode"
)

// TestBinaries builds (or finds cached) the four binaries and checks they
// report the versions kubeadm expects. `go test -run TestBinaries` is
// also the way to build them ahead of a run with a short timeout.
func TestBinaries(t *testing.T) {
	start := time.Now()
	b := kubenode.Binaries(t)
	t.Logf("binaries ready in %s: %+v", time.Since(start).Round(time.Millisecond), b)
	for _, c := range []struct {
		bin  string
		args []string
		want string
	}{
		{b.Kubeadm, []string{"version", "-o", "short"}, kubenode.KubernetesVersion},
		{b.KubeAPIServer, []string{"--version"}, "Kubernetes " + kubenode.KubernetesVersion},
		{b.Kubectl, []string{"version", "--client"}, "Client Version: " + kubenode.KubernetesVersion},
		{b.Etcd, []string{"--version"}, "etcd Version: 3.6."},
	} {
		out, err := exec.Command(c.bin, c.args...).CombinedOutput()
		if err != nil || !strings.Contains(string(out), c.want) {
			t.Errorf("%s %s: %v\n%s\nwant %q", filepath.Base(c.bin), strings.Join(c.args, " "), err, out, c.want)
		}
		if fi, err := os.Stat(c.bin); err == nil {
			t.Logf("%s: %.1f MB", c.bin, float64(fi.Size())/1e6)
		}
	}
}

// treeSums is path -> mode and content hash (link target for symlinks)
// of every file under the roots.
func treeSums(t *testing.T, roots ...string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, root := range roots {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				if os.IsNotExist(err) {
					return nil
				}
				return err
			}
			fi, err := d.Info()
			if err != nil {
				return err
			}
			switch {
			case fi.Mode()&fs.ModeSymlink != 0:
				target, _ := os.Readlink(p)
				m[p] = fmt.Sprintf("%v -> %s", fi.Mode(), target)
			case fi.IsDir():
				m[p+"/"] = fi.Mode().String()
			default:
				data, err := os.ReadFile(p)
				if err != nil {
					return err
				}
				sum := sha256.Sum256(data)
				m[p] = fmt.Sprintf("%v %d %s", fi.Mode(), fi.Size(), hex.EncodeToString(sum[:8]))
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return m
}

func sortedKeys(m map[string]string) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// TestNode brings up a kubeadm v1.34 control plane in private namespaces
// and checks what kubekeep relies on: the API works, secrets are
// encrypted in etcd, the kubeadm-config ConfigMap is there, the files are
// where kubeadm puts them, the kubelet follows its manifests, and
// `kubeadm init --dry-run` accepts the node's config and the config a
// restore would write, changing nothing outside its own dry-run directory.
func TestNode(t *testing.T) {
	kubenode.RunIsolated(t, func(t *testing.T) {
		start := time.Now()
		// A customised kubelet config, which only the node's own kubeadm
		// config (and the kubelet-config ConfigMap) carries.
		n := kubenode.Init(t, kubenode.Options{ExtraDocuments: []string{
			"apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\ncgroupDriver: systemd\nmaxPods: 42\n",
		}})
		t.Logf("node up in %s", time.Since(start).Round(100*time.Millisecond))
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
		defer cancel()

		if h, _ := os.Hostname(); h != kubenode.Hostname {
			t.Errorf("hostname %q", h)
		}
		if p, err := exec.LookPath("kubeadm"); err != nil || !strings.Contains(p, "/bin/kubeadm") {
			t.Errorf("kubeadm on PATH: %q %v", p, err)
		}

		ns := n.Kubectl(t, "get", "ns", "-o", "name")
		for _, want := range []string{"namespace/default", "namespace/kube-system", "namespace/kube-public", "namespace/kube-node-lease"} {
			if !strings.Contains(ns, want) {
				t.Errorf("kubectl get ns: no %s in\n%s", want, ns)
			}
		}
		t.Logf("kubectl get nodes:\n%s", n.Kubectl(t, "get", "nodes", "-o", "wide", "--show-labels"))

		// A secret is stored encrypted; a ConfigMap is not.
		n.Kubectl(t, "create", "secret", "generic", "s1", "-n", "default", "--from-literal=password=hunter2")
		n.Kubectl(t, "create", "configmap", "c1", "-n", "default", "--from-literal=k=v")
		e := n.Etcd(t)
		r, err := e.Get(ctx, "/registry/secrets/default/s1")
		if err != nil || len(r.Kvs) != 1 {
			t.Fatalf("etcd get secret: %v %v", err, r)
		}
		if v := r.Kvs[0].Value; !bytes.HasPrefix(v, []byte("k8s:enc:aescbc:v1:key1:")) || bytes.Contains(v, []byte("hunter2")) {
			t.Errorf("secret in etcd is not aescbc-encrypted: %q", v[:min(len(v), 40)])
		}
		r, err = e.Get(ctx, "/registry/configmaps/default/c1")
		if err != nil || len(r.Kvs) != 1 || !bytes.HasPrefix(r.Kvs[0].Value, []byte("k8s\x00")) {
			t.Errorf("configmap in etcd: %v %v", err, r)
		}

		// kubeadm's own record of the cluster, which a rebuild needs.
		cc := n.Kubectl(t, "get", "configmap", "-n", "kube-system", "kubeadm-config", "-o", "jsonpath={.data.ClusterConfiguration}")
		for _, want := range []string{"kubernetesVersion: " + kubenode.KubernetesVersion, "encryption-provider-config", kubenode.EncryptionConfig} {
			if !strings.Contains(cc, want) {
				t.Errorf("kubeadm-config ClusterConfiguration lacks %q:\n%s", want, cc)
			}
		}
		r, err = e.Get(ctx, "/registry/configmaps/kube-system/kubeadm-config")
		if err != nil || len(r.Kvs) != 1 {
			t.Errorf("kubeadm-config not in etcd: %v", err)
		}

		// The pods the kubelet runs, and those it cannot.
		for _, p := range n.Kubelet().Pods() {
			t.Logf("pod %s (%s): running=%v pid=%d error=%q", p.Name, p.Image, p.Running, p.PID, p.Error)
		}
		for _, want := range []string{"etcd-cp1", "kube-apiserver-cp1"} {
			if s, ok := n.Kubelet().Pod(want); !ok || !s.Running {
				t.Errorf("%s not running: %+v", want, s)
			}
		}

		// Every file kubeadm and the kubelet left, for the record.
		before := treeSums(t, "/etc/kubernetes", "/var/lib/kubelet", "/var/lib/etcd")
		var list strings.Builder
		for _, k := range sortedKeys(before) {
			if strings.HasPrefix(k, "/var/lib/etcd/member/wal/") || strings.HasPrefix(k, "/var/lib/etcd/member/snap/") {
				continue
			}
			fmt.Fprintf(&list, "%s %s\n", k, strings.Fields(before[k])[0])
		}
		t.Logf("files:\n%s", list.String())
		for _, f := range []string{
			"/etc/kubernetes/admin.conf", "/etc/kubernetes/super-admin.conf", "/etc/kubernetes/kubelet.conf",
			"/etc/kubernetes/controller-manager.conf", "/etc/kubernetes/scheduler.conf",
			"/etc/kubernetes/manifests/etcd.yaml", "/etc/kubernetes/manifests/kube-apiserver.yaml",
			"/etc/kubernetes/manifests/kube-controller-manager.yaml", "/etc/kubernetes/manifests/kube-scheduler.yaml",
			"/etc/kubernetes/pki/ca.key", "/etc/kubernetes/pki/sa.key", "/etc/kubernetes/pki/front-proxy-ca.key",
			"/etc/kubernetes/pki/etcd/ca.key", kubenode.EncryptionConfig,
			"/var/lib/kubelet/config.yaml", "/var/lib/kubelet/kubeadm-flags.env", "/var/lib/kubelet/instance-config.yaml",
			"/var/lib/kubelet/pki/kubelet-client-current.pem", "/var/lib/kubelet/pki/kubelet.crt",
		} {
			if _, ok := before[f]; !ok {
				t.Errorf("no %s", f)
			}
		}
		for _, f := range []string{"/etc/kubernetes/manifests/etcd.yaml", "/etc/kubernetes/manifests/kube-apiserver.yaml",
			"/var/lib/kubelet/kubeadm-flags.env", "/var/lib/kubelet/instance-config.yaml", "/var/lib/kubelet/config.yaml"} {
			data, _ := os.ReadFile(f)
			t.Logf("%s:\n%s", f, data)
		}
		if fi, err := os.Stat(kubenode.ManifestsDir); err != nil || fi.Mode().Perm() != 0o700 {
			t.Logf("note: manifests dir mode %v (%v)", fi.Mode(), err)
		}

		// The manifests moved out stop their pods, moved back start them
		// on the same data (what a restore does around etcd).
		aside := filepath.Join(kubenode.KubernetesDir, "manifests.aside") // same filesystem: rename
		if err := os.Mkdir(aside, 0o700); err != nil {
			t.Fatal(err)
		}
		for _, m := range []string{"etcd.yaml", "kube-apiserver.yaml"} {
			if err := os.Rename(filepath.Join(kubenode.ManifestsDir, m), filepath.Join(aside, m)); err != nil {
				t.Fatal(err)
			}
		}
		n.Kubelet().Sync()
		for _, p := range []string{"etcd", "kube-apiserver"} {
			if s, ok := n.Kubelet().Pod(p); ok {
				t.Errorf("%s still there with its manifest gone: %+v", p, s)
			}
		}
		for _, m := range []string{"etcd.yaml", "kube-apiserver.yaml"} {
			if err := os.Rename(filepath.Join(aside, m), filepath.Join(kubenode.ManifestsDir, m)); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Remove(aside); err != nil {
			t.Fatal(err)
		}
		restart := time.Now()
		if err := n.WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
		t.Logf("control plane back %s after its manifests", time.Since(restart).Round(100*time.Millisecond))
		if got := n.Kubectl(t, "get", "secret", "s1", "-n", "default", "-o", "jsonpath={.data.password}"); got != "aHVudGVyMg==" {
			t.Errorf("secret after the restart: %q", got)
		}

		// kubeadm init --dry-run on the node, with the node's own config
		// and with the config a restore writes (the ClusterConfiguration
		// from kubeadm-config under an InitConfiguration naming the node).
		before = treeSums(t, "/etc/kubernetes", "/var/lib/kubelet")
		dry := n.Kubeadm(t, "init", "--dry-run", "--config", n.ConfigFile, "--ignore-preflight-errors=all")
		restoreCfg := filepath.Join(t.TempDir(), "restore.yaml")
		body := "apiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\nnodeRegistration:\n  name: \"cp1\"\n---\n" + cc
		if err := os.WriteFile(restoreCfg, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		dryDir := t.TempDir()
		cmd := exec.CommandContext(ctx, n.Bins.Kubeadm, "init", "--dry-run", "--config", restoreCfg, "--ignore-preflight-errors=all")
		cmd.Env = append(os.Environ(), "KUBEADM_INIT_DRYRUN_DIR="+dryDir)
		outb, err := cmd.CombinedOutput()
		out := string(outb)
		if err != nil {
			t.Errorf("kubeadm init --dry-run --config %s: %v\n%s", restoreCfg, err, out)
		}
		var notes []string
		for _, l := range strings.Split(out, "\n") {
			if l = strings.TrimSpace(l); strings.HasPrefix(l, "[WARNING") || strings.HasPrefix(l, "W1") || strings.HasPrefix(l, "E1") {
				notes = append(notes, l)
			}
		}
		t.Logf("kubeadm init --dry-run with the restore config (KUBEADM_INIT_DRYRUN_DIR=%s): %d lines; warnings:\n%s",
			dryDir, strings.Count(out, "\n"), strings.Join(notes, "\n"))
		var dirList []string
		for _, k := range sortedKeys(treeSums(t, dryDir)) {
			dirList = append(dirList, strings.TrimPrefix(k, dryDir))
		}
		t.Logf("what the dry run wrote into its directory: %s", strings.Join(dirList, " "))
		// With NodeLocalCRISocket (beta, on by default in 1.34) the CRI
		// socket lives only in instance-config.yaml: a config without
		// nodeRegistration.criSocket gets kubeadm's detected or default one.
		nodeInst, _ := os.ReadFile("/var/lib/kubelet/instance-config.yaml")
		dryInst, _ := os.ReadFile(filepath.Join(dryDir, "instance-config.yaml"))
		t.Logf("instance-config.yaml: node %q, dry run with the restore config %q", bytes.TrimSpace(nodeInst), bytes.TrimSpace(dryInst))
		// The KubeletConfiguration is not in the ClusterConfiguration: a
		// config made of it alone rewrites /var/lib/kubelet/config.yaml
		// with defaults.
		nodeKC, _ := os.ReadFile("/var/lib/kubelet/config.yaml")
		dryKC, _ := os.ReadFile(filepath.Join(dryDir, "config.yaml"))
		t.Logf("kubelet config.yaml has maxPods: 42: node %v, dry run with the restore config %v",
			bytes.Contains(nodeKC, []byte("maxPods: 42")), bytes.Contains(dryKC, []byte("maxPods: 42")))
		if !bytes.Contains(nodeKC, []byte("maxPods: 42")) {
			t.Errorf("the node's kubelet config.yaml lacks the KubeletConfiguration document's maxPods")
		}
		for _, o := range []string{dry, out} {
			if !strings.Contains(o, "Your Kubernetes control-plane has initialized successfully") {
				t.Errorf("dry run did not finish")
			}
		}
		after := treeSums(t, "/etc/kubernetes", "/var/lib/kubelet")
		var changed, dryRunDirs []string
		for k, v := range after {
			if strings.HasPrefix(k, "/etc/kubernetes/tmp/") {
				dryRunDirs = append(dryRunDirs, k)
				continue
			}
			if before[k] != v {
				changed = append(changed, k)
			}
		}
		for k := range before {
			if _, ok := after[k]; !ok {
				changed = append(changed, k+" (removed)")
			}
		}
		sort.Strings(changed)
		sort.Strings(dryRunDirs)
		if len(changed) > 0 {
			t.Errorf("kubeadm init --dry-run changed files outside /etc/kubernetes/tmp:\n%s", strings.Join(changed, "\n"))
		}
		var tmpList []string
		for _, k := range dryRunDirs {
			tmpList = append(tmpList, k+" "+strings.Fields(after[k])[0])
		}
		t.Logf("kubeadm init --dry-run without KUBEADM_INIT_DRYRUN_DIR left under /etc/kubernetes/tmp:\n%s", strings.Join(tmpList, "\n"))
		// What a restore could take the kubelet's config from.
		kc := n.Kubectl(t, "get", "configmap", "-n", "kube-system", "kubelet-config", "-o", "jsonpath={.data.kubelet}")
		t.Logf("kube-system/kubelet-config carries maxPods: 42: %v", strings.Contains(kc, "maxPods: 42"))
		if err := n.WaitReady(ctx); err != nil {
			t.Errorf("control plane after the dry runs: %v", err)
		}
	})
}
