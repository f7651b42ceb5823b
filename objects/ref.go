package objects

import (
	"fmt"
	"slices"
	"strings"
)

// Ref names one Kubernetes object the way its etcd key does: a resource
// (plural, with its API group when it has one), an optional namespace and a
// name.
type Ref struct {
	Group     string // "" for the core group
	Resource  string // plural, lower case: "configmaps"
	Namespace string // "" for cluster-scoped objects
	Name      string
}

// String prints the ref in the form ParseRef reads back:
// RESOURCE[.GROUP][/NAMESPACE]/NAME.
func (r Ref) String() string {
	res := r.Resource
	if r.Group != "" {
		res += "." + r.Group
	}
	if r.Namespace == "" {
		return res + "/" + r.Name
	}
	return res + "/" + r.Namespace + "/" + r.Name
}

// Key is the etcd key the apiserver stores this object under.
func (r Ref) Key() string {
	p := etcdPrefix(r.Group, r.Resource)
	if r.Namespace == "" {
		return registryPrefix + p + "/" + r.Name
	}
	return registryPrefix + p + "/" + r.Namespace + "/" + r.Name
}

// registryPrefix is kube-apiserver's default --etcd-prefix. kubeadm never
// changes it, and a cluster that did would need the prefix as an option.
const registryPrefix = "/registry/"

// resourceInfo describes one built-in resource: how people spell it and
// where the apiserver stores it.
type resourceInfo struct {
	group      string
	resource   string
	kind       string
	namespaced bool
	// prefix under /registry/ when it is not simply the resource name. The
	// apiserver's storage factory keys almost every built-in resource by its
	// plural alone (no group); the exceptions below are
	// kube-apiserver's SpecialDefaultResourcePrefixes plus the two API
	// servers (apiextensions, aggregator) that put their group in the key.
	prefix string
	short  []string
}

var builtins = []resourceInfo{
	{"", "configmaps", "ConfigMap", true, "", []string{"cm"}},
	{"", "secrets", "Secret", true, "", nil},
	{"", "namespaces", "Namespace", false, "", []string{"ns"}},
	{"", "pods", "Pod", true, "", []string{"po"}},
	{"", "services", "Service", true, "services/specs", []string{"svc"}},
	{"", "endpoints", "Endpoints", true, "services/endpoints", []string{"ep"}},
	{"", "nodes", "Node", false, "minions", []string{"no"}},
	{"", "serviceaccounts", "ServiceAccount", true, "", []string{"sa"}},
	{"", "persistentvolumes", "PersistentVolume", false, "", []string{"pv"}},
	{"", "persistentvolumeclaims", "PersistentVolumeClaim", true, "", []string{"pvc"}},
	{"", "replicationcontrollers", "ReplicationController", true, "controllers", []string{"rc"}},
	{"", "limitranges", "LimitRange", true, "", []string{"limits"}},
	{"", "resourcequotas", "ResourceQuota", true, "", []string{"quota"}},
	{"", "podtemplates", "PodTemplate", true, "", nil},
	{"", "events", "Event", true, "", []string{"ev"}},
	{"apps", "deployments", "Deployment", true, "", []string{"deploy"}},
	{"apps", "daemonsets", "DaemonSet", true, "", []string{"ds"}},
	{"apps", "statefulsets", "StatefulSet", true, "", []string{"sts"}},
	{"apps", "replicasets", "ReplicaSet", true, "", []string{"rs"}},
	{"apps", "controllerrevisions", "ControllerRevision", true, "", nil},
	{"batch", "jobs", "Job", true, "", nil},
	{"batch", "cronjobs", "CronJob", true, "", []string{"cj"}},
	{"autoscaling", "horizontalpodautoscalers", "HorizontalPodAutoscaler", true, "", []string{"hpa"}},
	{"policy", "poddisruptionbudgets", "PodDisruptionBudget", true, "", []string{"pdb"}},
	{"networking.k8s.io", "networkpolicies", "NetworkPolicy", true, "", []string{"netpol"}},
	{"networking.k8s.io", "ingresses", "Ingress", true, "ingress", []string{"ing"}},
	{"networking.k8s.io", "ingressclasses", "IngressClass", false, "", nil},
	{"networking.k8s.io", "ipaddresses", "IPAddress", false, "", []string{"ip"}},
	{"networking.k8s.io", "servicecidrs", "ServiceCIDR", false, "", nil},
	{"rbac.authorization.k8s.io", "roles", "Role", true, "", nil},
	{"rbac.authorization.k8s.io", "rolebindings", "RoleBinding", true, "", nil},
	{"rbac.authorization.k8s.io", "clusterroles", "ClusterRole", false, "", nil},
	{"rbac.authorization.k8s.io", "clusterrolebindings", "ClusterRoleBinding", false, "", nil},
	{"storage.k8s.io", "storageclasses", "StorageClass", false, "", []string{"sc"}},
	{"storage.k8s.io", "csidrivers", "CSIDriver", false, "", nil},
	{"storage.k8s.io", "csinodes", "CSINode", false, "", nil},
	{"storage.k8s.io", "volumeattachments", "VolumeAttachment", false, "", nil},
	{"storage.k8s.io", "csistoragecapacities", "CSIStorageCapacity", true, "", nil},
	{"storage.k8s.io", "volumeattributesclasses", "VolumeAttributesClass", false, "", []string{"vac"}},
	{"scheduling.k8s.io", "priorityclasses", "PriorityClass", false, "", []string{"pc"}},
	{"coordination.k8s.io", "leases", "Lease", true, "", nil},
	{"discovery.k8s.io", "endpointslices", "EndpointSlice", true, "", nil},
	{"admissionregistration.k8s.io", "mutatingwebhookconfigurations", "MutatingWebhookConfiguration", false, "", nil},
	{"admissionregistration.k8s.io", "validatingwebhookconfigurations", "ValidatingWebhookConfiguration", false, "", nil},
	{"admissionregistration.k8s.io", "validatingadmissionpolicies", "ValidatingAdmissionPolicy", false, "", nil},
	{"admissionregistration.k8s.io", "validatingadmissionpolicybindings", "ValidatingAdmissionPolicyBinding", false, "", nil},
	{"certificates.k8s.io", "certificatesigningrequests", "CertificateSigningRequest", false, "", []string{"csr"}},
	{"node.k8s.io", "runtimeclasses", "RuntimeClass", false, "", nil},
	{"flowcontrol.apiserver.k8s.io", "flowschemas", "FlowSchema", false, "", nil},
	{"flowcontrol.apiserver.k8s.io", "prioritylevelconfigurations", "PriorityLevelConfiguration", false, "", nil},
	{"resource.k8s.io", "resourceclaims", "ResourceClaim", true, "", nil},
	{"resource.k8s.io", "resourceclaimtemplates", "ResourceClaimTemplate", true, "", nil},
	{"resource.k8s.io", "deviceclasses", "DeviceClass", false, "", nil},
	{"resource.k8s.io", "resourceslices", "ResourceSlice", false, "", nil},
	{"apiextensions.k8s.io", "customresourcedefinitions", "CustomResourceDefinition", false, "apiextensions.k8s.io/customresourcedefinitions", []string{"crd", "crds"}},
	{"apiregistration.k8s.io", "apiservices", "APIService", false, "apiregistration.k8s.io/apiservices", nil},
}

var (
	// byName maps every accepted spelling (plural, singular, short name,
	// each also qualified with the group) to its resource.
	byName = map[string]*resourceInfo{}
	// byGroupResource maps "group/resource" to its resource.
	byGroupResource = map[string]*resourceInfo{}
	// byPrefix maps the storage prefix (the part after /registry/) back.
	byPrefix = map[string]*resourceInfo{}
	// builtinGroups are the API groups whose resources live at
	// /registry/<resource>; a custom resource in any other group lives at
	// /registry/<group>/<resource>.
	builtinGroups = map[string]bool{}
)

func init() {
	for i := range builtins {
		ri := &builtins[i]
		names := append([]string{ri.resource, strings.ToLower(ri.kind)}, ri.short...)
		for _, n := range names {
			if _, taken := byName[n]; !taken {
				byName[n] = ri
			}
			if ri.group != "" {
				byName[n+"."+ri.group] = ri
			}
		}
		byGroupResource[ri.group+"/"+ri.resource] = ri
		byPrefix[storagePrefix(ri)] = ri
		builtinGroups[ri.group] = true
	}
	// Built-in groups with resources kubekeep has no row for (old or
	// alpha APIs) still store at /registry/<resource>.
	for _, g := range []string{"extensions", "authentication.k8s.io", "authorization.k8s.io", "events.k8s.io",
		"internal.apiserver.k8s.io", "storagemigration.k8s.io", "autoscaling"} {
		builtinGroups[g] = true
	}
}

func storagePrefix(ri *resourceInfo) string {
	if ri.prefix != "" {
		return ri.prefix
	}
	return ri.resource
}

// etcdPrefix is where objects of a resource are stored, below /registry/.
func etcdPrefix(group, resource string) string {
	if ri, ok := byGroupResource[group+"/"+resource]; ok {
		return storagePrefix(ri)
	}
	if builtinGroups[group] {
		return resource
	}
	return group + "/" + resource
}

// ParseRef reads RESOURCE[.GROUP][/NAMESPACE]/NAME. RESOURCE may be a
// plural, a singular or a kubectl short name ("cm", "deploy"); a custom
// resource is written plural.group ("widgets.example.com"); a group has no
// empty label, so "deployments." is refused rather than read as a core
// resource that would print back as apps' deployments. A known
// namespaced resource needs a namespace, a known cluster-scoped one must not
// have one.
func ParseRef(s string) (Ref, error) {
	parts := strings.Split(s, "/")
	if len(parts) < 2 || len(parts) > 3 {
		return Ref{}, fmt.Errorf("object %q: want RESOURCE/NAMESPACE/NAME or RESOURCE/NAME", s)
	}
	for _, p := range parts {
		if p == "" || p == "." || p == ".." {
			return Ref{}, fmt.Errorf("object %q: empty or dot path segment", s)
		}
	}
	ri, group, resource, err := lookupResource(parts[0])
	if err != nil {
		return Ref{}, fmt.Errorf("object %q: %w", s, err)
	}
	ref := Ref{Group: group, Resource: resource, Name: parts[len(parts)-1]}
	if len(parts) == 3 {
		ref.Namespace = parts[1]
	}
	if ri != nil {
		switch {
		case ri.namespaced && ref.Namespace == "":
			return Ref{}, fmt.Errorf("object %q: %s are namespaced, want %s/NAMESPACE/NAME", s, ri.resource, parts[0])
		case !ri.namespaced && ref.Namespace != "":
			return Ref{}, fmt.Errorf("object %q: %s are cluster-scoped, want %s/NAME", s, ri.resource, parts[0])
		}
	}
	return ref, nil
}

// ParseResource reads a resource name alone, as ParseRef reads the first
// segment, for listing by resource.
func ParseResource(s string) (group, resource string, err error) {
	if s == "" || strings.Contains(s, "/") {
		return "", "", fmt.Errorf("resource %q: want a name like configmaps, cm or widgets.example.com", s)
	}
	_, group, resource, err = lookupResource(s)
	return group, resource, err
}

// lookupResource resolves a spelling to a known resource when it can, and
// otherwise reads it as plural[.group] so custom resources work without
// discovery.
func lookupResource(s string) (*resourceInfo, string, string, error) {
	low := strings.ToLower(s)
	if ri, ok := byName[low]; ok {
		return ri, ri.group, ri.resource, nil
	}
	plural, group, dotted := strings.Cut(low, ".")
	if plural == "" || strings.ContainsAny(low, " \t\n\x00") {
		return nil, "", "", fmt.Errorf("bad resource name %q", s)
	}
	// "deployments." would be the core group spelled with a dot, which
	// String never prints: read back as "deployments", it would be apps'
	// Deployments. A group is a DNS name: no empty label anywhere.
	if dotted && slices.Contains(strings.Split(group, "."), "") {
		return nil, "", "", fmt.Errorf("bad resource name %q: empty API group label (core resources take no group: write %q)", s, plural)
	}
	if ri, ok := byGroupResource[group+"/"+plural]; ok {
		return ri, ri.group, ri.resource, nil
	}
	return nil, group, plural, nil
}

// RefFromKey reads the object a /registry key names. It reports false for
// keys that do not name an object (outside /registry, or too deep).
func RefFromKey(key string) (Ref, bool) {
	rest, ok := strings.CutPrefix(key, registryPrefix)
	if !ok {
		return Ref{}, false
	}
	segs := strings.Split(rest, "/")
	var group, resource string
	var n int // segments the resource prefix takes
	if len(segs) >= 3 {
		if ri, ok := byPrefix[segs[0]+"/"+segs[1]]; ok {
			group, resource, n = ri.group, ri.resource, 2
		}
	}
	if n == 0 {
		if ri, ok := byPrefix[segs[0]]; ok {
			group, resource, n = ri.group, ri.resource, 1
		} else if strings.Contains(segs[0], ".") && len(segs) >= 3 {
			group, resource, n = segs[0], segs[1], 2
		} else {
			group, resource, n = "", segs[0], 1
		}
	}
	tail := segs[n:]
	for _, s := range segs {
		if s == "" {
			return Ref{}, false
		}
	}
	var ref Ref
	switch len(tail) {
	case 1:
		ref = Ref{Group: group, Resource: resource, Name: tail[0]}
	case 2:
		ref = Ref{Group: group, Resource: resource, Namespace: tail[0], Name: tail[1]}
	default:
		return Ref{}, false
	}
	// A key the apiserver would not write for this ref (services/<x> is
	// neither services/specs nor services/endpoints) names no object.
	if ref.Key() != key {
		return Ref{}, false
	}
	return ref, true
}
