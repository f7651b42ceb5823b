package testetcd

import (
	"bytes"
	"context"
	"fmt"
	"path"

	clientv3 "go.etcd.io/etcd/client/v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/scheme"
)

var protoSerializer = protobuf.NewSerializer(scheme.Scheme, scheme.Scheme)

// Key is where the apiserver stores an object of resource (plural, e.g.
// "configmaps") in namespace ns ("" for cluster-scoped).
func Key(resource, ns, name string) string {
	if ns == "" {
		return path.Join("/registry", resource, name)
	}
	return path.Join("/registry", resource, ns, name)
}

// Encode returns obj as the apiserver stores it: protobuf behind the
// "k8s\x00" magic, wrapped in runtime.Unknown with apiVersion and kind.
func Encode(obj runtime.Object) ([]byte, error) {
	gvks, _, err := scheme.Scheme.ObjectKinds(obj)
	if err != nil {
		return nil, fmt.Errorf("testetcd: kind of %T: %w", obj, err)
	}
	obj = obj.DeepCopyObject()
	obj.GetObjectKind().SetGroupVersionKind(gvks[0])
	var buf bytes.Buffer
	if err := protoSerializer.Encode(obj, &buf); err != nil {
		return nil, fmt.Errorf("testetcd: encode %T: %w", obj, err)
	}
	return buf.Bytes(), nil
}

// PutObject stores obj under its /registry key and returns the key.
func PutObject(ctx context.Context, c *clientv3.Client, resource string, obj runtime.Object) (string, error) {
	acc, ok := obj.(metav1.Object)
	if !ok {
		return "", fmt.Errorf("testetcd: %T has no object metadata", obj)
	}
	v, err := Encode(obj)
	if err != nil {
		return "", err
	}
	k := Key(resource, acc.GetNamespace(), acc.GetName())
	if _, err := c.Put(ctx, k, string(v)); err != nil {
		return "", fmt.Errorf("testetcd: put %s: %w", k, err)
	}
	return k, nil
}

// ClusterConfiguration is the document a kubeadm v1.31 `init` stores in
// kube-system/kubeadm-config, with the sandbox's node and address.
func ClusterConfiguration(kubernetesVersion, advertiseAddress string) string {
	return `apiServer: {}
apiVersion: kubeadm.k8s.io/v1beta4
caCertificateValidityPeriod: 87600h0m0s
certificateValidityPeriod: 8760h0m0s
certificatesDir: /etc/kubernetes/pki
clusterName: kubernetes
controlPlaneEndpoint: ` + advertiseAddress + `:6443
controllerManager: {}
dns: {}
encryptionAlgorithm: RSA-2048
etcd:
  local:
    dataDir: /var/lib/etcd
imageRepository: registry.k8s.io
kind: ClusterConfiguration
kubernetesVersion: ` + kubernetesVersion + `
networking:
  dnsDomain: cluster.local
  podSubnet: 10.244.0.0/16
  serviceSubnet: 10.96.0.0/12
proxy: {}
scheduler: {}
`
}

// KubeadmConfigMap is kube-system/kubeadm-config holding doc.
func KubeadmConfigMap(doc string) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{
			Name: "kubeadm-config", Namespace: "kube-system",
			UID:               types.UID("5b1f0c53-7b1e-4d53-9d8f-7f1d8c2b1a01"),
			CreationTimestamp: metav1.Unix(1718000000, 0),
		},
		Data: map[string]string{"ClusterConfiguration": doc},
	}
}

// LoadCluster writes what a fresh kubeadm cluster has in etcd that
// kubekeep cares about: the kubeadm-config ConfigMap, namespaces, a
// Secret, a ConfigMap and a Deployment. It returns the keys written.
func (s *Server) LoadCluster(ctx context.Context) ([]string, error) {
	c, err := s.Client()
	if err != nil {
		return nil, err
	}
	r := s.root
	objs := []struct {
		resource string
		obj      runtime.Object
	}{
		{"configmaps", KubeadmConfigMap(ClusterConfiguration(r.Opts.KubernetesVersion, r.Opts.AdvertiseAddress))},
		{"namespaces", &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kube-system"}}},
		{"namespaces", &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "default"}}},
		{"namespaces", &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}},
		{"configmaps", &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "shop-settings", Namespace: "shop"},
			Data: map[string]string{"currency": "EUR", "featureFlags": "checkout-v2"}}},
		{"secrets", &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "db-password", Namespace: "shop"},
			Type: corev1.SecretTypeOpaque, Data: map[string][]byte{"password": []byte("not-a-real-password")}}},
		{"deployments", shopDeployment()},
	}
	var keys []string
	for _, o := range objs {
		k, err := PutObject(ctx, c, o.resource, o.obj)
		if err != nil {
			return keys, err
		}
		keys = append(keys, k)
	}
	return keys, nil
}

func shopDeployment() *appsv1.Deployment {
	replicas := int32(2)
	labels := map[string]string{"app": "shop"}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "shop", Namespace: "shop", Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "shop", Image: "registry.example.com/shop:1.4.2",
					Ports: []corev1.ContainerPort{{ContainerPort: 8080}},
				}}},
			},
		},
	}
}
