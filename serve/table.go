package serve

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/client-go/util/jsonpath"
)

// column is one Table column and how to fill its cell from an object.
type column struct {
	def  metav1.TableColumnDefinition
	cell func(obj map[string]any, now time.Time) any
}

func col(name, typ string, priority int32, cell func(obj map[string]any, now time.Time) any) column {
	return column{def: metav1.TableColumnDefinition{Name: name, Type: typ, Priority: priority}, cell: cell}
}

var (
	nameColumn = column{
		def:  metav1.TableColumnDefinition{Name: "Name", Type: "string", Format: "name", Description: "Name must be unique within a namespace."},
		cell: func(o map[string]any, _ time.Time) any { return str(o, "metadata", "name") },
	}
	ageColumn = column{
		def:  metav1.TableColumnDefinition{Name: "Age", Type: "string", Description: "Time since the object was created (at the time of this request, not of the backup)."},
		cell: func(o map[string]any, now time.Time) any { return age(str(o, "metadata", "creationTimestamp"), now) },
	}
)

// age prints the time since an RFC 3339 timestamp the way kubectl does
// ("5m", "3d4h"), "<unknown>" without one.
func age(ts string, now time.Time) string {
	t, err := time.Parse(time.RFC3339, ts)
	if err != nil {
		return "<unknown>"
	}
	return duration.HumanDuration(now.Sub(t))
}

func count(path ...string) func(map[string]any, time.Time) any {
	return func(o map[string]any, _ time.Time) any {
		v, _ := lookup(o, path...)
		switch t := v.(type) {
		case map[string]any:
			return int64(len(t))
		case []any:
			return int64(len(t))
		}
		return int64(0)
	}
}

func field(path ...string) func(map[string]any, time.Time) any {
	return func(o map[string]any, _ time.Time) any {
		v, ok := lookup(o, path...)
		if !ok || v == nil {
			return "<none>"
		}
		if s, ok := v.(string); ok {
			if s == "" {
				return "<none>"
			}
			return s
		}
		return fmt.Sprint(v)
	}
}

func intField(path ...string) func(map[string]any, time.Time) any {
	return func(o map[string]any, _ time.Time) any {
		v, _ := lookup(o, path...)
		n, _ := toInt64(v)
		return n
	}
}

// builtinColumns are the columns kube-apiserver's printers show for a few
// common resources (pkg/printers/internalversion), the cheap ones: the
// apiserver's own printers live in k8s.io/kubernetes. Other resources show
// NAME and AGE.
var builtinColumns = map[string][]column{
	"pods": {nameColumn,
		col("Ready", "string", 0, podReady),
		col("Status", "string", 0, podStatus),
		col("Restarts", "string", 0, podRestarts),
		ageColumn,
		col("IP", "string", 1, field("status", "podIP")),
		col("Node", "string", 1, field("spec", "nodeName")),
	},
	"namespaces": {nameColumn, col("Status", "string", 0, field("status", "phase")), ageColumn},
	"configmaps": {nameColumn, col("Data", "integer", 0, func(o map[string]any, now time.Time) any {
		return count("data")(o, now).(int64) + count("binaryData")(o, now).(int64)
	}), ageColumn},
	"secrets":         {nameColumn, col("Type", "string", 0, field("type")), col("Data", "integer", 0, count("data")), ageColumn},
	"serviceaccounts": {nameColumn, col("Secrets", "integer", 0, count("secrets")), ageColumn},
	"services": {nameColumn,
		col("Type", "string", 0, field("spec", "type")),
		col("Cluster-IP", "string", 0, field("spec", "clusterIP")),
		col("External-IP", "string", 0, serviceExternalIP),
		col("Port(s)", "string", 0, servicePorts),
		ageColumn,
		col("Selector", "string", 1, mapField("spec", "selector")),
	},
	"deployments": {nameColumn,
		col("Ready", "string", 0, func(o map[string]any, _ time.Time) any {
			r, _ := lookup(o, "status", "readyReplicas")
			d, _ := lookup(o, "spec", "replicas")
			rn, _ := toInt64(r)
			dn, _ := toInt64(d)
			return fmt.Sprintf("%d/%d", rn, dn)
		}),
		col("Up-to-date", "integer", 0, intField("status", "updatedReplicas")),
		col("Available", "integer", 0, intField("status", "availableReplicas")),
		ageColumn,
	},
	"daemonsets": {nameColumn,
		col("Desired", "integer", 0, intField("status", "desiredNumberScheduled")),
		col("Current", "integer", 0, intField("status", "currentNumberScheduled")),
		col("Ready", "integer", 0, intField("status", "numberReady")),
		col("Up-to-date", "integer", 0, intField("status", "updatedNumberScheduled")),
		col("Available", "integer", 0, intField("status", "numberAvailable")),
		col("Node Selector", "string", 0, mapField("spec", "template", "spec", "nodeSelector")),
		ageColumn,
	},
	"statefulsets": {nameColumn, col("Ready", "string", 0, ratio([]string{"status", "readyReplicas"}, []string{"spec", "replicas"})), ageColumn},
	"replicasets": {nameColumn,
		col("Desired", "integer", 0, intField("spec", "replicas")),
		col("Current", "integer", 0, intField("status", "replicas")),
		col("Ready", "integer", 0, intField("status", "readyReplicas")),
		ageColumn,
	},
	"jobs": {nameColumn,
		col("Completions", "string", 0, ratio([]string{"status", "succeeded"}, []string{"spec", "completions"})),
		ageColumn,
	},
	"cronjobs": {nameColumn,
		col("Schedule", "string", 0, field("spec", "schedule")),
		col("Suspend", "boolean", 0, func(o map[string]any, _ time.Time) any { v, _ := lookup(o, "spec", "suspend"); return v == true }),
		col("Active", "integer", 0, count("status", "active")),
		col("Last Schedule", "string", 0, func(o map[string]any, now time.Time) any {
			if s := str(o, "status", "lastScheduleTime"); s != "" {
				return age(s, now)
			}
			return "<none>"
		}),
		ageColumn,
	},
	"persistentvolumeclaims": {nameColumn,
		col("Status", "string", 0, field("status", "phase")),
		col("Volume", "string", 0, field("spec", "volumeName")),
		col("Capacity", "string", 0, field("status", "capacity", "storage")),
		col("StorageClass", "string", 0, field("spec", "storageClassName")),
		ageColumn,
	},
	"persistentvolumes": {nameColumn,
		col("Capacity", "string", 0, field("spec", "capacity", "storage")),
		col("Reclaim Policy", "string", 0, field("spec", "persistentVolumeReclaimPolicy")),
		col("Status", "string", 0, field("status", "phase")),
		col("Claim", "string", 0, func(o map[string]any, _ time.Time) any {
			if n := str(o, "spec", "claimRef", "name"); n != "" {
				return str(o, "spec", "claimRef", "namespace") + "/" + n
			}
			return ""
		}),
		col("StorageClass", "string", 0, field("spec", "storageClassName")),
		ageColumn,
	},
	"ingresses": {nameColumn,
		col("Class", "string", 0, field("spec", "ingressClassName")),
		col("Hosts", "string", 0, func(o map[string]any, _ time.Time) any {
			var hs []string
			if l, ok := lookup(o, "spec", "rules"); ok {
				for _, x := range asList(l) {
					m, _ := x.(map[string]any)
					if h := str(m, "host"); h != "" {
						hs = append(hs, h)
					}
				}
			}
			if len(hs) == 0 {
				return "*"
			}
			return strings.Join(hs, ",")
		}),
		ageColumn,
	},
	"leases":              {nameColumn, col("Holder", "string", 0, field("spec", "holderIdentity")), ageColumn},
	"rolebindings":        {nameColumn, col("Role", "string", 0, roleRef), ageColumn},
	"clusterrolebindings": {nameColumn, col("Role", "string", 0, roleRef), ageColumn},
	"nodes": {nameColumn,
		col("Status", "string", 0, nodeStatus),
		col("Roles", "string", 0, nodeRoles),
		ageColumn,
		col("Version", "string", 0, field("status", "nodeInfo", "kubeletVersion")),
	},
	"customresourcedefinitions": {nameColumn, col("Created At", "date", 0, func(o map[string]any, _ time.Time) any {
		return str(o, "metadata", "creationTimestamp")
	})},
	"events": {
		col("Last Seen", "string", 0, func(o map[string]any, now time.Time) any {
			for _, p := range [][]string{{"lastTimestamp"}, {"eventTime"}, {"metadata", "creationTimestamp"}} {
				if s := str(o, p...); s != "" {
					return age(s, now)
				}
			}
			return "<unknown>"
		}),
		col("Type", "string", 0, field("type")),
		col("Reason", "string", 0, field("reason")),
		col("Object", "string", 0, func(o map[string]any, _ time.Time) any {
			return strings.ToLower(str(o, "involvedObject", "kind")) + "/" + str(o, "involvedObject", "name")
		}),
		col("Message", "string", 0, field("message")),
	},
}

func podReady(o map[string]any, _ time.Time) any {
	total := int64(0)
	if cs, ok := lookup(o, "spec", "containers"); ok {
		if l, ok := cs.([]any); ok {
			total = int64(len(l))
		}
	}
	ready := int64(0)
	if cs, ok := lookup(o, "status", "containerStatuses"); ok {
		l, _ := cs.([]any)
		for _, c := range l {
			if m, _ := c.(map[string]any); m != nil && m["ready"] == true {
				ready++
			}
		}
	}
	return fmt.Sprintf("%d/%d", ready, total)
}

// podStatus is the phase, or the reason a container waits or ended
// (CrashLoopBackOff, Completed), or Terminating, as kubectl shows it.
func podStatus(o map[string]any, _ time.Time) any {
	status := str(o, "status", "phase")
	if r := str(o, "status", "reason"); r != "" {
		status = r
	}
	if cs, ok := lookup(o, "status", "containerStatuses"); ok {
		l, _ := cs.([]any)
		for _, c := range l {
			m, _ := c.(map[string]any)
			if r := str(m, "state", "waiting", "reason"); r != "" {
				status = r
			} else if r := str(m, "state", "terminated", "reason"); r != "" {
				status = r
			}
		}
	}
	if str(o, "metadata", "deletionTimestamp") != "" {
		status = "Terminating"
	}
	if status == "" {
		status = "Unknown"
	}
	return status
}

func podRestarts(o map[string]any, _ time.Time) any {
	n := int64(0)
	if cs, ok := lookup(o, "status", "containerStatuses"); ok {
		l, _ := cs.([]any)
		for _, c := range l {
			m, _ := c.(map[string]any)
			r, _ := toInt64(m["restartCount"])
			n += r
		}
	}
	return strconv.FormatInt(n, 10)
}

func serviceExternalIP(o map[string]any, _ time.Time) any {
	var ips []string
	if l, ok := lookup(o, "status", "loadBalancer", "ingress"); ok {
		for _, x := range asList(l) {
			m, _ := x.(map[string]any)
			if ip := str(m, "ip"); ip != "" {
				ips = append(ips, ip)
			} else if h := str(m, "hostname"); h != "" {
				ips = append(ips, h)
			}
		}
	}
	if l, ok := lookup(o, "spec", "externalIPs"); ok {
		for _, x := range asList(l) {
			if s, ok := x.(string); ok {
				ips = append(ips, s)
			}
		}
	}
	if len(ips) == 0 {
		if str(o, "spec", "type") == "LoadBalancer" {
			return "<pending>"
		}
		if n := str(o, "spec", "externalName"); n != "" {
			return n
		}
		return "<none>"
	}
	return strings.Join(ips, ",")
}

func servicePorts(o map[string]any, _ time.Time) any {
	var ps []string
	if l, ok := lookup(o, "spec", "ports"); ok {
		for _, x := range asList(l) {
			m, _ := x.(map[string]any)
			port, _ := toInt64(m["port"])
			s := strconv.FormatInt(port, 10)
			if np, ok := toInt64(m["nodePort"]); ok && np != 0 {
				s += ":" + strconv.FormatInt(np, 10)
			}
			proto := str(m, "protocol")
			if proto == "" {
				proto = "TCP"
			}
			ps = append(ps, s+"/"+proto)
		}
	}
	if len(ps) == 0 {
		return "<none>"
	}
	return strings.Join(ps, ",")
}

func nodeStatus(o map[string]any, _ time.Time) any {
	status := "Unknown"
	if l, ok := lookup(o, "status", "conditions"); ok {
		for _, x := range asList(l) {
			m, _ := x.(map[string]any)
			if str(m, "type") == "Ready" {
				if str(m, "status") == "True" {
					status = "Ready"
				} else {
					status = "NotReady"
				}
			}
		}
	}
	if v, _ := lookup(o, "spec", "unschedulable"); v == true {
		status += ",SchedulingDisabled"
	}
	return status
}

func nodeRoles(o map[string]any, _ time.Time) any {
	v, _ := lookup(o, "metadata", "labels")
	labels, _ := v.(map[string]any)
	var roles []string
	for k := range labels {
		if r, ok := strings.CutPrefix(k, "node-role.kubernetes.io/"); ok && r != "" {
			roles = append(roles, r)
		}
	}
	if len(roles) == 0 {
		return "<none>"
	}
	sort.Strings(roles)
	return strings.Join(roles, ",")
}

func asList(v any) []any { l, _ := v.([]any); return l }

// crdColumns turns a CRD version's additionalPrinterColumns into columns,
// evaluated as the apiserver does (k8s.io/client-go/util/jsonpath on
// "{<jsonPath>}", the first result; date columns print as an age). A CRD
// without columns shows NAME and AGE.
func crdColumns(cv *crdVersion) ([]column, error) {
	if len(cv.columns) == 0 {
		return []column{nameColumn, ageColumn}, nil
	}
	cols := []column{nameColumn}
	for _, c := range cv.columns {
		jp := jsonpath.New(c.Name).AllowMissingKeys(true)
		if err := jp.Parse("{" + c.JSONPath + "}"); err != nil {
			return nil, fmt.Errorf("CRD %s: printer column %q: jsonPath %q: %v", cv.name, c.Name, c.JSONPath, err)
		}
		typ := c.Type
		cols = append(cols, column{
			def: metav1.TableColumnDefinition{Name: c.Name, Type: typ, Format: c.Format, Description: c.Description, Priority: int32(c.Priority)},
			cell: func(o map[string]any, now time.Time) any {
				res, err := jp.FindResults(o)
				if err != nil || len(res) == 0 || len(res[0]) == 0 {
					return nil
				}
				v := res[0][0].Interface()
				switch typ {
				case "date":
					if s, ok := v.(string); ok {
						return age(s, now)
					}
				case "integer":
					if n, ok := toInt64(v); ok {
						return n
					}
				case "number":
					switch n := v.(type) {
					case float64:
						return n
					case int64:
						return float64(n)
					}
				case "boolean":
					if b, ok := v.(bool); ok {
						return b
					}
				}
				if s, ok := v.(string); ok {
					return s
				}
				b, _ := json.Marshal(v)
				return string(b)
			},
		})
	}
	return cols, nil
}

func ratio(num, den []string) func(map[string]any, time.Time) any {
	return func(o map[string]any, _ time.Time) any {
		a, _ := lookup(o, num...)
		b, _ := lookup(o, den...)
		an, _ := toInt64(a)
		bn, ok := toInt64(b)
		if !ok {
			bn = 1 // replicas and completions default to 1
		}
		return fmt.Sprintf("%d/%d", an, bn)
	}
}

func mapField(path ...string) func(map[string]any, time.Time) any {
	return func(o map[string]any, _ time.Time) any {
		v, _ := lookup(o, path...)
		m, _ := v.(map[string]any)
		if len(m) == 0 {
			return "<none>"
		}
		var kv []string
		for k, v := range m {
			kv = append(kv, fmt.Sprintf("%s=%v", k, v))
		}
		sort.Strings(kv)
		return strings.Join(kv, ",")
	}
}

func roleRef(o map[string]any, _ time.Time) any {
	return str(o, "roleRef", "kind") + "/" + str(o, "roleRef", "name")
}
