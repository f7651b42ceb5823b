package kubenode

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
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
	k8s, err := buildCached("k8s134", k8sDir,
		[]string{"go.mod", "go.sum", "doc.go"},
		append(append([]string{}, k8sBuildFlags...), k8sPackages...))
	if err != nil {
		return Bins{}, err
	}
	etcd, err := buildCached("etcd36", filepath.Join(here, "etcd36"),
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

func goCommand() (string, error) {
	goBin, err := exec.LookPath("go")
	if err == nil {
		return goBin, nil
	}
	if g := os.Getenv("GOROOT"); g != "" {
		return filepath.Join(g, "bin", "go"), nil
	}
	if g := runtime.GOROOT(); g != "" {
		return filepath.Join(g, "bin", "go"), nil
	}
	return "", fmt.Errorf("kubenode: no go command to build with: %w", err)
}

// buildCached runs `go <args> -o DIR/` in src unless DIR, named by a hash
// of the toolchain, the arguments and the files (relative to src), is
// already in the cache; it returns DIR. A flock on cache/<name>.lock makes
// test binaries of several packages, started at once, build once.
func buildCached(name, src string, files, args []string) (string, error) {
	goBin, err := goCommand()
	if err != nil {
		return "", err
	}
	env := append(os.Environ(), "GOWORK=off", "CGO_ENABLED=0")
	goEnv := exec.Command(goBin, "env", "GOVERSION", "GOOS", "GOARCH", "GOAMD64", "GOFLAGS", "GOEXPERIMENT")
	goEnv.Dir, goEnv.Env = src, env
	ver, err := goEnv.Output()
	if err != nil {
		return "", fmt.Errorf("kubenode: %s env in %s: %w", goBin, src, err)
	}
	h := sha256.New()
	h.Write(ver)
	h.Write([]byte(strings.Join(args, "\x00") + "\x00CGO_ENABLED=0\x00"))
	for _, f := range files {
		data, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			return "", fmt.Errorf("kubenode: cache key: %w", err)
		}
		h.Write([]byte(f + "\x00"))
		h.Write(data)
	}
	key := hex.EncodeToString(h.Sum(nil))[:16]

	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	cache = filepath.Join(cache, "kubekeep-test")
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", err
	}
	out := filepath.Join(cache, name+"-"+key)
	done := filepath.Join(out, ".built")
	if _, err := os.Stat(done); err == nil {
		return out, nil
	}
	lock, err := os.OpenFile(filepath.Join(cache, name+".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("kubenode: lock %s: %w", lock.Name(), err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if _, err := os.Stat(done); err == nil {
		return out, nil // built by whoever held the lock
	}
	tmp := out + ".building"
	os.RemoveAll(tmp)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	full := append(append([]string{}, args[:1]...), append([]string{"-o", tmp + "/"}, args[1:]...)...)
	cmd := exec.CommandContext(ctx, goBin, full...)
	cmd.Dir, cmd.Env = src, env
	fmt.Fprintf(os.Stderr, "kubenode: building %s into %s (minutes when cold)\n", name, out)
	start := time.Now()
	outb, err := cmd.CombinedOutput()
	if err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("go %s in %s: %w\n%s", strings.Join(full, " "), src, err, outb)
	}
	took := time.Since(start).Round(100 * time.Millisecond)
	if err := os.WriteFile(filepath.Join(tmp, ".built"), []byte(fmt.Sprintf("built in %s at %s\n", took, time.Now().UTC().Format(time.RFC3339))), 0o644); err != nil {
		return "", err
	}
	os.RemoveAll(out)
	if err := os.Rename(tmp, out); err != nil {
		return "", err
	}
	fmt.Fprintf(os.Stderr, "kubenode: built %s (%s) in %s\n", name, strings.Join(listSizes(out), ", "), took)
	// Older builds only take space (hundreds of MB for k8s134).
	if old, _ := filepath.Glob(filepath.Join(cache, name+"-*")); len(old) > 0 {
		for _, o := range old {
			if o != out && !strings.HasSuffix(o, ".building") {
				os.RemoveAll(o)
			}
		}
	}
	return out, nil
}

func listSizes(dir string) []string {
	ents, _ := os.ReadDir(dir)
	var s []string
	for _, e := range ents {
		if fi, err := e.Info(); err == nil && fi.Mode().IsRegular() && !strings.HasPrefix(e.Name(), ".") {
			s = append(s, fmt.Sprintf("%s %.0f MB", e.Name(), float64(fi.Size())/1e6))
		}
	}
	sort.Strings(s)
	return s
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}
