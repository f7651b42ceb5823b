package kscheme

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
	clientgo "k8s.io/client-go/kubernetes/scheme"
)

// allGroups is the scheme with every group version added.
func allGroups() *runtime.Scheme {
	mu.Lock()
	defer mu.Unlock()
	addAll()
	return scheme
}

// The table is client-go's scheme: with every group added, the scheme
// knows exactly the types client-go's does. A client-go upgrade that adds
// or drops a group fails here until groups.go is regenerated.
func TestGroupsAreClientGos(t *testing.T) {
	got, want := allGroups().AllKnownTypes(), clientgo.Scheme.AllKnownTypes()
	if len(got) != len(want) {
		t.Errorf("%d known types, client-go's scheme %d", len(got), len(want))
	}
	for gvk, typ := range want {
		if got[gvk] != typ {
			t.Errorf("%s: %v, client-go's scheme %v", gvk, got[gvk], typ)
		}
	}
	for gvk := range got {
		if _, ok := want[gvk]; !ok {
			t.Errorf("%s is not in client-go's scheme", gvk)
		}
	}
}

// A protobuf value adds its own group version, read off the envelope, and
// no other; it then decodes as with client-go's scheme.
func TestDecodeAddsOnlyTheValuesGroup(t *testing.T) {
	mu.Lock()
	scheme, added, all = newScheme(), map[schema.GroupVersion]bool{}, false
	mu.Unlock()
	ser := protobuf.NewSerializer(Scheme(), Scheme())
	enc := protobuf.NewSerializer(clientgo.Scheme, clientgo.Scheme)
	dep := &appsv1.Deployment{TypeMeta: metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"}, ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop"}}
	value, err := runtime.Encode(enc, dep)
	if err != nil {
		t.Fatal(err)
	}
	if gv, ok := protobufGroupVersion(value); !ok || gv != appsv1.SchemeGroupVersion {
		t.Fatalf("envelope read as %v %v", gv, ok)
	}
	obj, err := Decode(value, func() (runtime.Object, error) { o, _, err := ser.Decode(value, nil, nil); return o, err })
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := obj.(*appsv1.Deployment); !ok || got.Name != "web" || got.Namespace != "shop" {
		t.Fatalf("decoded %#v", obj)
	}
	cm := corev1.SchemeGroupVersion.WithKind("ConfigMap")
	if !Scheme().Recognizes(appsv1.SchemeGroupVersion.WithKind("Deployment")) || Scheme().Recognizes(cm) || len(added) != 1 {
		t.Errorf("after a Deployment: groups added %v, ConfigMap known %v; want only apps/v1", added, Scheme().Recognizes(cm))
	}
	// Not protobuf: every group.
	if _, err := Decode([]byte(`{"apiVersion":"v1","kind":"ConfigMap"}`), func() (int, error) { return 0, nil }); err != nil || !all {
		t.Errorf("a JSON value: all groups added %v, %v", all, err)
	}
}

// Envelopes that are not what the apiserver writes add every group and
// never panic.
func FuzzProtobufGroupVersion(f *testing.F) {
	f.Add([]byte("k8s\x00\x0a\x0c\x0a\x07apps/v1\x12\x01x"))
	f.Add([]byte("k8s\x00"))
	f.Add([]byte("{}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		protobufGroupVersion(b)
	})
}
