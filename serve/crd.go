package serve

import (
	"fmt"
	"strings"

	"github.com/kubekeep/kubekeep/objects"
)

// crdVersion is what a CRD says about one served version of its
// resource: the printer columns and selectable fields of that version,
// and whether objects stored at another version may simply be relabelled
// (conversion strategy None, which is what the apiserver then does).
type crdVersion struct {
	name           string // the CRD's metadata.name
	columns        []crdColumn
	noneConversion bool
}

type crdColumn struct {
	Name, Type, Format, Description, JSONPath string
	Priority                                  int64
}

var crdFilter = objects.Filter{Group: "apiextensions.k8s.io", Resource: "customresourcedefinitions"}

// crdResources reads every CRD in the snapshot and returns a resource for
// each version it serves. A CRD that does not read or makes no sense is
// reported in problems and left out, so the rest of the API still serves.
func crdResources(rd objects.Reader) (out []*resource, problems []string, err error) {
	items, err := rd.Items(crdFilter)
	if err != nil {
		return nil, nil, fmt.Errorf("list CustomResourceDefinitions: %w", err)
	}
	for _, it := range items {
		obj, err := rd.GetKey(it.Key)
		if err != nil {
			problems = append(problems, fmt.Sprintf("CRD %s: %v", it.Ref.Name, err))
			continue
		}
		rs, err := crdToResources(obj.Content())
		if err != nil {
			problems = append(problems, fmt.Sprintf("CRD %s: %v", it.Ref.Name, err))
			continue
		}
		out = append(out, rs...)
	}
	return out, problems, nil
}

func crdToResources(crd map[string]any) ([]*resource, error) {
	name := str(crd, "metadata", "name")
	spec, _ := crd["spec"].(map[string]any)
	if spec == nil {
		return nil, fmt.Errorf("no spec")
	}
	group := str(spec, "group")
	names, _ := spec["names"].(map[string]any)
	plural, kind := str(names, "plural"), str(names, "kind")
	if group == "" || plural == "" || kind == "" {
		return nil, fmt.Errorf("spec.group, spec.names.plural and spec.names.kind are required")
	}
	if want := plural + "." + group; name != want {
		return nil, fmt.Errorf("named %q, not %q", name, want)
	}
	singular := str(names, "singular")
	if singular == "" {
		singular = strings.ToLower(kind)
	}
	conv := str(spec, "conversion", "strategy")
	versions, _ := spec["versions"].([]any)
	var out []*resource
	for _, v := range versions {
		ver, _ := v.(map[string]any)
		if ver == nil || ver["served"] != true || str(ver, "name") == "" {
			continue
		}
		cv := &crdVersion{name: name, noneConversion: conv == "" || conv == "None"}
		cols, _ := ver["additionalPrinterColumns"].([]any)
		for _, c := range cols {
			col, _ := c.(map[string]any)
			if col == nil {
				continue
			}
			p, _ := toInt64(col["priority"])
			cv.columns = append(cv.columns, crdColumn{
				Name: str(col, "name"), Type: str(col, "type"), Format: str(col, "format"),
				Description: str(col, "description"), JSONPath: str(col, "jsonPath"), Priority: p,
			})
		}
		r := &resource{
			group: group, version: str(ver, "name"), plural: plural, singular: singular, kind: kind,
			namespaced: str(spec, "scope") != "Cluster",
			short:      strings_(names["shortNames"]), categories: strings_(names["categories"]),
			fields: map[string]string{}, crd: cv,
		}
		sel, _ := ver["selectableFields"].([]any)
		for _, s := range sel {
			if f, _ := s.(map[string]any); f != nil {
				p := strings.TrimPrefix(str(f, "jsonPath"), ".")
				if p != "" {
					r.fields[p] = p
				}
			}
		}
		out = append(out, r)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("serves no version")
	}
	return out, nil
}

// str walks m by keys and returns the string there ("" otherwise).
func str(m map[string]any, path ...string) string {
	v, _ := lookup(m, path...)
	s, _ := v.(string)
	return s
}

// lookup walks m by keys.
func lookup(m map[string]any, path ...string) (any, bool) {
	var cur any = m
	for _, k := range path {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = mm[k]; !ok {
			return nil, false
		}
	}
	return cur, true
}

func strings_(v any) []string {
	l, _ := v.([]any)
	var out []string
	for _, x := range l {
		if s, ok := x.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

func toInt64(v any) (int64, bool) {
	switch n := v.(type) {
	case int64:
		return n, true
	case int:
		return int64(n), true
	case int32:
		return int64(n), true
	case float64:
		return int64(n), true
	}
	return 0, false
}
