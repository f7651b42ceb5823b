package restore

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"net/url"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	clientcmdv1 "k8s.io/client-go/tools/clientcmd/api/v1"
	"sigs.k8s.io/yaml"
)

// hostIdentity is who the node being restored is now.
type hostIdentity struct {
	Hostname string
	IPs      []net.IP
}

func detectHost(hostname string, ips []net.IP) (hostIdentity, error) {
	h := hostIdentity{Hostname: hostname, IPs: ips}
	if h.Hostname == "" {
		n, err := os.Hostname()
		if err != nil {
			return h, fmt.Errorf("hostname: %w", err)
		}
		h.Hostname = strings.ToLower(n)
	}
	if len(h.IPs) == 0 {
		addrs, err := net.InterfaceAddrs()
		if err != nil {
			return h, fmt.Errorf("host addresses: %w", err)
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
				h.IPs = append(h.IPs, n.IP)
			}
		}
	}
	return h, nil
}

func (h hostIdentity) hasIP(ip net.IP) bool {
	if ip.IsLoopback() {
		return true
	}
	return slices.ContainsFunc(h.IPs, ip.Equal)
}

func (h hostIdentity) ipList() string {
	var s []string
	for _, ip := range h.IPs {
		s = append(s, ip.String())
	}
	if len(s) == 0 {
		return "none but loopback"
	}
	return strings.Join(s, ", ")
}

// certExpiringWithin is when a still-valid certificate is reported as
// expiring: kubeadm's own `certs check-expiration` warns at 30 days.
const certExpiringWithin = 30 * 24 * time.Hour

// CertCheck is one certificate of the version judged against this host.
type CertCheck struct {
	Path     string    `json:"path"`
	Subject  string    `json:"subject"`
	NotAfter time.Time `json:"notAfter"`
	CA       bool      `json:"ca"`
	Expired  bool      `json:"expired,omitempty"`
	Expiring bool      `json:"expiring,omitempty"`
	// SANMismatch: a serving certificate none of whose IP SANs this host
	// has (the VM got a new address).
	SANMismatch bool `json:"sanMismatch,omitempty"`
	// Remove: the files phase moves it (and its key) aside so kubeadm
	// re-signs it with the old CA.
	Remove bool   `json:"remove,omitempty"`
	Reason string `json:"reason,omitempty"`
	Fix    string `json:"fix,omitempty"`
}

// isCertPath says which stored files are certificates restore judges:
// kubeadm's PKI and the kubelet's own certificates.
func isCertPath(p string) bool {
	return (within(p, "/etc/kubernetes/pki") && strings.HasSuffix(p, ".crt")) ||
		(within(p, "/var/lib/kubelet/pki") && (strings.HasSuffix(p, ".crt") || strings.HasSuffix(p, ".pem")))
}

// kubeadmLeaf reports whether kubeadm init regenerates this certificate
// when it is missing (its own PKI, not the kubelet's).
func kubeadmLeaf(p string) bool { return within(p, "/etc/kubernetes/pki") }

// checkCert judges one certificate. Service IPs (the apiserver's
// kubernetes.default address) are never a host's, so they do not count
// when matching IP SANs against the host.
func checkCert(p string, data []byte, host hostIdentity, service []*net.IPNet, now time.Time) (CertCheck, bool) {
	var block *pem.Block
	for rest := data; ; {
		block, rest = pem.Decode(rest)
		if block == nil || block.Type == "CERTIFICATE" {
			break
		}
	}
	if block == nil {
		return CertCheck{}, false
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return CertCheck{Path: p, Reason: "unparseable certificate: " + err.Error()}, true
	}
	c := CertCheck{Path: p, Subject: cert.Subject.CommonName, NotAfter: cert.NotAfter, CA: cert.IsCA}
	switch {
	case now.After(cert.NotAfter):
		c.Expired = true
		c.Reason = "expired on " + cert.NotAfter.UTC().Format(time.RFC3339)
	case cert.NotAfter.Sub(now) < certExpiringWithin:
		c.Expiring = true
		c.Reason = "expires on " + cert.NotAfter.UTC().Format(time.RFC3339)
	}
	if !c.CA && slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageServerAuth) {
		var foreign []string
		fits := false
		for _, ip := range cert.IPAddresses {
			if ip.IsLoopback() || slices.ContainsFunc(service, func(n *net.IPNet) bool { return n.Contains(ip) }) {
				continue
			}
			if host.hasIP(ip) {
				fits = true
			} else {
				foreign = append(foreign, ip.String())
			}
		}
		if !fits && len(foreign) > 0 {
			c.SANMismatch = true
			if c.Reason != "" {
				c.Reason += "; "
			}
			c.Reason += fmt.Sprintf("its IP SANs (%s) are not this host's (%s)", strings.Join(foreign, ", "), host.ipList())
		}
	}
	switch {
	case c.CA && c.Expired:
		c.Fix = "kubeadm cannot renew a CA: rotate it by hand (kubeadm docs, 'Manual rotation of CA certificates') and re-sign every certificate"
	case c.CA && c.Expiring:
		c.Fix = "plan a manual CA rotation before it expires; kubeadm cannot renew a CA"
	case kubeadmLeaf(p) && (c.Expired || c.SANMismatch):
		c.Remove = true
		c.Fix = "moved aside by the files phase so `kubeadm init` re-signs it with the old CA"
	case !kubeadmLeaf(p) && c.Expired:
		c.Fix = "the kubelet's client certificate: the kubeadm phase moves kubelet.conf aside so kubeadm writes a fresh one (kubeadm#2054)"
	case c.Expiring:
		c.Fix = "after the restore: `kubeadm certs renew all`, then restart the control-plane static pods"
	}
	return c, true
}

// KubeconfigCheck is one kubeconfig of the version judged against this host.
type KubeconfigCheck struct {
	Path   string `json:"path"`
	Server string `json:"server"`
	// Stale: the kubeadm phase moves it aside so kubeadm writes it anew.
	Stale  bool   `json:"stale,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// kubeconfigNames are the kubeconfigs kubeadm init writes when missing.
var kubeconfigNames = []string{"admin.conf", "super-admin.conf", "controller-manager.conf", "scheduler.conf", "kubelet.conf"}

// checkKubeconfig flags a kubeconfig whose server is not this host (or the
// control-plane endpoint) or whose embedded client certificate expired:
// kubeadm only warns about such files and keeps them. A file kubeadm would
// keep and then refuse is stale too: no current context, a current context
// whose cluster is not in the file, a server that does not parse or names
// no host. An empty endpointHost (no controlPlaneEndpoint) matches nothing.
func checkKubeconfig(p string, data []byte, host hostIdentity, endpointHost string, now time.Time) KubeconfigCheck {
	kc := KubeconfigCheck{Path: p}
	var cfg clientcmdv1.Config
	if err := yaml.Unmarshal(data, &cfg); err != nil {
		kc.Stale, kc.Reason = true, "unreadable: "+err.Error()
		return kc
	}
	var ctx *clientcmdv1.Context
	for i := range cfg.Contexts {
		if cfg.Contexts[i].Name == cfg.CurrentContext {
			ctx = &cfg.Contexts[i].Context
		}
	}
	if ctx == nil {
		kc.Stale, kc.Reason = true, "no current context"
		return kc
	}
	// kubeadm init keeps a kubeconfig it finds and validates it
	// (validateKubeConfig): a current context whose cluster is missing, or
	// whose server names no host, fails the kubeadm phase, so such a file is
	// stale and regenerated instead.
	var cluster *clientcmdv1.Cluster
	for i := range cfg.Clusters {
		if cfg.Clusters[i].Name == ctx.Cluster {
			cluster = &cfg.Clusters[i].Cluster
		}
	}
	switch u, err := url.Parse(serverOf(cluster)); {
	case cluster == nil:
		kc.Stale, kc.Reason = true, fmt.Sprintf("its current context's cluster %q is not in the file", ctx.Cluster)
	case err != nil:
		kc.Server = cluster.Server
		kc.Stale, kc.Reason = true, fmt.Sprintf("server %q does not parse: %v", cluster.Server, err)
	case u.Hostname() == "":
		kc.Server = cluster.Server
		kc.Stale, kc.Reason = true, fmt.Sprintf("server %q names no host", cluster.Server)
	default:
		kc.Server = cluster.Server
		h := u.Hostname()
		ip := net.ParseIP(h)
		ok := (endpointHost != "" && strings.EqualFold(h, endpointHost)) || strings.EqualFold(h, host.Hostname) || h == "localhost" || (ip != nil && host.hasIP(ip))
		if !ok {
			kc.Stale, kc.Reason = true, fmt.Sprintf("server %s is not this host (%s) nor the control-plane endpoint", cluster.Server, host.ipList())
		}
	}
	for _, ai := range cfg.AuthInfos {
		if ai.Name != ctx.AuthInfo || len(ai.AuthInfo.ClientCertificateData) == 0 {
			continue
		}
		if block, _ := pem.Decode(ai.AuthInfo.ClientCertificateData); block != nil {
			if cert, err := x509.ParseCertificate(block.Bytes); err == nil && now.After(cert.NotAfter) {
				kc.Stale = true
				if kc.Reason != "" {
					kc.Reason += "; "
				}
				kc.Reason += "its client certificate expired on " + cert.NotAfter.UTC().Format(time.RFC3339)
			}
		}
	}
	return kc
}

// serverOf is the cluster's server, "" for no cluster.
func serverOf(c *clientcmdv1.Cluster) string {
	if c == nil {
		return ""
	}
	return c.Server
}

// kubeletClientCert is the file kubelet.conf points at after bootstrap.
const kubeletClientCert = "/var/lib/kubelet/pki/kubelet-client-current.pem"

func isKubeconfigPath(p string) bool {
	return path.Dir(p) == "/etc/kubernetes" && slices.Contains(kubeconfigNames, path.Base(p))
}
