package sandbox

import (
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// etcdImageTag is the etcd kubeadm pins for each minor release
// (cmd/kubeadm/app/constants SupportedEtcdVersion). Which etcd server line
// wrote a data dir matters to a restore.
var etcdImageTag = map[int]string{
	25: "3.5.4-0", 26: "3.5.6-0", 27: "3.5.7-0", 28: "3.5.9-0", 29: "3.5.10-0",
	30: "3.5.12-0", 31: "3.5.15-0", 32: "3.5.16-0", 33: "3.5.21-0", 34: "3.6.4-0",
}

// pauseImageTag is what kubeadm-flags.env names as the sandbox image.
var pauseImageTag = map[int]string{
	25: "3.8", 26: "3.9", 27: "3.9", 28: "3.9", 29: "3.9",
	30: "3.9", 31: "3.10", 32: "3.10", 33: "3.10", 34: "3.10.1",
}

const apiserverPort = 6443

// EtcdImage is the etcd image the sandbox's etcd.yaml runs.
func (r *Root) EtcdImage() string { return "registry.k8s.io/etcd:" + etcdImageTag[r.minor()] }

// writeManifests writes the four static pods the way kubeadm does: Pod
// objects marshalled with sigs.k8s.io/yaml, flags sorted, volumes and
// mounts sorted by name, files 0600.
func (r *Root) writeManifests() error {
	pods := map[string]*corev1.Pod{
		"etcd":                    r.etcdPod(),
		"kube-apiserver":          r.apiserverPod(),
		"kube-controller-manager": r.controllerManagerPod(),
		"kube-scheduler":          r.schedulerPod(),
	}
	for name, pod := range pods {
		data, err := yaml.Marshal(pod)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if err := r.writeFile(ManifestsDir+"/"+name+".yaml", data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

func url(scheme, host string, port int) string {
	return scheme + "://" + net.JoinHostPort(host, strconv.Itoa(port))
}

// joinURLs joins listen URLs, dropping a repeat: with the advertise address
// on loopback kubeadm would list the same URL twice, and an etcd started from
// those flags would then fail binding the second one.
func joinURLs(urls ...string) string {
	var out []string
	for _, u := range urls {
		dup := false
		for _, o := range out {
			dup = dup || o == u
		}
		if !dup {
			out = append(out, u)
		}
	}
	return strings.Join(out, ",")
}

func (r *Root) etcdPod() *corev1.Pod {
	o := r.Opts
	adv, lo := o.AdvertiseAddress, r.loopback()
	clientURL := url("https", adv, o.EtcdClientPort)
	peerURL := url("https", adv, o.EtcdPeerPort)
	flags := map[string]string{
		"name":                        o.NodeName,
		"advertise-client-urls":       clientURL,
		"listen-client-urls":          joinURLs(url("https", lo, o.EtcdClientPort), clientURL),
		"listen-peer-urls":            peerURL,
		"initial-advertise-peer-urls": peerURL,
		"initial-cluster":             o.NodeName + "=" + peerURL,
		"listen-metrics-urls":         url("http", lo, 2381),
		"data-dir":                    o.EtcdDataDir,
		"cert-file":                   r.EtcdServerCert,
		"key-file":                    r.EtcdServerKey,
		"trusted-ca-file":             r.EtcdCAFile,
		"client-cert-auth":            "true",
		"peer-cert-file":              r.EtcdPeerCert,
		"peer-key-file":               r.EtcdPeerKey,
		"peer-trusted-ca-file":        r.EtcdCAFile,
		"peer-client-cert-auth":       "true",
		"snapshot-count":              "10000",
	}
	// etcd 3.6 (kubeadm 1.34) graduated the experimental flags kubeadm sets.
	if r.minor() >= 34 {
		flags["feature-gates"] = "InitialCorruptCheck=true"
		flags["watch-progress-notify-interval"] = "5s"
	} else {
		flags["experimental-initial-corrupt-check"] = "true"
		if r.minor() >= 27 {
			flags["experimental-watch-progress-notify-interval"] = "5s"
		}
	}
	c := corev1.Container{
		Name:            "etcd",
		Image:           r.EtcdImage(),
		ImagePullPolicy: corev1.PullIfNotPresent,
		Command:         command("etcd", flags),
		Resources:       requests("100m", "100Mi"),
		VolumeMounts: []corev1.VolumeMount{
			{Name: "etcd-certs", MountPath: PKIDir + "/etcd"},
			{Name: "etcd-data", MountPath: o.EtcdDataDir},
		},
	}
	// kubeadm 1.31 moved the etcd probes to /livez and /readyz, which etcd
	// serves from 3.5.11 on; older ones probe /health.
	if r.minor() >= 31 {
		c.LivenessProbe = liveness(lo, "/livez", 2381, corev1.URISchemeHTTP)
		c.ReadinessProbe = readiness(lo, "/readyz", 2381, corev1.URISchemeHTTP)
		c.StartupProbe = startup(lo, "/readyz", 2381, corev1.URISchemeHTTP)
	} else {
		c.LivenessProbe = liveness(lo, "/health?exclude=NOSPACE&serializable=true", 2381, corev1.URISchemeHTTP)
		c.StartupProbe = startup(lo, "/health?serializable=false", 2381, corev1.URISchemeHTTP)
	}
	pod := staticPod(c, map[string]string{"kubeadm.kubernetes.io/etcd.advertise-client-urls": clientURL})
	pod.Spec.Volumes = []corev1.Volume{
		hostPathVolume("etcd-certs", PKIDir+"/etcd", corev1.HostPathDirectoryOrCreate),
		hostPathVolume("etcd-data", o.EtcdDataDir, corev1.HostPathDirectoryOrCreate),
	}
	return pod
}

func (r *Root) apiserverPod() *corev1.Pod {
	o := r.Opts
	pki := PKIDir
	flags := map[string]string{
		"advertise-address":                  o.AdvertiseAddress,
		"allow-privileged":                   "true",
		"authorization-mode":                 "Node,RBAC",
		"client-ca-file":                     pki + "/ca.crt",
		"enable-admission-plugins":           "NodeRestriction",
		"enable-bootstrap-token-auth":        "true",
		"etcd-cafile":                        pki + "/etcd/ca.crt",
		"etcd-certfile":                      pki + "/apiserver-etcd-client.crt",
		"etcd-keyfile":                       pki + "/apiserver-etcd-client.key",
		"etcd-servers":                       url("https", r.loopback(), o.EtcdClientPort),
		"kubelet-client-certificate":         pki + "/apiserver-kubelet-client.crt",
		"kubelet-client-key":                 pki + "/apiserver-kubelet-client.key",
		"kubelet-preferred-address-types":    "InternalIP,ExternalIP,Hostname",
		"proxy-client-cert-file":             pki + "/front-proxy-client.crt",
		"proxy-client-key-file":              pki + "/front-proxy-client.key",
		"requestheader-allowed-names":        "front-proxy-client",
		"requestheader-client-ca-file":       pki + "/front-proxy-ca.crt",
		"requestheader-extra-headers-prefix": "X-Remote-Extra-",
		"requestheader-group-headers":        "X-Remote-Group",
		"requestheader-username-headers":     "X-Remote-User",
		"secure-port":                        strconv.Itoa(apiserverPort),
		"service-account-issuer":             "https://kubernetes.default.svc.cluster.local",
		"service-account-key-file":           pki + "/sa.pub",
		"service-account-signing-key-file":   pki + "/sa.key",
		"service-cluster-ip-range":           "10.96.0.0/12",
		"tls-cert-file":                      pki + "/apiserver.crt",
		"tls-private-key-file":               pki + "/apiserver.key",
	}
	c := corev1.Container{
		Name:            "kube-apiserver",
		Image:           "registry.k8s.io/kube-apiserver:" + o.KubernetesVersion,
		ImagePullPolicy: corev1.PullIfNotPresent,
		Command:         command("kube-apiserver", flags),
		Resources:       requests("250m", ""),
		LivenessProbe:   liveness(o.AdvertiseAddress, "/livez", apiserverPort, corev1.URISchemeHTTPS),
		ReadinessProbe:  readiness(o.AdvertiseAddress, "/readyz", apiserverPort, corev1.URISchemeHTTPS),
		StartupProbe:    startup(o.AdvertiseAddress, "/livez", apiserverPort, corev1.URISchemeHTTPS),
	}
	vols := caVolumes()
	vols["k8s-certs"] = mountedVolume{PKIDir, corev1.HostPathDirectoryOrCreate, true}
	pod := staticPod(c, map[string]string{
		"kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint": net.JoinHostPort(o.AdvertiseAddress, strconv.Itoa(apiserverPort)),
	})
	attach(pod, vols)
	return pod
}

func (r *Root) controllerManagerPod() *corev1.Pod {
	pki := PKIDir
	conf := KubernetesDir + "/controller-manager.conf"
	flags := map[string]string{
		"allocate-node-cidrs":              "true",
		"authentication-kubeconfig":        conf,
		"authorization-kubeconfig":         conf,
		"bind-address":                     "127.0.0.1",
		"client-ca-file":                   pki + "/ca.crt",
		"cluster-cidr":                     "10.244.0.0/16",
		"cluster-name":                     "kubernetes",
		"cluster-signing-cert-file":        pki + "/ca.crt",
		"cluster-signing-key-file":         pki + "/ca.key",
		"controllers":                      "*,bootstrapsigner,tokencleaner",
		"kubeconfig":                       conf,
		"leader-elect":                     "true",
		"requestheader-client-ca-file":     pki + "/front-proxy-ca.crt",
		"root-ca-file":                     pki + "/ca.crt",
		"service-account-private-key-file": pki + "/sa.key",
		"service-cluster-ip-range":         "10.96.0.0/12",
		"use-service-account-credentials":  "true",
	}
	c := corev1.Container{
		Name:            "kube-controller-manager",
		Image:           "registry.k8s.io/kube-controller-manager:" + r.Opts.KubernetesVersion,
		ImagePullPolicy: corev1.PullIfNotPresent,
		Command:         command("kube-controller-manager", flags),
		Resources:       requests("200m", ""),
		LivenessProbe:   liveness("127.0.0.1", "/healthz", 10257, corev1.URISchemeHTTPS),
		StartupProbe:    startup("127.0.0.1", "/healthz", 10257, corev1.URISchemeHTTPS),
	}
	vols := caVolumes()
	vols["k8s-certs"] = mountedVolume{PKIDir, corev1.HostPathDirectoryOrCreate, true}
	vols["kubeconfig"] = mountedVolume{conf, corev1.HostPathFileOrCreate, true}
	vols["flexvolume-dir"] = mountedVolume{"/usr/libexec/kubernetes/kubelet-plugins/volume/exec", corev1.HostPathDirectoryOrCreate, false}
	pod := staticPod(c, nil)
	attach(pod, vols)
	return pod
}

func (r *Root) schedulerPod() *corev1.Pod {
	conf := KubernetesDir + "/scheduler.conf"
	flags := map[string]string{
		"authentication-kubeconfig": conf,
		"authorization-kubeconfig":  conf,
		"bind-address":              "127.0.0.1",
		"kubeconfig":                conf,
		"leader-elect":              "true",
	}
	c := corev1.Container{
		Name:            "kube-scheduler",
		Image:           "registry.k8s.io/kube-scheduler:" + r.Opts.KubernetesVersion,
		ImagePullPolicy: corev1.PullIfNotPresent,
		Command:         command("kube-scheduler", flags),
		Resources:       requests("100m", ""),
		LivenessProbe:   liveness("127.0.0.1", "/healthz", 10259, corev1.URISchemeHTTPS),
		StartupProbe:    startup("127.0.0.1", "/healthz", 10259, corev1.URISchemeHTTPS),
	}
	pod := staticPod(c, nil)
	attach(pod, map[string]mountedVolume{"kubeconfig": {conf, corev1.HostPathFileOrCreate, true}})
	return pod
}

type mountedVolume struct {
	path     string
	typ      corev1.HostPathType
	readOnly bool
}

// caVolumes are the distribution CA dirs of a Debian/Ubuntu host; kubeadm
// mounts /etc/ssl/certs always and the others because they exist there.
func caVolumes() map[string]mountedVolume {
	return map[string]mountedVolume{
		"ca-certs":                        {"/etc/ssl/certs", corev1.HostPathDirectoryOrCreate, true},
		"etc-ca-certificates":             {"/etc/ca-certificates", corev1.HostPathDirectoryOrCreate, true},
		"usr-local-share-ca-certificates": {"/usr/local/share/ca-certificates", corev1.HostPathDirectoryOrCreate, true},
		"usr-share-ca-certificates":       {"/usr/share/ca-certificates", corev1.HostPathDirectoryOrCreate, true},
	}
}

// attach adds volumes and same-path mounts sorted by name, as kubeadm's
// VolumeMapToSlice and VolumeMountMapToSlice do.
func attach(pod *corev1.Pod, vols map[string]mountedVolume) {
	names := make([]string, 0, len(vols))
	for n := range vols {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		v := vols[n]
		pod.Spec.Volumes = append(pod.Spec.Volumes, hostPathVolume(n, v.path, v.typ))
		pod.Spec.Containers[0].VolumeMounts = append(pod.Spec.Containers[0].VolumeMounts,
			corev1.VolumeMount{Name: n, MountPath: v.path, ReadOnly: v.readOnly})
	}
}

func staticPod(c corev1.Container, annotations map[string]string) *corev1.Pod {
	return &corev1.Pod{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{
			Name:        c.Name,
			Namespace:   "kube-system",
			Labels:      map[string]string{"component": c.Name, "tier": "control-plane"},
			Annotations: annotations,
		},
		Spec: corev1.PodSpec{
			Containers:        []corev1.Container{c},
			HostNetwork:       true,
			PriorityClassName: "system-node-critical",
			SecurityContext: &corev1.PodSecurityContext{
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
		},
	}
}

func hostPathVolume(name, path string, typ corev1.HostPathType) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{
		HostPath: &corev1.HostPathVolumeSource{Path: path, Type: &typ},
	}}
}

// command renders flags as kubeadm's BuildArgumentListFromMap does: sorted
// by name, --name=value.
func command(bin string, flags map[string]string) []string {
	names := make([]string, 0, len(flags))
	for n := range flags {
		names = append(names, n)
	}
	sort.Strings(names)
	out := []string{bin}
	for _, n := range names {
		out = append(out, "--"+n+"="+flags[n])
	}
	return out
}

func requests(cpu, mem string) corev1.ResourceRequirements {
	rl := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpu)}
	if mem != "" {
		rl[corev1.ResourceMemory] = resource.MustParse(mem)
	}
	return corev1.ResourceRequirements{Requests: rl}
}

func httpProbe(host, path string, port int, scheme corev1.URIScheme) *corev1.Probe {
	return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
		Host: host, Path: path, Port: intstr.FromInt32(int32(port)), Scheme: scheme,
	}}}
}

// The probe timings are kubeadm's staticpod LivenessProbe, ReadinessProbe
// and StartupProbe helpers.
func liveness(host, path string, port int, scheme corev1.URIScheme) *corev1.Probe {
	p := httpProbe(host, path, port, scheme)
	p.InitialDelaySeconds, p.TimeoutSeconds, p.PeriodSeconds, p.FailureThreshold = 10, 15, 10, 8
	return p
}

func readiness(host, path string, port int, scheme corev1.URIScheme) *corev1.Probe {
	p := httpProbe(host, path, port, scheme)
	p.TimeoutSeconds, p.PeriodSeconds, p.FailureThreshold = 15, 1, 3
	return p
}

func startup(host, path string, port int, scheme corev1.URIScheme) *corev1.Probe {
	p := httpProbe(host, path, port, scheme)
	p.InitialDelaySeconds, p.TimeoutSeconds, p.PeriodSeconds, p.FailureThreshold = 10, 15, 10, 24
	return p
}
