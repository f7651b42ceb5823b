package restore

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kubekeep/kubekeep/backup"
	"github.com/kubekeep/kubekeep/backup/versionread"
	"github.com/kubekeep/kubekeep/config"
	"github.com/kubekeep/kubekeep/internal/kubenode"
	"github.com/kubekeep/kubekeep/rsyncish"
)

// realNodeKubeletConfig and realNodeProxyConfig are a node's own settings
// that kubeadm's defaults differ from.
const (
	realNodeKubeletConfig = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\ncgroupDriver: systemd\nmaxPods: 42\n"
	realNodeProxyConfig   = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: ipvs\n"
	// realNodeAddress is the apiserver's advertise address: the node's
	// second address, not the one kubeadm detects from the default route.
	realNodeAddress = "10.127.0.2"
)

// On a node made by real kubeadm v1.34 (containerd's socket at
// /run/containerd/containerd.sock, maxPods 42, kube-proxy in ipvs mode,
// the apiserver advertising the host's second address), the config the
// kubeadm phase writes makes real `kubeadm init --dry-run` rebuild that
// node: the kubelet's config.yaml keeps maxPods 42, instance-config.yaml
// keeps the socket, kube-proxy's ConfigMap keeps ipvs, and the apiserver
// advertises the same address. Before, kubeadm fell back to
// /var/run/containerd/containerd.sock, maxPods 110, the default proxy
// mode and the default route's address.
func TestRealNodeKubeadmConfigKeepsNodeSettings(t *testing.T) {
	kubenode.RunIsolated(t, func(t *testing.T) {
		if err := kubenode.AddAddress(realNodeAddress); err != nil {
			t.Fatal(err)
		}
		n := kubenode.Init(t, kubenode.Options{AdvertiseAddress: realNodeAddress,
			ExtraDocuments: []string{realNodeKubeletConfig, realNodeProxyConfig}})
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
		defer cancel()
		store, err := rsyncish.Open(filepath.Join(t.TempDir(), "store"), rsyncish.Options{AllowSameFilesystem: true})
		if err != nil {
			t.Fatal(err)
		}
		res, err := backup.Run(ctx, backup.Options{Root: "/", Store: store, Etcd: config.Default().Etcd})
		if err != nil || res.Status != versionread.StatusOK {
			t.Fatalf("backup of the node: %v %+v", err, res)
		}

		// The real kubeadm, with --dry-run (no kubelet or runtime here)
		// and every copy it makes kept in a dir of the test's.
		dryDir := t.TempDir()
		t.Setenv("KUBEADM_INIT_DRYRUN_DIR", dryDir)
		wrapper := filepath.Join(t.TempDir(), "kubeadm")
		// kubeadm refuses "all" beside single checks: the phase's own
		// --ignore-preflight-errors gives way to it.
		script := "#!/bin/sh\nfor a; do shift; case \"$a\" in --ignore-preflight-errors=*) ;; *) set -- \"$@\" \"$a\";; esac; done\n" +
			"exec " + n.Bins.Kubeadm + " \"$@\" --dry-run --ignore-preflight-errors=all\n"
		if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		_, err = Run(ctx, Options{Root: "/", Store: store, Version: res.ID, Phases: []string{PhaseKubeadm},
			ForceKubeadm: true, Kubeadm: wrapper, Out: &out})
		if err != nil {
			t.Fatalf("kubeadm phase: %v\n%s", err, out.String())
		}
		if !strings.Contains(out.String(), "Your Kubernetes control-plane has initialized successfully") {
			t.Fatalf("kubeadm init --dry-run did not finish:\n%s", out.String())
		}
		cfgs, _ := filepath.Glob(filepath.Join(kubeadmConfigDir, "kubeadm-init-*.yaml"))
		if len(cfgs) != 1 {
			t.Fatalf("configs written: %v", cfgs)
		}
		cfg, _ := os.ReadFile(cfgs[0])
		t.Logf("the config the kubeadm phase wrote:\n%s", cfg)

		read := func(name string) string {
			b, err := os.ReadFile(filepath.Join(dryDir, name))
			if err != nil {
				t.Errorf("the dry run wrote no %s: %v", name, err)
			}
			return string(b)
		}
		nodeKC, _ := os.ReadFile("/var/lib/kubelet/config.yaml")
		if kc := read("config.yaml"); !strings.Contains(kc, "maxPods: 42") || !strings.Contains(kc, "cgroupDriver: systemd") {
			t.Errorf("kubeadm would write a kubelet config.yaml without the node's maxPods 42 / cgroupDriver systemd:\n%s\nthe node's:\n%s", kc, nodeKC)
		}
		if ic := read("instance-config.yaml"); !strings.Contains(ic, "unix:///run/containerd/containerd.sock") {
			t.Errorf("kubeadm would write instance-config.yaml %q, the node had unix:///run/containerd/containerd.sock", ic)
		}
		if m := read("kube-apiserver.yaml"); !strings.Contains(m, "--advertise-address="+realNodeAddress) {
			t.Errorf("kubeadm's kube-apiserver manifest does not advertise %s:\n%s", realNodeAddress, m)
		}
		// The kube-proxy ConfigMap the addon phase would create.
		proxyCM := ""
		for _, chunk := range strings.Split(out.String(), "[dryrun] Would perform action ") {
			if strings.HasPrefix(chunk, `CREATE on resource "configmaps"`) && strings.Contains(chunk, "\n  name: kube-proxy\n  namespace: kube-system\n") {
				proxyCM = chunk
			}
		}
		if !strings.Contains(proxyCM, "\n    mode: ipvs\n") {
			t.Errorf("kubeadm would create kube-proxy's ConfigMap without mode: ipvs:\n%s", proxyCM)
		}
	})
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "[...]" + s[len(s)-n:]
}

// The whole restore at --root / on a node made by real kubeadm v1.34,
// nothing of the sandbox's conventions: etcd's data, the PKI and
// admin.conf are wiped while the node runs; Run with every phase brings
// the control plane back on the backed-up data (the apiserver ready with
// the restored CA, a ConfigMap made before the backup served again). On
// the way the files phase restores /var/lib/kubelet/pki, where
// kubelet-client-current.pem is a symlink with an absolute target.
func TestRealNodeRestoreAtRootSlash(t *testing.T) {
	kubenode.RunIsolated(t, func(t *testing.T) {
		n := kubenode.Init(t, kubenode.Options{SkipAddons: true})
		ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
		defer cancel()
		n.Kubectl(t, "create", "configmap", "before", "-n", "default", "--from-literal=k=v")
		if l, err := os.Readlink("/var/lib/kubelet/pki/kubelet-client-current.pem"); err != nil || !filepath.IsAbs(l) {
			t.Fatalf("kubelet-client-current.pem: %q %v: want a symlink with an absolute target", l, err)
		}
		store, err := rsyncish.Open(filepath.Join(t.TempDir(), "store"), rsyncish.Options{AllowSameFilesystem: true})
		if err != nil {
			t.Fatal(err)
		}
		res, err := backup.Run(ctx, backup.Options{Root: "/", Store: store, Etcd: config.Default().Etcd})
		if err != nil || res.Status != versionread.StatusOK {
			t.Fatalf("backup of the node: %v %+v", err, res)
		}
		n.Kubectl(t, "create", "configmap", "after", "-n", "default", "--from-literal=k=v")
		// The kubelet rotated its client certificate since: the link now
		// names another file, by absolute path, as the kubelet writes it.
		const current = "/var/lib/kubelet/pki/kubelet-client-current.pem"
		backedUp, _ := os.Readlink(current)
		rotated := "/var/lib/kubelet/pki/kubelet-client-2099-01-01-00-00-00.pem"
		if err := os.WriteFile(rotated, []byte("rotated\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(current); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(rotated, current); err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{kubenode.EtcdDataDir, kubenode.PKIDir, kubenode.AdminConf} {
			if err := os.RemoveAll(p); err != nil {
				t.Fatal(err)
			}
		}
		var out bytes.Buffer
		_, err = Run(ctx, Options{Root: "/", Store: store, Version: "latest", Out: &out,
			StopTimeout: time.Minute, VerifyTimeout: 2 * time.Minute, ReadyzTimeout: 2 * time.Minute})
		t.Logf("restore:\n%s", out.String())
		if err != nil {
			t.Fatal(err)
		}
		if err := n.WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
		if got := n.Kubectl(t, "get", "configmap", "-n", "default", "-o", "name"); !strings.Contains(got, "configmap/before") || strings.Contains(got, "configmap/after") {
			t.Errorf("ConfigMaps after the restore: %s", got)
		}
		if l, err := os.Readlink(current); err != nil || l != backedUp {
			t.Errorf("kubelet-client-current.pem after the restore: -> %q (%v), backed up -> %q", l, err, backedUp)
		}
		kept, _ := filepath.Glob("/etc/kubernetes/kubekeep-replaced-*" + current)
		if len(kept) != 1 {
			t.Fatalf("the replaced link is not kept: %v", kept)
		}
		if l, err := os.Readlink(kept[0]); err != nil || l != rotated {
			t.Errorf("kept link %s -> %q (%v), want -> %s", kept[0], l, err, rotated)
		}
	})
}
