package restore

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"

	"github.com/kubekeep/kubekeep/backup/versionread"
	"github.com/kubekeep/kubekeep/layout"
)

// The kubelet files a version holds that say which container runtime the
// node used (kubeadm 1.34+: instance-config.yaml, and patched into
// config.yaml; up to 1.33: kubeadm-flags.env's flag).
const (
	kubeletConfigFile   = "/var/lib/kubelet/config.yaml"
	instanceConfigFile  = "/var/lib/kubelet/instance-config.yaml"
	kubeadmFlagsEnvFile = "/var/lib/kubelet/kubeadm-flags.env"
)

// InitSettings are what the config `kubeadm init --config` gets is made
// of: the saved ClusterConfiguration and what kubeadm would otherwise
// detect or default differently from the node that was backed up.
type InitSettings struct {
	// ClusterConfiguration is the saved document (kube-system/kubeadm-config).
	ClusterConfiguration []byte
	// NodeName pins nodeRegistration.name.
	NodeName string
	// CRISocket pins nodeRegistration.criSocket. Without it kubeadm
	// probes for a runtime socket and falls back to
	// unix:///var/run/containerd/containerd.sock.
	CRISocket string
	// AdvertiseAddress and BindPort pin localAPIEndpoint; empty and 0 let
	// kubeadm detect the address (the default route's interface) and take
	// port 6443.
	AdvertiseAddress string
	BindPort         int
	// Documents follow the ClusterConfiguration unchanged: the cluster's
	// KubeletConfiguration and KubeProxyConfiguration, which kubeadm init
	// otherwise writes with its defaults (into /var/lib/kubelet/config.yaml
	// and the kubelet-config and kube-proxy ConfigMaps).
	Documents []InitDocument
}

// InitDocument is one more document of the kubeadm config.
type InitDocument struct {
	// From names where it came from, for errors and the account.
	From string
	Data []byte
}

// InitConfig is the config `kubeadm init --config` gets: an
// InitConfiguration pinning the old node name, CRI socket and API
// endpoint, then the saved ClusterConfiguration unchanged (an apiVersion
// or kind it lacks added in front), then the other documents. Each
// document must be one YAML mapping; a bad one is an error naming where it
// came from and the line. The saved apiVersion, which the
// InitConfiguration takes too, must be kubeadm.k8s.io/v1betaN; the node
// name and CRI socket must be valid UTF-8.
func InitConfig(s InitSettings) ([]byte, error) {
	head, err := docHead(s.ClusterConfiguration, "saved ClusterConfiguration")
	if err != nil {
		return nil, err
	}
	if head.Kind != "" && head.Kind != "ClusterConfiguration" {
		return nil, fmt.Errorf("saved ClusterConfiguration is a %s", head.Kind)
	}
	saved := head.APIVersion
	switch {
	case head.APIVersion == "":
		head.APIVersion = "kubeadm.k8s.io/v1beta4"
	case !kubeadmAPIVersion.MatchString(head.APIVersion):
		// It is written into the InitConfiguration too: refuse anything
		// but kubeadm's own config API versions.
		return nil, fmt.Errorf("saved ClusterConfiguration:%d: apiVersion %q is not kubeadm.k8s.io/v1betaN", head.apiVersionLine, head.APIVersion)
	}
	// Written with %q, whose escapes YAML's double-quoted scalars share,
	// except \xNN: YAML reads it as the code point U+00NN, not a byte.
	if !utf8.ValidString(s.NodeName) {
		return nil, fmt.Errorf("node name %q is not valid UTF-8", s.NodeName)
	}
	if !utf8.ValidString(s.CRISocket) {
		return nil, fmt.Errorf("CRI socket %q is not valid UTF-8", s.CRISocket)
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "apiVersion: %s\nkind: InitConfiguration\n", head.APIVersion)
	if s.AdvertiseAddress != "" || s.BindPort != 0 {
		b.WriteString("localAPIEndpoint:\n")
		if s.AdvertiseAddress != "" {
			if net.ParseIP(s.AdvertiseAddress) == nil {
				return nil, fmt.Errorf("advertise address %q is not an IP address", s.AdvertiseAddress)
			}
			fmt.Fprintf(&b, "  advertiseAddress: %q\n", s.AdvertiseAddress)
		}
		if s.BindPort != 0 {
			fmt.Fprintf(&b, "  bindPort: %d\n", s.BindPort)
		}
	}
	if s.NodeName != "" || s.CRISocket != "" {
		b.WriteString("nodeRegistration:\n")
		// Quoted: a node name like "0123" must stay a string.
		if s.NodeName != "" {
			fmt.Fprintf(&b, "  name: %q\n", s.NodeName)
		}
		if s.CRISocket != "" {
			fmt.Fprintf(&b, "  criSocket: %q\n", s.CRISocket)
		}
	}
	b.WriteString("---\n")
	// kubeadm refuses a document without apiVersion or kind: add what the
	// saved one lacks in front of it, and check that it reads back so.
	var cc bytes.Buffer
	if saved == "" {
		fmt.Fprintf(&cc, "apiVersion: %s\n", head.APIVersion)
	}
	if head.Kind == "" {
		cc.WriteString("kind: ClusterConfiguration\n")
	}
	if cc.Len() == 0 {
		writeDoc(&cc, s.ClusterConfiguration)
	} else {
		writeDoc(&cc, bytes.TrimPrefix(s.ClusterConfiguration, []byte("---\n")))
		if h, err := docHead(cc.Bytes(), "saved ClusterConfiguration"); err != nil || h.APIVersion != head.APIVersion || h.Kind != "ClusterConfiguration" {
			return nil, fmt.Errorf("saved ClusterConfiguration: has no apiVersion or kind, and adding them in front does not give a ClusterConfiguration document (a flow mapping?)")
		}
	}
	b.Write(cc.Bytes())
	for _, d := range s.Documents {
		h, err := docHead(d.Data, d.From)
		if err != nil {
			return nil, err
		}
		if h.Kind == "" || h.APIVersion == "" {
			return nil, fmt.Errorf("%s: no apiVersion and kind: not a configuration document kubeadm takes", d.From)
		}
		b.WriteString("---\n")
		writeDoc(&b, bytes.TrimPrefix(d.Data, []byte("---\n")))
	}
	return b.Bytes(), nil
}

func writeDoc(b *bytes.Buffer, doc []byte) {
	b.Write(doc)
	if !bytes.HasSuffix(doc, []byte("\n")) {
		b.WriteByte('\n')
	}
}

type yamlHead struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	// apiVersionLine is the line of the apiVersion key (0: none).
	apiVersionLine int
}

// kubeadmAPIVersion matches the config API versions kubeadm has had.
var kubeadmAPIVersion = regexp.MustCompile(`^kubeadm\.k8s\.io/v1beta[1-9][0-9]*$`)

// docHead reads a document's apiVersion and kind, refusing anything that
// is not one YAML mapping (kubeadm would split a second document off as a
// config of its own).
func docHead(data []byte, from string) (yamlHead, error) {
	var h yamlHead
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var n yaml.Node
	if err := dec.Decode(&n); err != nil {
		return h, fmt.Errorf("%s: %w", from, err)
	}
	if len(n.Content) == 0 || n.Content[0].Kind != yaml.MappingNode {
		return h, fmt.Errorf("%s:%d: not a YAML mapping", from, max(n.Line, 1))
	}
	var next yaml.Node
	if err := dec.Decode(&next); err == nil {
		return h, fmt.Errorf("%s:%d: a second YAML document", from, max(next.Line, 1))
	}
	if err := n.Decode(&h); err != nil {
		return h, fmt.Errorf("%s: %w", from, err)
	}
	m := n.Content[0].Content
	for i := 0; i+1 < len(m); i += 2 {
		if m[i].Value == "apiVersion" {
			h.apiVersionLine = m[i].Line
		}
	}
	return h, nil
}

// initSettings gathers from the version what kubeadm init must be told so
// the rebuilt node is the one that was backed up, and says where each
// setting came from (or why it is left to kubeadm) in notes.
func (r *runner) initSettings(a *analysis) (s InitSettings, notes []string, err error) {
	s = InitSettings{ClusterConfiguration: a.clusterConfig, NodeName: a.nodeName}
	src, store := r.src, r.opts.Store
	vfile := func(p string) string { return fmt.Sprintf("version %s %s", src.id, p) }

	// The CRI socket: kubeadm 1.34+ keeps it only in instance-config.yaml
	// (and patches it into config.yaml), up to 1.33 in kubeadm-flags.env.
	socket, from := "", ""
	for _, c := range []struct {
		path  string
		parse func([]byte) (string, error)
	}{
		{instanceConfigFile, runtimeEndpointOf},
		{kubeletConfigFile, runtimeEndpointOf},
		{kubeadmFlagsEnvFile, runtimeEndpointFlag},
	} {
		data, err := src.readFile(store, c.path)
		if err != nil {
			return s, nil, err
		}
		if data == nil {
			continue
		}
		v, err := c.parse(data)
		if err != nil {
			r.warn("%s: %v; the CRI socket is taken from elsewhere", vfile(c.path), err)
			continue
		}
		if v != "" {
			socket, from = v, c.path
			break
		}
	}
	if socket != "" {
		s.CRISocket = socket
		notes = append(notes, fmt.Sprintf("nodeRegistration.criSocket %s (from %s)", socket, from))
	} else {
		r.warn("the version says nowhere which CRI socket the node used (%s, %s, %s): kubeadm detects one, or falls back to containerd's /var/run/containerd/containerd.sock",
			instanceConfigFile, kubeletConfigFile, kubeadmFlagsEnvFile)
	}

	// The API endpoint the apiserver advertised, when this host still has
	// the address; kubeadm would detect one from the default route.
	addr, port, manifest, err := r.backedUpAPIEndpoint()
	if err != nil {
		r.warn("%v; localAPIEndpoint is left to kubeadm", err)
	}
	if port != 0 && port != 6443 {
		s.BindPort = port
		notes = append(notes, fmt.Sprintf("localAPIEndpoint.bindPort %d (the --secure-port of %s)", port, manifest))
	}
	if ip := net.ParseIP(addr); ip != nil {
		if r.host.hasIP(ip) {
			s.AdvertiseAddress = addr
			notes = append(notes, fmt.Sprintf("localAPIEndpoint.advertiseAddress %s (the --advertise-address of %s, still an address of this host)", addr, manifest))
		} else {
			r.note("the backed-up apiserver advertised %s, which this host does not have (%s): the advertise address is left to kubeadm, which takes the address of the default route's interface", addr, r.host.ipList())
		}
	}

	// The kubelet's and kube-proxy's configurations: exported from etcd
	// by the backup; for the kubelet, the node's config.yaml when the
	// version predates that export.
	docs := []struct{ stream, kind, from string }{
		{versionread.KubeletConfigurationStream, "KubeletConfiguration", "kube-system/kubelet-config"},
		{versionread.KubeProxyConfigurationStream, "KubeProxyConfiguration", "kube-system/kube-proxy"},
	}
	for _, d := range docs {
		if !src.hasStream(d.stream) {
			continue
		}
		data, err := src.readStream(store, d.stream)
		if err != nil {
			return s, nil, err
		}
		s.Documents = append(s.Documents, InitDocument{From: vfile(d.stream), Data: data})
		notes = append(notes, fmt.Sprintf("the %s of %s at the backup", d.kind, d.from))
	}
	if !src.hasStream(versionread.KubeletConfigurationStream) {
		data, err := src.readFile(store, kubeletConfigFile)
		if err != nil {
			return s, nil, err
		}
		if data == nil {
			r.warn("the version holds no KubeletConfiguration (neither kube-system/kubelet-config nor %s): kubeadm init writes its defaults", kubeletConfigFile)
		} else if doc, err := nodeLocalKubeletConfig(data); err != nil {
			r.warn("%s: %v; kubeadm init writes its default KubeletConfiguration", vfile(kubeletConfigFile), err)
		} else {
			s.Documents = append(s.Documents, InitDocument{From: vfile(kubeletConfigFile), Data: doc})
			notes = append(notes, "the KubeletConfiguration of the node's "+kubeletConfigFile+" (the version predates the export of kube-system/kubelet-config)")
		}
	}
	return s, notes, nil
}

// runtimeEndpointOf reads containerRuntimeEndpoint from a kubelet config
// file (config.yaml, or instance-config.yaml, a partial one).
func runtimeEndpointOf(data []byte) (string, error) {
	var c struct {
		ContainerRuntimeEndpoint string `yaml:"containerRuntimeEndpoint"`
	}
	if err := yaml.Unmarshal(data, &c); err != nil {
		return "", err
	}
	return strings.TrimSpace(c.ContainerRuntimeEndpoint), nil
}

// runtimeEndpointFlag reads --container-runtime-endpoint from
// KUBELET_KUBEADM_ARGS in kubeadm-flags.env (kubeadm up to 1.33).
func runtimeEndpointFlag(data []byte) (string, error) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	v := ""
	for sc.Scan() {
		name, val, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
		if !ok || strings.TrimSpace(name) != "KUBELET_KUBEADM_ARGS" {
			continue
		}
		val = strings.TrimSpace(val)
		if len(val) >= 2 && (val[0] == '"' || val[0] == '\'') && val[len(val)-1] == val[0] {
			val = val[1 : len(val)-1]
		}
		args := strings.Fields(val)
		for i, a := range args {
			switch {
			case strings.HasPrefix(a, "--container-runtime-endpoint="):
				v = strings.TrimPrefix(a, "--container-runtime-endpoint=")
			case a == "--container-runtime-endpoint" && i+1 < len(args):
				v = args[i+1]
			}
		}
	}
	return v, sc.Err()
}

// nodeLocalKubeletConfig turns the node's config.yaml into the
// KubeletConfiguration document for kubeadm init: the same, less the
// runtime endpoint kubeadm 1.34 patched in from instance-config.yaml
// (nodeRegistration.criSocket says it; kubeadm keeps it per node).
func nodeLocalKubeletConfig(data []byte) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, err
	}
	if len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, errors.New("not a YAML mapping")
	}
	m := doc.Content[0]
	var h yamlHead
	if err := m.Decode(&h); err != nil {
		return nil, err
	}
	if h.Kind != "KubeletConfiguration" {
		return nil, fmt.Errorf("holds a %q, not a KubeletConfiguration", h.Kind)
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == "containerRuntimeEndpoint" {
			m.Content = append(m.Content[:i], m.Content[i+2:]...)
			break
		}
	}
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2) // as kubeadm and the kubelet write it
	if err := enc.Encode(&doc); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// backedUpAPIEndpoint reads --advertise-address and --secure-port from the
// kube-apiserver manifest the version holds. No manifest, or one without
// the flags, gives "" and 0.
func (r *runner) backedUpAPIEndpoint() (addr string, port int, manifest string, err error) {
	for _, e := range r.src.entries {
		if e.Type != "file" || !within(e.Path, layout.ManifestsDir) {
			continue
		}
		data, err := r.src.readFile(r.opts.Store, e.Path)
		if err != nil {
			return "", 0, "", err
		}
		pod, err := layout.ParseManifest(e.Path, data)
		if err != nil {
			continue // discovery reported it when the backup ran
		}
		for _, c := range pod.Spec.Containers {
			if !isAPIServer(c.Name, c.Command) {
				continue
			}
			f := layout.ContainerFlags(c)
			addr = f["advertise-address"]
			if addr != "" && net.ParseIP(addr) == nil {
				return "", 0, e.Path, fmt.Errorf("version %s %s: --advertise-address=%s is not an IP address", r.src.id, e.Path, addr)
			}
			if p := f["secure-port"]; p != "" {
				if port, err = strconv.Atoi(p); err != nil || port <= 0 || port > 65535 {
					return addr, 0, e.Path, fmt.Errorf("version %s %s: --secure-port=%s is not a port", r.src.id, e.Path, p)
				}
			}
			return addr, port, e.Path, nil
		}
	}
	return "", 0, "", nil
}

func isAPIServer(name string, command []string) bool {
	if name == "kube-apiserver" {
		return true
	}
	return len(command) > 0 && (command[0] == "kube-apiserver" || strings.HasSuffix(command[0], "/kube-apiserver"))
}
