package objects

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/kubekeep/kubekeep/internal/kscheme"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer/cbor"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/yaml"
)

// Encoding is how the apiserver serialised a value in etcd.
type Encoding string

const (
	EncodingProtobuf Encoding = "protobuf" // built-in types: "k8s\x00" + runtime.Unknown
	EncodingJSON     Encoding = "json"     // custom resources, CRDs, anything without protobuf
	EncodingCBOR     Encoding = "cbor"     // custom resources with the CBOR storage feature on
)

var (
	protoMagic = []byte("k8s\x00")
	// cborMagic is the "self-described CBOR" tag apimachinery writes first.
	cborMagic = []byte{0xd9, 0xd9, 0xf7}

	// client-go's scheme, filled as values need its groups (kscheme).
	protoSerializer = protobuf.NewSerializer(kscheme.Scheme(), kscheme.Scheme())
	cborSerializer  = cbor.NewSerializer(kscheme.Scheme(), kscheme.Scheme())
)

// Object is one Kubernetes object read out of etcd.
type Object struct {
	Ref            Ref
	Key            string
	ModRevision    int64
	CreateRevision int64
	Version        int64 // etcd's per-key version: writes since creation
	Lease          int64 // etcd lease (Events carry one); 0 for none

	Encoding Encoding
	// EncryptedBy is how the value was encrypted at rest; nil when it was
	// stored in clear.
	EncryptedBy *Encryption
	// StoredAPIVersion is the apiVersion in etcd when it differs from the
	// one Content reports: CRDs are stored as apiextensions.k8s.io/v1beta1
	// and converted to v1, which is all a current apiserver accepts.
	StoredAPIVersion string

	content map[string]any
}

// Content is the object as the apiserver would return it: apiVersion and
// kind set, metadata.resourceVersion filled from the mod revision, status
// kept. The map is the Object's own: copy before changing it.
func (o *Object) Content() map[string]any { return o.content }

// APIVersion and Kind of the object.
func (o *Object) APIVersion() string { s, _ := o.content["apiVersion"].(string); return s }
func (o *Object) Kind() string       { s, _ := o.content["kind"].(string); return s }

// ManifestOptions tunes Manifest.
type ManifestOptions struct {
	// KeepStatus keeps .status. It is dropped by default: controllers
	// rebuild it, apply ignores it for resources with a status subresource,
	// and a stale status in last-applied-configuration only misleads.
	KeepStatus bool
}

// serverFields are set by the apiserver for each incarnation of an object;
// sent back on create they are rejected (resourceVersion), ignored, or
// wrong for the new object (uid, creationTimestamp).
var serverFields = []string{
	"resourceVersion", "uid", "managedFields", "creationTimestamp", "generation", "selfLink",
	"deletionTimestamp", "deletionGracePeriodSeconds",
}

// Manifest is the object ready for `kubectl apply`: apiVersion and kind
// set, the server-owned metadata removed. Finalizers, ownerReferences,
// labels and annotations are kept: they are the object's intent.
func (o *Object) Manifest(opts ManifestOptions) map[string]any {
	m := deepCopyMap(o.content)
	if md, ok := m["metadata"].(map[string]any); ok {
		for _, f := range serverFields {
			delete(md, f)
		}
	}
	if !opts.KeepStatus {
		delete(m, "status")
	}
	return m
}

// JSON renders Manifest as indented JSON.
func (o *Object) JSON(opts ManifestOptions) ([]byte, error) {
	b, err := json.MarshalIndent(o.Manifest(opts), "", "  ")
	if err != nil {
		return nil, fmt.Errorf("%s: render JSON: %w", o.Key, err)
	}
	return append(b, '\n'), nil
}

// YAML renders Manifest as YAML, the way kubectl prints it.
func (o *Object) YAML(opts ManifestOptions) ([]byte, error) {
	b, err := yaml.Marshal(o.Manifest(opts))
	if err != nil {
		return nil, fmt.Errorf("%s: render YAML: %w", o.Key, err)
	}
	return b, nil
}

// decode fills the object's content from a stored value.
func (o *Object) decode(raw []byte, kr *Keyring) error {
	data, enc, err := reveal(o.Key, raw, kr)
	o.EncryptedBy = enc
	if err != nil {
		return err
	}
	content, encoding, err := DecodeValue(data)
	if err != nil {
		return fmt.Errorf("%s at revision %d: %w", o.Key, o.ModRevision, err)
	}
	o.Encoding = encoding
	if isV1beta1CRD(content) {
		o.StoredAPIVersion = crdV1beta1
		if content, err = crdToV1(content); err != nil {
			return fmt.Errorf("%s: %w", o.Key, err)
		}
	}
	md, _ := content["metadata"].(map[string]any)
	if md == nil {
		md = map[string]any{}
		content["metadata"] = md
	}
	// The apiserver never stores resourceVersion: it is the mod revision,
	// set on every read.
	md["resourceVersion"] = strconv.FormatInt(o.ModRevision, 10)
	o.content = content
	return nil
}

// reveal returns the plaintext of a stored value: the value itself when
// not encrypted.
func reveal(key string, raw []byte, kr *Keyring) ([]byte, *Encryption, error) {
	if !bytes.HasPrefix(raw, []byte(encPrefix)) {
		return raw, nil, nil
	}
	kr, err := kr.resolve()
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", key, err)
	}
	if kr == nil {
		enc, err := ParseEncryption(raw)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", key, err)
		}
		return nil, enc, &EncryptedError{Key: key, Encryption: *enc}
	}
	return kr.decrypt(key, raw)
}

// plaintext is reveal for callers that need only the bytes.
func plaintext(key string, raw []byte, kr *Keyring) ([]byte, error) {
	p, _, err := reveal(key, raw, kr)
	return p, err
}

// DecodeValue turns a stored, unencrypted value into its JSON-shaped map.
// Protobuf values need a type in client-go's scheme; JSON and CBOR values
// (custom resources) decode whatever their type.
func DecodeValue(data []byte) (map[string]any, Encoding, error) {
	switch {
	case bytes.HasPrefix(data, protoMagic):
		m, err := decodeProtobuf(data)
		return m, EncodingProtobuf, err
	case bytes.HasPrefix(data, cborMagic):
		u := &unstructured.Unstructured{}
		if _, err := kscheme.Decode(data, func() (runtime.Object, error) {
			_, _, err := cborSerializer.Decode(data, nil, u)
			return u, err
		}); err != nil {
			return nil, EncodingCBOR, fmt.Errorf("decode CBOR value: %w", err)
		}
		return u.Object, EncodingCBOR, checkTyped(u.Object)
	case len(bytes.TrimLeft(data, " \t\r\n")) > 0 && bytes.TrimLeft(data, " \t\r\n")[0] == '{':
		var m map[string]any
		// utiljson keeps integers as int64 where encoding/json would round
		// them through float64.
		if err := utiljson.Unmarshal(data, &m); err != nil {
			return nil, EncodingJSON, fmt.Errorf("decode JSON value: %w", err)
		}
		if m == nil {
			return nil, EncodingJSON, errors.New("decode JSON value: null")
		}
		return m, EncodingJSON, checkTyped(m)
	}
	head := data
	if len(head) > 16 {
		head = head[:16]
	}
	return nil, "", fmt.Errorf("value is not a Kubernetes object: no protobuf, CBOR or JSON marker (starts %q)", head)
}

func checkTyped(m map[string]any) error {
	av, _ := m["apiVersion"].(string)
	k, _ := m["kind"].(string)
	if av == "" || k == "" {
		return errors.New("stored object has no apiVersion or kind")
	}
	return nil
}

func decodeProtobuf(data []byte) (map[string]any, error) {
	var gvk *schema.GroupVersionKind
	obj, err := kscheme.Decode(data, func() (runtime.Object, error) {
		obj, k, err := protoSerializer.Decode(data, nil, nil)
		gvk = k
		return obj, err
	})
	if err != nil {
		if gvk != nil && runtime.IsNotRegisteredError(err) {
			return nil, fmt.Errorf("protobuf %s is not a type kubekeep knows (client-go scheme); "+
				"read it through an apiserver that serves it", gvk.GroupVersion().WithKind(gvk.Kind))
		}
		return nil, fmt.Errorf("decode protobuf value: %w", err)
	}
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, fmt.Errorf("convert %s: %w", gvk, err)
	}
	m["apiVersion"], m["kind"] = gvk.GroupVersion().String(), gvk.Kind
	return m, nil
}

func deepCopyMap(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = deepCopyValue(v)
	}
	return out
}

func deepCopyValue(v any) any {
	switch t := v.(type) {
	case map[string]any:
		return deepCopyMap(t)
	case []any:
		out := make([]any, len(t))
		for i := range t {
			out[i] = deepCopyValue(t[i])
		}
		return out
	}
	return v
}
