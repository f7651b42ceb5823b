package restore

import (
	"errors"
	"fmt"
	"net"
	"path"
	"sort"
	"strings"

	"github.com/kubekeep/kubekeep/backup/versionread"
	"gopkg.in/yaml.v3"
)

// analysis is what the version says about the node, judged against this
// host. Every phase can compute it on its own, so phases stay re-runnable
// alone: it depends only on the version, the host and the clock.
type analysis struct {
	certs       []CertCheck
	kubeconfigs []KubeconfigCheck
	// kubeletExpired: the kubelet's client certificate in the version has
	// expired, so kubelet.conf must be rewritten (kubeadm#2054).
	kubeletExpired bool

	clusterConfig     []byte
	clusterConfigErr  error
	kubernetesVersion string
	// endpointHost is controlPlaneEndpoint's host, when set and usable
	// here; foreignEndpoint is an endpoint IP this host does not have.
	endpointHost    string
	endpointPort    string
	foreignEndpoint string
	nodeName        string
	// unchanged: same name, addresses and valid certificates, so putting
	// the manifests back is enough; changed lists why not.
	unchanged bool
	changed   []string
}

func (r *runner) analyze() (*analysis, error) {
	if r.an != nil {
		return r.an, nil
	}
	src := r.src
	a := &analysis{}
	// kubeadm's default when the saved config does not say.
	serviceSubnet := "10.96.0.0/12"
	if src.hasClusterConfig {
		a.clusterConfig, a.clusterConfigErr = src.readStream(r.opts.Store, versionread.ClusterConfigurationStream)
		if a.clusterConfigErr == nil {
			var cc struct {
				KubernetesVersion    string `yaml:"kubernetesVersion"`
				ControlPlaneEndpoint string `yaml:"controlPlaneEndpoint"`
				Networking           struct {
					ServiceSubnet string `yaml:"serviceSubnet"`
				} `yaml:"networking"`
			}
			if err := yaml.Unmarshal(a.clusterConfig, &cc); err != nil {
				a.clusterConfigErr = fmt.Errorf("saved ClusterConfiguration: %w", err)
			}
			a.kubernetesVersion = cc.KubernetesVersion
			if cc.Networking.ServiceSubnet != "" {
				serviceSubnet = cc.Networking.ServiceSubnet
			}
			a.endpointHost = cc.ControlPlaneEndpoint
			if h, port, err := net.SplitHostPort(cc.ControlPlaneEndpoint); err == nil {
				a.endpointHost, a.endpointPort = h, port
			}
			// An endpoint that is an IP this host lacks is the old VM's
			// address: kubeconfigs naming it are stale like any other.
			if ip := net.ParseIP(a.endpointHost); ip != nil && !r.host.hasIP(ip) {
				a.foreignEndpoint, a.endpointHost, a.endpointPort = a.endpointHost, "", ""
			}
		}
	} else {
		a.clusterConfigErr = errors.New("the version has no saved ClusterConfiguration (etcd had no kube-system/kubeadm-config)")
	}
	var service []*net.IPNet
	for _, c := range strings.Split(serviceSubnet, ",") {
		if _, n, err := net.ParseCIDR(strings.TrimSpace(c)); err == nil {
			service = append(service, n)
		}
	}
	if src.set != nil {
		a.nodeName = src.set.Etcd.Name
	}
	for _, e := range src.entries {
		p := e.Path
		if e.Type == "symlink" && p == kubeletClientCert {
			// Judge the file the kubelet's rotating link points at.
			t := e.Target
			if !strings.HasPrefix(t, "/") {
				t = path.Join(path.Dir(p), t)
			}
			p = t
		} else if e.Type != "file" {
			continue
		}
		switch {
		case isCertPath(e.Path):
			data, err := src.readFile(r.opts.Store, p)
			if err != nil {
				return nil, err
			}
			if c, ok := checkCert(e.Path, data, r.host, service, r.now); ok {
				a.certs = append(a.certs, c)
				if e.Path == kubeletClientCert && c.Expired {
					a.kubeletExpired = true
				}
			}
		case isKubeconfigPath(e.Path):
			data, err := src.readFile(r.opts.Store, p)
			if err != nil {
				return nil, err
			}
			a.kubeconfigs = append(a.kubeconfigs, checkKubeconfig(e.Path, data, r.host, a.endpointHost, r.now))
		}
	}
	sort.Slice(a.certs, func(i, j int) bool { return a.certs[i].Path < a.certs[j].Path })

	if a.nodeName != "" && !strings.EqualFold(a.nodeName, r.host.Hostname) {
		a.changed = append(a.changed, fmt.Sprintf("hostname %s is not the node name %s", r.host.Hostname, a.nodeName))
	}
	for _, c := range a.certs {
		if c.Remove {
			a.changed = append(a.changed, fmt.Sprintf("%s %s", c.Path, c.Reason))
		}
	}
	for _, k := range a.kubeconfigs {
		if k.Stale {
			a.changed = append(a.changed, fmt.Sprintf("%s: %s", k.Path, k.Reason))
		}
	}
	if a.kubeletExpired {
		a.changed = append(a.changed, "the kubelet's client certificate expired")
	}
	a.unchanged = len(a.changed) == 0
	r.an = a
	return a, nil
}

// removals are the certificates (with their keys) the files phase moves
// aside for kubeadm to re-sign.
func (a *analysis) removals() []string {
	var out []string
	for _, c := range a.certs {
		if c.Remove {
			out = append(out, c.Path, strings.TrimSuffix(c.Path, ".crt")+".key")
		}
	}
	return out
}
