package objects

import "fmt"

// The apiextensions apiserver stores CustomResourceDefinitions as v1beta1
// (its storage "prefers the more compact serialization", kubernetes#82292)
// while apiservers since 1.22 accept only v1. Restoring one therefore needs
// the conversion the apiserver does on read, which the helpers below
// follow: v1beta1's single-version and spec-wide fields move into each
// entry of spec.versions.
const (
	crdV1beta1 = "apiextensions.k8s.io/v1beta1"
	crdV1      = "apiextensions.k8s.io/v1"
)

func isV1beta1CRD(m map[string]any) bool {
	return m["apiVersion"] == crdV1beta1 && m["kind"] == "CustomResourceDefinition"
}

func crdToV1(in map[string]any) (map[string]any, error) {
	m := deepCopyMap(in)
	m["apiVersion"] = crdV1
	spec, ok := m["spec"].(map[string]any)
	if !ok {
		return nil, fmt.Errorf("CustomResourceDefinition %v has no spec", in["metadata"])
	}
	versions, _ := spec["versions"].([]any)
	if len(versions) == 0 {
		name, _ := spec["version"].(string)
		if name == "" {
			return nil, fmt.Errorf("v1beta1 CustomResourceDefinition has neither spec.version nor spec.versions")
		}
		versions = []any{map[string]any{"name": name, "served": true, "storage": true}}
	}
	delete(spec, "version")

	validation, _ := spec["validation"].(map[string]any)
	subresources, hasSub := spec["subresources"]
	columns, hasCols := spec["additionalPrinterColumns"].([]any)
	delete(spec, "validation")
	delete(spec, "subresources")
	delete(spec, "additionalPrinterColumns")

	for i, v := range versions {
		ver, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("spec.versions[%d] is not an object", i)
		}
		// v1beta1 validation forbids setting a field both spec-wide and per
		// version, so copying the spec-wide one never overwrites.
		if validation != nil {
			if _, ok := ver["schema"]; !ok {
				ver["schema"] = deepCopyMap(validation)
			}
		}
		if hasSub {
			if _, ok := ver["subresources"]; !ok {
				ver["subresources"] = deepCopyValue(subresources)
			}
		}
		if hasCols {
			if _, ok := ver["additionalPrinterColumns"]; !ok {
				ver["additionalPrinterColumns"] = deepCopyValue(columns)
			}
		}
		if cols, ok := ver["additionalPrinterColumns"].([]any); ok {
			for _, c := range cols {
				if col, ok := c.(map[string]any); ok {
					if jp, ok := col["JSONPath"]; ok {
						col["jsonPath"] = jp
						delete(col, "JSONPath")
					}
				}
			}
		}
		versions[i] = ver
	}
	spec["versions"] = versions

	if conv, ok := spec["conversion"].(map[string]any); ok {
		wh := map[string]any{}
		if cc, ok := conv["webhookClientConfig"]; ok {
			wh["clientConfig"] = cc
			delete(conv, "webhookClientConfig")
		}
		if rv, ok := conv["conversionReviewVersions"]; ok {
			wh["conversionReviewVersions"] = rv
			delete(conv, "conversionReviewVersions")
		}
		if len(wh) > 0 {
			conv["webhook"] = wh
		}
	}
	return m, nil
}
