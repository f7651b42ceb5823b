package e2e

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kubekeep/kubekeep/internal/kubenode"
)

// pkiTarget is where the PKI really lives on this node: /etc/kubernetes/pki
// is a symlink to it (an operator keeping keys on another disk).
const pkiTarget = "/var/lib/kubekeep-e2e-pki"

// TestRealNodeSymlinkedPKI is issue 13's first silent loss at --root / on
// the real node: /etc/kubernetes/pki is a symlink to another directory,
// kubeadm writes the CA and service-account keys through it, the backup
// must keep them (not just the link), and after both the link and the
// keys are gone, `kubekeep restore --version latest` brings back the link,
// the keys byte for byte, and the control plane.
func TestRealNodeSymlinkedPKI(t *testing.T) {
	kubenode.RunIsolated(t, func(t *testing.T) {
		if err := os.MkdirAll(pkiTarget, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(kubenode.PKIDir), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(pkiTarget, kubenode.PKIDir); err != nil {
			t.Fatal(err)
		}
		n := node(t, kubenode.Options{SkipAddons: true})
		keys := map[string][]byte{}
		for _, k := range []string{"ca.key", "sa.key", "front-proxy-ca.key", "etcd/ca.key"} {
			b, err := os.ReadFile(filepath.Join(pkiTarget, k))
			if err != nil {
				t.Fatalf("kubeadm did not write %s through the link: %v", k, err)
			}
			keys[k] = b
		}
		want := uids(t, n, kubenode.AdminConf, resources)
		good := backup(t)
		if r := must(t, "plan"); !strings.Contains(r.stdout, pkiTarget) {
			t.Errorf("plan does not show the link's target %s:\n%s", pkiTarget, r.stdout)
		}

		for _, p := range []string{kubenode.EtcdDataDir, kubenode.PKIDir, pkiTarget, kubenode.AdminConf} {
			if err := os.RemoveAll(p); err != nil {
				t.Fatal(err)
			}
		}
		r := kk(t, "restore", "--version", "latest", "--yes") // no terminal: --yes, as a script passes it
		if r.code != 0 {
			t.Fatalf("%s", r)
		}
		if !strings.Contains(r.stdout, good) {
			t.Errorf("restore --version latest did not restore %s:\n%s", good, r.stdout)
		}
		waitAPI(t)
		if dst, err := os.Readlink(kubenode.PKIDir); err != nil || dst != pkiTarget {
			t.Errorf("%s after the restore: link to %q, %v; want a link to %s", kubenode.PKIDir, dst, err, pkiTarget)
		}
		for k, b := range keys {
			got, err := os.ReadFile(filepath.Join(pkiTarget, k))
			if err != nil || !bytes.Equal(got, b) {
				t.Errorf("%s after the restore: %v (equal=%v)", k, err, bytes.Equal(got, b))
			}
		}
		got := uids(t, n, kubenode.AdminConf, resources)
		for _, k := range sortedKeys(want) {
			if got[k] != want[k] {
				t.Errorf("%s: uid %q after the restore, %q before", k, got[k], want[k])
			}
		}
	})
}
