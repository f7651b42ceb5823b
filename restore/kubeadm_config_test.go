package restore

import (
	"strings"
	"testing"
)

// InitConfig pins what it is given under the saved config's apiVersion
// and appends the other documents unchanged; a document that is not one
// YAML mapping with a kind is refused, naming where it came from and the
// line.
func TestInitConfig(t *testing.T) {
	saved := "apiVersion: kubeadm.k8s.io/v1beta3\nkind: ClusterConfiguration\nkubernetesVersion: v1.30.2\n"
	kubelet := "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nmaxPods: 42"
	got, err := InitConfig(InitSettings{ClusterConfiguration: []byte(saved), NodeName: "0123", CRISocket: "unix:///run/crio/crio.sock",
		AdvertiseAddress: "10.0.0.5", BindPort: 6444, Documents: []InitDocument{{From: "kubelet", Data: []byte(kubelet)}}})
	if err != nil {
		t.Fatal(err)
	}
	want := `apiVersion: kubeadm.k8s.io/v1beta3
kind: InitConfiguration
localAPIEndpoint:
  advertiseAddress: "10.0.0.5"
  bindPort: 6444
nodeRegistration:
  name: "0123"
  criSocket: "unix:///run/crio/crio.sock"
---
` + saved + "---\n" + kubelet + "\n"
	if string(got) != want {
		t.Errorf("config:\n%s\nwant:\n%s", got, want)
	}
	// Nothing to pin: only the name.
	got, err = InitConfig(InitSettings{ClusterConfiguration: []byte(saved), NodeName: "cp1"})
	if err != nil || strings.Contains(string(got), "localAPIEndpoint") || strings.Contains(string(got), "criSocket") {
		t.Errorf("%v\n%s", err, got)
	}

	for _, tc := range []struct {
		name string
		s    InitSettings
		want string
	}{
		{"bad yaml", InitSettings{ClusterConfiguration: []byte(saved), Documents: []InitDocument{{From: "version V kubeadm/KubeletConfiguration.yaml", Data: []byte("kind: KubeletConfiguration\nmaxPods: [\n")}}},
			"version V kubeadm/KubeletConfiguration.yaml: yaml: line 2"},
		{"two documents", InitSettings{ClusterConfiguration: []byte(saved), Documents: []InitDocument{{From: "proxy", Data: []byte("apiVersion: v1\nkind: A\n---\nkind: B\n")}}},
			"proxy:3: a second YAML document"},
		{"no kind", InitSettings{ClusterConfiguration: []byte(saved), Documents: []InitDocument{{From: "proxy", Data: []byte("mode: ipvs\n")}}},
			"proxy: no apiVersion and kind"},
		{"a list", InitSettings{ClusterConfiguration: []byte(saved), Documents: []InitDocument{{From: "proxy", Data: []byte("- a\n")}}},
			"proxy:1: not a YAML mapping"},
		{"wrong saved kind", InitSettings{ClusterConfiguration: []byte("kind: InitConfiguration\n")}, "saved ClusterConfiguration is a InitConfiguration"},
		{"bad address", InitSettings{ClusterConfiguration: []byte(saved), AdvertiseAddress: "master-1"}, `advertise address "master-1" is not an IP address`},
	} {
		if _, err := InitConfig(tc.s); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}

// The CRI socket as each kubeadm release records it, and the node's
// config.yaml as a KubeletConfiguration without the socket kubeadm 1.34
// patched into it.
func TestKubeletFilesParsing(t *testing.T) {
	for in, want := range map[string]string{
		`KUBELET_KUBEADM_ARGS="--container-runtime-endpoint=unix:///run/containerd/containerd.sock --pod-infra-container-image=registry.k8s.io/pause:3.9"`: "unix:///run/containerd/containerd.sock",
		"# comment\nKUBELET_KUBEADM_ARGS='--container-runtime-endpoint /var/run/crio/crio.sock'\n":                                                         "/var/run/crio/crio.sock",
		`KUBELET_KUBEADM_ARGS="--pod-infra-container-image=registry.k8s.io/pause:3.10.1"`:                                                                  "",
	} {
		if got, err := runtimeEndpointFlag([]byte(in)); err != nil || got != want {
			t.Errorf("%q: %q %v, want %q", in, got, err, want)
		}
	}
	if got, err := runtimeEndpointOf([]byte("containerRuntimeEndpoint: \"unix:///run/containerd/containerd.sock\"\n")); err != nil || got != "unix:///run/containerd/containerd.sock" {
		t.Errorf("instance-config.yaml: %q %v", got, err)
	}
	if _, err := runtimeEndpointOf([]byte("containerRuntimeEndpoint: [\n")); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("a broken file: %v", err)
	}
	doc, err := nodeLocalKubeletConfig([]byte("apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\ncontainerRuntimeEndpoint: unix:///run/containerd/containerd.sock\nmaxPods: 42\nclusterDNS:\n- 10.96.0.10\n"))
	if want := "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nmaxPods: 42\nclusterDNS:\n  - 10.96.0.10\n"; err != nil || string(doc) != want {
		t.Errorf("node-local config: %v\n%s\nwant:\n%s", err, doc, want)
	}
	if _, err := nodeLocalKubeletConfig([]byte("apiVersion: v1\nkind: Pod\n")); err == nil || !strings.Contains(err.Error(), `"Pod"`) {
		t.Errorf("a Pod as config.yaml: %v", err)
	}
}

// The saved apiVersion is written into the InitConfiguration too: one that
// is not kubeadm's (here with a newline that would add keys of its own) is
// refused, naming the line; a saved document with kind but no apiVersion
// gets one; a node name or CRI socket that is not UTF-8 is refused (%q
// writes a stray byte as \xNN, which YAML reads as another character).
func TestInitConfigRefusesWhatItCannotWriteFaithfully(t *testing.T) {
	for _, tc := range []struct {
		name string
		s    InitSettings
		err  string
	}{
		{"apiVersion injection", InitSettings{ClusterConfiguration: []byte("kind: ClusterConfiguration\napiVersion: \"kubeadm.k8s.io/v1beta4\\nnodeRegistration: {name: evil}\"\n")},
			`saved ClusterConfiguration:2: apiVersion "kubeadm.k8s.io/v1beta4\nnodeRegistration: {name: evil}" is not kubeadm.k8s.io/v1betaN`},
		{"foreign apiVersion", InitSettings{ClusterConfiguration: []byte("apiVersion: kubelet.config.k8s.io/v1beta1\nkind: ClusterConfiguration\n")},
			`saved ClusterConfiguration:1: apiVersion "kubelet.config.k8s.io/v1beta1" is not kubeadm.k8s.io/v1betaN`},
		{"node name not UTF-8", InitSettings{ClusterConfiguration: []byte("kind: ClusterConfiguration\n"), NodeName: "cp\xe8"},
			`node name "cp\xe8" is not valid UTF-8`},
		{"CRI socket not UTF-8", InitSettings{ClusterConfiguration: []byte("kind: ClusterConfiguration\n"), CRISocket: "unix:/\xe8\xe8run/containerd/containerd.sock"},
			`CRI socket "unix:/\xe8\xe8run/containerd/containerd.sock" is not valid UTF-8`},
		{"flow mapping without apiVersion", InitSettings{ClusterConfiguration: []byte("{kind: ClusterConfiguration}")},
			"saved ClusterConfiguration: has no apiVersion or kind"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := InitConfig(tc.s)
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("err %v, want %q; config:\n%s", err, tc.err, out)
			}
		})
	}

	got, err := InitConfig(InitSettings{ClusterConfiguration: []byte("---\nkind: ClusterConfiguration\nkubernetesVersion: v1.34.4\n"), NodeName: "cp1"})
	if err != nil {
		t.Fatal(err)
	}
	want := `apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
nodeRegistration:
  name: "cp1"
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: v1.34.4
`
	if string(got) != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
}
