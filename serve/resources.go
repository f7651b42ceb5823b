package serve

import (
	"fmt"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/version"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/kubekeep/kubekeep/objects"
)

// resource is one served resource: a built-in one from the table below,
// or a custom resource from a CRD found in the snapshot.
type resource struct {
	group, version string
	plural         string
	singular       string
	kind           string
	namespaced     bool
	short          []string
	categories     []string
	// fields are the field selectors this resource answers beyond
	// metadata.name and metadata.namespace, each the JSON path (dotted)
	// of its value, as the apiserver's field label conversion names them.
	fields map[string]string
	// columns print the Table rows (nil: NAME and AGE).
	columns []column
	// crd is set for custom resources.
	crd *crdVersion
}

func (r *resource) gvk() schema.GroupVersionKind {
	return schema.GroupVersionKind{Group: r.group, Version: r.version, Kind: r.kind}
}

func (r *resource) apiVersion() string {
	if r.group == "" {
		return r.version
	}
	return r.group + "/" + r.version
}

// groupResource is how errors name the resource ("configmaps",
// "deployments.apps"), as the apiserver does.
func (r *resource) groupResource() string {
	if r.group == "" {
		return r.plural
	}
	return r.plural + "." + r.group
}

// filter is the key-index filter of the resource's objects.
func (r *resource) filter(namespace string) objects.Filter {
	return objects.Filter{Group: r.group, Resource: r.plural, Namespace: namespace}
}

// builtin describes a built-in resource at the version kube-apiserver 1.34
// serves and stores it in. Objects are served as stored: the apiserver
// converts between versions through its internal types, which exist
// only in k8s.io/kubernetes, so one version per group is offered (the
// storage version, which every object written by a current apiserver
// carries).
type builtin struct {
	gv         string
	plural     string
	kind       string
	namespaced bool
	short      []string
}

var builtins = []builtin{
	{"v1", "configmaps", "ConfigMap", true, []string{"cm"}},
	{"v1", "secrets", "Secret", true, nil},
	{"v1", "namespaces", "Namespace", false, []string{"ns"}},
	{"v1", "pods", "Pod", true, []string{"po"}},
	{"v1", "services", "Service", true, []string{"svc"}},
	{"v1", "endpoints", "Endpoints", true, []string{"ep"}},
	{"v1", "nodes", "Node", false, []string{"no"}},
	{"v1", "serviceaccounts", "ServiceAccount", true, []string{"sa"}},
	{"v1", "persistentvolumes", "PersistentVolume", false, []string{"pv"}},
	{"v1", "persistentvolumeclaims", "PersistentVolumeClaim", true, []string{"pvc"}},
	{"v1", "replicationcontrollers", "ReplicationController", true, []string{"rc"}},
	{"v1", "limitranges", "LimitRange", true, []string{"limits"}},
	{"v1", "resourcequotas", "ResourceQuota", true, []string{"quota"}},
	{"v1", "podtemplates", "PodTemplate", true, nil},
	{"v1", "events", "Event", true, []string{"ev"}},
	{"apps/v1", "deployments", "Deployment", true, []string{"deploy"}},
	{"apps/v1", "daemonsets", "DaemonSet", true, []string{"ds"}},
	{"apps/v1", "statefulsets", "StatefulSet", true, []string{"sts"}},
	{"apps/v1", "replicasets", "ReplicaSet", true, []string{"rs"}},
	{"apps/v1", "controllerrevisions", "ControllerRevision", true, nil},
	{"batch/v1", "jobs", "Job", true, nil},
	{"batch/v1", "cronjobs", "CronJob", true, []string{"cj"}},
	{"autoscaling/v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler", true, []string{"hpa"}},
	{"policy/v1", "poddisruptionbudgets", "PodDisruptionBudget", true, []string{"pdb"}},
	{"networking.k8s.io/v1", "networkpolicies", "NetworkPolicy", true, []string{"netpol"}},
	{"networking.k8s.io/v1", "ingresses", "Ingress", true, []string{"ing"}},
	{"networking.k8s.io/v1", "ingressclasses", "IngressClass", false, nil},
	{"networking.k8s.io/v1", "ipaddresses", "IPAddress", false, []string{"ip"}},
	{"networking.k8s.io/v1", "servicecidrs", "ServiceCIDR", false, nil},
	{"rbac.authorization.k8s.io/v1", "roles", "Role", true, nil},
	{"rbac.authorization.k8s.io/v1", "rolebindings", "RoleBinding", true, nil},
	{"rbac.authorization.k8s.io/v1", "clusterroles", "ClusterRole", false, nil},
	{"rbac.authorization.k8s.io/v1", "clusterrolebindings", "ClusterRoleBinding", false, nil},
	{"storage.k8s.io/v1", "storageclasses", "StorageClass", false, []string{"sc"}},
	{"storage.k8s.io/v1", "csidrivers", "CSIDriver", false, nil},
	{"storage.k8s.io/v1", "csinodes", "CSINode", false, nil},
	{"storage.k8s.io/v1", "volumeattachments", "VolumeAttachment", false, nil},
	{"storage.k8s.io/v1", "csistoragecapacities", "CSIStorageCapacity", true, nil},
	{"storage.k8s.io/v1", "volumeattributesclasses", "VolumeAttributesClass", false, []string{"vac"}},
	{"scheduling.k8s.io/v1", "priorityclasses", "PriorityClass", false, []string{"pc"}},
	{"coordination.k8s.io/v1", "leases", "Lease", true, nil},
	{"discovery.k8s.io/v1", "endpointslices", "EndpointSlice", true, nil},
	{"admissionregistration.k8s.io/v1", "mutatingwebhookconfigurations", "MutatingWebhookConfiguration", false, nil},
	{"admissionregistration.k8s.io/v1", "validatingwebhookconfigurations", "ValidatingWebhookConfiguration", false, nil},
	{"admissionregistration.k8s.io/v1", "validatingadmissionpolicies", "ValidatingAdmissionPolicy", false, nil},
	{"admissionregistration.k8s.io/v1", "validatingadmissionpolicybindings", "ValidatingAdmissionPolicyBinding", false, nil},
	{"certificates.k8s.io/v1", "certificatesigningrequests", "CertificateSigningRequest", false, []string{"csr"}},
	{"node.k8s.io/v1", "runtimeclasses", "RuntimeClass", false, nil},
	{"flowcontrol.apiserver.k8s.io/v1", "flowschemas", "FlowSchema", false, nil},
	{"flowcontrol.apiserver.k8s.io/v1", "prioritylevelconfigurations", "PriorityLevelConfiguration", false, nil},
	{"resource.k8s.io/v1", "resourceclaims", "ResourceClaim", true, nil},
	{"resource.k8s.io/v1", "resourceclaimtemplates", "ResourceClaimTemplate", true, nil},
	{"resource.k8s.io/v1", "deviceclasses", "DeviceClass", false, nil},
	{"resource.k8s.io/v1", "resourceslices", "ResourceSlice", false, nil},
	{"apiextensions.k8s.io/v1", "customresourcedefinitions", "CustomResourceDefinition", false, []string{"crd", "crds"}},
	{"apiregistration.k8s.io/v1", "apiservices", "APIService", false, nil},
}

// categoryAll is what `kubectl get all` lists, as the apiserver groups it.
var categoryAll = map[string]bool{
	"pods": true, "services": true, "replicationcontrollers": true, "daemonsets": true, "deployments": true,
	"replicasets": true, "statefulsets": true, "jobs": true, "cronjobs": true, "horizontalpodautoscalers": true,
}

// builtinFields are the field selectors kube-apiserver supports beyond
// metadata.name and metadata.namespace (each resource's
// AddFieldLabelConversionFunc), with where the value is.
var builtinFields = map[string]map[string]string{
	"pods": {
		"spec.nodeName": "spec.nodeName", "spec.restartPolicy": "spec.restartPolicy",
		"spec.schedulerName": "spec.schedulerName", "spec.serviceAccountName": "spec.serviceAccountName",
		"spec.hostNetwork": "spec.hostNetwork", "status.phase": "status.phase", "status.podIP": "status.podIP",
		"status.nominatedNodeName": "status.nominatedNodeName",
	},
	"events": {
		"involvedObject.kind": "involvedObject.kind", "involvedObject.namespace": "involvedObject.namespace",
		"involvedObject.name": "involvedObject.name", "involvedObject.uid": "involvedObject.uid",
		"involvedObject.apiVersion": "involvedObject.apiVersion", "involvedObject.resourceVersion": "involvedObject.resourceVersion",
		"involvedObject.fieldPath": "involvedObject.fieldPath", "reason": "reason", "reportingComponent": "reportingComponent",
		"source": "source.component", "type": "type",
	},
	"secrets":                    {"type": "type"},
	"namespaces":                 {"status.phase": "status.phase"},
	"nodes":                      {"spec.unschedulable": "spec.unschedulable"},
	"replicationcontrollers":     {"status.replicas": "status.replicas"},
	"replicasets":                {"status.replicas": "status.replicas"},
	"jobs":                       {"status.successful": "status.successful"},
	"certificatesigningrequests": {"spec.signerName": "spec.signerName"},
	"services":                   {"spec.clusterIP": "spec.clusterIP", "spec.type": "spec.type"},
}

// builtinResources builds the built-in resources; each one stored as
// protobuf must be a kind client-go's scheme knows (it decodes them).
func builtinResources() ([]*resource, error) {
	var out []*resource
	for _, b := range builtins {
		gv, err := schema.ParseGroupVersion(b.gv)
		if err != nil {
			return nil, err
		}
		// CRDs and APIServices are served by their own apiservers, which
		// store JSON: client-go's scheme needs not know them.
		if gv.Group != "apiextensions.k8s.io" && gv.Group != "apiregistration.k8s.io" && !scheme.Scheme.Recognizes(gv.WithKind(b.kind)) {
			return nil, fmt.Errorf("built-in %s %s is not in client-go's scheme", b.gv, b.kind)
		}
		r := &resource{
			group: gv.Group, version: gv.Version, plural: b.plural, kind: b.kind,
			singular: strings.ToLower(b.kind), namespaced: b.namespaced, short: b.short,
			fields: builtinFields[b.plural], columns: builtinColumns[b.plural],
		}
		if categoryAll[b.plural] {
			r.categories = []string{"all"}
		}
		out = append(out, r)
	}
	return out, nil
}

// groupVersions orders resources into API groups and their versions: the
// core group first, then built-in groups in table order, then custom
// resource groups by name; versions by Kubernetes version priority (v2
// before v1 before v1beta1), the first being the preferred one.
type apiGroup struct {
	name     string
	versions []string // preferred first
	byVer    map[string][]*resource
}

func groupResources(rs []*resource) []*apiGroup {
	var groups []*apiGroup
	byName := map[string]*apiGroup{}
	for _, r := range rs {
		g := byName[r.group]
		if g == nil {
			g = &apiGroup{name: r.group, byVer: map[string][]*resource{}}
			byName[r.group] = g
			groups = append(groups, g)
		}
		if _, ok := g.byVer[r.version]; !ok {
			g.versions = append(g.versions, r.version)
		}
		g.byVer[r.version] = append(g.byVer[r.version], r)
	}
	for _, g := range groups {
		sort.SliceStable(g.versions, func(i, j int) bool {
			return version.CompareKubeAwareVersionStrings(g.versions[i], g.versions[j]) > 0
		})
	}
	return groups
}
