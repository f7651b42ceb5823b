package restore

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"gopkg.in/yaml.v3"

	"github.com/kubekeep/kubekeep/backup/versionread"
	"github.com/kubekeep/kubekeep/etcdsnap/snapread"
	"github.com/kubekeep/kubekeep/layout"
	"github.com/kubekeep/kubekeep/rsyncish"
	"github.com/kubekeep/kubekeep/rsyncish/format"
)

// Fuzz targets for what a restore decodes out of a version: its meta
// (layout, etcd info, status), the saved ClusterConfiguration (analysis
// and the config kubeadm init gets), certificates and kubeconfigs. Each
// asserts what the decoding means for the restore, not only that it does
// not panic.

// fuzzStore is a store with one version holding a one-file tree.
func fuzzStore(tb testing.TB) (*rsyncish.Store, string) {
	tb.Helper()
	root := tb.TempDir()
	p := filepath.Join(root, "etc/kubernetes/admin.conf")
	if err := writeFileTB(p, []byte("apiVersion: v1\n")); err != nil {
		tb.Fatal(err)
	}
	s, err := rsyncish.Open(filepath.Join(tb.TempDir(), "store"), rsyncish.Options{AllowSameFilesystem: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		tb.Fatal(err)
	}
	vi := fuzzCommit(tb, s, func(w *rsyncish.VersionWriter) error { return w.AddTree(root, []string{"/etc/kubernetes"}, nil) })
	return s, vi.ID
}

func writeFileTB(p string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	return os.WriteFile(p, data, 0o600)
}

func fuzzCommit(tb testing.TB, s *rsyncish.Store, add func(*rsyncish.VersionWriter) error) rsyncish.VersionInfo {
	tb.Helper()
	unlock, err := s.Lock(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	defer unlock()
	w, err := s.NewVersion(context.Background(), rsyncish.WriteOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	if err := add(w); err != nil {
		w.Abort()
		tb.Fatal(err)
	}
	vi, err := w.Commit()
	if err != nil {
		tb.Fatal(err)
	}
	return vi
}

// FuzzVersionMeta forges a version whose entries and meta come from the
// input (a stored version the second disk could hold, damaged or hostile)
// and loads it as every phase does. The layout and etcd meta are errors
// exactly when they are not the JSON of their type; and the version is
// refused (unsafe) exactly when one of its stored paths is not clean and
// absolute, lies below one of its stored symlinks, one of the etcd paths
// its layout names is not clean and absolute, or the etcd data dir holds a
// stored path: never a version that can write outside the root, never a
// sound one refused.
func FuzzVersionMeta(f *testing.F) {
	s, id := fuzzStore(f)
	lay, _ := json.Marshal(layout.Set{Etcd: layout.Etcd{DataDir: "/var/lib/etcd", Manifest: "/etc/kubernetes/manifests/etcd.yaml", CAFile: "/etc/kubernetes/pki/etcd/ca.crt", Name: "cp1"}})
	info, _ := json.Marshal(snapread.Info{})
	f.Add("d/etc/kubernetes\nf/etc/kubernetes/admin.conf\nl/etc/kubernetes/pki=/elsewhere\nf/etc/kubernetes/pki/ca.crt", lay, info, []byte(`{"state":"ok"}`))
	f.Add("f/../etc/passwd\nf/etc//x\ns/anything", []byte(`{"etcd":{"dataDir":"/etc"}}`), []byte(`null`), []byte(`"x"`))
	f.Add("f/var/lib/etcd/member/snap/db", []byte(`{"etcd":{"dataDir":"/var/lib/etcd/"}}`), []byte(`{}`), []byte(`{}`))
	f.Add("d/", []byte(`{"etcd":{"caFile":"relative/ca.crt","external":true}}`), []byte(`[1]`), []byte(`7`))
	n := 0
	f.Fuzz(func(t *testing.T, entries string, layoutRaw, etcdRaw, statusRaw []byte) {
		if len(entries)+len(layoutRaw)+len(etcdRaw)+len(statusRaw) > 8<<10 {
			return
		}
		var es []format.Entry
		for _, line := range strings.Split(entries, "\n") {
			if line == "" {
				continue
			}
			e := format.Entry{Path: line[1:], Mode: 0o600}
			switch line[0] {
			case 'd':
				e.Type, e.Mode = format.TypeDir, 0o700
			case 'l':
				e.Type = format.TypeSymlink
				e.Path, e.Target, _ = strings.Cut(e.Path, "=")
			case 's':
				e.Type = format.TypeStream
			default:
				e.Type = format.TypeFile
			}
			es = append(es, e)
		}
		n++
		newID := fmt.Sprintf("forged-%d", n)
		meta := map[string]json.RawMessage{}
		for k, raw := range map[string][]byte{versionread.MetaLayout: layoutRaw, versionread.MetaEtcd: etcdRaw, versionread.MetaStatus: statusRaw} {
			if json.Valid(raw) {
				meta[k] = json.RawMessage(raw)
			}
		}
		forgeVersion(t, s, id, newID, func(m *format.Manifest) {
			m.Entries = es
			m.Header.Meta = meta
		})
		src, err := loadSource(s, newID)
		if _, lerr := s.List(newID); lerr != nil {
			// Not a manifest the store takes (an empty path, a bad type):
			// nothing a restore reads.
			if err == nil {
				t.Fatalf("loaded a version the store cannot list: %v", lerr)
			}
			return
		}
		var set layout.Set
		var ei snapread.Info
		layoutErr := meta[versionread.MetaLayout] != nil && json.Unmarshal(meta[versionread.MetaLayout], &set) != nil
		etcdErr := meta[versionread.MetaEtcd] != nil && json.Unmarshal(meta[versionread.MetaEtcd], &ei) != nil
		if (err != nil) != (layoutErr || etcdErr) {
			t.Fatalf("load: %v; layout meta bad %v, etcd meta bad %v", err, layoutErr, etcdErr)
		}
		if err != nil {
			if !strings.Contains(err.Error(), newID) {
				t.Fatalf("error does not name the version: %v", err)
			}
			return
		}
		links := map[string]bool{}
		for _, e := range src.entries {
			if e.Type == "symlink" && rsyncish.SafePath(e.Path) {
				links[e.Path] = true
			}
		}
		var why []string
		for _, e := range src.entries {
			if e.Type == "stream" {
				continue
			}
			if !rsyncish.SafePath(e.Path) {
				why = append(why, "unclean "+e.Path)
				continue
			}
			for d := filepath.Dir(e.Path); d != "/"; d = filepath.Dir(d) {
				if links[d] {
					why = append(why, e.Path+" below the link "+d)
				}
			}
		}
		if src.set != nil {
			et := src.set.Etcd
			for _, p := range []string{et.DataDir, et.Manifest, et.CAFile, et.CertFile, et.KeyFile} {
				if p != "" && !rsyncish.SafePath(p) {
					why = append(why, "etcd path "+p)
				}
			}
			if rsyncish.SafePath(et.DataDir) {
				for _, e := range src.entries {
					if e.Type != "stream" && (e.Path == et.DataDir || strings.HasPrefix(e.Path, et.DataDir+"/")) {
						why = append(why, "data dir holds "+e.Path)
					}
				}
			}
		}
		if (len(why) > 0) != (len(src.unsafe) > 0) || (src.unsafeError() != nil) != (len(src.unsafe) > 0) {
			t.Fatalf("entries %q, layout %s: refused for %q, should be for %q", entries, layoutRaw, src.unsafe, why)
		}
		if dd := src.dataDir(); dd != "" && len(src.unsafe) == 0 && !rsyncish.SafePath(dd) {
			t.Fatalf("data dir %q of a version let through", dd)
		}
	})
}

// FuzzInitConfig: the config kubeadm init gets says what the restore
// means it to: as many YAML documents as were given plus the
// InitConfiguration; the InitConfiguration pins exactly the node name, CRI
// socket and API endpoint given, in the saved ClusterConfiguration's API
// version; and the ClusterConfiguration and every other document read back
// as they were saved. Whatever it refuses, it refuses with an error naming
// the document.
func FuzzInitConfig(f *testing.F) {
	cc := []byte("apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nkubernetesVersion: v1.34.4\nnetworking:\n  serviceSubnet: 10.96.0.0/12\n")
	kubelet := []byte("apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nmaxPods: 42\n")
	f.Add(cc, "cp1", "unix:///run/containerd/containerd.sock", "10.0.0.5", 6443, kubelet)
	f.Add([]byte("kubernetesVersion: v1.31.0\n"), "0123", "", "", 0, []byte("---\nkind: KubeProxyConfiguration\napiVersion: kubeproxy.config.k8s.io/v1alpha1\nmode: ipvs"))
	f.Add([]byte("{apiVersion: kubeadm.k8s.io/v1beta3, kind: ClusterConfiguration}"), "a\"b: c", "x\ny", "::1", 1, []byte("a: 1\n---\nb: 2\n"))
	f.Add([]byte("- not a mapping\n"), "", "", "not-an-ip", -1, []byte(""))
	f.Fuzz(func(t *testing.T, cc []byte, node, cri, addr string, port int, doc []byte) {
		if len(cc)+len(doc) > 16<<10 {
			return
		}
		if !utf8.ValidString(node) || !utf8.ValidString(cri) {
			return // YAML holds no other bytes; names and socket paths are text
		}
		docs := []InitDocument{{From: "the kubelet's KubeletConfiguration", Data: doc}}
		out, err := InitConfig(InitSettings{ClusterConfiguration: cc, NodeName: node, CRISocket: cri, AdvertiseAddress: addr, BindPort: port, Documents: docs})
		if err != nil {
			if !strings.Contains(err.Error(), "saved ClusterConfiguration") && !strings.Contains(err.Error(), docs[0].From) && !strings.Contains(err.Error(), "advertise address") {
				t.Fatalf("error names no document: %v", err)
			}
			return
		}
		var got []map[string]any
		dec := yaml.NewDecoder(bytes.NewReader(out))
		for {
			var m map[string]any
			err := dec.Decode(&m)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("the config does not read back: %v\n%s", err, out)
			}
			got = append(got, m)
		}
		if len(got) != 3 {
			t.Fatalf("%d documents, want 3:\n%s", len(got), out)
		}
		var saved, savedDoc map[string]any
		if yaml.Unmarshal(cc, &saved) != nil || yaml.Unmarshal(bytes.TrimPrefix(doc, []byte("---\n")), &savedDoc) != nil {
			t.Fatalf("accepted documents that do not read as mappings:\n%s\n%s", cc, doc)
		}
		api, _ := saved["apiVersion"].(string)
		if api == "" {
			api = "kubeadm.k8s.io/v1beta4"
		}
		init := got[0]
		if init["kind"] != "InitConfiguration" || init["apiVersion"] != api {
			t.Fatalf("InitConfiguration head %v %v, want %s:\n%s", init["apiVersion"], init["kind"], api, out)
		}
		want := map[string]any{"apiVersion": api, "kind": "InitConfiguration"}
		if addr != "" || port != 0 {
			ep := map[string]any{}
			if addr != "" {
				ep["advertiseAddress"] = addr
			}
			if port != 0 {
				ep["bindPort"] = port
			}
			want["localAPIEndpoint"] = ep
		}
		if node != "" || cri != "" {
			nr := map[string]any{}
			if node != "" {
				nr["name"] = node
			}
			if cri != "" {
				nr["criSocket"] = cri
			}
			want["nodeRegistration"] = nr
		}
		if !sameYAML(init, want) {
			t.Fatalf("InitConfiguration %v, want %v:\n%s", init, want, out)
		}
		wantCC := map[string]any{"apiVersion": api, "kind": "ClusterConfiguration"}
		for k, v := range saved {
			wantCC[k] = v
		}
		if !sameYAML(got[1], wantCC) || !sameYAML(got[2], savedDoc) {
			t.Fatalf("saved documents changed:\n%s\n---\n%s\nbecame\n%s", cc, doc, out)
		}
	})
}

func sameYAML(a, b any) bool {
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && bytes.Equal(ja, jb)
}

// FuzzAnalyzeClusterConfig: the restore's reading of the saved
// ClusterConfiguration (a version holding it as its stream): an error when
// it is not YAML of that shape; otherwise the Kubernetes version as saved,
// and a control-plane endpoint that is never an IP this host lacks (that
// one is reported as the old VM's, foreign, instead).
func FuzzAnalyzeClusterConfig(f *testing.F) {
	s, _ := fuzzStore(f)
	f.Add([]byte("kind: ClusterConfiguration\nkubernetesVersion: v1.34.4\ncontrolPlaneEndpoint: 10.0.0.5:6443\n"))
	f.Add([]byte("controlPlaneEndpoint: 192.168.9.9:6443\nnetworking:\n  serviceSubnet: 10.96.0.0/12,fd00::/108\n"))
	f.Add([]byte("controlPlaneEndpoint: cp.example.com\n"))
	f.Add([]byte("controlPlaneEndpoint: [::1]:6443\n"))
	f.Add([]byte("controlPlaneEndpoint: {a: b}\n"))
	host := hostIdentity{Hostname: "cp1", IPs: []net.IP{net.ParseIP("10.0.0.5"), net.ParseIP("fd00::5")}}
	f.Fuzz(func(t *testing.T, cc []byte) {
		if len(cc) > 16<<10 {
			return
		}
		vi := fuzzCommit(t, s, func(w *rsyncish.VersionWriter) error {
			_, err := w.AddStream(versionread.ClusterConfigurationStream, bytes.NewReader(cc))
			return err
		})
		src, err := loadSource(s, vi.ID)
		if err != nil {
			t.Fatal(err)
		}
		r := &runner{src: src, opts: Options{Store: s}, host: host, now: time.Unix(1_800_000_000, 0)}
		a, err := r.analyze()
		if err != nil {
			t.Fatal(err)
		}
		var c struct {
			KubernetesVersion    string `yaml:"kubernetesVersion"`
			ControlPlaneEndpoint string `yaml:"controlPlaneEndpoint"`
		}
		if yerr := yaml.Unmarshal(cc, &c); yerr != nil {
			if a.clusterConfigErr == nil {
				t.Fatalf("%q does not read (%v), analysis took it", cc, yerr)
			}
			return
		}
		if a.clusterConfigErr != nil && !strings.Contains(a.clusterConfigErr.Error(), "ClusterConfiguration") {
			t.Fatalf("error names no document: %v", a.clusterConfigErr)
		}
		if a.clusterConfigErr == nil && a.kubernetesVersion != c.KubernetesVersion {
			t.Fatalf("kubernetesVersion %q read as %q", c.KubernetesVersion, a.kubernetesVersion)
		}
		if ip := net.ParseIP(a.endpointHost); ip != nil && !host.hasIP(ip) {
			t.Fatalf("endpoint %q taken as this host's", a.endpointHost)
		}
		if ip := net.ParseIP(a.foreignEndpoint); a.foreignEndpoint != "" && (ip == nil || host.hasIP(ip)) {
			t.Fatalf("foreign endpoint %q", a.foreignEndpoint)
		}
		if a.endpointPort != "" && a.endpointHost == "" {
			t.Fatalf("endpoint port %q without a host", a.endpointPort)
		}
	})
}

// fuzzCerts makes a CA, a serving leaf signed by it with IP SANs (one of
// the host's, one foreign, loopback, a service IP) and an expired client
// leaf; DER each.
func fuzzCerts(tb testing.TB) (ca, serving, expired []byte) {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	caT := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kubernetes"}, NotBefore: now.Add(-time.Hour),
		NotAfter: now.Add(10 * 365 * 24 * time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	mk := func(t, parent *x509.Certificate) []byte {
		der, err := x509.CreateCertificate(rand.Reader, t, parent, &key.PublicKey, key)
		if err != nil {
			tb.Fatal(err)
		}
		return der
	}
	ca = mk(caT, caT)
	serving = mk(&x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "kube-apiserver"}, NotBefore: now.Add(-time.Hour),
		NotAfter: now.Add(20 * 24 * time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("10.0.0.9"), net.ParseIP("127.0.0.1"), net.ParseIP("10.96.0.1")}, DNSNames: []string{"cp1"}}, caT)
	expired = mk(&x509.Certificate{SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "system:node:cp1"}, NotBefore: now.Add(-48 * time.Hour),
		NotAfter: now.Add(-24 * time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, caT)
	return ca, serving, expired
}

func pemOf(der []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}) }

// FuzzCheckCert judges arbitrary certificate bytes (DER, put in PEM after
// a key block, as a .crt may hold). What it may do to a version is move a
// certificate aside for kubeadm to re-sign: only a kubeadm leaf (never a
// CA, whose key nothing can replace, never the kubelet's), only when it is
// expired or none of its IP SANs is this host's; a sound one stays.
func FuzzCheckCert(f *testing.F) {
	ca, serving, expired := fuzzCerts(f)
	for _, der := range [][]byte{ca, serving, expired} {
		f.Add(der, uint8(5), int64(0), false)
		f.Add(der, uint8(9), int64(30*24*3600), true)
	}
	f.Add([]byte{0x30, 0x03, 0x02, 0x01, 0x01}, uint8(0), int64(-1<<40), false)
	service := []*net.IPNet{{IP: net.ParseIP("10.96.0.0"), Mask: net.CIDRMask(12, 32)}}
	f.Fuzz(func(t *testing.T, der []byte, hostIP uint8, shift int64, kubelet bool) {
		if len(der) > 16<<10 {
			return
		}
		host := hostIdentity{Hostname: "cp1", IPs: []net.IP{net.IPv4(10, 0, 0, hostIP)}}
		now := time.Unix(1_800_000_000+shift%(1<<40), 0)
		p := "/etc/kubernetes/pki/apiserver.crt"
		if kubelet {
			p = "/var/lib/kubelet/pki/kubelet.crt"
		}
		data := append(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: []byte("k")}), pemOf(der)...)
		c, ok := checkCert(p, data, host, service, now)
		if !ok || c.Path != p {
			t.Fatalf("a CERTIFICATE block not judged: %+v %v", c, ok)
		}
		if _, ok := checkCert(p, []byte("no pem here"), host, service, now); ok {
			t.Fatal("judged a file with no certificate")
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			if c.Remove || !strings.HasPrefix(c.Reason, "unparseable certificate") {
				t.Fatalf("unparseable: %+v", c)
			}
			return
		}
		if c.Expired != now.After(cert.NotAfter) || c.CA != cert.IsCA {
			t.Fatalf("not after %v, now %v, CA %v: %+v", cert.NotAfter, now, cert.IsCA, c)
		}
		if c.Remove && (c.CA || kubelet || !(c.Expired || c.SANMismatch)) {
			t.Fatalf("moves aside %s: %+v", p, c)
		}
		fits := false
		for _, ip := range cert.IPAddresses {
			fits = fits || host.hasIP(ip) && !ip.IsLoopback()
		}
		if c.SANMismatch && fits {
			t.Fatalf("one of its IP SANs is this host's, yet: %+v", c)
		}
		if !c.Expired && (fits || len(cert.IPAddresses) == 0) && c.Remove {
			t.Fatalf("a sound certificate moved aside: %+v", c)
		}
	})
}

// FuzzCheckKubeconfig judges arbitrary kubeconfig YAML. A kubeconfig is
// kept (not stale) only when its current context's cluster names a server
// this host answers as (its name, one of its IPs, localhost, or the
// control-plane endpoint) and its client certificate, when embedded, has
// not expired: kubeadm init keeps a stale one with a warning, and the
// control plane then talks to the old VM or fails to authenticate.
func FuzzCheckKubeconfig(f *testing.F) {
	_, _, expired := fuzzCerts(f)
	kc := func(server string, cert []byte) []byte {
		return fmt.Appendf(nil, "apiVersion: v1\nkind: Config\nclusters:\n- name: k\n  cluster:\n    server: %s\ncontexts:\n- name: c\n  context:\n    cluster: k\n    user: u\ncurrent-context: c\nusers:\n- name: u\n  user:\n    client-certificate-data: %q\n", server, cert)
	}
	f.Add(kc("https://10.0.0.5:6443", nil), "")
	f.Add(kc("https://10.0.0.9:6443", nil), "")
	f.Add(kc("https://cp.example.com:6443", nil), "cp.example.com")
	f.Add(kc("https://localhost:6443", pemOf(expired)), "")
	f.Add([]byte("clusters: 7"), "x")
	host := hostIdentity{Hostname: "cp1", IPs: []net.IP{net.ParseIP("10.0.0.5")}}
	now := time.Unix(1_800_000_000, 0)
	f.Fuzz(func(t *testing.T, data []byte, endpoint string) {
		if len(data) > 16<<10 {
			return
		}
		k := checkKubeconfig("/etc/kubernetes/admin.conf", data, host, endpoint, now)
		if k.Stale {
			if k.Reason == "" {
				t.Fatal("stale without a reason")
			}
			return
		}
		u, err := url.Parse(k.Server)
		if err != nil {
			t.Fatalf("kept, with a server %q that is no URL: %v", k.Server, err)
		}
		h := u.Hostname()
		ip := net.ParseIP(h)
		if h == "" || !(strings.EqualFold(h, endpoint) || strings.EqualFold(h, host.Hostname) || h == "localhost" || ip != nil && host.hasIP(ip)) {
			t.Fatalf("kept, with server %q (endpoint %q):\n%s", k.Server, endpoint, data)
		}
	})
}
