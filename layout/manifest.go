package layout

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
	corev1 "k8s.io/api/core/v1"
)

// ManifestError is a static pod manifest kubekeep cannot trust, positioned
// so an operator can open the file at the line.
// Error always reads "file:line: msg".
type ManifestError struct {
	File string
	// Line is where the problem is; 1 when it concerns the whole file
	// (empty, not a valid Pod as a whole) or the decoder gave no position.
	Line int
	Msg  string
}

func (e *ManifestError) Error() string {
	return fmt.Sprintf("%s:%d: %s", e.File, max(e.Line, 1), e.Msg)
}

// maxNodes bounds the YAML→JSON conversion: aliases can make a small file
// expand exponentially.
const maxNodes = 200000

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): `)

// ParseManifest decodes one static pod manifest (named file in errors) the
// way the kubelet accepts it: one YAML or JSON document holding a v1 Pod
// with at least one container. Every hostPath volume must be an absolute
// path without "..": those paths are later read below the root.
func ParseManifest(file string, data []byte) (*corev1.Pod, error) {
	fail := func(line int, format string, args ...any) error {
		return &ManifestError{File: file, Line: max(line, 1), Msg: fmt.Sprintf(format, args...)}
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fail(0, "empty file, not a Pod manifest")
		}
		return nil, yamlError(file, err)
	}
	var next yaml.Node
	if err := dec.Decode(&next); err == nil {
		return nil, fail(next.Line, "more than one YAML document; the kubelet reads one Pod per file")
	} else if !errors.Is(err, io.EOF) {
		return nil, yamlError(file, err)
	}
	if len(doc.Content) == 0 {
		return nil, fail(doc.Line, "empty document, not a Pod manifest")
	}
	top := doc.Content[0]
	if top.Kind == yaml.AliasNode && top.Alias != nil {
		top = top.Alias
	}
	if top.Kind != yaml.MappingNode {
		return nil, fail(top.Line, "not a Pod manifest: the document is a %s, not a mapping", nodeKind(top))
	}
	budget := maxNodes
	obj, err := toJSONValue(top, &budget)
	if err != nil {
		var me *ManifestError
		if errors.As(err, &me) {
			me.File, me.Line = file, max(me.Line, 1)
		}
		return nil, err
	}
	m := obj.(map[string]any)
	kind, _ := m["kind"].(string)
	apiVersion, _ := m["apiVersion"].(string)
	if kind != "Pod" || apiVersion != "v1" {
		line := top.Line
		if n := child(top, "kind"); n != nil {
			line = n.Line
		}
		return nil, fail(line, "not a Pod manifest: apiVersion %q kind %q, want apiVersion v1 kind Pod", apiVersion, kind)
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return nil, fail(0, "cannot convert to JSON: %v", err)
	}
	var pod corev1.Pod
	if err := json.Unmarshal(raw, &pod); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			line := lineOf(top, te.Field)
			return nil, fail(line, "%s: cannot hold a %s (want %s)", te.Field, te.Value, te.Type)
		}
		return nil, fail(0, "not a valid Pod: %v", err)
	}
	spec := child(top, "spec")
	if len(pod.Spec.Containers) == 0 {
		line := top.Line
		if spec != nil {
			line = spec.Line
		}
		return nil, fail(line, "pod %q has no containers", pod.Name)
	}
	volumes := child(spec, "volumes")
	for i, v := range pod.Spec.Volumes {
		if v.HostPath == nil {
			continue
		}
		if err := checkHostPath(v.HostPath.Path); err != nil {
			line := 0
			if volumes != nil && i < len(volumes.Content) {
				line = volumes.Content[i].Line
				if n := child(child(volumes.Content[i], "hostPath"), "path"); n != nil {
					line = n.Line
				}
			}
			return nil, fail(line, "volume %q: %v", v.Name, err)
		}
	}
	return &pod, nil
}

func yamlError(file string, err error) error {
	msg := err.Error()
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &ManifestError{File: file, Line: line, Msg: "not valid YAML: " + msg[len(m[0]):]}
	}
	return &ManifestError{File: file, Line: 1, Msg: "not valid YAML: " + strings.TrimPrefix(msg, "yaml: ")}
}

func nodeKind(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "list"
	case yaml.ScalarNode:
		return "scalar"
	}
	return "node"
}

// toJSONValue converts a YAML node to what encoding/json marshals, keeping
// the line of the first thing JSON cannot hold (non-string keys, NaN).
func toJSONValue(n *yaml.Node, budget *int) (any, error) {
	*budget--
	if *budget < 0 {
		return nil, &ManifestError{Line: n.Line, Msg: "too many YAML nodes (alias expansion?)"}
	}
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			return nil, nil
		}
		return toJSONValue(n.Content[0], budget)
	case yaml.AliasNode:
		if n.Alias == nil {
			return nil, &ManifestError{Line: n.Line, Msg: "unknown alias"}
		}
		return toJSONValue(n.Alias, budget)
	case yaml.MappingNode:
		out := make(map[string]any, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Kind == yaml.ScalarNode && k.Tag == "!!merge" {
				merged, err := toJSONValue(v, budget)
				if err != nil {
					return nil, err
				}
				mm, ok := merged.(map[string]any)
				if !ok {
					return nil, &ManifestError{Line: k.Line, Msg: "merge key needs a mapping"}
				}
				for mk, mv := range mm {
					if _, set := out[mk]; !set {
						out[mk] = mv
					}
				}
				continue
			}
			if k.Kind != yaml.ScalarNode {
				return nil, &ManifestError{Line: k.Line, Msg: "a mapping key must be a string"}
			}
			if _, dup := out[k.Value]; dup {
				return nil, &ManifestError{Line: k.Line, Msg: fmt.Sprintf("key %q appears twice", k.Value)}
			}
			val, err := toJSONValue(v, budget)
			if err != nil {
				return nil, err
			}
			out[k.Value] = val
		}
		return out, nil
	case yaml.SequenceNode:
		out := make([]any, 0, len(n.Content))
		for _, c := range n.Content {
			val, err := toJSONValue(c, budget)
			if err != nil {
				return nil, err
			}
			out = append(out, val)
		}
		return out, nil
	case yaml.ScalarNode:
		var v any
		if err := n.Decode(&v); err != nil {
			return nil, &ManifestError{Line: n.Line, Msg: err.Error()}
		}
		switch x := v.(type) {
		case float64:
			if math.IsInf(x, 0) || math.IsNaN(x) {
				return nil, &ManifestError{Line: n.Line, Msg: fmt.Sprintf("%q is not a number JSON can hold", n.Value)}
			}
		case int, int64, uint64, string, bool, nil:
		default:
			// Timestamps and binary decode to Go types JSON would
			// render differently from the source text.
			return n.Value, nil
		}
		return v, nil
	}
	return nil, &ManifestError{Line: n.Line, Msg: "unsupported YAML node"}
}

func child(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

// lineOf finds the line of a dotted JSON field path ("spec.containers.command")
// in the document; encoding/json drops list indices, so inside a list the
// first element holding the next key is taken.
func lineOf(n *yaml.Node, field string) int {
	line := n.Line
	for _, key := range strings.Split(field, ".") {
		for n != nil && n.Kind == yaml.SequenceNode {
			var found *yaml.Node
			for _, c := range n.Content {
				if child(c, key) != nil {
					found = c
					break
				}
			}
			n = found
		}
		n = child(n, key)
		if n == nil {
			break
		}
		line = n.Line
	}
	return line
}

// ContainerFlags returns a container's --name=value and --name value flags
// from its command and args; a later flag wins, as with pflag.
func ContainerFlags(c corev1.Container) map[string]string {
	var argv []string
	if len(c.Command) > 1 {
		argv = append(argv, c.Command[1:]...)
	}
	argv = append(argv, c.Args...)
	flags := map[string]string{}
	for i := 0; i < len(argv); i++ {
		a := argv[i]
		if !strings.HasPrefix(a, "--") || a == "--" {
			continue
		}
		name, val, ok := strings.Cut(a[2:], "=")
		if !ok && i+1 < len(argv) && !strings.HasPrefix(argv[i+1], "-") {
			val = argv[i+1]
			i++
		}
		flags[name] = val
	}
	return flags
}

// HostPathOf maps a path as a container sees it to the host path behind it,
// through the container's mounts of hostPath volumes (the deepest mount
// wins, as in the container's mount table). ok is false when no hostPath
// volume holds it: the path then lives in the container's own filesystem.
func HostPathOf(pod *corev1.Pod, c corev1.Container, containerPath string) (string, bool) {
	var best *corev1.VolumeMount
	for i := range c.VolumeMounts {
		m := &c.VolumeMounts[i]
		mp := strings.TrimSuffix(m.MountPath, "/")
		if mp == "" {
			mp = "/"
		}
		if within(containerPath, mp) && (best == nil || len(mp) > len(strings.TrimSuffix(best.MountPath, "/"))) {
			best = m
		}
	}
	if best == nil {
		return "", false
	}
	for _, v := range pod.Spec.Volumes {
		if v.Name != best.Name {
			continue
		}
		if v.HostPath == nil {
			return "", false
		}
		base := v.HostPath.Path
		if best.SubPath != "" {
			base = strings.TrimSuffix(base, "/") + "/" + best.SubPath
		}
		rest := strings.TrimPrefix(containerPath, strings.TrimSuffix(best.MountPath, "/"))
		p, err := cleanHostPath(strings.TrimSuffix(base, "/") + rest)
		if err != nil {
			return "", false
		}
		return p, true
	}
	return "", false
}
