package objects

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/yaml"

	"github.com/kubekeep/kubekeep/etcdsnap/snapread"
	"github.com/kubekeep/kubekeep/objects/internal/plainetcd"
)

func startEtcd(t *testing.T) *plainetcd.Etcd {
	t.Helper()
	e, err := plainetcd.Start(t.TempDir(), plainetcd.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Stop)
	return e
}

// storedMeta is what an apiserver leaves in etcd: everything but
// resourceVersion, which it derives from the mod revision on read.
func storedMeta(ns, name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Namespace:         ns,
		Name:              name,
		UID:               types.UID("0b5e7c4e-1111-2222-3333-" + strings.Repeat("a", 12)),
		Generation:        3,
		CreationTimestamp: metav1.NewTime(time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)),
		Labels:            map[string]string{"app": name},
		ManagedFields: []metav1.ManagedFieldsEntry{{
			Manager: "kubectl", Operation: metav1.ManagedFieldsOperationApply, APIVersion: "v1",
		}},
	}
}

func protoValue(t *testing.T, obj runtime.Object) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := protoSerializer.Encode(obj, &buf); err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(buf.Bytes(), protoMagic) {
		t.Fatalf("protobuf serializer wrote no k8s magic: %q", buf.Bytes()[:8])
	}
	return buf.Bytes()
}

func configMap(t *testing.T, ns, name string, data map[string]string) []byte {
	cm := &corev1.ConfigMap{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"}, ObjectMeta: storedMeta(ns, name), Data: data}
	return protoValue(t, cm)
}

func put(t *testing.T, c *clientv3.Client, key string, val []byte) int64 {
	t.Helper()
	resp, err := c.Put(context.Background(), key, string(val))
	if err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
	return resp.Header.Revision
}

func del(t *testing.T, c *clientv3.Client, key string) int64 {
	t.Helper()
	resp, err := c.Delete(context.Background(), key)
	if err != nil || resp.Deleted != 1 {
		t.Fatalf("delete %s: %v (deleted %d)", key, err, resp.Deleted)
	}
	return resp.Header.Revision
}

func snapshotFile(t *testing.T, e *plainetcd.Etcd, name string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if _, err := e.SnapshotTo(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	return p
}

const crdV1beta1JSON = `{"kind":"CustomResourceDefinition","apiVersion":"apiextensions.k8s.io/v1beta1",
"metadata":{"name":"widgets.example.com","uid":"u-1","generation":1,"creationTimestamp":"2024-05-01T12:00:00Z"},
"spec":{"group":"example.com","version":"v1","names":{"plural":"widgets","singular":"widget","kind":"Widget","listKind":"WidgetList"},
"scope":"Namespaced","validation":{"openAPIV3Schema":{"type":"object","x-kubernetes-preserve-unknown-fields":true}},
"subresources":{"status":{}},
"versions":[{"name":"v1","served":true,"storage":true}],
"additionalPrinterColumns":[{"name":"Age","type":"date","JSONPath":".metadata.creationTimestamp"}],
"conversion":{"strategy":"None"},"preserveUnknownFields":false},
"status":{"storedVersions":["v1"]}}`

const widgetJSON = `{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"name":"w1","namespace":"default",` +
	`"uid":"u-2","generation":7,"creationTimestamp":"2024-05-01T12:00:00Z","managedFields":[{"manager":"x"}]},` +
	`"spec":{"size":9007199254740993,"color":"blue"},"status":{"ready":true}}`

// TestSnapshotFromRealEtcd writes Kubernetes objects into a real etcd the
// way an apiserver does, snapshots it as etcdctl would, and reads them back.
func TestSnapshotFromRealEtcd(t *testing.T) {
	e := startEtcd(t)
	c := e.Client

	revFoo1 := put(t, c, "/registry/configmaps/kube-system/foo", configMap(t, "kube-system", "foo", map[string]string{"v": "1"}))
	sec := &corev1.Secret{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"}, ObjectMeta: storedMeta("default", "s1"),
		Data: map[string][]byte{"password": []byte("hunter2")}, Type: corev1.SecretTypeOpaque}
	revS1 := put(t, c, "/registry/secrets/default/s1", protoValue(t, sec))
	replicas := int32(2)
	dep := &appsv1.Deployment{TypeMeta: metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"}, ObjectMeta: storedMeta("default", "web"),
		Spec: appsv1.DeploymentSpec{Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "nginx:1.27"}}}}},
		Status: appsv1.DeploymentStatus{Replicas: 2, ReadyReplicas: 2}}
	revWeb := put(t, c, "/registry/deployments/default/web", protoValue(t, dep))
	ns := &corev1.Namespace{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"}, ObjectMeta: storedMeta("", "team-a"),
		Status: corev1.NamespaceStatus{Phase: corev1.NamespaceActive}}
	revNS := put(t, c, "/registry/namespaces/team-a", protoValue(t, ns))
	revW1 := put(t, c, "/registry/example.com/widgets/default/w1", []byte(widgetJSON))
	revCRD := put(t, c, "/registry/apiextensions.k8s.io/customresourcedefinitions/widgets.example.com", []byte(crdV1beta1JSON))
	revGone := put(t, c, "/registry/configmaps/default/gone", configMap(t, "default", "gone", nil))
	// The apiserver keeps its compaction marker outside /registry.
	put(t, c, "compact_rev_key", []byte("x"))

	snapA := snapshotFile(t, e, "a.db")
	revA := revGone + 1

	revFoo2 := put(t, c, "/registry/configmaps/kube-system/foo", configMap(t, "kube-system", "foo", map[string]string{"v": "2"}))
	revDel := del(t, c, "/registry/configmaps/default/gone")
	revNew := put(t, c, "/registry/configmaps/default/new", configMap(t, "default", "new", map[string]string{"fresh": "yes"}))
	snapB := snapshotFile(t, e, "b.db")

	// The snapshot stream is a bbolt image plus a sha256 of it: bbolt must
	// open it without stripping anything.
	raw, err := os.ReadFile(snapB)
	if err != nil {
		t.Fatal(err)
	}
	if len(raw)%512 != 32 {
		t.Fatalf("snapshot size %d %% 512 = %d, want the 32-byte trailer", len(raw), len(raw)%512)
	}
	if sum := sha256.Sum256(raw[:len(raw)-32]); !bytes.Equal(sum[:], raw[len(raw)-32:]) {
		t.Fatal("trailer is not the sha256 of the bbolt image")
	}

	b, err := Open(snapB)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.Revision() != revNew {
		t.Errorf("Revision() = %d, want %d", b.Revision(), revNew)
	}

	t.Run("overwritten object has its latest value and revision", func(t *testing.T) {
		ref, err := ParseRef("cm/kube-system/foo")
		if err != nil {
			t.Fatal(err)
		}
		o, err := b.Get(ref)
		if err != nil {
			t.Fatal(err)
		}
		if o.ModRevision != revFoo2 || o.CreateRevision != revFoo1 || o.Version != 2 {
			t.Errorf("revisions mod=%d create=%d version=%d, want %d %d 2", o.ModRevision, o.CreateRevision, o.Version, revFoo2, revFoo1)
		}
		if o.Encoding != EncodingProtobuf || o.APIVersion() != "v1" || o.Kind() != "ConfigMap" {
			t.Errorf("got %s %s/%s", o.Encoding, o.APIVersion(), o.Kind())
		}
		data := o.Content()["data"].(map[string]any)
		if data["v"] != "2" {
			t.Errorf("data = %v, want v=2", data)
		}
		if rv := o.Content()["metadata"].(map[string]any)["resourceVersion"]; rv != itoa(revFoo2) {
			t.Errorf("Content resourceVersion = %v, want %d", rv, revFoo2)
		}
	})

	t.Run("deleted object is not found and says when", func(t *testing.T) {
		_, err := b.Get(Ref{Resource: "configmaps", Namespace: "default", Name: "gone"})
		var nf *NotFoundError
		if !errors.As(err, &nf) || nf.DeletedAt != revDel {
			t.Fatalf("err = %v, want NotFoundError deleted at %d", err, revDel)
		}
		_, err = b.Get(Ref{Resource: "configmaps", Namespace: "default", Name: "never"})
		if !errors.As(err, &nf) || nf.DeletedAt != 0 {
			t.Fatalf("err = %v, want plain NotFoundError", err)
		}
	})

	t.Run("manifest is what kubectl apply takes", func(t *testing.T) {
		o, err := b.Get(Ref{Group: "apps", Resource: "deployments", Namespace: "default", Name: "web"})
		if err != nil {
			t.Fatal(err)
		}
		if o.ModRevision != revWeb {
			t.Errorf("ModRevision = %d, want %d", o.ModRevision, revWeb)
		}
		y, err := o.YAML(ManifestOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var back appsv1.Deployment
		if err := yaml.UnmarshalStrict(y, &back); err != nil {
			t.Fatalf("manifest does not parse back as a Deployment: %v\n%s", err, y)
		}
		if back.APIVersion != "apps/v1" || back.Kind != "Deployment" || back.Name != "web" || back.Namespace != "default" ||
			*back.Spec.Replicas != 2 || back.Spec.Template.Spec.Containers[0].Image != "nginx:1.27" || back.Labels["app"] != "web" {
			t.Errorf("round-tripped deployment wrong: %+v", back)
		}
		for _, f := range []string{"resourceVersion:", "uid:", "managedFields:", "creationTimestamp:", "generation:", "selfLink:", "status:", "readyReplicas"} {
			// creationTimestamp: null inside the pod template is what the
			// apiserver stores; only metadata's own must go.
			if f == "creationTimestamp:" {
				if strings.Contains(string(y), "creationTimestamp: \"2024") {
					t.Errorf("manifest keeps metadata.creationTimestamp:\n%s", y)
				}
				continue
			}
			if strings.Contains(string(y), f) {
				t.Errorf("manifest keeps %s:\n%s", f, y)
			}
		}
		withStatus := o.Manifest(ManifestOptions{KeepStatus: true})
		if st, ok := withStatus["status"].(map[string]any); !ok || st["readyReplicas"] != int64(2) {
			t.Errorf("KeepStatus lost status: %v", withStatus["status"])
		}
		if _, ok := o.Content()["metadata"].(map[string]any)["uid"]; !ok {
			t.Error("Manifest changed the object's Content")
		}
	})

	t.Run("secret, namespace, custom resource, CRD", func(t *testing.T) {
		s, err := b.Get(Ref{Resource: "secrets", Namespace: "default", Name: "s1"})
		if err != nil {
			t.Fatal(err)
		}
		// Secret data is []byte: JSON (and so the manifest) holds base64.
		if d := s.Content()["data"].(map[string]any)["password"]; d != "aHVudGVyMg==" || s.ModRevision != revS1 || s.EncryptedBy != nil {
			t.Errorf("secret data %v rev %d enc %v", d, s.ModRevision, s.EncryptedBy)
		}
		n, err := b.Get(Ref{Resource: "namespaces", Name: "team-a"})
		if err != nil || n.ModRevision != revNS || n.Kind() != "Namespace" {
			t.Fatalf("namespace: %v %v", n, err)
		}
		w, err := b.Get(mustRef(t, "widgets.example.com/default/w1"))
		if err != nil {
			t.Fatal(err)
		}
		if w.Encoding != EncodingJSON || w.ModRevision != revW1 || w.APIVersion() != "example.com/v1" {
			t.Errorf("widget %s rev %d %s", w.Encoding, w.ModRevision, w.APIVersion())
		}
		// 2^53+1 survives only if integers are not read as float64.
		if size := w.Content()["spec"].(map[string]any)["size"]; size != int64(9007199254740993) {
			t.Errorf("spec.size = %v (%T), want exact int64", size, size)
		}
		j, err := w.JSON(ManifestOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(j, []byte("9007199254740993")) || bytes.Contains(j, []byte(`"uid"`)) || bytes.Contains(j, []byte(`"status"`)) {
			t.Errorf("widget JSON manifest:\n%s", j)
		}
		crd, err := b.Get(mustRef(t, "crd/widgets.example.com"))
		if err != nil {
			t.Fatal(err)
		}
		if crd.ModRevision != revCRD || crd.APIVersion() != "apiextensions.k8s.io/v1" || crd.StoredAPIVersion != crdV1beta1 {
			t.Fatalf("crd %d %s stored %s", crd.ModRevision, crd.APIVersion(), crd.StoredAPIVersion)
		}
		spec := crd.Content()["spec"].(map[string]any)
		v0 := spec["versions"].([]any)[0].(map[string]any)
		if _, ok := spec["validation"]; ok {
			t.Error("v1 CRD keeps spec.validation")
		}
		if v0["schema"].(map[string]any)["openAPIV3Schema"] == nil || v0["subresources"] == nil {
			t.Errorf("version lacks schema/subresources: %v", v0)
		}
		if col := v0["additionalPrinterColumns"].([]any)[0].(map[string]any); col["jsonPath"] != ".metadata.creationTimestamp" || col["JSONPath"] != nil {
			t.Errorf("printer column not converted: %v", col)
		}
	})

	t.Run("list", func(t *testing.T) {
		all := b.List(Filter{})
		var keys []string
		for _, it := range all {
			keys = append(keys, it.Ref.String())
		}
		want := []string{
			"customresourcedefinitions.apiextensions.k8s.io/widgets.example.com",
			"configmaps/default/new",
			"configmaps/kube-system/foo",
			"deployments.apps/default/web",
			"widgets.example.com/default/w1",
			"namespaces/team-a",
			"secrets/default/s1",
		}
		if strings.Join(keys, " ") != strings.Join(want, " ") {
			t.Errorf("List = %v\nwant   %v", keys, want)
		}
		cms := b.List(Filter{Resource: "configmaps"})
		if len(cms) != 2 || cms[1].ModRevision != revFoo2 || cms[1].CreateRevision != revFoo1 || cms[1].Version != 2 {
			t.Errorf("configmaps = %+v", cms)
		}
		if ks := b.List(Filter{Resource: "configmaps", Namespace: "kube-system"}); len(ks) != 1 || ks[0].Ref.Name != "foo" {
			t.Errorf("kube-system configmaps = %+v", ks)
		}
	})

	a, err := Open(snapA)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()

	t.Run("diff", func(t *testing.T) {
		ch, err := Diff(a, b)
		if err != nil {
			t.Fatal(err)
		}
		want := []Change{
			{Type: Removed, Ref: Ref{Resource: "configmaps", Namespace: "default", Name: "gone"}, Key: "/registry/configmaps/default/gone", OldRevision: revGone},
			{Type: Added, Ref: Ref{Resource: "configmaps", Namespace: "default", Name: "new"}, Key: "/registry/configmaps/default/new", NewRevision: revNew},
			{Type: Changed, Ref: Ref{Resource: "configmaps", Namespace: "kube-system", Name: "foo"}, Key: "/registry/configmaps/kube-system/foo", OldRevision: revFoo1, NewRevision: revFoo2},
		}
		if !equalJSON(ch, want) {
			t.Errorf("Diff =\n%s\nwant\n%s", toJSON(ch), toJSON(want))
		}
		if back, _ := Diff(b, a); len(back) != 3 || back[0].Type != Added || back[1].Type != Removed {
			t.Errorf("reverse diff = %s", toJSON(back))
		}
		if same, _ := Diff(b, b); len(same) != 0 {
			t.Errorf("Diff(b, b) = %s", toJSON(same))
		}
	})

	t.Run("older revision from the same file", func(t *testing.T) {
		old, err := OpenAt(snapB, revA-1)
		if err != nil {
			t.Fatal(err)
		}
		defer old.Close()
		o, err := old.Get(Ref{Resource: "configmaps", Namespace: "kube-system", Name: "foo"})
		if err != nil || o.Content()["data"].(map[string]any)["v"] != "1" || o.ModRevision != revFoo1 {
			t.Fatalf("foo at %d: %v %v", revA-1, o, err)
		}
		if _, err := old.Get(Ref{Resource: "configmaps", Namespace: "default", Name: "gone"}); err != nil {
			t.Errorf("gone existed at %d: %v", revA-1, err)
		}
		if _, err := OpenAt(snapB, revNew+5); err == nil {
			t.Error("OpenAt past the end succeeded")
		}
	})

	t.Run("events bring an old snapshot forward", func(t *testing.T) {
		evs := watchEvents(t, c, revA, revNew)
		at, err := Open(snapA)
		if err != nil {
			t.Fatal(err)
		}
		defer at.Close()
		// Up to the delete only: a point in time between the two snapshots.
		var upTo []snapread.Event
		for _, ev := range evs {
			if ev.ModRevision <= revDel {
				upTo = append(upTo, ev)
			}
		}
		if err := at.ApplyEvents(upTo); err != nil {
			t.Fatal(err)
		}
		if at.Revision() != revDel {
			t.Errorf("Revision after events = %d, want %d", at.Revision(), revDel)
		}
		if _, err := at.Get(Ref{Resource: "configmaps", Namespace: "default", Name: "new"}); err == nil {
			t.Error("object created after the point in time is visible")
		}
		// The rest, plus a replay of everything (overlapping logs).
		if err := at.ApplyEvents(evs); err != nil {
			t.Fatal(err)
		}
		ch, err := Diff(at, b)
		if err != nil || len(ch) != 0 {
			t.Fatalf("snapshot A + events differs from B: %s %v", toJSON(ch), err)
		}
		o, err := at.Get(Ref{Resource: "configmaps", Namespace: "kube-system", Name: "foo"})
		if err != nil || o.ModRevision != revFoo2 || o.Content()["data"].(map[string]any)["v"] != "2" {
			t.Fatalf("foo after events: %v %v", o, err)
		}
		if err := at.ApplyEvents([]snapread.Event{{Type: snapread.EventPut, Key: "k", ModRevision: revNew + 2}, {Type: snapread.EventPut, Key: "k", ModRevision: revNew + 1}}); err == nil {
			t.Error("out-of-order events accepted")
		}
	})

	t.Run("compacted history is refused", func(t *testing.T) {
		if _, err := c.Compact(context.Background(), revFoo2); err != nil {
			t.Fatal(err)
		}
		p := snapshotFile(t, e, "compacted.db")
		if _, err := OpenAt(p, revFoo1); !errors.Is(err, ErrCompacted) {
			t.Fatalf("OpenAt below compaction: %v, want ErrCompacted", err)
		}
		s, err := Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if s.CompactRevision() != revFoo2 || s.Revision() != revNew {
			t.Errorf("compact %d rev %d, want %d %d", s.CompactRevision(), s.Revision(), revFoo2, revNew)
		}
		if d, err := Diff(b, s); err != nil || len(d) != 0 {
			t.Errorf("compaction changed live objects: %s %v", toJSON(d), err)
		}
	})
}

func watchEvents(t *testing.T, c *clientv3.Client, from, to int64) []snapread.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out []snapread.Event
	for wr := range c.Watch(ctx, "", clientv3.WithPrefix(), clientv3.WithRev(from)) {
		if err := wr.Err(); err != nil {
			t.Fatal(err)
		}
		for _, ev := range wr.Events {
			e := snapread.Event{Key: string(ev.Kv.Key), Value: ev.Kv.Value, ModRevision: ev.Kv.ModRevision,
				CreateRevision: ev.Kv.CreateRevision, Version: ev.Kv.Version, Lease: ev.Kv.Lease, Type: snapread.EventPut}
			if ev.Type == clientv3.EventTypeDelete {
				e.Type = snapread.EventDelete
			}
			out = append(out, e)
			if e.ModRevision >= to {
				return out
			}
		}
	}
	t.Fatal("watch ended early")
	return nil
}

func mustRef(t *testing.T, s string) Ref {
	t.Helper()
	r, err := ParseRef(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func itoa(n int64) string { b, _ := json.Marshal(n); return string(b) }

func toJSON(v any) string { b, _ := json.MarshalIndent(v, "", " "); return string(b) }

func equalJSON(a, b any) bool { return toJSON(a) == toJSON(b) }

func TestOpenRejectsNonEtcdFiles(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(empty); err == nil || !strings.Contains(err.Error(), "too small") {
		t.Errorf("empty file: %v", err)
	}
	junk := filepath.Join(dir, "junk")
	if err := os.WriteFile(junk, bytes.Repeat([]byte("not bbolt "), 2000), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(junk); err == nil {
		t.Error("junk file opened")
	}
	if _, err := Open(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}
