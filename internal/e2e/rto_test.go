package e2e

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kubekeep/kubekeep/internal/kubenode"
)

// TestRTOBench measures the rebuild's recovery time on the real node with
// a large etcd, side by side with the runbook an operator follows without
// kubekeep (etcdctl snapshot save + cp -a before; move the manifests away,
// cp -a back, etcdctl snapshot restore, manifests back after). It runs
// only when KUBEKEEP_BENCH_RTO_MIB is set (scripts/bench-rto.sh): it is a
// measurement, not a test, and asserts nothing about time.
func TestRTOBench(t *testing.T) {
	mib, _ := strconv.Atoi(os.Getenv("KUBEKEEP_BENCH_RTO_MIB"))
	if mib <= 0 {
		t.Skip("KUBEKEEP_BENCH_RTO_MIB not set: the RTO benchmark runs from scripts/bench-rto.sh")
	}
	etcdctl, err := exec.LookPath("etcdctl")
	if err != nil {
		t.Skip("etcdctl not installed (apt-get install etcd-client): the runbook side needs it")
	}
	kubenode.RunIsolated(t, func(t *testing.T) {
		n := kubenode.Init(t, kubenode.Options{SkipAddons: true})
		kubeadmOnPath(t, n)
		disk := filepath.Join(t.TempDir(), "backup")
		secondDisk(t, disk, 4*mib+1024)
		writeConfig(t, disk+"/kubekeep", disk, "")
		n.Apply(t, shopApply)

		fill(t, n, mib)
		want := uids(t, n, kubenode.AdminConf, "namespaces,configmaps,secrets,serviceaccounts")

		// Before the disaster: kubekeep's version, and the runbook's copies.
		start := time.Now()
		backup(t)
		tBackup := time.Since(start)
		runbook := filepath.Join(disk, "runbook")
		os.MkdirAll(runbook, 0o700)
		start = time.Now()
		etcdctlCmd(t, etcdctl, "snapshot", "save", runbook+"/snap.db")
		run(t, "cp", "-a", "/etc/kubernetes", runbook+"/kubernetes")
		tCopy := time.Since(start)

		// kubekeep: wipe, then one command.
		disaster(t)
		start = time.Now()
		if r := kk(t, "restore", "--version", "latest", "--yes"); r.code != 0 {
			t.Fatalf("%s", r)
		}
		waitAPI(t)
		tKubekeep := time.Since(start)
		checkUIDs(t, n, want)

		// The runbook: the same wipe, then the operator's steps.
		disaster(t)
		start = time.Now()
		aside := filepath.Join(t.TempDir(), "manifests")
		run(t, "mv", kubenode.ManifestsDir, aside)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		for _, p := range []string{"etcd-cp1", "kube-apiserver-cp1"} {
			if err := n.Kubelet().WaitGone(ctx, p); err != nil {
				t.Fatal(err)
			}
		}
		cancel()
		run(t, "rm", "-rf", kubenode.PKIDir, kubenode.AdminConf)
		run(t, "cp", "-a", runbook+"/kubernetes/pki", kubenode.PKIDir)
		run(t, "cp", "-a", runbook+"/kubernetes/admin.conf", kubenode.AdminConf)
		run(t, "rm", "-rf", kubenode.EtcdDataDir)
		out, err := exec.Command(etcdctl, "snapshot", "restore", runbook+"/snap.db", "--data-dir", kubenode.EtcdDataDir,
			"--name", "cp1", "--initial-cluster", "cp1=https://"+kubenode.Address+":2380",
			"--initial-advertise-peer-urls", "https://"+kubenode.Address+":2380").CombinedOutput()
		if err != nil {
			t.Fatalf("etcdctl snapshot restore: %v\n%s", err, out)
		}
		run(t, "mv", aside, kubenode.ManifestsDir)
		waitAPI(t)
		tRunbook := time.Since(start)
		checkUIDs(t, n, want)

		du := strings.Fields(run(t, "du", "-sm", kubenode.EtcdDataDir+"/member/snap/db"))[0]
		t.Logf("RTO on a kubeadm v1.34 node, etcd db %s MiB (%d MiB of values loaded):", du, mib)
		t.Logf("  %-58s %8s", "what", "seconds")
		t.Logf("  %-58s %8.1f", "kubekeep backup (version, snapshot checked)", tBackup.Seconds())
		t.Logf("  %-58s %8.1f", "runbook copy: etcdctl snapshot save + cp -a /etc/kubernetes", tCopy.Seconds())
		t.Logf("  %-58s %8.1f", "kubekeep restore --version latest -> apiserver ready", tKubekeep.Seconds())
		t.Logf("  %-58s %8.1f", "runbook: mv manifests, cp -a, etcdctl snapshot restore -> ready", tRunbook.Seconds())
		t.Logf("  RTO ratio kubekeep/runbook: %.2fx (goal: kubekeep <= 120 s)", tKubekeep.Seconds()/tRunbook.Seconds())
		fmt.Printf("RTO kubekeep=%.1fs runbook=%.1fs ratio=%.2f db=%sMiB\n", tKubekeep.Seconds(), tRunbook.Seconds(), tKubekeep.Seconds()/tRunbook.Seconds(), du)
	})
}

// fill puts mib MiB of distinct ConfigMap-shaped values into etcd
// directly (through the apiserver it would take far longer), in the
// apiserver's key space so restore and verify count them as keys.
func fill(t *testing.T, n *kubenode.Node, mib int) {
	t.Helper()
	c := n.Etcd(t)
	val := make([]byte, 256<<10)
	start := time.Now()
	for i := 0; i < mib*4; i++ {
		rand.Read(val)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, err := c.Put(ctx, fmt.Sprintf("/registry/kubekeep-bench/fill-%06d", i), string(val))
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("loaded %d MiB into etcd in %s", mib, time.Since(start).Round(time.Second))
}

func etcdctlCmd(t *testing.T, etcdctl string, args ...string) {
	t.Helper()
	pki := kubenode.PKIDir + "/etcd/"
	full := append([]string{"--endpoints", kubenode.EtcdEndpoint, "--cacert", pki + "ca.crt", "--cert", pki + "healthcheck-client.crt", "--key", pki + "healthcheck-client.key"}, args...)
	cmd := exec.Command(etcdctl, full...)
	cmd.Env = append(os.Environ(), "ETCDCTL_API=3")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("etcdctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func disaster(t *testing.T) {
	t.Helper()
	for _, p := range []string{kubenode.EtcdDataDir, kubenode.PKIDir, kubenode.AdminConf} {
		if err := os.RemoveAll(p); err != nil {
			t.Fatal(err)
		}
	}
}

func waitAPI(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := kubenode.WaitAPIServer(ctx, kubenode.AdminConf); err != nil {
		t.Fatal(err)
	}
}

func checkUIDs(t *testing.T, n *kubenode.Node, want map[string]string) {
	t.Helper()
	got := uids(t, n, kubenode.AdminConf, "namespaces,configmaps,secrets,serviceaccounts")
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: uid %q after the restore, %q before", k, got[k], v)
		}
	}
}
