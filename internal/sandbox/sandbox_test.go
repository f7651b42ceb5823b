package sandbox

import (
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	clientcmdv1 "k8s.io/client-go/tools/clientcmd/api/v1"
	"sigs.k8s.io/yaml"
)

func build(t *testing.T, opts Options) *Root {
	t.Helper()
	r, err := Build(t.TempDir(), opts)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func readCert(t *testing.T, r *Root, hostPath string) *x509.Certificate {
	t.Helper()
	c, err := r.readCert(hostPath)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func readPod(t *testing.T, r *Root, name string) *corev1.Pod {
	t.Helper()
	data, err := os.ReadFile(r.Path(ManifestsDir + "/" + name + ".yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var pod corev1.Pod
	if err := yaml.UnmarshalStrict(data, &pod); err != nil {
		t.Fatalf("%s.yaml: %v", name, err)
	}
	return &pod
}

func TestBuildLayoutAndModes(t *testing.T) {
	r := build(t, Options{})
	if r.Opts != (Options{KubernetesVersion: "v1.31.1", NodeName: "master-1", AdvertiseAddress: "127.0.0.1",
		EtcdClientPort: 2379, EtcdPeerPort: 2380, EtcdDataDir: "/var/lib/etcd"}) {
		t.Fatalf("defaults: %+v", r.Opts)
	}
	want := map[string]os.FileMode{
		"/etc/kubernetes/pki/ca.crt":                             0o644,
		"/etc/kubernetes/pki/ca.key":                             0o600,
		"/etc/kubernetes/pki/apiserver.crt":                      0o644,
		"/etc/kubernetes/pki/apiserver.key":                      0o600,
		"/etc/kubernetes/pki/apiserver-kubelet-client.key":       0o600,
		"/etc/kubernetes/pki/apiserver-etcd-client.key":          0o600,
		"/etc/kubernetes/pki/front-proxy-ca.key":                 0o600,
		"/etc/kubernetes/pki/front-proxy-client.crt":             0o644,
		"/etc/kubernetes/pki/sa.key":                             0o600,
		"/etc/kubernetes/pki/sa.pub":                             0o644,
		"/etc/kubernetes/pki/etcd/ca.key":                        0o600,
		"/etc/kubernetes/pki/etcd/server.crt":                    0o644,
		"/etc/kubernetes/pki/etcd/peer.key":                      0o600,
		"/etc/kubernetes/pki/etcd/healthcheck-client.crt":        0o644,
		"/etc/kubernetes/admin.conf":                             0o600,
		"/etc/kubernetes/super-admin.conf":                       0o600,
		"/etc/kubernetes/kubelet.conf":                           0o600,
		"/etc/kubernetes/controller-manager.conf":                0o600,
		"/etc/kubernetes/scheduler.conf":                         0o600,
		"/etc/kubernetes/manifests/etcd.yaml":                    0o600,
		"/etc/kubernetes/manifests/kube-apiserver.yaml":          0o600,
		"/etc/kubernetes/manifests/kube-controller-manager.yaml": 0o600,
		"/etc/kubernetes/manifests/kube-scheduler.yaml":          0o600,
		"/var/lib/kubelet/config.yaml":                           0o644,
		"/var/lib/kubelet/kubeadm-flags.env":                     0o644,
		"/var/lib/kubelet/pki/kubelet.key":                       0o600,
		"/etc/kubernetes/manifests":                              os.ModeDir | 0o700,
		"/etc/kubernetes/pki":                                    os.ModeDir | 0o755,
		"/var/lib/etcd":                                          os.ModeDir | 0o700,
		"/var/lib/kubelet":                                       os.ModeDir | 0o700,
		"/etc/ssl/certs":                                         os.ModeDir | 0o755,
		"/usr/libexec/kubernetes/kubelet-plugins/volume/exec":    os.ModeDir | 0o755,
	}
	for p, mode := range want {
		st, err := os.Lstat(r.Path(p))
		if err != nil {
			t.Errorf("%s: %v", p, err)
			continue
		}
		if st.Mode() != mode {
			t.Errorf("%s: mode %v, want %v", p, st.Mode(), mode)
		}
	}
	if ents, err := os.ReadDir(r.Path(r.EtcdDataDir)); err != nil || len(ents) != 0 {
		t.Errorf("etcd data dir: %v entries, err %v; want empty", len(ents), err)
	}
	target, err := os.Readlink(r.Path(kubeletClientCurrent))
	if err != nil || !strings.HasPrefix(target, "kubelet-client-2") {
		t.Fatalf("kubelet-client-current.pem -> %q, %v", target, err)
	}
	if _, err := os.Stat(r.Path(kubeletClientCurrent)); err != nil {
		t.Errorf("symlink target under root: %v", err)
	}
}

func TestPKIChainsAndSANs(t *testing.T) {
	r := build(t, Options{NodeName: "cp-a", AdvertiseAddress: "10.0.0.5"})
	pools := map[string]*x509.CertPool{}
	for _, ca := range []string{clusterCA, etcdCA, frontProxyCA} {
		p := x509.NewCertPool()
		p.AddCert(readCert(t, r, ca+".crt"))
		pools[ca] = p
	}
	for _, s := range r.leafSpecs() {
		c := readCert(t, r, s.base+".crt")
		if _, err := c.Verify(x509.VerifyOptions{Roots: pools[s.ca], KeyUsages: s.usages}); err != nil {
			t.Errorf("%s does not verify against %s: %v", s.base, s.ca, err)
		}
		if _, err := tls.LoadX509KeyPair(r.Path(s.base+".crt"), r.Path(s.base+".key")); err != nil {
			t.Errorf("%s: key does not match cert: %v", s.base, err)
		}
	}
	srv := readCert(t, r, r.EtcdServerCert)
	if !slices.Equal(srv.DNSNames, []string{"localhost", "cp-a"}) {
		t.Errorf("etcd server DNS SANs %v", srv.DNSNames)
	}
	var ips []string
	for _, ip := range srv.IPAddresses {
		ips = append(ips, ip.String())
	}
	if !slices.Equal(ips, []string{"10.0.0.5", "127.0.0.1", "::1"}) {
		t.Errorf("etcd server IP SANs %v", ips)
	}
	for _, host := range []string{"localhost", "127.0.0.1", "::1", "cp-a", "10.0.0.5"} {
		if err := srv.VerifyHostname(host); err != nil {
			t.Errorf("etcd server cert: %v", err)
		}
	}

	data, err := os.ReadFile(r.Path(PKIDir + "/sa.key"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(data)
	if b == nil || b.Type != "RSA PRIVATE KEY" {
		t.Fatalf("sa.key is not an RSA PEM key")
	}
	saKey, err := x509.ParsePKCS1PrivateKey(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	data, err = os.ReadFile(r.Path(PKIDir + "/sa.pub"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ = pem.Decode(data)
	pub, err := x509.ParsePKIXPublicKey(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !saKey.PublicKey.Equal(pub.(*rsa.PublicKey)) {
		t.Error("sa.pub is not the public half of sa.key")
	}
}

// TestEtcdMutualTLS proves the etcd material works for what etcd does with
// it: serve with server.crt, demand a client cert from the etcd CA, and
// accept the healthcheck client and the apiserver's etcd client.
func TestEtcdMutualTLS(t *testing.T) {
	r := build(t, Options{})
	caPool := x509.NewCertPool()
	caPool.AddCert(readCert(t, r, r.EtcdCAFile))
	serverPair, err := tls.LoadX509KeyPair(r.Path(r.EtcdServerCert), r.Path(r.EtcdServerKey))
	if err != nil {
		t.Fatal(err)
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{serverPair}, ClientCAs: caPool, ClientAuth: tls.RequireAndVerifyClientCert,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(c, "ok")
			c.Close()
		}
	}()
	clients := [][2]string{
		{r.EtcdClientCert, r.EtcdClientKey},
		{PKIDir + "/apiserver-etcd-client.crt", PKIDir + "/apiserver-etcd-client.key"},
	}
	for _, cc := range clients {
		pair, err := tls.LoadX509KeyPair(r.Path(cc[0]), r.Path(cc[1]))
		if err != nil {
			t.Fatal(err)
		}
		conn, err := tls.Dial("tcp", l.Addr().String(), &tls.Config{
			RootCAs: caPool, Certificates: []tls.Certificate{pair}, ServerName: "127.0.0.1",
		})
		if err != nil {
			t.Fatalf("%s: %v", cc[0], err)
		}
		got, err := io.ReadAll(conn)
		conn.Close()
		if err != nil || string(got) != "ok" {
			t.Fatalf("%s: read %q, %v", cc[0], got, err)
		}
	}
	// A cert from another CA must be refused, or the test proves nothing.
	pair, err := tls.LoadX509KeyPair(r.Path(PKIDir+"/front-proxy-client.crt"), r.Path(PKIDir+"/front-proxy-client.key"))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", l.Addr().String(), &tls.Config{RootCAs: caPool, Certificates: []tls.Certificate{pair}, ServerName: "127.0.0.1"})
	if err == nil {
		_, err = io.ReadAll(conn)
		conn.Close()
	}
	if err == nil {
		t.Fatal("etcd server accepted a client cert from the front-proxy CA")
	}
}

func TestKubeconfigs(t *testing.T) {
	r := build(t, Options{AdvertiseAddress: "fd00::10"})
	pool := x509.NewCertPool()
	pool.AddCert(readCert(t, r, clusterCA+".crt"))
	for file, cn := range map[string]string{
		"admin.conf": "kubernetes-admin", "super-admin.conf": "kubernetes-super-admin",
		"controller-manager.conf": "system:kube-controller-manager", "scheduler.conf": "system:kube-scheduler",
	} {
		cfg := loadKubeconfig(t, r, file)
		if cfg.CurrentContext != cfg.Contexts[0].Name || cfg.Contexts[0].Context.AuthInfo != cfg.AuthInfos[0].Name {
			t.Fatalf("%s: current context does not lead to the user", file)
		}
		if got := cfg.Clusters[0].Cluster.Server; got != "https://[fd00::10]:6443" {
			t.Errorf("%s: server %q", file, got)
		}
		auth := cfg.AuthInfos[0].AuthInfo
		b, _ := pem.Decode(auth.ClientCertificateData)
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if c.Subject.CommonName != cn {
			t.Errorf("%s: CN %q, want %q", file, c.Subject.CommonName, cn)
		}
		if _, err := c.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: clientAuth}); err != nil {
			t.Errorf("%s: %v", file, err)
		}
		if _, err := tls.X509KeyPair(auth.ClientCertificateData, auth.ClientKeyData); err != nil {
			t.Errorf("%s: %v", file, err)
		}
	}
	cfg := loadKubeconfig(t, r, "kubelet.conf")
	if u := cfg.AuthInfos[0]; u.Name != "system:node:master-1" || u.AuthInfo.ClientCertificate != kubeletClientCurrent {
		t.Fatalf("kubelet.conf user: %+v", u)
	}
	if _, err := tls.LoadX509KeyPair(r.Path(kubeletClientCurrent), r.Path(kubeletClientCurrent)); err != nil {
		t.Errorf("kubelet client pem: %v", err)
	}
}

func loadKubeconfig(t *testing.T, r *Root, file string) *clientcmdv1.Config {
	t.Helper()
	data, err := os.ReadFile(r.Path(KubernetesDir + "/" + file))
	if err != nil {
		t.Fatal(err)
	}
	var cfg clientcmdv1.Config
	if err := yaml.UnmarshalStrict(data, &cfg); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	if cfg.Kind != "Config" || len(cfg.Clusters) != 1 || len(cfg.Contexts) != 1 || len(cfg.AuthInfos) != 1 {
		t.Fatalf("%s: not a one-cluster kubeconfig: %+v", file, cfg)
	}
	return &cfg
}

func TestEtcdManifestUsesOptions(t *testing.T) {
	r := build(t, Options{EtcdClientPort: 32379, EtcdPeerPort: 32380, EtcdDataDir: "/data/etcd", NodeName: "n1", AdvertiseAddress: "192.168.1.10"})
	pod := readPod(t, r, "etcd")
	got := pod.Spec.Containers[0].Command
	for _, f := range []string{
		"--listen-client-urls=https://127.0.0.1:32379,https://192.168.1.10:32379",
		"--advertise-client-urls=https://192.168.1.10:32379",
		"--listen-peer-urls=https://192.168.1.10:32380",
		"--initial-advertise-peer-urls=https://192.168.1.10:32380",
		"--initial-cluster=n1=https://192.168.1.10:32380",
		"--data-dir=/data/etcd",
		"--name=n1",
		"--trusted-ca-file=/etc/kubernetes/pki/etcd/ca.crt",
		"--experimental-watch-progress-notify-interval=5s",
	} {
		if !slices.Contains(got, f) {
			t.Errorf("etcd command lacks %s:\n%s", f, strings.Join(got, "\n"))
		}
	}
	if !slices.IsSorted(got[1:]) {
		t.Error("flags are not sorted as kubeadm sorts them")
	}
	if p := pod.Spec.Containers[0].ReadinessProbe; p == nil || p.HTTPGet.Path != "/readyz" {
		t.Errorf("v1.31 etcd readiness probe: %+v", p)
	}
	if st, err := os.Stat(r.Path("/data/etcd")); err != nil || !st.IsDir() {
		t.Errorf("custom data dir: %v", err)
	}
	api := readPod(t, r, "kube-apiserver")
	if !slices.Contains(api.Spec.Containers[0].Command, "--etcd-servers=https://127.0.0.1:32379") {
		t.Errorf("apiserver does not point at the etcd client port")
	}
	if r.EtcdClientURL() != "https://127.0.0.1:32379" || r.EtcdPeerURL() != "https://192.168.1.10:32380" {
		t.Errorf("urls %s %s", r.EtcdClientURL(), r.EtcdPeerURL())
	}
}

func TestLoopbackAdvertiseIsNotListedTwice(t *testing.T) {
	r := build(t, Options{})
	cmd := readPod(t, r, "etcd").Spec.Containers[0].Command
	if !slices.Contains(cmd, "--listen-client-urls=https://127.0.0.1:2379") {
		t.Errorf("listen-client-urls: %v", cmd)
	}
}

func TestIPv6(t *testing.T) {
	r := build(t, Options{AdvertiseAddress: "fd00::10"})
	etcd := readPod(t, r, "etcd")
	cmd := etcd.Spec.Containers[0].Command
	for _, f := range []string{
		"--listen-client-urls=https://[::1]:2379,https://[fd00::10]:2379",
		"--listen-metrics-urls=http://[::1]:2381",
		"--initial-cluster=master-1=https://[fd00::10]:2380",
	} {
		if !slices.Contains(cmd, f) {
			t.Errorf("etcd command lacks %s", f)
		}
	}
	if h := etcd.Spec.Containers[0].LivenessProbe.HTTPGet.Host; h != "::1" {
		t.Errorf("etcd probe host %q", h)
	}
	api := readPod(t, r, "kube-apiserver")
	if a := api.Annotations["kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint"]; a != "[fd00::10]:6443" {
		t.Errorf("apiserver endpoint annotation %q", a)
	}
}

func TestVersionDifferences(t *testing.T) {
	old := build(t, Options{KubernetesVersion: "v1.25.16"})
	etcd := readPod(t, old, "etcd")
	c := etcd.Spec.Containers[0]
	if c.Image != "registry.k8s.io/etcd:3.5.4-0" || c.ReadinessProbe != nil ||
		c.LivenessProbe.HTTPGet.Path != "/health?exclude=NOSPACE&serializable=true" {
		t.Errorf("v1.25 etcd: image %s readiness %v liveness %s", c.Image, c.ReadinessProbe, c.LivenessProbe.HTTPGet.Path)
	}
	if _, err := os.Stat(old.Path(KubernetesDir + "/super-admin.conf")); err == nil {
		t.Error("v1.25 has no super-admin.conf")
	}
	flags, err := os.ReadFile(old.Path(KubeletDir + "/kubeadm-flags.env"))
	if err != nil || !strings.Contains(string(flags), "--container-runtime=remote") || !strings.Contains(string(flags), "pause:3.8") {
		t.Errorf("v1.25 kubeadm-flags.env: %s %v", flags, err)
	}
	r34 := build(t, Options{KubernetesVersion: "v1.34.0"})
	c34 := readPod(t, r34, "etcd").Spec.Containers[0]
	if c34.Image != "registry.k8s.io/etcd:3.6.4-0" || !slices.Contains(c34.Command, "--feature-gates=InitialCorruptCheck=true") {
		t.Errorf("v1.34 etcd: %s %v", c34.Image, c34.Command)
	}
}

// TestCRISocketMovesIn134: kubeadm 1.34 (NodeLocalCRISocket on by default)
// writes the CRI socket to instance-config.yaml, and patches it into
// config.yaml, instead of passing --container-runtime-endpoint in
// kubeadm-flags.env; earlier releases do the opposite.
func TestCRISocketMovesIn134(t *testing.T) {
	const sock = "unix:///var/run/containerd/containerd.sock"
	for _, tc := range []struct {
		version  string
		instance bool
	}{{"v1.31.1", false}, {"v1.33.5", false}, {"v1.34.0", true}} {
		r := build(t, Options{KubernetesVersion: tc.version})
		flags, err := os.ReadFile(r.Path(KubeletDir + "/kubeadm-flags.env"))
		if err != nil {
			t.Fatal(err)
		}
		config, err := os.ReadFile(r.Path(KubeletDir + "/config.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		var kc struct {
			ContainerRuntimeEndpoint string `json:"containerRuntimeEndpoint"`
		}
		if err := yaml.Unmarshal(config, &kc); err != nil {
			t.Fatal(err)
		}
		instance, err := os.ReadFile(r.Path(KubeletDir + "/instance-config.yaml"))
		if !tc.instance {
			if err == nil {
				t.Errorf("%s: instance-config.yaml exists; kubeadm writes it from 1.34", tc.version)
			}
			if !strings.Contains(string(flags), "--container-runtime-endpoint="+sock) || kc.ContainerRuntimeEndpoint != "" {
				t.Errorf("%s: the socket belongs in kubeadm-flags.env: %s; config.yaml has %q", tc.version, flags, kc.ContainerRuntimeEndpoint)
			}
			continue
		}
		if err != nil || string(instance) != `containerRuntimeEndpoint: "`+sock+`"`+"\n" {
			t.Errorf("%s: instance-config.yaml %q, %v", tc.version, instance, err)
		}
		if st, err := os.Stat(r.Path(KubeletDir + "/instance-config.yaml")); err != nil {
			t.Errorf("%s: %v", tc.version, err)
		} else if st.Mode() != 0o644 {
			t.Errorf("%s: instance-config.yaml mode %v, want 0644", tc.version, st.Mode())
		}
		if strings.Contains(string(flags), "container-runtime-endpoint") || string(flags) != `KUBELET_KUBEADM_ARGS="--pod-infra-container-image=registry.k8s.io/pause:3.10.1"`+"\n" {
			t.Errorf("%s: kubeadm-flags.env %q", tc.version, flags)
		}
		if kc.ContainerRuntimeEndpoint != sock {
			t.Errorf("%s: config.yaml containerRuntimeEndpoint %q, want the instance config's %s", tc.version, kc.ContainerRuntimeEndpoint, sock)
		}
	}
}

func TestRenewCert(t *testing.T) {
	r := build(t, Options{})
	for _, p := range []string{PKIDir + "/apiserver.crt", r.EtcdServerCert, PKIDir + "/front-proxy-client.crt"} {
		before := readCert(t, r, p)
		if err := r.RenewCert(p); err != nil {
			t.Fatal(err)
		}
		after := readCert(t, r, p)
		if after.SerialNumber.Cmp(before.SerialNumber) == 0 {
			t.Errorf("%s: serial unchanged", p)
		}
		if after.Subject.String() != before.Subject.String() || !slices.Equal(after.DNSNames, before.DNSNames) ||
			len(after.IPAddresses) != len(before.IPAddresses) || !slices.Equal(after.ExtKeyUsage, before.ExtKeyUsage) {
			t.Errorf("%s: identity changed", p)
		}
		if after.CheckSignatureFrom(mustIssuer(t, r, before)) != nil {
			t.Errorf("%s: renewed cert not signed by its CA", p)
		}
		key := strings.TrimSuffix(p, ".crt") + ".key"
		if _, err := tls.LoadX509KeyPair(r.Path(p), r.Path(key)); err != nil {
			t.Errorf("%s: %v", p, err)
		}
		if st, err := os.Stat(r.Path(key)); err != nil || st.Mode() != 0o600 {
			t.Errorf("%s: key mode %v %v", key, st.Mode(), err)
		}
	}
	if err := r.RenewCert(PKIDir + "/ca.crt"); err == nil {
		t.Error("renewing a CA must fail")
	}
	if err := r.RenewCert(PKIDir + "/sa.pub"); err == nil {
		t.Error("renewing a non-.crt must fail")
	}
}

func mustIssuer(t *testing.T, r *Root, c *x509.Certificate) *x509.Certificate {
	for _, ca := range []string{clusterCA, etcdCA, frontProxyCA} {
		cc := readCert(t, r, ca+".crt")
		if c.CheckSignatureFrom(cc) == nil {
			return cc
		}
	}
	t.Fatal("no issuer")
	return nil
}

func TestBadOptions(t *testing.T) {
	for _, o := range []Options{
		{KubernetesVersion: "1.x"}, {KubernetesVersion: "v1.20.0"}, {AdvertiseAddress: "master"}, {EtcdDataDir: "var/lib/etcd"},
	} {
		if _, err := Build(t.TempDir(), o); err == nil {
			t.Errorf("%+v: want error", o)
		}
	}
}

func TestFreePort(t *testing.T) {
	p, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
	if err != nil {
		t.Fatalf("port %d not free: %v", p, err)
	}
	l.Close()
}

// TestFreePortsAreDistinctAndBelowTheEphemeralRange: the ports handed out
// are never the same twice and lie where the kernel picks no port itself
// (so no outgoing connection can take one before its listener starts).
func TestFreePortsAreDistinctAndBelowTheEphemeralRange(t *testing.T) {
	low := ephemeralLow()
	if low <= freePortMin {
		t.Skipf("ephemeral range starts at %d: FreePort falls back to :0", low)
	}
	seen := map[int]bool{}
	for range 200 {
		p, err := FreePort()
		if err != nil {
			t.Fatal(err)
		}
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
		if p < freePortMin || p >= low {
			t.Fatalf("port %d outside [%d, %d)", p, freePortMin, low)
		}
	}
}
