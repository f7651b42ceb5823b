package objects

import (
	"testing"

	"github.com/kubekeep/kubekeep/etcdsnap/snapread"
)

func TestParseRef(t *testing.T) {
	for in, want := range map[string]struct {
		ref Ref
		key string
	}{
		"configmaps/kube-system/foo":    {Ref{"", "configmaps", "kube-system", "foo"}, "/registry/configmaps/kube-system/foo"},
		"cm/kube-system/foo":            {Ref{"", "configmaps", "kube-system", "foo"}, "/registry/configmaps/kube-system/foo"},
		"ConfigMap/kube-system/foo":     {Ref{"", "configmaps", "kube-system", "foo"}, "/registry/configmaps/kube-system/foo"},
		"namespaces/foo":                {Ref{"", "namespaces", "", "foo"}, "/registry/namespaces/foo"},
		"ns/foo":                        {Ref{"", "namespaces", "", "foo"}, "/registry/namespaces/foo"},
		"deployments.apps/ns/name":      {Ref{"apps", "deployments", "ns", "name"}, "/registry/deployments/ns/name"},
		"deploy/ns/name":                {Ref{"apps", "deployments", "ns", "name"}, "/registry/deployments/ns/name"},
		"svc/default/kubernetes":        {Ref{"", "services", "default", "kubernetes"}, "/registry/services/specs/default/kubernetes"},
		"ep/default/kubernetes":         {Ref{"", "endpoints", "default", "kubernetes"}, "/registry/services/endpoints/default/kubernetes"},
		"no/master-1":                   {Ref{"", "nodes", "", "master-1"}, "/registry/minions/master-1"},
		"ing/web/site":                  {Ref{"networking.k8s.io", "ingresses", "web", "site"}, "/registry/ingress/web/site"},
		"clusterroles/admin":            {Ref{"rbac.authorization.k8s.io", "clusterroles", "", "admin"}, "/registry/clusterroles/admin"},
		"crd/widgets.example.com":       {Ref{"apiextensions.k8s.io", "customresourcedefinitions", "", "widgets.example.com"}, "/registry/apiextensions.k8s.io/customresourcedefinitions/widgets.example.com"},
		"apiservices/v1.apps":           {Ref{"apiregistration.k8s.io", "apiservices", "", "v1.apps"}, "/registry/apiregistration.k8s.io/apiservices/v1.apps"},
		"widgets.example.com/default/a": {Ref{"example.com", "widgets", "default", "a"}, "/registry/example.com/widgets/default/a"},
		// A CRD group that ends in k8s.io is still a CRD group.
		"gateways.gateway.networking.k8s.io/ns/gw": {Ref{"gateway.networking.k8s.io", "gateways", "ns", "gw"}, "/registry/gateway.networking.k8s.io/gateways/ns/gw"},
		"leases.coordination.k8s.io/kube-system/x": {Ref{"coordination.k8s.io", "leases", "kube-system", "x"}, "/registry/leases/kube-system/x"},
	} {
		got, err := ParseRef(in)
		if err != nil {
			t.Errorf("%s: %v", in, err)
			continue
		}
		if got != want.ref || got.Key() != want.key {
			t.Errorf("%s: %+v %s, want %+v %s", in, got, got.Key(), want.ref, want.key)
		}
		back, ok := RefFromKey(got.Key())
		if !ok || back != got {
			t.Errorf("%s: RefFromKey(%s) = %+v %v", in, got.Key(), back, ok)
		}
		again, err := ParseRef(got.String())
		if err != nil || again != got {
			t.Errorf("%s: ParseRef(%s) = %+v %v", in, got.String(), again, err)
		}
	}
	for _, bad := range []string{"", "cm", "cm/foo", "ns/a/b", "a/b/c/d", "cm//x", "cm/../x", "/ns/x", "secrets/x/",
		// An empty group label: "deployments." read as core "deployments"
		// printed "deployments/0", which reads back as apps' (FuzzParseRef).
		"deploYments./0", "deploy./ns/x", "widgets.example.com./ns/x", "widgets.example..com/ns/x", "widgets..com/x"} {
		if r, err := ParseRef(bad); err == nil {
			t.Errorf("%q parsed as %+v", bad, r)
		}
	}
}

func TestRefFromKeyNonObjects(t *testing.T) {
	for _, k := range []string{"compact_rev_key", "/registry/", "/registry/a/b/c/d", "/registry/configmaps//x"} {
		if r, ok := RefFromKey(k); ok {
			t.Errorf("%q read as %+v", k, r)
		}
	}
}

func FuzzParseRef(f *testing.F) {
	for _, s := range []string{"cm/kube-system/foo", "namespaces/x", "deployments.apps/a/b", "widgets.example.com/d/w", "crd/a.b", "ns/a/b", "x/y/z"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRef(s)
		if err != nil {
			return
		}
		if r.Name == "" || r.Resource == "" {
			t.Fatalf("%q parsed to %+v", s, r)
		}
		again, err := ParseRef(r.String())
		if err != nil || again != r {
			t.Fatalf("%q -> %+v -> %q -> %+v %v", s, r, r.String(), again, err)
		}
	})
}

func FuzzRefFromKey(f *testing.F) {
	for _, s := range []string{"/registry/configmaps/a/b", "/registry/services/specs/a/b", "/registry/example.com/w/a/b", "/registry/minions/n", "/registry/x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		r, ok := RefFromKey(key)
		if !ok {
			return
		}
		if r.Key() != key {
			t.Fatalf("%q -> %+v -> %q", key, r, r.Key())
		}
	})
}

// FuzzDecodeValue feeds arbitrary stored values through everything Get
// does with them: header peek, decryption, decoding, manifest rendering.
func FuzzDecodeValue(f *testing.F) {
	f.Add([]byte(widgetJSON))
	f.Add([]byte(crdV1beta1JSON))
	f.Add([]byte("k8s\x00\n\x0c\n\x02v1\x12\x06Secret"))
	f.Add([]byte("k8s:enc:aescbc:v1:key1:0123456789abcdef0123456789abcdef"))
	f.Add([]byte("k8s:enc:aesgcm:v1:gcm1:xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"))
	f.Add([]byte("k8s:enc:secretbox:v1:box1:yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"))
	f.Add([]byte{0xd9, 0xd9, 0xf7, 0xa0})
	f.Add([]byte{}) // a restore's revision bump marker
	kr, err := ParseEncryptionConfig([]byte(encryptionConfigYAML))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		// The index's reading of a stored entry (the marker seed: no bytes).
		_, _ = snapread.ParseEntry(snapread.Revision{Main: 1_000_000_005}.Bytes(), raw)
		o := &Object{Key: "/registry/secrets/a/b", ModRevision: 1}
		if err := o.decode(raw, kr); err != nil {
			return
		}
		if o.APIVersion() == "" || o.Kind() == "" {
			t.Fatalf("decoded without apiVersion/kind: %v", o.Content())
		}
		if _, err := o.YAML(ManifestOptions{}); err != nil {
			t.Fatal(err)
		}
	})
}
