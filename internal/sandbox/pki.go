package sandbox

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"strings"
	"time"
)

// Validity periods kubeadm uses: CAs for ten years, everything it signs for
// one.
const (
	caValidity   = 10 * 365 * 24 * time.Hour
	leafValidity = 365 * 24 * time.Hour
)

// The three CAs of a kubeadm cluster, as host paths without extension.
const (
	clusterCA    = PKIDir + "/ca"
	etcdCA       = PKIDir + "/etcd/ca"
	frontProxyCA = PKIDir + "/front-proxy-ca"
)

type keyPair struct {
	cert *x509.Certificate
	key  crypto.Signer
}

type leafSpec struct {
	base   string // host path without .crt/.key
	ca     string
	cn     string
	orgs   []string
	dns    []string
	ips    []net.IP
	usages []x509.ExtKeyUsage
}

var (
	serverAuth = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	clientAuth = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	bothAuth   = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
)

// clusterAdminsGroup is the group admin credentials carry: kubeadm 1.29
// moved them out of system:masters into a group RBAC can revoke.
func (r *Root) clusterAdminsGroup() string {
	if r.minor() >= 29 {
		return "kubeadm:cluster-admins"
	}
	return "system:masters"
}

func (r *Root) leafSpecs() []leafSpec {
	adv := net.ParseIP(r.Opts.AdvertiseAddress)
	node := r.Opts.NodeName
	etcdIPs := uniqueIPs(adv, net.ParseIP("127.0.0.1"), net.IPv6loopback)
	return []leafSpec{
		{base: PKIDir + "/apiserver", ca: clusterCA, cn: "kube-apiserver",
			dns: []string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", node},
			ips: uniqueIPs(net.ParseIP("10.96.0.1"), adv), usages: serverAuth},
		{base: PKIDir + "/apiserver-kubelet-client", ca: clusterCA, cn: "kube-apiserver-kubelet-client",
			orgs: []string{r.clusterAdminsGroup()}, usages: clientAuth},
		{base: PKIDir + "/apiserver-etcd-client", ca: etcdCA, cn: "kube-apiserver-etcd-client", usages: clientAuth},
		{base: PKIDir + "/front-proxy-client", ca: frontProxyCA, cn: "front-proxy-client", usages: clientAuth},
		{base: PKIDir + "/etcd/server", ca: etcdCA, cn: node, dns: []string{"localhost", node}, ips: etcdIPs, usages: bothAuth},
		{base: PKIDir + "/etcd/peer", ca: etcdCA, cn: node, dns: []string{"localhost", node}, ips: etcdIPs, usages: bothAuth},
		{base: PKIDir + "/etcd/healthcheck-client", ca: etcdCA, cn: "kube-etcd-healthcheck-client", usages: clientAuth},
	}
}

func uniqueIPs(ips ...net.IP) []net.IP {
	var out []net.IP
	for _, ip := range ips {
		dup := false
		for _, o := range out {
			dup = dup || o.Equal(ip)
		}
		if !dup {
			out = append(out, ip)
		}
	}
	return out
}

// writePKI writes the CAs, the leaf certs signed by them and the
// service-account key pair, with kubeadm's file names and modes.
func (r *Root) writePKI() error {
	cas := map[string]keyPair{}
	for base, cn := range map[string]string{clusterCA: "kubernetes", etcdCA: "etcd-ca", frontProxyCA: "front-proxy-ca"} {
		kp, err := newCA(cn)
		if err != nil {
			return fmt.Errorf("%s: %w", base, err)
		}
		if err := r.writePair(base, kp); err != nil {
			return err
		}
		cas[base] = kp
	}
	r.clusterCA = cas[clusterCA]
	for _, s := range r.leafSpecs() {
		kp, err := newLeaf(cas[s.ca], s)
		if err != nil {
			return fmt.Errorf("%s: %w", s.base, err)
		}
		if err := r.writePair(s.base, kp); err != nil {
			return err
		}
	}
	return r.writeServiceAccountKey()
}

// writeServiceAccountKey writes sa.key/sa.pub. It is RSA because kubeadm
// makes it RSA whatever the cluster's encryption algorithm, and restores
// must carry the exact key: every issued token is signed with it.
func (r *Root) writeServiceAccountKey() error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return err
	}
	if err := r.writeFile(PKIDir+"/sa.key", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600); err != nil {
		return err
	}
	return r.writeFile(PKIDir+"/sa.pub", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644)
}

func (r *Root) writePair(base string, kp keyPair) error {
	keyPEM, err := encodeKey(kp.key)
	if err != nil {
		return err
	}
	if err := r.writeFile(base+".key", keyPEM, 0o600); err != nil {
		return err
	}
	return r.writeFile(base+".crt", encodeCert(kp.cert), 0o644)
}

func encodeCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// encodeKey uses the PEM block types of client-go's keyutil, which kubeadm
// writes with.
func encodeKey(k crypto.Signer) ([]byte, error) {
	switch k := k.(type) {
	case *ecdsa.PrivateKey:
		der, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			return nil, err
		}
		return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
	case *rsa.PrivateKey:
		return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}), nil
	}
	return nil, fmt.Errorf("unsupported key type %T", k)
}

func newKey() (crypto.Signer, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) }

func newSerial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 63))
}

func subjectKeyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	sum := sha1.Sum(der)
	return sum[:], nil
}

func newCA(cn string) (keyPair, error) {
	key, err := newKey()
	if err != nil {
		return keyPair{}, err
	}
	serial, err := newSerial()
	if err != nil {
		return keyPair{}, err
	}
	skid, err := subjectKeyID(key.Public())
	if err != nil {
		return keyPair{}, err
	}
	now := time.Now().UTC()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             now.Add(-5 * time.Minute),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		BasicConstraintsValid: true,
		IsCA:                  true,
		SubjectKeyId:          skid,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return keyPair{}, err
	}
	cert, err := x509.ParseCertificate(der)
	return keyPair{cert: cert, key: key}, err
}

func newLeaf(ca keyPair, s leafSpec) (keyPair, error) {
	key, err := newKey()
	if err != nil {
		return keyPair{}, err
	}
	serial, err := newSerial()
	if err != nil {
		return keyPair{}, err
	}
	now := time.Now().UTC()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: s.cn, Organization: s.orgs},
		DNSNames:              s.dns,
		IPAddresses:           s.ips,
		NotBefore:             now.Add(-5 * time.Minute),
		NotAfter:              now.Add(leafValidity),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           s.usages,
		BasicConstraintsValid: true,
		AuthorityKeyId:        ca.cert.SubjectKeyId,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return keyPair{}, err
	}
	cert, err := x509.ParseCertificate(der)
	return keyPair{cert: cert, key: key}, err
}

// RenewCert re-signs the leaf certificate at hostCertPath (a .crt under the
// PKI dir) with whichever of the cluster's CAs signed it, keeping subject,
// SANs and usages, like `kubeadm certs renew`: a new key, a new serial, a
// fresh year of validity.
func (r *Root) RenewCert(hostCertPath string) error {
	if !strings.HasSuffix(hostCertPath, ".crt") {
		return fmt.Errorf("sandbox: renew %s: not a .crt file", hostCertPath)
	}
	old, err := r.readCert(hostCertPath)
	if err != nil {
		return fmt.Errorf("sandbox: renew %s: %w", hostCertPath, err)
	}
	if old.IsCA {
		return fmt.Errorf("sandbox: renew %s: is a CA; kubeadm renews only the certs CAs sign", hostCertPath)
	}
	var ca keyPair
	for _, base := range []string{clusterCA, etcdCA, frontProxyCA} {
		c, err := r.readCert(base + ".crt")
		if err != nil {
			return fmt.Errorf("sandbox: renew %s: %w", hostCertPath, err)
		}
		if old.CheckSignatureFrom(c) == nil {
			key, err := r.readKey(base + ".key")
			if err != nil {
				return fmt.Errorf("sandbox: renew %s: %w", hostCertPath, err)
			}
			ca = keyPair{cert: c, key: key}
			break
		}
	}
	if ca.cert == nil {
		return fmt.Errorf("sandbox: renew %s: signed by none of the cluster CAs", hostCertPath)
	}
	kp, err := newLeaf(ca, leafSpec{
		cn: old.Subject.CommonName, orgs: old.Subject.Organization,
		dns: old.DNSNames, ips: old.IPAddresses, usages: old.ExtKeyUsage,
	})
	if err != nil {
		return fmt.Errorf("sandbox: renew %s: %w", hostCertPath, err)
	}
	if err := r.writePair(strings.TrimSuffix(hostCertPath, ".crt"), kp); err != nil {
		return fmt.Errorf("sandbox: renew %s: %w", hostCertPath, err)
	}
	return nil
}

func (r *Root) readCert(hostPath string) (*x509.Certificate, error) {
	data, err := os.ReadFile(r.Path(hostPath))
	if err != nil {
		return nil, err
	}
	b, _ := pem.Decode(data)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%s: no PEM certificate", hostPath)
	}
	return x509.ParseCertificate(b.Bytes)
}

func (r *Root) readKey(hostPath string) (crypto.Signer, error) {
	data, err := os.ReadFile(r.Path(hostPath))
	if err != nil {
		return nil, err
	}
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, fmt.Errorf("%s: no PEM key", hostPath)
	}
	switch b.Type {
	case "EC PRIVATE KEY":
		return x509.ParseECPrivateKey(b.Bytes)
	case "RSA PRIVATE KEY":
		return x509.ParsePKCS1PrivateKey(b.Bytes)
	}
	return nil, errors.New(hostPath + ": unsupported key PEM type " + b.Type)
}

// writeOSCABundles fills the distribution CA directories kubeadm mounts into
// the apiserver and controller-manager (a Debian/Ubuntu host), so they exist
// as they would on a node.
func (r *Root) writeOSCABundles() error {
	kp, err := newCA("Sandbox Distribution Root CA")
	if err != nil {
		return err
	}
	pemData := encodeCert(kp.cert)
	if err := r.writeFile("/usr/share/ca-certificates/mozilla/Sandbox_Distribution_Root_CA.crt", pemData, 0o644); err != nil {
		return err
	}
	if err := r.writeFile("/etc/ssl/certs/ca-certificates.crt", pemData, 0o644); err != nil {
		return err
	}
	if err := r.writeFile("/etc/ca-certificates.conf", []byte("mozilla/Sandbox_Distribution_Root_CA.crt\n"), 0o644); err != nil {
		return err
	}
	for _, d := range []string{"/etc/ca-certificates/update.d", "/usr/local/share/ca-certificates"} {
		if err := os.MkdirAll(r.Path(d), 0o755); err != nil {
			return err
		}
	}
	return nil
}
