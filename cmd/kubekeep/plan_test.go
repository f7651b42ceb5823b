package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/kubekeep/kubekeep/internal/sandbox"
	"github.com/kubekeep/kubekeep/layout"
)

func runPlanCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newRootCommand()
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

func TestPlanOnSandbox(t *testing.T) {
	r, err := sandbox.Build(t.TempDir(), sandbox.Options{EtcdClientPort: 32379, EtcdPeerPort: 32380, NodeName: "cp-1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(r.Path("/etc/kubernetes/kubeadm-config.yaml"), []byte("kind: ClusterConfiguration\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(t.TempDir(), "kubekeep.yaml")
	conf := "paths:\n  extra:\n  - /etc/kubernetes/kubeadm-config.yaml\n  exclude:\n  - /usr/local/share/ca-certificates\n"
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}

	out, err := runPlanCLI(t, "plan", "--config", cfg, "--root", r.Dir, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var set layout.Set
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&set); err != nil {
		t.Fatalf("plan -o json is not a layout.Set: %v\n%s", err, out)
	}
	want := []string{
		"/etc/ca-certificates", "/etc/kubernetes/admin.conf", "/etc/kubernetes/controller-manager.conf",
		"/etc/kubernetes/kubeadm-config.yaml", "/etc/kubernetes/kubelet.conf", "/etc/kubernetes/manifests",
		"/etc/kubernetes/pki", "/etc/kubernetes/scheduler.conf", "/etc/kubernetes/super-admin.conf",
		"/etc/ssl/certs", "/usr/libexec/kubernetes/kubelet-plugins/volume/exec", "/usr/share/ca-certificates",
		"/var/lib/etcd", "/var/lib/kubelet/config.yaml", "/var/lib/kubelet/kubeadm-flags.env", "/var/lib/kubelet/pki",
	}
	if got := set.HostPaths(); !slices.Equal(got, want) {
		t.Errorf("paths\n got %v\nwant %v", got, want)
	}
	if p, _ := set.Lookup("/etc/kubernetes/kubeadm-config.yaml"); p.Role != layout.RoleExtra || p.Kind != layout.KindFile {
		t.Errorf("paths.extra entry %+v", p)
	}
	if len(set.Excluded) != 1 || set.Excluded[0].Path != "/usr/local/share/ca-certificates" {
		t.Errorf("excluded %+v", set.Excluded)
	}
	if !slices.Equal(set.Etcd.Endpoints, []string{"https://127.0.0.1:32379"}) || set.Etcd.Name != "cp-1" ||
		set.Etcd.CertFile != r.EtcdClientCert || set.Etcd.DataDir != "/var/lib/etcd" {
		t.Errorf("etcd %+v", set.Etcd)
	}
	// Host paths, never the sandbox prefix.
	if strings.Contains(out, r.Dir) {
		t.Errorf("JSON leaks the root prefix %s", r.Dir)
	}
	// The raw keys are the contract.
	var raw map[string]json.RawMessage
	if err := json.Unmarshal([]byte(out), &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"paths", "skipped", "etcd", "warnings"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("JSON lacks %q", k)
		}
	}
	if !strings.Contains(string(raw["skipped"]), `"coveredBy":"/etc/kubernetes/pki"`) && !strings.Contains(string(raw["skipped"]), `"coveredBy": "/etc/kubernetes/pki"`) {
		t.Errorf("skipped %s", raw["skipped"])
	}

	yout, err := runPlanCLI(t, "plan", "--config", cfg, "--root", r.Dir, "-o", "yaml")
	if err != nil {
		t.Fatal(err)
	}
	var yset layout.Set
	if err := yaml.UnmarshalStrict([]byte(yout), &yset); err != nil || !slices.Equal(yset.HostPaths(), want) {
		t.Errorf("plan -o yaml: %v", err)
	}

	tout, err := runPlanCLI(t, "plan", "--config", cfg, "--root", r.Dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"PATH", "WHY", "/var/lib/etcd", "etcd-data", "backed up by etcd snapshot",
		"/etc/kubernetes/pki/etcd  in /etc/kubernetes/pki", "https://127.0.0.1:32379", "paths.extra"} {
		if !strings.Contains(tout, s) {
			t.Errorf("table lacks %q:\n%s", s, tout)
		}
	}
}

func TestPlanEtcdOverrideAndErrors(t *testing.T) {
	r, err := sandbox.Build(t.TempDir(), sandbox.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(t.TempDir(), "kubekeep.yaml")
	if err := os.WriteFile(cfg, []byte("etcd:\n  endpoints: [https://10.9.9.9:2379]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := runPlanCLI(t, "plan", "--config", cfg, "--root", r.Dir, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var set layout.Set
	if err := json.Unmarshal([]byte(out), &set); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(set.Etcd.Endpoints, []string{"https://10.9.9.9:2379"}) || len(set.Warnings) != 1 ||
		!strings.Contains(set.Warnings[0], "replace discovered https://127.0.0.1:2379") {
		t.Errorf("override: %v %q", set.Etcd.Endpoints, set.Warnings)
	}

	if _, err := runPlanCLI(t, "plan", "--config", cfg, "--root", t.TempDir()); err == nil || !strings.Contains(err.Error(), "no static pod manifests dir") {
		t.Errorf("empty root: %v", err)
	}
	if _, err := runPlanCLI(t, "plan", "--config", cfg, "--root", r.Dir, "-o", "xml"); err == nil || !strings.Contains(err.Error(), "unknown output format") {
		t.Errorf("-o xml: %v", err)
	}
}

// TestPlanSymlinkAndProblems: the pki dir a symlink to a directory
// elsewhere shows as the link and, as a path of its own, the directory
// with its real size (it showed "symlink 0B" alone, then "dir ->
// /data/pki" with nothing that backed up /data/pki); a manifest that does
// not parse is a problem naming file:line and plan still succeeds with the
// rest of the node (it failed).
func TestPlanSymlinkAndProblems(t *testing.T) {
	r, err := sandbox.Build(t.TempDir(), sandbox.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var pkiSize int64
	err = filepath.WalkDir(r.Path("/etc/kubernetes/pki"), func(_ string, de os.DirEntry, err error) error {
		if err == nil && de.Type().IsRegular() {
			fi, _ := de.Info()
			pkiSize += fi.Size()
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(r.Path("/data"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(r.Path("/etc/kubernetes/pki"), r.Path("/data/pki")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/data/pki", r.Path("/etc/kubernetes/pki")); err != nil {
		t.Fatal(err)
	}
	bad := "apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\nspec:\n  containers: oops\n" // line 6 is wrong
	if err := os.WriteFile(r.Path(layout.ManifestsDir+"/broken.yaml"), []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}

	out, err := runPlanCLI(t, "plan", "--root", r.Dir, "-o", "json")
	if err != nil {
		t.Fatalf("plan failed on one bad manifest: %v", err)
	}
	var set layout.Set
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&set); err != nil {
		t.Fatal(err)
	}
	pki, _ := set.Lookup("/etc/kubernetes/pki")
	if pki.Kind != layout.KindSymlink || pki.Target != "/data/pki" || pki.Size != 0 {
		t.Errorf("pki %+v; want symlink -> /data/pki", pki)
	}
	if data, _ := set.Lookup("/data/pki"); data.Kind != layout.KindDir || data.Role != layout.RolePKI || data.Size != pkiSize {
		t.Errorf("/data/pki %+v; want the dir, %d bytes", data, pkiSize)
	}
	if len(set.Problems) != 1 || !strings.HasPrefix(set.Problems[0], layout.ManifestsDir+"/broken.yaml:6: ") {
		t.Errorf("problems %q", set.Problems)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal([]byte(out), &raw); err != nil || raw["problems"] == nil {
		t.Errorf("JSON lacks \"problems\": %v", err)
	}
	if _, ok := set.Lookup("/var/lib/etcd"); !ok || set.Etcd.Name != r.Opts.NodeName {
		t.Errorf("the rest of the node: %v %+v", set.HostPaths(), set.Etcd)
	}

	tout, err := runPlanCLI(t, "plan", "--root", r.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(tout, "symlink -> /data/pki") || !strings.Contains(tout, "target of symlink /etc/kubernetes/pki") ||
		!strings.Contains(tout, humanBytes(pkiSize)) ||
		!strings.Contains(tout, "Problems (every backup of this set is degraded):\n  - "+layout.ManifestsDir+"/broken.yaml:6: ") {
		t.Errorf("table:\n%s", tout)
	}
	if strings.Count(tout, "broken.yaml:6:") != 1 {
		t.Errorf("the problem is printed more than once:\n%s", tout)
	}
}
