// Package kscheme is client-go's scheme (every built-in API group, as
// k8s.io/client-go/kubernetes/scheme registers them), filled one group
// version at a time, when a value of it is first decoded.
//
// Importing client-go's scheme registers all 55 group versions at init:
// ~2.5 ms of every process, a tenth of what `kubekeep get` costs in all,
// to decode one object of one group. Here a protobuf value's apiVersion is
// read off its envelope first (runtime.Unknown's TypeMeta, without
// decoding the rest) and only that group version is added; JSON and YAML
// values, rare in etcd for built-in types, add every group first.
//
// Decoders made from Scheme (protobuf.NewSerializer, CodecFactory) see the
// groups added later: call their Decode through Decode, which adds what
// the value needs and holds the scheme against concurrent additions.
package kscheme

import (
	"bytes"
	"sync"

	"google.golang.org/protobuf/encoding/protowire"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	mu     sync.RWMutex
	scheme = newScheme()
	added  = map[schema.GroupVersion]bool{}
	all    bool
)

func newScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	// What client-go's scheme adds for the core group's meta types.
	metav1.AddToGroupVersion(s, schema.GroupVersion{Version: "v1"})
	return s
}

// Scheme is the shared scheme, holding the groups added so far. Use it to
// build decoders; decode through Decode.
func Scheme() *runtime.Scheme { return scheme }

// Decode runs decode (a decoder built from Scheme, on value) once the
// group version value names is in the scheme; every group when value is
// not protobuf or names none.
func Decode[T any](value []byte, decode func() (T, error)) (T, error) {
	ensureFor(value)
	mu.RLock()
	defer mu.RUnlock()
	return decode()
}

var protoMagic = []byte("k8s\x00")

func ensureFor(value []byte) {
	gv, ok := protobufGroupVersion(value)
	mu.RLock()
	done := all || ok && added[gv]
	mu.RUnlock()
	if done {
		return
	}
	mu.Lock()
	defer mu.Unlock()
	if !ok {
		addAll()
		return
	}
	addGroup(gv)
}

// addGroup adds group version gv (held with mu). A group client-go does
// not register stays unknown: the decoder says "not registered", as with
// client-go's scheme.
func addGroup(gv schema.GroupVersion) {
	if added[gv] {
		return
	}
	for _, g := range groups {
		if g.gv == gv {
			_ = g.add(scheme) // the generated adders return no error
		}
	}
	added[gv] = true
}

// addAll adds every group version (held with mu).
func addAll() {
	if all {
		return
	}
	for _, g := range groups {
		addGroup(g.gv)
	}
	all = true
}

// protobufGroupVersion reads the apiVersion of a protobuf value's
// envelope: "k8s\x00", then runtime.Unknown whose field 1 is the TypeMeta
// (field 1 apiVersion, field 2 kind).
func protobufGroupVersion(value []byte) (schema.GroupVersion, bool) {
	b, ok := bytes.CutPrefix(value, protoMagic)
	if !ok {
		return schema.GroupVersion{}, false
	}
	tm, ok := field(b, 1, protowire.BytesType)
	if !ok {
		return schema.GroupVersion{}, false
	}
	av, ok := field(tm, 1, protowire.BytesType)
	if !ok {
		return schema.GroupVersion{}, false
	}
	gv, err := schema.ParseGroupVersion(string(av))
	return gv, err == nil
}

// field returns the first field num of wire type typ in the message b.
func field(b []byte, num protowire.Number, typ protowire.Type) ([]byte, bool) {
	for len(b) > 0 {
		n, t, l := protowire.ConsumeTag(b)
		if l < 0 {
			return nil, false
		}
		b = b[l:]
		if n == num && t == typ {
			v, l := protowire.ConsumeBytes(b)
			return v, l >= 0
		}
		l = protowire.ConsumeFieldValue(n, t, b)
		if l < 0 {
			return nil, false
		}
		b = b[l:]
	}
	return nil, false
}
