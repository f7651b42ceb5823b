package serve

import (
	"fmt"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// TestBuiltinColumns: the cells kubectl shows for common built-ins, from
// typed objects as client-go builds them (what the protobuf decodes to).
func TestBuiltinColumns(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	meta := metav1.ObjectMeta{Name: "x", Namespace: "ns", CreationTimestamp: metav1.NewTime(now.Add(-90 * time.Minute))}
	two, three := int32(2), int32(3)
	for _, c := range []struct {
		resource string
		obj      runtime.Object
		want     string
	}{
		{"pods", &corev1.Pod{ObjectMeta: meta, Spec: corev1.PodSpec{NodeName: "cp1", Containers: []corev1.Container{{Name: "a"}, {Name: "b"}}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.0.7", ContainerStatuses: []corev1.ContainerStatus{
				{Name: "a", Ready: true, RestartCount: 2},
				{Name: "b", RestartCount: 5, State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}}}}}},
			"[x 1/2 CrashLoopBackOff 7 90m 10.0.0.7 cp1]"},
		{"daemonsets", &appsv1.DaemonSet{ObjectMeta: meta, Spec: appsv1.DaemonSetSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{NodeSelector: map[string]string{"kubernetes.io/os": "linux"}}}},
			Status: appsv1.DaemonSetStatus{DesiredNumberScheduled: 3, CurrentNumberScheduled: 3, NumberReady: 2, UpdatedNumberScheduled: 3, NumberAvailable: 2}},
			"[x 3 3 2 3 2 kubernetes.io/os=linux 90m]"},
		{"deployments", &appsv1.Deployment{ObjectMeta: meta, Spec: appsv1.DeploymentSpec{Replicas: &three}, Status: appsv1.DeploymentStatus{ReadyReplicas: 2, UpdatedReplicas: 3, AvailableReplicas: 2}},
			"[x 2/3 3 2 90m]"},
		{"statefulsets", &appsv1.StatefulSet{ObjectMeta: meta, Spec: appsv1.StatefulSetSpec{Replicas: &two}, Status: appsv1.StatefulSetStatus{ReadyReplicas: 1}}, "[x 1/2 90m]"},
		{"jobs", &batchv1.Job{ObjectMeta: meta, Status: batchv1.JobStatus{Succeeded: 1}}, "[x 1/1 90m]"},
		{"secrets", &corev1.Secret{ObjectMeta: meta, Type: corev1.SecretTypeOpaque, Data: map[string][]byte{"a": nil, "b": nil}}, "[x Opaque 2 90m]"},
		{"services", &corev1.Service{ObjectMeta: meta, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, ClusterIP: "10.96.0.9",
			Selector: map[string]string{"app": "web"}, Ports: []corev1.ServicePort{{Port: 80, NodePort: 30080, Protocol: corev1.ProtocolTCP}}}},
			"[x NodePort 10.96.0.9 <none> 80:30080/TCP 90m app=web]"},
		{"nodes", &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "cp1", CreationTimestamp: meta.CreationTimestamp, Labels: map[string]string{"node-role.kubernetes.io/control-plane": ""}},
			Spec:   corev1.NodeSpec{Unschedulable: true},
			Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}, NodeInfo: corev1.NodeSystemInfo{KubeletVersion: "v1.34.4"}}},
			"[cp1 Ready,SchedulingDisabled control-plane 90m v1.34.4]"},
		{"clusterrolebindings", &rbacv1.ClusterRoleBinding{ObjectMeta: meta, RoleRef: rbacv1.RoleRef{Kind: "ClusterRole", Name: "admin"}}, "[x ClusterRole/admin 90m]"},
		{"leases", &corev1.ConfigMap{ObjectMeta: meta}, "[x <none> 90m]"},
	} {
		m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(c.obj)
		if err != nil {
			t.Fatal(err)
		}
		var cells []any
		for _, col := range builtinColumns[c.resource] {
			cells = append(cells, col.cell(m, now))
		}
		if got := fmt.Sprint(cells); got != c.want {
			t.Errorf("%s: %s, want %s", c.resource, got, c.want)
		}
	}
}
