package kubenode_test

import (
	"net"
	"os"
	"testing"

	"github.com/kubekeep/kubekeep/internal/kubenode"
)

// TestRunIsolated checks the isolated host itself: what the child sees,
// and that nothing it does reaches the host.
func TestRunIsolated(t *testing.T) {
	const probe = "/etc/kubenode-isolation-probe"
	if _, err := os.Lstat(probe); err == nil {
		t.Fatalf("%s exists on the host before the test", probe)
	}
	kubenode.RunIsolated(t, func(t *testing.T) {
		if os.Getpid() != 1 {
			t.Errorf("pid %d, want 1 (own PID namespace)", os.Getpid())
		}
		if h, _ := os.Hostname(); h != kubenode.Hostname {
			t.Errorf("hostname %q", h)
		}
		addrs, err := net.InterfaceAddrs()
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.String() == kubenode.Address {
				found = true
			}
		}
		if !found {
			t.Errorf("no %s among %v", kubenode.Address, addrs)
		}
		if _, err := os.Stat("/etc/kubernetes"); !os.IsNotExist(err) {
			t.Errorf("/etc/kubernetes: %v, want it absent", err)
		}
		for _, d := range []string{"/var/lib", "/run"} {
			ents, err := os.ReadDir(d)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range ents {
				if e.Name() != "lock" {
					t.Errorf("%s is not fresh: holds %s", d, e.Name())
				}
			}
		}
		if err := os.WriteFile(probe, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll("/etc/kubernetes/pki", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile("/var/lib/probe", []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	})
	if kubenode.Isolated() || t.Skipped() {
		return
	}
	for _, p := range []string{probe, "/var/lib/probe"} {
		if _, err := os.Lstat(p); err == nil {
			os.Remove(p)
			t.Errorf("%s written inside reached the host", p)
		}
	}
	if h, _ := os.Hostname(); h == kubenode.Hostname {
		t.Errorf("the host's hostname is %s", h)
	}
}

// A child that skips skips the test outside too.
func TestRunIsolatedSkip(t *testing.T) {
	var sub *testing.T
	t.Run("inner", func(t *testing.T) {
		sub = t
		kubenode.RunIsolated(t, func(t *testing.T) { t.Skip("skipped inside on purpose") })
	})
	if !sub.Skipped() {
		t.Errorf("the child skipped, the test did not")
	}
}
