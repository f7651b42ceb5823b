// Package sandbox builds a kubeadm-like control-plane root in a directory:
// the same files, modes and manifests kubeadm leaves on a single-master node,
// with a real PKI, so every kubekeep package can be tested (and `make demo`
// run) against a tree that behaves like a host without being one.
package sandbox

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// Options chooses the cluster the sandbox imitates. Zero values take the
// defaults of a plain `kubeadm init` on a node called master-1.
type Options struct {
	KubernetesVersion string // default "v1.31.1"
	NodeName          string // default "master-1"
	AdvertiseAddress  string // default "127.0.0.1"
	EtcdClientPort    int    // default 2379; tests pass free ports
	EtcdPeerPort      int    // default 2380
	EtcdDataDir       string // host path, default /var/lib/etcd
}

// Root is a built sandbox. File fields are host paths (no Dir prefix), the
// form manifests and kubekeep's layout use; Path turns them into real paths.
type Root struct {
	Dir  string  // the sandbox root, what --root gets
	Opts Options // with defaults filled in

	EtcdCAFile     string
	EtcdServerCert string
	EtcdServerKey  string
	EtcdPeerCert   string
	EtcdPeerKey    string
	// EtcdClientCert/Key is the healthcheck client, a cert etcd accepts.
	EtcdClientCert string
	EtcdClientKey  string
	EtcdDataDir    string

	clusterCA keyPair // signs the kubeconfig client certs during Build
}

// Host paths kubeadm uses; fixed by kubeadm, not configurable there either.
const (
	KubernetesDir = "/etc/kubernetes"
	PKIDir        = "/etc/kubernetes/pki"
	ManifestsDir  = "/etc/kubernetes/manifests"
	KubeletDir    = "/var/lib/kubelet"
)

func (o *Options) fill() error {
	if o.KubernetesVersion == "" {
		o.KubernetesVersion = "v1.31.1"
	}
	if o.NodeName == "" {
		o.NodeName = "master-1"
	}
	if o.AdvertiseAddress == "" {
		o.AdvertiseAddress = "127.0.0.1"
	}
	if o.EtcdClientPort == 0 {
		o.EtcdClientPort = 2379
	}
	if o.EtcdPeerPort == 0 {
		o.EtcdPeerPort = 2380
	}
	if o.EtcdDataDir == "" {
		o.EtcdDataDir = "/var/lib/etcd"
	}
	if _, err := parseMinor(o.KubernetesVersion); err != nil {
		return err
	}
	if net.ParseIP(o.AdvertiseAddress) == nil {
		return fmt.Errorf("sandbox: advertise address %q is not an IP address", o.AdvertiseAddress)
	}
	if !filepath.IsAbs(o.EtcdDataDir) || strings.Contains(o.EtcdDataDir, "..") {
		return fmt.Errorf("sandbox: etcd data dir %q must be an absolute host path without ..", o.EtcdDataDir)
	}
	return nil
}

// parseMinor returns the minor version of "v1.MINOR.PATCH"; kubeadm's
// output changes by minor release, never by patch.
func parseMinor(v string) (int, error) {
	parts := strings.Split(strings.TrimPrefix(v, "v"), ".")
	if len(parts) < 2 || parts[0] != "1" {
		return 0, fmt.Errorf("sandbox: kubernetes version %q is not v1.MINOR.PATCH", v)
	}
	m, err := strconv.Atoi(parts[1])
	if err != nil || m < 25 || m > 34 {
		return 0, fmt.Errorf("sandbox: kubernetes version %q: only v1.25 to v1.34 are imitated", v)
	}
	return m, nil
}

// Build writes a kubeadm-like root under dir (created if missing) and
// returns it. The tree is what a node looks like right after a successful
// `kubeadm init`.
func Build(dir string, opts Options) (*Root, error) {
	if err := opts.fill(); err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	r := &Root{
		Dir:            abs,
		Opts:           opts,
		EtcdCAFile:     PKIDir + "/etcd/ca.crt",
		EtcdServerCert: PKIDir + "/etcd/server.crt",
		EtcdServerKey:  PKIDir + "/etcd/server.key",
		EtcdPeerCert:   PKIDir + "/etcd/peer.crt",
		EtcdPeerKey:    PKIDir + "/etcd/peer.key",
		EtcdClientCert: PKIDir + "/etcd/healthcheck-client.crt",
		EtcdClientKey:  PKIDir + "/etcd/healthcheck-client.key",
		EtcdDataDir:    opts.EtcdDataDir,
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	steps := []struct {
		name string
		fn   func() error
	}{
		{"directories", r.writeDirs},
		{"os CA bundles", r.writeOSCABundles},
		{"certificates", r.writePKI},
		{"kubeconfigs", r.writeKubeconfigs},
		{"kubelet", r.writeKubelet},
		{"static pod manifests", r.writeManifests},
	}
	for _, s := range steps {
		if err := s.fn(); err != nil {
			return nil, fmt.Errorf("sandbox: %s: %w", s.name, err)
		}
	}
	return r, nil
}

// Path returns where hostPath lives inside the sandbox.
func (r *Root) Path(hostPath string) string { return filepath.Join(r.Dir, hostPath) }

// EtcdClientURL is the loopback client URL the sandbox's etcd.yaml listens
// on, the one a local client should dial.
func (r *Root) EtcdClientURL() string {
	return "https://" + net.JoinHostPort(r.loopback(), strconv.Itoa(r.Opts.EtcdClientPort))
}

// EtcdPeerURL is the peer URL etcd.yaml advertises.
func (r *Root) EtcdPeerURL() string {
	return "https://" + net.JoinHostPort(r.Opts.AdvertiseAddress, strconv.Itoa(r.Opts.EtcdPeerPort))
}

// loopback is the local address kubeadm pairs with the advertise address:
// an IPv6 control plane talks to etcd over ::1.
func (r *Root) loopback() string {
	if ip := net.ParseIP(r.Opts.AdvertiseAddress); ip != nil && ip.To4() == nil {
		return "::1"
	}
	return "127.0.0.1"
}

func (r *Root) minor() int {
	m, _ := parseMinor(r.Opts.KubernetesVersion)
	return m
}

// writeDirs creates the directories with the modes kubeadm and the kubelet
// give them; the etcd data dir is left empty, as before etcd's first start.
func (r *Root) writeDirs() error {
	dirs := []struct {
		path string
		mode os.FileMode
	}{
		{KubernetesDir, 0o755},
		{PKIDir, 0o755},
		{PKIDir + "/etcd", 0o755},
		{ManifestsDir, 0o700},
		{KubeletDir, 0o700},
		{KubeletDir + "/pki", 0o755},
		{r.Opts.EtcdDataDir, 0o700},
		{"/usr/libexec/kubernetes/kubelet-plugins/volume/exec", 0o755},
	}
	for _, d := range dirs {
		p := r.Path(d.path)
		if err := os.MkdirAll(p, d.mode); err != nil {
			return err
		}
		// MkdirAll honours the umask and leaves existing dirs alone.
		if err := os.Chmod(p, d.mode); err != nil {
			return err
		}
	}
	return nil
}

// writeFile writes a file at a host path, creating parents 0755 the way
// client-go's certutil and keyutil do.
func (r *Root) writeFile(hostPath string, data []byte, mode os.FileMode) error {
	p := r.Path(hostPath)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(p, data, mode); err != nil {
		return err
	}
	return os.Chmod(p, mode)
}

// FreePort returns a loopback TCP port that was free a moment ago and
// that this process has not handed out before. It is taken below the
// kernel's ephemeral range (ip_local_port_range), where the kernel never
// picks a port itself: a port from that range (what listening on :0
// gives) could be taken, between this check and the listener the caller
// starts, as the source port of any outgoing connection a parallel test
// makes; that was "bind: address already in use" starting a test etcd.
// Outside Linux, or when no port there is free, it falls back to :0.
func FreePort() (int, error) {
	freePorts.mu.Lock()
	defer freePorts.mu.Unlock()
	if freePorts.given == nil {
		freePorts.given = map[int]bool{}
	}
	low := ephemeralLow()
	for range 200 {
		if low <= freePortMin {
			break
		}
		p := freePortMin + rand.IntN(low-freePortMin)
		if freePorts.given[p] {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue // in use
		}
		l.Close()
		freePorts.given[p] = true
		return p, nil
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("sandbox: free port: %w", err)
	}
	defer l.Close()
	p := l.Addr().(*net.TCPAddr).Port
	freePorts.given[p] = true
	return p, nil
}

// freePortMin is where FreePort starts looking: above the ports services
// are usually configured on.
const freePortMin = 16000

var freePorts struct {
	mu    sync.Mutex
	given map[int]bool
}

// ephemeralLow is the first port of the kernel's ephemeral range (0 when
// it cannot be read).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0
	}
	n, err := strconv.Atoi(f[0])
	if err != nil {
		return 0
	}
	return n
}
