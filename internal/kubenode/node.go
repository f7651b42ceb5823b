package kubenode

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clientcmdv1 "k8s.io/client-go/tools/clientcmd/api/v1"
	certutil "k8s.io/client-go/util/cert"
	"k8s.io/client-go/util/keyutil"
	"sigs.k8s.io/yaml"
)

// Paths kubeadm 1.34 uses on a control-plane node (fixed there too).
const (
	KubernetesDir  = "/etc/kubernetes"
	PKIDir         = "/etc/kubernetes/pki"
	ManifestsDir   = "/etc/kubernetes/manifests"
	AdminConf      = "/etc/kubernetes/admin.conf"
	SuperAdminConf = "/etc/kubernetes/super-admin.conf"
	KubeletConf    = "/etc/kubernetes/kubelet.conf"
	KubeletDir     = "/var/lib/kubelet"
	EtcdDataDir    = "/var/lib/etcd"
	// EncryptionConfig is where Init puts the EncryptionConfiguration, a
	// hostPath extraVolume of the apiserver (a user file kubekeep must
	// find through the manifest).
	EncryptionConfig = "/etc/kubernetes/enc/enc.yaml"
)

// Options chooses the node Init makes. Zero values take the defaults.
type Options struct {
	NodeName string // default Hostname (cp1)
	// AdvertiseAddress defaults to Address (10.127.0.1); another one must
	// be on lo first (AddAddress).
	AdvertiseAddress  string
	KubernetesVersion string // default KubernetesVersion (v1.34.4)
	// ControlPlaneEndpoint, if set, goes into the ClusterConfiguration
	// (e.g. "10.127.0.1:6443"); empty, kubeconfigs name the advertise
	// address as a plain `kubeadm init` does.
	ControlPlaneEndpoint string
	PodSubnet            string // default 10.244.0.0/16
	ServiceSubnet        string // default 10.96.0.0/12
	// EncryptionProvider is the EncryptionConfiguration's provider for
	// secrets: "aescbc" (default) or "secretbox", with a random 32-byte
	// key named key1, then identity (so unencrypted secrets stay readable).
	EncryptionProvider string
	// SkipAddons leaves out `kubeadm init phase addon all` (CoreDNS and
	// kube-proxy objects in the API; nothing runs them here).
	SkipAddons bool
	// ExtraDocuments are more YAML documents appended to the kubeadm
	// config Init writes (a KubeletConfiguration, a
	// KubeProxyConfiguration).
	ExtraDocuments []string
	// Timeout bounds the wait for etcd and the apiserver; default 3 min.
	Timeout time.Duration
}

func (o *Options) fill() error {
	if o.NodeName == "" {
		o.NodeName = Hostname
	}
	if o.AdvertiseAddress == "" {
		o.AdvertiseAddress = Address
	}
	if o.KubernetesVersion == "" {
		o.KubernetesVersion = KubernetesVersion
	}
	if o.PodSubnet == "" {
		o.PodSubnet = "10.244.0.0/16"
	}
	if o.ServiceSubnet == "" {
		o.ServiceSubnet = "10.96.0.0/12"
	}
	if o.EncryptionProvider == "" {
		o.EncryptionProvider = "aescbc"
	}
	if o.EncryptionProvider != "aescbc" && o.EncryptionProvider != "secretbox" {
		return fmt.Errorf("kubenode: encryption provider %q: aescbc or secretbox", o.EncryptionProvider)
	}
	if o.Timeout <= 0 {
		o.Timeout = 3 * time.Minute
	}
	return nil
}

// KubeadmConfig is the kubeadm config Init writes: an InitConfiguration
// (node name, advertise address, containerd's socket), a
// ClusterConfiguration (version, networking, the apiserver's
// encryption-provider-config flag and the hostPath extraVolume that
// carries it), then opts.ExtraDocuments.
func KubeadmConfig(opts Options) (string, error) {
	if err := opts.fill(); err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, `apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
localAPIEndpoint:
  advertiseAddress: %s
  bindPort: 6443
nodeRegistration:
  name: %q
  criSocket: unix:///run/containerd/containerd.sock
  imagePullPolicy: IfNotPresent
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: %s
clusterName: kubernetes
`, opts.AdvertiseAddress, opts.NodeName, opts.KubernetesVersion)
	if opts.ControlPlaneEndpoint != "" {
		fmt.Fprintf(&b, "controlPlaneEndpoint: %q\n", opts.ControlPlaneEndpoint)
	}
	fmt.Fprintf(&b, `networking:
  dnsDomain: cluster.local
  podSubnet: %s
  serviceSubnet: %s
apiServer:
  extraArgs:
  - name: encryption-provider-config
    value: %s
  extraVolumes:
  - name: encryption-config
    hostPath: %s
    mountPath: %s
    readOnly: true
    pathType: DirectoryOrCreate
`, opts.PodSubnet, opts.ServiceSubnet, EncryptionConfig, filepath.Dir(EncryptionConfig), filepath.Dir(EncryptionConfig))
	for _, d := range opts.ExtraDocuments {
		b.WriteString("---\n")
		b.WriteString(strings.TrimPrefix(d, "---\n"))
		if !strings.HasSuffix(d, "\n") {
			b.WriteByte('\n')
		}
	}
	return b.String(), nil
}

// EncryptionConfiguration is an EncryptionConfiguration for secrets with
// provider (aescbc or secretbox) and the 32-byte key, then identity.
func EncryptionConfiguration(provider string, key []byte) string {
	return fmt.Sprintf(`apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
- resources:
  - secrets
  providers:
  - %s:
      keys:
      - name: key1
        secret: %s
  - identity: {}
`, provider, base64.StdEncoding.EncodeToString(key))
}

// Node is a kubeadm v1.34 control-plane node inside RunIsolated: real
// files from real kubeadm phases under /etc/kubernetes and
// /var/lib/kubelet, real etcd 3.6 and kube-apiserver 1.34 processes
// started by the stand-in Kubelet from the manifests kubeadm wrote.
type Node struct {
	Bins Bins
	Opts Options // with the defaults filled in
	// ConfigFile is the kubeadm config file (KubeadmConfig), outside
	// /etc/kubernetes (in the test's scratch tmpfs), as an operator's
	// kubeadm.yaml would be somewhere in their home directory.
	ConfigFile string
	// EncryptionKey is the secrets key in EncryptionConfig.
	EncryptionKey []byte

	t       testing.TB
	mu      sync.Mutex
	kubelet *Kubelet
	etcd    *clientv3.Client
}

// Init makes a control-plane node the way `kubeadm init --config` does,
// phase by phase, with the real kubeadm:
//
//  1. writes EncryptionConfig (0600, in a 0700 dir) and ConfigFile;
//  2. kubeadm init phase certs all, kubeconfig all, etcd local,
//     control-plane all, kubelet-start (kubelet-start writes
//     /var/lib/kubelet/{config.yaml,kubeadm-flags.env,instance-config.yaml}
//     and then fails, as a warning, to reach systemd: /run is empty);
//  3. starts the stand-in Kubelet on /etc/kubernetes/manifests, which
//     runs etcd and kube-apiserver (kube-controller-manager and
//     kube-scheduler are not built and stay not run), and waits for etcd
//     health and the apiserver's /readyz (this replaces the
//     wait-control-plane phase, which asks a kubelet's /healthz);
//  4. plays what a starting kubelet writes and registers:
//     /var/lib/kubelet/pki/kubelet-client-<time>.pem (+ the
//     kubelet-client-current.pem link), the self-signed kubelet.crt/.key,
//     and its Node object (created with kubelet.conf's identity);
//  5. kubeadm init phase upload-config all, mark-control-plane,
//     bootstrap-token, kubelet-finalize all, and addon all (unless
//     opts.SkipAddons). preflight is left out: it wants a container
//     runtime; show-join-command only prints.
//
// It must run inside RunIsolated (it writes /etc/kubernetes and
// /var/lib). The kubelet is stopped when t ends; on failure the last part
// of each pod's log goes to t's log.
func Init(t testing.TB, opts Options) *Node {
	t.Helper()
	if !Isolated() {
		t.Fatal("kubenode.Init outside RunIsolated would write the host's /etc/kubernetes and /var/lib")
	}
	if err := opts.fill(); err != nil {
		t.Fatal(err)
	}
	n := &Node{Bins: Binaries(t), Opts: opts, t: t}
	t.Cleanup(n.cleanup)
	start := time.Now()

	n.EncryptionKey = make([]byte, 32)
	if _, err := rand.Read(n.EncryptionKey); err != nil {
		t.Fatal(err)
	}
	// /etc/kubernetes as the kubelet package (or kubeadm's first phase)
	// makes it; the encryption config's directory private.
	if err := os.MkdirAll(KubernetesDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(EncryptionConfig), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(EncryptionConfig, []byte(EncryptionConfiguration(opts.EncryptionProvider, n.EncryptionKey)), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := KubeadmConfig(opts)
	if err != nil {
		t.Fatal(err)
	}
	dir := os.Getenv(scratchEnv)
	if dir == "" {
		dir = t.TempDir()
	}
	n.ConfigFile = filepath.Join(dir, "kubeadm.yaml")
	if err := os.WriteFile(n.ConfigFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}

	for _, phase := range []string{"certs all", "kubeconfig all", "etcd local", "control-plane all", "kubelet-start"} {
		n.Phase(t, phase)
	}
	n.StartKubelet(t)
	ctx, cancel := context.WithTimeout(context.Background(), opts.Timeout)
	defer cancel()
	if err := n.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("kubenode: etcd and kube-apiserver ready %s after the first phase", time.Since(start).Round(100*time.Millisecond))
	if err := PlayKubeletStart(ctx, opts.NodeName, opts.AdvertiseAddress, KubeletDir, KubeletConf); err != nil {
		t.Fatal(err)
	}
	phases := []string{"upload-config all", "mark-control-plane", "bootstrap-token", "kubelet-finalize all"}
	if !opts.SkipAddons {
		phases = append(phases, "addon all")
	}
	for _, phase := range phases {
		n.Phase(t, phase)
	}
	t.Logf("kubenode: node %s initialised in %s", opts.NodeName, time.Since(start).Round(100*time.Millisecond))
	return n
}

func (n *Node) cleanup() {
	if n.t.Failed() {
		if k := n.Kubelet(); k != nil {
			for _, p := range k.Pods() {
				n.t.Logf("kubenode: pod %s: running=%v restarts=%d last exit=%q error=%q; last of its log:\n%s",
					p.Name, p.Running, p.Restarts, p.LastExit, p.Error, tail(k.Log(p.Name), 6000))
			}
		}
	}
	n.StopKubelet()
}

// Phase runs `kubeadm init phase <phase> --config ConfigFile` (phase may
// hold several words, "certs all") and fails t unless it succeeds.
func (n *Node) Phase(t testing.TB, phase string, extra ...string) string {
	t.Helper()
	args := append([]string{"init", "phase"}, strings.Fields(phase)...)
	args = append(append(args, "--config", n.ConfigFile), extra...)
	return n.Kubeadm(t, args...)
}

// Kubeadm runs kubeadm with args, logs what it printed (the last 60
// lines) and fails t
// unless it succeeds; it returns the output (stdout and stderr).
func (n *Node) Kubeadm(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	out, err := RunKubeadm(ctx, n.Bins.Kubeadm, args...)
	t.Logf("kubeadm %s (%s):\n%s", strings.Join(args, " "), time.Since(start).Round(10*time.Millisecond), lastLines(out, 60))
	if err != nil {
		t.Fatalf("kubeadm %s: %v", strings.Join(args, " "), err)
	}
	return out
}

// lastLines is the last n lines of s, saying how many it left out.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) <= n {
		return s
	}
	return fmt.Sprintf("[... %d lines ...]\n%s\n", len(lines)-n, strings.Join(lines[len(lines)-n:], "\n"))
}

// RunKubeadm runs the kubeadm binary bin with args and returns its
// combined output.
func RunKubeadm(ctx context.Context, bin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = withoutEnv(os.Environ(), "KUBECONFIG")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Kubectl runs kubectl with --kubeconfig admin.conf and args and fails t
// unless it succeeds; it returns stdout.
func (n *Node) Kubectl(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, errOut, err := Kubectl(ctx, n.Bins.Kubectl, AdminConf, args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s%s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// Apply runs `kubectl apply -f -` with admin.conf, manifest on stdin,
// and fails t unless it succeeds; it returns stdout.
func (n *Node) Apply(t testing.TB, manifest string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, errOut, err := KubectlInput(ctx, n.Bins.Kubectl, AdminConf, strings.NewReader(manifest), "apply", "-f", "-")
	if err != nil {
		t.Fatalf("kubectl apply: %v\n%s%s", err, out, errOut)
	}
	return out
}

// Kubectl runs the kubectl binary bin with --kubeconfig kubeconfig and
// args and returns stdout and stderr apart. Its discovery cache goes to a
// temporary directory, not ~/.kube (the host's home directory).
func Kubectl(ctx context.Context, bin, kubeconfig string, args ...string) (stdout, stderr string, err error) {
	return KubectlInput(ctx, bin, kubeconfig, nil, args...)
}

// KubectlInput is Kubectl with stdin (nil: none).
func KubectlInput(ctx context.Context, bin, kubeconfig string, stdin io.Reader, args ...string) (stdout, stderr string, err error) {
	cache, err := os.MkdirTemp("", "kubectl-cache-")
	if err != nil {
		return "", "", err
	}
	defer os.RemoveAll(cache)
	full := append([]string{"--kubeconfig", kubeconfig, "--cache-dir", cache}, args...)
	cmd := exec.CommandContext(ctx, bin, full...)
	cmd.Env = withoutEnv(os.Environ(), "KUBECONFIG")
	var o, e bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

func withoutEnv(env []string, names ...string) []string {
	var out []string
next:
	for _, kv := range env {
		for _, n := range names {
			if strings.HasPrefix(kv, n+"=") {
				continue next
			}
		}
		out = append(out, kv)
	}
	return out
}

// StartKubelet starts the stand-in kubelet on ManifestsDir (stopping one
// already running), logging its actions to t.
func (n *Node) StartKubelet(t testing.TB) *Kubelet {
	t.Helper()
	n.StopKubelet()
	k, err := StartKubelet(KubeletConfig{ManifestsDir: ManifestsDir, NodeName: n.Opts.NodeName, Commands: n.Bins.Commands(), Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	n.mu.Lock()
	n.kubelet = k
	n.mu.Unlock()
	return k
}

// StopKubelet stops the kubelet and its pods (etcd and the apiserver
// stop; the files stay). A node without a running kubelet is left alone.
func (n *Node) StopKubelet() {
	n.mu.Lock()
	k, c := n.kubelet, n.etcd
	n.kubelet, n.etcd = nil, nil
	n.mu.Unlock()
	if c != nil {
		c.Close()
	}
	if k != nil {
		k.Stop()
	}
}

// Kubelet is the running stand-in kubelet, nil when stopped.
func (n *Node) Kubelet() *Kubelet {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.kubelet
}

// WaitReady waits for etcd (a linearizable read with the healthcheck
// client certificate) and then the apiserver (/readyz with admin.conf).
func (n *Node) WaitReady(ctx context.Context) error {
	if err := WaitEtcd(ctx, EtcdEndpoint, PKIDir); err != nil {
		return n.withLogs(err)
	}
	if err := WaitAPIServer(ctx, AdminConf); err != nil {
		return n.withLogs(err)
	}
	return nil
}

func (n *Node) withLogs(err error) error {
	k := n.Kubelet()
	if k == nil {
		return err
	}
	var b strings.Builder
	b.WriteString(err.Error())
	for _, p := range k.Pods() {
		fmt.Fprintf(&b, "\npod %s: running=%v restarts=%d last exit=%q error=%q; last of its log:\n%s",
			p.Name, p.Running, p.Restarts, p.LastExit, p.Error, tail(k.Log(p.Name), 4000))
	}
	return errors.New(b.String())
}

// EtcdEndpoint is the client URL of the node's etcd on loopback (the
// manifest's first --listen-client-urls).
const EtcdEndpoint = "https://127.0.0.1:2379"

// EtcdTLS is the client TLS of kubeadm's etcd healthcheck client under
// pki (PKIDir): etcd/ca.crt, etcd/healthcheck-client.{crt,key}.
func EtcdTLS(pki string) (*tls.Config, error) {
	info := transport.TLSInfo{
		CertFile:      filepath.Join(pki, "etcd", "healthcheck-client.crt"),
		KeyFile:       filepath.Join(pki, "etcd", "healthcheck-client.key"),
		TrustedCAFile: filepath.Join(pki, "etcd", "ca.crt"),
	}
	return info.ClientConfig()
}

// WaitEtcd waits until etcd at endpoint serves a linearizable read to
// the healthcheck client of pki.
func WaitEtcd(ctx context.Context, endpoint, pki string) error {
	var last error
	for {
		err := func() error {
			tc, err := EtcdTLS(pki)
			if err != nil {
				return err
			}
			c, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, TLS: tc, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
			if err != nil {
				return err
			}
			defer c.Close()
			rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			_, err = c.Get(rctx, "health")
			return err
		}()
		if err == nil {
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("kubenode: etcd at %s not healthy: %w (last: %v)", endpoint, ctx.Err(), last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// WaitAPIServer waits until the apiserver kubeconfig names answers
// /readyz with "ok" to kubeconfig's user.
func WaitAPIServer(ctx context.Context, kubeconfig string) error {
	var last error
	for {
		err := func() error {
			c, err := NewAPIClient(kubeconfig)
			if err != nil {
				return err
			}
			defer c.Close()
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			var body []byte
			if err := c.Do(rctx, "GET", "/readyz", nil, &body); err != nil {
				return err
			}
			if string(bytes.TrimSpace(body)) != "ok" {
				return fmt.Errorf("/readyz: %s", body)
			}
			return nil
		}()
		if err == nil {
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("kubenode: apiserver of %s not ready: %w (last: %v)", kubeconfig, ctx.Err(), last)
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// Etcd is a client of the node's etcd with the healthcheck client
// certificate, closed when the kubelet stops or t ends.
func (n *Node) Etcd(t testing.TB) *clientv3.Client {
	t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.etcd != nil {
		return n.etcd
	}
	tc, err := EtcdTLS(PKIDir)
	if err != nil {
		t.Fatal(err)
	}
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{EtcdEndpoint}, TLS: tc, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	n.etcd = c
	return c
}

// PlayKubeletStart writes what a kubelet 1.34 writes when it first starts
// on a kubeadm control plane, and registers the Node as it does:
//
//   - dir/pki/kubelet-client-<2006-01-02-15-04-05>.pem, the client
//     certificate and key of kubeconf (kubelet.conf, where kubeadm
//     embedded them) in one file, 0600, and kubelet-client-current.pem,
//     a symlink to it (the kubelet's certificate store; it would then ask
//     for a fresh certificate by CSR, which needs a controller manager);
//   - dir/pki/kubelet.crt and kubelet.key, the self-signed serving
//     certificate (client-go's GenerateSelfSignedCertKey for the node
//     name, as the kubelet does without serverTLSBootstrap);
//   - the Node object nodeName with the kubelet's well-known labels and
//     address, created with kubeconf's own identity (system:node:<name>,
//     which the Node authorizer and NodeRestriction allow). No status
//     heartbeats follow: the node stays without a Ready condition.
func PlayKubeletStart(ctx context.Context, nodeName, address, dir, kubeconf string) error {
	data, err := os.ReadFile(kubeconf)
	if err != nil {
		return fmt.Errorf("kubenode: kubelet start: %w", err)
	}
	var cfg clientcmdv1.Config
	if err := yaml.Unmarshal(data, &cfg); err != nil {
		return fmt.Errorf("kubenode: %s: %w", kubeconf, err)
	}
	var certPEM, keyPEM []byte
	for _, c := range cfg.Contexts {
		if c.Name != cfg.CurrentContext {
			continue
		}
		for _, u := range cfg.AuthInfos {
			if u.Name == c.Context.AuthInfo {
				certPEM, keyPEM = u.AuthInfo.ClientCertificateData, u.AuthInfo.ClientKeyData
				if len(certPEM) == 0 && u.AuthInfo.ClientCertificate != "" {
					if certPEM, err = os.ReadFile(u.AuthInfo.ClientCertificate); err != nil {
						return err
					}
					if keyPEM, err = os.ReadFile(u.AuthInfo.ClientKey); err != nil {
						return err
					}
				}
			}
		}
	}
	if len(certPEM) == 0 || len(keyPEM) == 0 {
		return fmt.Errorf("kubenode: %s: no client certificate and key for the current context", kubeconf)
	}
	pki := filepath.Join(dir, "pki")
	if err := os.MkdirAll(pki, 0o755); err != nil {
		return err
	}
	current := filepath.Join(pki, "kubelet-client-current.pem")
	if _, err := os.Lstat(current); errors.Is(err, os.ErrNotExist) {
		pem := filepath.Join(pki, "kubelet-client-"+time.Now().Format("2006-01-02-15-04-05")+".pem")
		data := append(append(bytes.TrimRight(certPEM, "\n"), '\n'), keyPEM...)
		if err := os.WriteFile(pem, data, 0o600); err != nil {
			return err
		}
		if err := os.Symlink(pem, current); err != nil {
			return err
		}
	}
	crt, key := filepath.Join(pki, "kubelet.crt"), filepath.Join(pki, "kubelet.key")
	if _, err := os.Stat(crt); errors.Is(err, os.ErrNotExist) {
		cert, k, err := certutil.GenerateSelfSignedCertKey(nodeName, nil, nil)
		if err != nil {
			return err
		}
		if err := certutil.WriteCert(crt, cert); err != nil {
			return err
		}
		if err := keyutil.WriteKey(key, k); err != nil {
			return err
		}
	}

	c, err := NewAPIClient(kubeconf)
	if err != nil {
		return err
	}
	defer c.Close()
	node := &corev1.Node{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Node"},
		ObjectMeta: metav1.ObjectMeta{
			Name: nodeName,
			Labels: map[string]string{
				"beta.kubernetes.io/arch": runtime.GOARCH,
				"beta.kubernetes.io/os":   "linux",
				"kubernetes.io/arch":      runtime.GOARCH,
				"kubernetes.io/hostname":  nodeName,
				"kubernetes.io/os":        "linux",
			},
			Annotations: map[string]string{"volumes.kubernetes.io/controller-managed-attach-detach": "true"},
		},
	}
	var created corev1.Node
	if err := c.Do(ctx, "POST", "/api/v1/nodes", node, &created); err != nil {
		return fmt.Errorf("kubenode: register node %s as %s: %w", nodeName, c.User, err)
	}
	created.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: address}, {Type: corev1.NodeHostName, Address: nodeName}}
	created.Status.NodeInfo = corev1.NodeSystemInfo{KubeletVersion: KubernetesVersion, OperatingSystem: "linux", Architecture: runtime.GOARCH}
	if err := c.Do(ctx, "PUT", "/api/v1/nodes/"+nodeName+"/status", &created, nil); err != nil {
		return fmt.Errorf("kubenode: node %s status: %w", nodeName, err)
	}
	return nil
}
