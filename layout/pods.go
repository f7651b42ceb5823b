package layout

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// staticPod is one parsed manifest and its host path.
type staticPod struct {
	file string
	pod  *corev1.Pod
}

// manifestExts are the files kubekeep parses. The kubelet loads every
// non-hidden file in the dir; others are reported, since a stray
// "kube-apiserver.yaml.bak" there runs as a second apiserver.
var manifestExts = map[string]bool{".yaml": true, ".yml": true, ".json": true}

// MaxManifestSize bounds a static pod manifest: kubeadm's are a few KiB, and
// a larger file is refused (a Problem) before it is read whole.
const MaxManifestSize = 1 << 20

// readManifests parses the manifests in the manifests dir (dirTarget is
// where it resolves). A manifest that cannot be read or parsed is skipped
// with a problem naming file:line; the file itself is still backed up with
// the dir. A symlinked manifest is followed inside the root, as the kubelet
// follows it, and the file it leads to joins the set.
func (d *discovery) readManifests(dirTarget string) ([]staticPod, error) {
	ents, err := os.ReadDir(filepath.Join(d.root, filepath.FromSlash(dirTarget)))
	if err != nil {
		return nil, fmt.Errorf("layout: %w", err)
	}
	var pods []staticPod
	seen := map[string]string{}
	for _, e := range ents {
		name := e.Name()
		if strings.HasPrefix(name, ".") {
			continue
		}
		host := ManifestsDir + "/" + name
		linkTarget := ""
		if e.Type()&os.ModeSymlink != 0 {
			target, err := Resolve(d.root, host)
			var st os.FileInfo
			if err == nil {
				st, err = os.Stat(filepath.Join(d.root, filepath.FromSlash(target)))
			}
			if err != nil {
				d.warnf("%s is a symlink that leads to no file under the root (%v); the kubelet cannot load it either", host, err)
				continue
			}
			if !st.Mode().IsRegular() {
				continue
			}
			linkTarget = target
		} else if !e.Type().IsRegular() {
			continue // the kubelet does not recurse into dirs
		}
		if !manifestExts[strings.ToLower(filepath.Ext(name))] {
			d.warnf("%s is not a .yaml/.yml/.json manifest but the kubelet loads it too; move it out of %s", host, ManifestsDir)
			continue
		}
		data, err := d.readBounded(host, MaxManifestSize)
		if err != nil {
			d.unparsed = append(d.unparsed, host)
			d.problemf("%s: cannot read it as a manifest: %v; not parsed, so the hostPaths of its pod are not discovered "+
				"(the file is backed up with %s)", host, err, ManifestsDir)
			continue
		}
		pod, err := ParseManifest(host, data)
		if err != nil {
			d.unparsed = append(d.unparsed, host)
			d.problemf("%v; skipped, so the hostPaths of its pod are not discovered (the file is backed up with %s)", err, ManifestsDir)
			continue
		}
		if linkTarget != "" && !within(linkTarget, dirTarget) {
			d.add(linkTarget, RoleManifests, Source{From: FromKubeadm, Note: "the static pod manifest " + host + " links to"}, true)
		}
		if prev, dup := seen[pod.Name]; dup {
			d.warnf("%s and %s both define pod %q; the kubelet runs only one of them", prev, host, pod.Name)
		}
		seen[pod.Name] = host
		pods = append(pods, staticPod{file: host, pod: pod})
	}
	if len(pods) == 0 {
		d.warnf("%s holds no static pod manifests; only the rebuild paths are known", ManifestsDir)
	}
	return pods, nil
}

// caBundleDirs are the OS CA directories kubeadm mounts when they exist
// (controlplane/volumes.go): Debian/Ubuntu, and RHEL up to kubeadm 1.30
// (/etc/pki) and from 1.31 (/etc/pki/ca-trust, /etc/pki/tls/certs).
var caBundleDirs = map[string]bool{
	"/etc/ssl/certs": true, "/etc/ca-certificates": true, "/usr/share/ca-certificates": true,
	"/usr/local/share/ca-certificates": true, "/etc/pki": true, "/etc/pki/ca-trust": true, "/etc/pki/tls/certs": true,
}

const flexVolumeDir = "/usr/libexec/kubernetes/kubelet-plugins/volume/exec"

// certFlags name certificate and key files in the control-plane
// components; a volume holding one of them is PKI.
var certFlags = map[string]bool{
	"client-ca-file": true, "tls-cert-file": true, "tls-private-key-file": true,
	"etcd-cafile": true, "etcd-certfile": true, "etcd-keyfile": true,
	"kubelet-client-certificate": true, "kubelet-client-key": true, "kubelet-certificate-authority": true,
	"proxy-client-cert-file": true, "proxy-client-key-file": true, "requestheader-client-ca-file": true,
	"service-account-key-file": true, "service-account-signing-key-file": true, "service-account-private-key-file": true,
	"cluster-signing-cert-file": true, "cluster-signing-key-file": true, "root-ca-file": true,
	"cert-file": true, "key-file": true, "trusted-ca-file": true,
	"peer-cert-file": true, "peer-key-file": true, "peer-trusted-ca-file": true,
}

var kubeconfigFlags = map[string]bool{"kubeconfig": true, "authentication-kubeconfig": true, "authorization-kubeconfig": true}

// hint is a flag naming a path, mapped to the host.
type hint struct {
	flag, host string
}

func (d *discovery) addPods(pods []staticPod) {
	for _, sp := range pods {
		pod := sp.pod
		var hints []hint
		for _, c := range allContainers(pod) {
			flags := ContainerFlags(c)
			names := make([]string, 0, len(flags))
			for n := range flags {
				names = append(names, n)
			}
			sort.Strings(names)
			for _, name := range names {
				val := flags[name]
				if !strings.HasPrefix(val, "/") || strings.Contains(val, ",") {
					continue
				}
				host, ok := HostPathOf(pod, c, val)
				if !ok {
					d.warnf("%s (%s): --%s=%s is on no hostPath volume; the container cannot see a host file there",
						sp.file, c.Name, name, val)
					continue
				}
				hints = append(hints, hint{flag: name, host: host})
			}
		}
		dataDir := ""
		if isEtcd(pod) {
			if c, ok := etcdContainer(pod); ok {
				if dd := ContainerFlags(c)["data-dir"]; dd != "" {
					dataDir, _ = HostPathOf(pod, c, dd)
				}
			}
		}
		for _, v := range pod.Spec.Volumes {
			if v.HostPath == nil {
				continue
			}
			p := path.Clean(v.HostPath.Path)
			typ := ""
			if v.HostPath.Type != nil {
				typ = string(*v.HostPath.Type)
			}
			switch corev1.HostPathType(typ) {
			case corev1.HostPathSocket, corev1.HostPathCharDev, corev1.HostPathBlockDev:
				d.warnf("%s: volume %s (%s, %s) is not a file or directory; not backed up", sp.file, v.Name, p, typ)
				continue
			}
			fileType := typ == string(corev1.HostPathFile) || typ == string(corev1.HostPathFileOrCreate)
			role := classify(p, dataDir, hints)
			d.add(p, role, Source{From: FromVolume, Pod: pod.Name, Volume: v.Name, Type: typ}, fileType)
		}
	}
}

func allContainers(pod *corev1.Pod) []corev1.Container {
	return append(append([]corev1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers...)
}

func classify(p, etcdDataDir string, hints []hint) Role {
	has := func(match func(hint) bool) bool {
		for _, h := range hints {
			if within(h.host, p) && match(h) {
				return true
			}
		}
		return false
	}
	switch {
	case etcdDataDir != "" && within(etcdDataDir, p):
		return RoleEtcdData
	case p == ManifestsDir:
		return RoleManifests
	case caBundleDirs[p]:
		return RoleCABundle
	case p == flexVolumeDir || has(func(h hint) bool { return h.flag == "flex-volume-plugin-dir" }):
		return RolePluginDir
	case within(p, "/etc/kubernetes/pki") || has(func(h hint) bool { return certFlags[h.flag] }):
		return RolePKI
	case (within(p, "/etc/kubernetes") && strings.HasSuffix(p, ".conf")) || has(func(h hint) bool { return kubeconfigFlags[h.flag] }):
		return RoleKubeconfig
	case within(p, "/var/lib/kubelet"):
		return RoleKubelet
	}
	return RoleExtra
}

func isEtcd(pod *corev1.Pod) bool {
	_, ok := etcdContainer(pod)
	return ok
}

func etcdContainer(pod *corev1.Pod) (corev1.Container, bool) {
	return containerRunning(pod, "etcd")
}

// containerRunning finds the container whose command runs bin; manifests
// name pods freely, the binary is what identifies the component.
func containerRunning(pod *corev1.Pod, bin string) (corev1.Container, bool) {
	for _, c := range pod.Spec.Containers {
		if len(c.Command) > 0 && path.Base(c.Command[0]) == bin {
			return c, true
		}
	}
	for _, c := range pod.Spec.Containers {
		if c.Name == bin && len(c.Command) == 0 {
			return c, true
		}
	}
	return corev1.Container{}, false
}

func (d *discovery) findEtcd(pods []staticPod) Etcd {
	e := Etcd{Endpoints: []string{}, PeerURLs: []string{}}
	var etcdPod, apiPod *staticPod
	for i := range pods {
		if _, ok := etcdContainer(pods[i].pod); ok && etcdPod == nil {
			etcdPod = &pods[i]
		}
		if _, ok := containerRunning(pods[i].pod, "kube-apiserver"); ok && apiPod == nil {
			apiPod = &pods[i]
		}
	}
	// The apiserver's etcd client flags: the whole story for an external
	// etcd, and a client cert a local etcd accepts.
	var apiCert, apiKey string
	var apiFlags map[string]string
	if apiPod != nil {
		c, _ := containerRunning(apiPod.pod, "kube-apiserver")
		apiFlags = ContainerFlags(c)
		apiCert = d.hostFile(apiPod, c, apiFlags, "etcd-certfile")
		apiKey = d.hostFile(apiPod, c, apiFlags, "etcd-keyfile")
	}

	if etcdPod == nil && len(d.unparsed) > 0 {
		d.warnf("no etcd manifest parsed; etcd may be the pod of %s, which could not be parsed, so it is taken as external",
			strings.Join(d.unparsed, ", "))
	}
	if etcdPod == nil {
		if apiPod == nil {
			d.warnf("no etcd or kube-apiserver manifest in %s: etcd cannot be located", ManifestsDir)
			return e
		}
		c, _ := containerRunning(apiPod.pod, "kube-apiserver")
		e.External = true
		e.Manifest = apiPod.file
		e.Endpoints = splitList(apiFlags["etcd-servers"])
		e.CAFile = d.hostFile(apiPod, c, apiFlags, "etcd-cafile")
		e.CertFile, e.KeyFile = apiCert, apiKey
		if len(e.Endpoints) == 0 {
			d.warnf("%s: no etcd.yaml and no --etcd-servers: etcd cannot be located", apiPod.file)
		}
		d.checkExists("external etcd", e.CAFile, e.CertFile, e.KeyFile)
		return e
	}

	c, _ := etcdContainer(etcdPod.pod)
	flags := ContainerFlags(c)
	e.Manifest = etcdPod.file
	e.Image = c.Image
	e.Name = flags["name"]
	e.InitialCluster = flags["initial-cluster"]
	e.PeerURLs = splitList(flags["initial-advertise-peer-urls"])
	e.Endpoints = clientEndpoints(flags)
	if len(e.Endpoints) == 0 {
		d.warnf("%s: no --listen-client-urls or --advertise-client-urls: etcd cannot be reached", etcdPod.file)
	}
	if dd := flags["data-dir"]; dd == "" {
		d.warnf("%s: no --data-dir flag; kubeadm always sets one", etcdPod.file)
	} else {
		e.DataDir = d.hostFile(etcdPod, c, flags, "data-dir")
	}
	e.CAFile = d.hostFile(etcdPod, c, flags, "trusted-ca-file")
	if e.CAFile != "" {
		dir := path.Dir(e.CAFile)
		cert, key := dir+"/healthcheck-client.crt", dir+"/healthcheck-client.key"
		if d.exists(cert) && d.exists(key) {
			e.CertFile, e.KeyFile = cert, key
		}
	}
	if e.CertFile == "" && apiCert != "" && apiKey != "" {
		e.CertFile, e.KeyFile = apiCert, apiKey
	}
	if e.CertFile == "" {
		d.warnf("%s: no client cert etcd accepts (healthcheck-client.* next to the CA, or the apiserver's --etcd-certfile)", etcdPod.file)
	}
	d.checkExists("etcd", e.CAFile, e.CertFile, e.KeyFile)
	return e
}

// hostFile maps a flag's container path to its host path; a path on no
// hostPath volume was already warned about in addPods.
func (d *discovery) hostFile(sp *staticPod, c corev1.Container, flags map[string]string, name string) string {
	v := flags[name]
	if v == "" {
		return ""
	}
	host, ok := HostPathOf(sp.pod, c, v)
	if !ok {
		return ""
	}
	return host
}

// exists reports whether hostPath leads to something under the root, its
// symlinks followed inside the root. Resolve has looked up every
// component, the last one included: no second stat is needed.
func (d *discovery) exists(hostPath string) bool {
	_, err := Resolve(d.root, hostPath)
	return err == nil
}

func (d *discovery) checkExists(what string, paths ...string) {
	for _, p := range paths {
		if p != "" && !d.exists(p) {
			d.warnf("%s: %s does not exist under the root", what, p)
		}
	}
}

func splitList(s string) []string {
	out := []string{}
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// clientEndpoints picks the client URLs a local client should dial: the
// loopback ones etcd listens on first (no dependence on the node's IP,
// which changes when a VM is rebuilt), then wildcard listeners turned into
// loopback, then the advertised URLs.
func clientEndpoints(flags map[string]string) []string {
	listen := splitList(flags["listen-client-urls"])
	var loop, wild []string
	for _, raw := range listen {
		u, err := url.Parse(raw)
		if err != nil || u.Hostname() == "" {
			continue
		}
		host := u.Hostname()
		ip := net.ParseIP(host)
		switch {
		case host == "localhost" || (ip != nil && ip.IsLoopback()):
			loop = append(loop, raw)
		case ip != nil && ip.IsUnspecified():
			lo := "127.0.0.1"
			if ip.To4() == nil {
				lo = "::1"
			}
			u.Host = net.JoinHostPort(lo, u.Port())
			wild = append(wild, u.String())
		}
	}
	switch {
	case len(loop) > 0:
		return loop
	case len(wild) > 0:
		return wild
	}
	return splitList(flags["advertise-client-urls"])
}
