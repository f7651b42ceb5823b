package layout

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kubekeep/kubekeep/internal/sandbox"
)

func writeHost(t *testing.T, r *sandbox.Root, hostPath, data string) {
	t.Helper()
	must(t, os.MkdirAll(filepath.Dir(r.Path(hostPath)), 0o755))
	must(t, os.WriteFile(r.Path(hostPath), []byte(data), 0o644))
}

// TestKubeletFilesOutsideKubeadm: what the kubelet unit reads besides
// kubeadm's files (KUBELET_EXTRA_ARGS in /etc/default/kubelet or
// /etc/sysconfig/kubelet, the admin's drop-ins) is in the set when present,
// and a --cert-dir there moves the kubelet PKI kubelet.conf points at.
func TestKubeletFilesOutsideKubeadm(t *testing.T) {
	r, err := sandbox.Build(t.TempDir(), sandbox.Options{KubernetesVersion: "v1.34.0"})
	must(t, err)
	writeHost(t, r, "/etc/default/kubelet", "# set by the admin\nKUBELET_EXTRA_ARGS=\"--node-ip=10.0.0.5 --cert-dir /srv/kubelet-pki\"\n")
	writeHost(t, r, "/etc/sysconfig/kubelet", "KUBELET_EXTRA_ARGS=\n")
	writeHost(t, r, "/etc/systemd/system/kubelet.service.d/20-node-ip.conf", "[Service]\nEnvironment=X=1\n")
	writeHost(t, r, "/srv/kubelet-pki/kubelet-client-current.pem", "pem")

	s, err := Discover(r.Dir, Options{})
	must(t, err)
	for p, kind := range map[string]string{
		"/etc/default/kubelet":                  KindFile,
		"/etc/sysconfig/kubelet":                KindFile,
		"/etc/systemd/system/kubelet.service.d": KindDir,
		"/srv/kubelet-pki":                      KindDir,
		"/var/lib/kubelet/instance-config.yaml": KindFile,
	} {
		got, ok := s.Lookup(p)
		if !ok || got.Kind != kind || got.Role != RoleKubelet {
			t.Errorf("%s: %+v, %v; want a %s with role kubelet", p, got, ok, kind)
		}
	}
	if got, _ := s.Lookup("/srv/kubelet-pki"); !strings.Contains(got.Sources[0].Note, "--cert-dir in /etc/default/kubelet") {
		t.Errorf("cert dir sources %+v", got.Sources)
	}
	// The default dir is not what the kubelet uses any more.
	if _, ok := s.Lookup("/var/lib/kubelet/pki"); ok {
		t.Errorf("/var/lib/kubelet/pki still listed with --cert-dir=/srv/kubelet-pki")
	}
	if len(s.Warnings) != 0 {
		t.Errorf("warnings %q", s.Warnings)
	}
}

// TestOptionalRebuildPathsAbsent: on a kubeadm 1.31 node (no
// instance-config.yaml, no env files or drop-ins) the optional paths are
// neither listed nor warned about; the required ones are reported missing.
func TestOptionalRebuildPathsAbsent(t *testing.T) {
	r, err := sandbox.Build(t.TempDir(), sandbox.Options{KubernetesVersion: "v1.31.1"})
	must(t, err)
	must(t, os.Remove(r.Path("/var/lib/kubelet/config.yaml")))
	s, err := Discover(r.Dir, Options{})
	must(t, err)
	for _, p := range []string{"/var/lib/kubelet/instance-config.yaml", "/etc/default/kubelet", "/etc/sysconfig/kubelet",
		"/etc/systemd/system/kubelet.service.d"} {
		if _, ok := s.Lookup(p); ok {
			t.Errorf("%s listed but absent", p)
		}
		if hasWarning(s, p) {
			t.Errorf("absent optional %s warned about: %q", p, s.Warnings)
		}
	}
	if len(s.Missing) != 1 || s.Missing[0].Path != "/var/lib/kubelet/config.yaml" || len(s.Warnings) != 1 {
		t.Errorf("missing %+v warnings %q: want config.yaml, which a rebuild needs", s.Missing, s.Warnings)
	}
}

func TestEnvArgs(t *testing.T) {
	in := "KUBELET_KUBEADM_ARGS=\"--a=1  --b 2\"\n# KUBELET_EXTRA_ARGS=--no\nOTHER=--c\n KUBELET_EXTRA_ARGS='--d'\nKUBELET_EXTRA_ARGS=--e --f\n"
	got := envArgs([]byte(in))
	want := [][]string{{"--a=1", "--b", "2"}, {"--d"}, {"--e", "--f"}}
	if len(got) != len(want) {
		t.Fatalf("got %q", got)
	}
	for i := range want {
		if !slices.Equal(got[i], want[i]) {
			t.Errorf("line %d: got %q want %q", i, got[i], want[i])
		}
	}
}
