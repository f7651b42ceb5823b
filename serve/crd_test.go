package serve

import (
	"encoding/json"
	"strings"
	"testing"
)

func crdMap(t *testing.T, s string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestCRDResources: what a CRD serves, and the CRDs that cannot be served
// say why instead of taking the rest of the API down.
func TestCRDResources(t *testing.T) {
	rs, err := crdToResources(crdMap(t, widgetCRD))
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 || rs[0].version != "v1" || rs[1].version != "v2" || !rs[0].namespaced || rs[0].singular != "widget" ||
		rs[0].fields["spec.colour"] != "spec.colour" || len(rs[0].crd.columns) != 3 || len(rs[1].crd.columns) != 0 || !rs[1].crd.noneConversion {
		t.Errorf("widgets: %+v %+v", rs[0], rs[1])
	}
	cluster, err := crdToResources(crdMap(t, `{"metadata":{"name":"gadgets.example.org"},"spec":{"group":"example.org","scope":"Cluster",
		"names":{"plural":"gadgets","kind":"Gadget"},"conversion":{"strategy":"Webhook"},"versions":[{"name":"v1alpha1","served":true}]}}`))
	if err != nil || cluster[0].namespaced || cluster[0].singular != "gadget" || cluster[0].crd.noneConversion {
		t.Errorf("gadgets: %v %+v", err, cluster)
	}
	for bad, want := range map[string]string{
		`{"metadata":{"name":"x"}}`: "no spec",
		`{"metadata":{"name":"a.b"},"spec":{"group":"b","names":{"plural":"a"}}}`:                                                         "required",
		`{"metadata":{"name":"other.b"},"spec":{"group":"b","names":{"plural":"a","kind":"A"},"versions":[{"name":"v1","served":true}]}}`: `named "other.b", not "a.b"`,
		`{"metadata":{"name":"a.b"},"spec":{"group":"b","names":{"plural":"a","kind":"A"},"versions":[{"name":"v1","served":false}]}}`:    "serves no version",
	} {
		if _, err := crdToResources(crdMap(t, bad)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", bad, err, want)
		}
	}
	// A printer column whose jsonPath does not parse: the resource still
	// serves, with NAME and AGE, and the problem is named.
	col, _ := crdToResources(crdMap(t, `{"metadata":{"name":"a.b"},"spec":{"group":"b","names":{"plural":"a","kind":"A"},
		"versions":[{"name":"v1","served":true,"additionalPrinterColumns":[{"name":"Broken","type":"string","jsonPath":".spec[["}]}]}}`))
	if _, err := crdColumns(col[0].crd); err == nil || !strings.Contains(err.Error(), `printer column "Broken"`) {
		t.Errorf("broken column: %v", err)
	}
}
