package sandbox

import (
	"crypto/x509"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	clientcmdv1 "k8s.io/client-go/tools/clientcmd/api/v1"
	"sigs.k8s.io/yaml"
)

const kubeletClientCurrent = KubeletDir + "/pki/kubelet-client-current.pem"

// writeKubeconfigs writes the kubeconfigs `kubeadm init` leaves: client
// certs signed by the cluster CA and embedded, files 0600. kubelet.conf is
// in its post-init form, pointing at the kubelet's rotating client cert.
func (r *Root) writeKubeconfigs() error {
	node := r.Opts.NodeName
	server := "https://" + net.JoinHostPort(r.Opts.AdvertiseAddress, strconv.Itoa(apiserverPort))
	confs := []struct {
		file, user, cn string
		orgs           []string
	}{
		{"admin.conf", "kubernetes-admin", "kubernetes-admin", []string{r.clusterAdminsGroup()}},
		{"controller-manager.conf", "system:kube-controller-manager", "system:kube-controller-manager", nil},
		{"scheduler.conf", "system:kube-scheduler", "system:kube-scheduler", nil},
	}
	// super-admin.conf exists since kubeadm 1.29 split break-glass
	// system:masters access out of admin.conf.
	if r.minor() >= 29 {
		confs = append(confs, struct {
			file, user, cn string
			orgs           []string
		}{"super-admin.conf", "kubernetes-super-admin", "kubernetes-super-admin", []string{"system:masters"}})
	}
	for _, c := range confs {
		kp, err := newLeaf(r.clusterCA, leafSpec{cn: c.cn, orgs: c.orgs, usages: clientAuth})
		if err != nil {
			return fmt.Errorf("%s: %w", c.file, err)
		}
		keyPEM, err := encodeKey(kp.key)
		if err != nil {
			return err
		}
		auth := clientcmdv1.AuthInfo{ClientCertificateData: encodeCert(kp.cert), ClientKeyData: keyPEM}
		if err := r.writeKubeconfig(c.file, server, c.user, auth); err != nil {
			return err
		}
	}
	user := "system:node:" + node
	auth := clientcmdv1.AuthInfo{ClientCertificate: kubeletClientCurrent, ClientKey: kubeletClientCurrent}
	return r.writeKubeconfig("kubelet.conf", server, user, auth)
}

func (r *Root) writeKubeconfig(file, server, user string, auth clientcmdv1.AuthInfo) error {
	ctx := user + "@kubernetes"
	cfg := clientcmdv1.Config{
		APIVersion: "v1",
		Kind:       "Config",
		Clusters: []clientcmdv1.NamedCluster{{Name: "kubernetes", Cluster: clientcmdv1.Cluster{
			Server: server, CertificateAuthorityData: encodeCert(r.clusterCA.cert),
		}}},
		Contexts:       []clientcmdv1.NamedContext{{Name: ctx, Context: clientcmdv1.Context{Cluster: "kubernetes", AuthInfo: user}}},
		CurrentContext: ctx,
		AuthInfos:      []clientcmdv1.NamedAuthInfo{{Name: user, AuthInfo: auth}},
	}
	data, err := yaml.Marshal(cfg)
	if err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	return r.writeFile(KubernetesDir+"/"+file, data, 0o600)
}

// criSocket is kubeadm's default CRI socket (constants.DefaultCRISocket).
const criSocket = "unix:///var/run/containerd/containerd.sock"

// writeKubelet writes what kubeadm and the kubelet leave in /var/lib/kubelet:
// config.yaml, kubeadm-flags.env, from 1.34 instance-config.yaml, the
// self-signed serving pair and the rotated client cert behind the
// kubelet-client-current.pem symlink. The kubelet writes that symlink with
// an absolute target; here it is relative so that, as on a host, it
// resolves (an absolute one would point out of the sandbox and dangle).
//
// From 1.34 kubeadm's NodeLocalCRISocket gate is on by default
// (cmd/kubeadm/app/phases/kubelet): the CRI socket leaves kubeadm-flags.env
// and the node annotation for instance-config.yaml, which kubeadm also
// patches into config.yaml, and which `kubeadm upgrade` reads back.
func (r *Root) writeKubelet() error {
	config := kubeletConfig
	var args []string
	if r.minor() >= 34 {
		config = strings.Replace(config, "containerRuntimeEndpoint: \"\"\n", "containerRuntimeEndpoint: "+criSocket+"\n", 1)
		// WriteInstanceConfigToDisk: one %q-quoted line, 0644.
		instance := fmt.Sprintf("containerRuntimeEndpoint: %q\n", criSocket)
		if err := r.writeFile(KubeletDir+"/instance-config.yaml", []byte(instance), 0o644); err != nil {
			return err
		}
	} else {
		if r.minor() < 27 {
			args = append(args, "--container-runtime=remote")
		}
		args = append(args, "--container-runtime-endpoint="+criSocket)
	}
	args = append(args, "--pod-infra-container-image=registry.k8s.io/pause:"+pauseImageTag[r.minor()])
	if err := r.writeFile(KubeletDir+"/config.yaml", []byte(config), 0o644); err != nil {
		return err
	}
	flags := fmt.Sprintf("KUBELET_KUBEADM_ARGS=%q\n", strings.Join(args, " "))
	if err := r.writeFile(KubeletDir+"/kubeadm-flags.env", []byte(flags), 0o644); err != nil {
		return err
	}

	now := time.Now().UTC()
	serving, err := newCA(r.Opts.NodeName + "-ca@" + strconv.FormatInt(now.Unix(), 10))
	if err != nil {
		return err
	}
	leaf, err := newLeaf(serving, leafSpec{
		cn: r.Opts.NodeName + "@" + strconv.FormatInt(now.Unix(), 10), dns: []string{r.Opts.NodeName},
		usages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return err
	}
	if err := r.writePair(KubeletDir+"/pki/kubelet", leaf); err != nil {
		return err
	}

	client, err := newLeaf(r.clusterCA, leafSpec{
		cn: "system:node:" + r.Opts.NodeName, orgs: []string{"system:nodes"}, usages: clientAuth,
	})
	if err != nil {
		return err
	}
	keyPEM, err := encodeKey(client.key)
	if err != nil {
		return err
	}
	rotated := KubeletDir + "/pki/kubelet-client-" + now.Format("2006-01-02-15-04-05") + ".pem"
	if err := r.writeFile(rotated, append(encodeCert(client.cert), keyPEM...), 0o600); err != nil {
		return err
	}
	return symlink(filepath.Base(rotated), r.Path(kubeletClientCurrent))
}

const kubeletConfig = `apiVersion: kubelet.config.k8s.io/v1beta1
authentication:
  anonymous:
    enabled: false
  webhook:
    cacheTTL: 0s
    enabled: true
  x509:
    clientCAFile: /etc/kubernetes/pki/ca.crt
authorization:
  mode: Webhook
  webhook:
    cacheAuthorizedTTL: 0s
    cacheUnauthorizedTTL: 0s
cgroupDriver: systemd
clusterDNS:
- 10.96.0.10
clusterDomain: cluster.local
containerRuntimeEndpoint: ""
cpuManagerReconcilePeriod: 0s
evictionPressureTransitionPeriod: 0s
fileCheckFrequency: 0s
healthzBindAddress: 127.0.0.1
healthzPort: 10248
httpCheckFrequency: 0s
imageMaximumGCAge: 0s
imageMinimumGCAge: 0s
kind: KubeletConfiguration
logging:
  flushFrequency: 0
  options:
    json:
      infoBufferSize: "0"
    text:
      infoBufferSize: "0"
  verbosity: 0
memorySwap: {}
nodeStatusReportFrequency: 0s
nodeStatusUpdateFrequency: 0s
resolvConf: /run/systemd/resolve/resolv.conf
rotateCertificates: true
runtimeRequestTimeout: 0s
shutdownGracePeriod: 0s
shutdownGracePeriodCriticalPods: 0s
staticPodPath: /etc/kubernetes/manifests
streamingConnectionIdleTimeout: 0s
syncFrequency: 0s
volumeStatsAggPeriod: 0s
`
