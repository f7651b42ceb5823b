package serve

import (
	"net/http"
	"strings"

	apidiscoveryv2 "k8s.io/api/apidiscovery/v2"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

var verbs = []string{"get", "list", "watch"}

// aggregatedType is the media type of aggregated discovery (KEP 3352):
// kubectl asks for it first and falls back to the legacy documents when
// an answer has another Content-Type.
const aggregatedType = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"

func wantsAggregated(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		mt := mediaParams(part)
		if mt["g"] == "apidiscovery.k8s.io" && mt["v"] == "v2" && mt["as"] == "APIGroupDiscoveryList" {
			return true
		}
	}
	return false
}

// mediaParams reads "type;k=v;k=v" into its parameters, the type under "".
func mediaParams(s string) map[string]string {
	fields := strings.Split(s, ";")
	m := map[string]string{"": strings.TrimSpace(fields[0])}
	for _, f := range fields[1:] {
		if k, v, ok := strings.Cut(strings.TrimSpace(f), "="); ok {
			m[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return m
}

func (s *Server) serveCoreVersions(w http.ResponseWriter, r *http.Request) error {
	if wantsAggregated(r) {
		writeJSON(w, http.StatusOK, aggregatedType, s.aggregated(true))
		return nil
	}
	writeJSON(w, http.StatusOK, "application/json", &metav1.APIVersions{
		TypeMeta: metav1.TypeMeta{Kind: "APIVersions"}, Versions: []string{"v1"},
		ServerAddressByClientCIDRs: []metav1.ServerAddressByClientCIDR{{ClientCIDR: "0.0.0.0/0", ServerAddress: r.Host}},
	})
	return nil
}

func (s *Server) serveGroups(w http.ResponseWriter, r *http.Request) error {
	if wantsAggregated(r) {
		writeJSON(w, http.StatusOK, aggregatedType, s.aggregated(false))
		return nil
	}
	list := &metav1.APIGroupList{TypeMeta: metav1.TypeMeta{Kind: "APIGroupList", APIVersion: "v1"}, Groups: []metav1.APIGroup{}}
	for _, g := range s.groups {
		if g.name != "" {
			list.Groups = append(list.Groups, apiGroupOf(g))
		}
	}
	writeJSON(w, http.StatusOK, "application/json", list)
	return nil
}

func apiGroupOf(g *apiGroup) metav1.APIGroup {
	ag := metav1.APIGroup{TypeMeta: metav1.TypeMeta{Kind: "APIGroup", APIVersion: "v1"}, Name: g.name}
	for _, v := range g.versions {
		ag.Versions = append(ag.Versions, metav1.GroupVersionForDiscovery{GroupVersion: g.name + "/" + v, Version: v})
	}
	ag.PreferredVersion = ag.Versions[0]
	return ag
}

func (s *Server) serveGroup(w http.ResponseWriter, name string) error {
	for _, g := range s.groups {
		if g.name == name && name != "" {
			ag := apiGroupOf(g)
			writeJSON(w, http.StatusOK, "application/json", &ag)
			return nil
		}
	}
	return notFoundPath()
}

func (s *Server) serveResourceList(w http.ResponseWriter, group, version string) error {
	for _, g := range s.groups {
		if g.name != group {
			continue
		}
		rs, ok := g.byVer[version]
		if !ok {
			break
		}
		gv := version
		if group != "" {
			gv = group + "/" + version
		}
		list := &metav1.APIResourceList{TypeMeta: metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"}, GroupVersion: gv, APIResources: []metav1.APIResource{}}
		for _, r := range rs {
			list.APIResources = append(list.APIResources, metav1.APIResource{
				Name: r.plural, SingularName: r.singular, Namespaced: r.namespaced, Kind: r.kind,
				Verbs: verbs, ShortNames: r.short, Categories: r.categories,
			})
		}
		writeJSON(w, http.StatusOK, "application/json", list)
		return nil
	}
	return notFoundPath()
}

// aggregated is the APIGroupDiscoveryList of the core group (core) or of
// every other group.
func (s *Server) aggregated(core bool) *apidiscoveryv2.APIGroupDiscoveryList {
	list := &apidiscoveryv2.APIGroupDiscoveryList{
		TypeMeta: metav1.TypeMeta{Kind: "APIGroupDiscoveryList", APIVersion: "apidiscovery.k8s.io/v2"},
		Items:    []apidiscoveryv2.APIGroupDiscovery{},
	}
	for _, g := range s.groups {
		if (g.name == "") != core {
			continue
		}
		gd := apidiscoveryv2.APIGroupDiscovery{ObjectMeta: metav1.ObjectMeta{Name: g.name}}
		for _, v := range g.versions {
			vd := apidiscoveryv2.APIVersionDiscovery{Version: v, Freshness: apidiscoveryv2.DiscoveryFreshnessCurrent}
			for _, r := range g.byVer[v] {
				scope := apidiscoveryv2.ScopeCluster
				if r.namespaced {
					scope = apidiscoveryv2.ScopeNamespace
				}
				vd.Resources = append(vd.Resources, apidiscoveryv2.APIResourceDiscovery{
					Resource:         r.plural,
					ResponseKind:     &metav1.GroupVersionKind{Group: r.group, Version: r.version, Kind: r.kind},
					Scope:            scope,
					SingularResource: r.singular,
					Verbs:            verbs,
					ShortNames:       r.short,
					Categories:       r.categories,
				})
			}
			gd.Versions = append(gd.Versions, vd)
		}
		list.Items = append(list.Items, gd)
	}
	return list
}
