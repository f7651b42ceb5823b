package kubenode

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/kubekeep/kubekeep/internal/gobuild"
)

// KubernetesVersion is the release the binaries are built from (the
// k8s.io/kubernetes version internal/k8s134/go.mod requires) and the
// default kubernetesVersion of the node's ClusterConfiguration.
const KubernetesVersion = "v1.34.4"

// SkipEnv set to 1 makes every test that needs the Kubernetes binaries
// skip instead of building them (a machine without the module proxy, or a
// quick run). Unset, a failed build fails the test with the compiler's
// output.
const SkipEnv = "KUBEKEEP_SKIP_KUBE"

// binsEnv carries the built Bins (JSON) from a test to its isolated child,
// which then neither hashes sources nor needs the toolchain.
const binsEnv = "KUBEKEEP_KUBENODE_BINS"

// Bins are the paths of the real binaries a node runs. They live in the
// user cache directory (os.UserCacheDir()/kubekeep-test), outside every
// directory an isolated test replaces.
type Bins struct {
	Kubeadm       string // k8s.io/kubernetes/cmd/kubeadm v1.34.4
	KubeAPIServer string // k8s.io/kubernetes/cmd/kube-apiserver v1.34.4
	Kubectl       string // k8s.io/kubernetes/cmd/kubectl v1.34.4
	Etcd          string // go.etcd.io/etcd/server/v3 v3.6.16 etcdmain (internal/kubenode/etcd36)
}

// Commands maps the command a static pod's container runs (its
// command[0]) to the binary that plays it.
func (b Bins) Commands() map[string]string {
	return map[string]string{
		"etcd":           b.Etcd,
		"kube-apiserver": b.KubeAPIServer,
	}
}

// Link makes dir hold symlinks named as on a master (kubeadm,
// kube-apiserver, kubectl, etcd) to the binaries, so a program that looks
// them up on PATH finds them.
func (b Bins) Link(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for name, target := range map[string]string{"kubeadm": b.Kubeadm, "kube-apiserver": b.KubeAPIServer, "kubectl": b.Kubectl, "etcd": b.Etcd} {
		p := filepath.Join(dir, name)
		os.Remove(p)
		if err := os.Symlink(target, p); err != nil {
			return err
		}
	}
	return nil
}

var (
	binsOnce sync.Once
	binsVal  Bins
	binsErr  error
)

// Binaries returns the built binaries, building them the first time in
// this process and only when their sources or the toolchain changed since
// the cached build (a cold build takes several minutes on two cores; a
// cached one costs a few hashes). It skips the test when
// KUBEKEEP_SKIP_KUBE=1 and fails it, with the build output, when a build
// fails.
func Binaries(t testing.TB) Bins {
	t.Helper()
	if os.Getenv(SkipEnv) == "1" {
		t.Skipf("%s=1: not building the Kubernetes %s binaries", SkipEnv, KubernetesVersion)
	}
	b, err := BuildBinaries()
	if err != nil {
		t.Fatalf("kubenode: Kubernetes binaries (set %s=1 to skip the tests that need them): %v", SkipEnv, err)
	}
	return b
}

// BuildBinaries is Binaries outside a test.
func BuildBinaries() (Bins, error) {
	binsOnce.Do(func() {
		if s := os.Getenv(binsEnv); s != "" {
			if err := json.Unmarshal([]byte(s), &binsVal); err == nil && binsVal.exist() {
				return
			}
		}
		binsVal, binsErr = buildAll()
	})
	return binsVal, binsErr
}

func (b Bins) exist() bool {
	for _, p := range []string{b.Kubeadm, b.KubeAPIServer, b.Kubectl, b.Etcd} {
		if !isExecutable(p) {
			return false
		}
	}
	return true
}

// ldflags stamps the version the way the Kubernetes release build does
// (hack/lib/version.sh): component-base's for the servers and kubeadm,
// client-go's for what clients report. The commit is not known from a
// module zip; the build date stays at its in-tree default. -s -w: no
// debug information, which halves the link time.
func ldflags() string {
	var b strings.Builder
	b.WriteString("-s -w")
	for _, pkg := range []string{"k8s.io/component-base/version", "k8s.io/client-go/pkg/version"} {
		fmt.Fprintf(&b, " -X %s.gitVersion=%s -X %s.gitMajor=1 -X %s.gitMinor=34 -X %s.gitTreeState=clean -X %s.gitCommit=",
			pkg, KubernetesVersion, pkg, pkg, pkg, pkg)
	}
	return b.String()
}

var (
	k8sBuildFlags    = []string{"build", "-trimpath", "-buildvcs=false", "-ldflags", ldflags()}
	k8sPackages      = []string{"k8s.io/kubernetes/cmd/kubeadm", "k8s.io/kubernetes/cmd/kube-apiserver", "k8s.io/kubernetes/cmd/kubectl"}
	etcd36BuildFlags = []string{"build", "-trimpath", "-buildvcs=false", "-ldflags", "-s -w"}
)

func buildAll() (Bins, error) {
	here, err := sourceDir()
	if err != nil {
		return Bins{}, err
	}
	k8sDir := filepath.Join(here, "..", "k8s134")
	k8s, err := gobuild.Cached("k8s134", k8sDir,
		[]string{"go.mod", "go.sum", "doc.go"},
		append(append([]string{}, k8sBuildFlags...), k8sPackages...))
	if err != nil {
		return Bins{}, err
	}
	etcd, err := gobuild.Cached("etcd36", filepath.Join(here, "etcd36"),
		[]string{"go.mod", "go.sum", "main.go"},
		append(append([]string{}, etcd36BuildFlags...), "."))
	if err != nil {
		return Bins{}, err
	}
	return Bins{
		Kubeadm:       filepath.Join(k8s, "kubeadm"),
		KubeAPIServer: filepath.Join(k8s, "kube-apiserver"),
		Kubectl:       filepath.Join(k8s, "kubectl"),
		Etcd:          filepath.Join(etcd, "etcd36"),
	}, nil
}

// sourceDir finds internal/kubenode: where this file was compiled when the
// sources are still there, else above the working directory (go test runs
// in the package directory).
func sourceDir() (string, error) {
	if _, file, _, ok := runtime.Caller(0); ok {
		d := filepath.Dir(file)
		if _, err := os.Stat(filepath.Join(d, "..", "k8s134", "go.mod")); err == nil {
			return filepath.Clean(d), nil
		}
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		c := filepath.Join(d, "internal", "kubenode")
		if _, err := os.Stat(filepath.Join(d, "internal", "k8s134", "go.mod")); err == nil {
			return c, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("kubenode: internal/k8s134 not found above %s", wd)
		}
	}
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}
