package serve

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubekeep/kubekeep/internal/testetcd"
	"github.com/kubekeep/kubekeep/objects"
)

// fixture is a Server on a snapshot of a real etcd holding protobuf
// ConfigMaps and a Namespace (as the apiserver stores them), a CRD
// serving two versions and custom resources (JSON, as the apiextensions
// apiserver stores them), reached over TLS with the session's client
// certificate.
type fixture struct {
	srv    *Server
	url    string
	client *http.Client
	anon   *http.Client
	rev    int64 // etcd's revision when the snapshot was taken
}

const widgetCRD = `{"apiVersion":"apiextensions.k8s.io/v1","kind":"CustomResourceDefinition",
"metadata":{"name":"widgets.example.com","uid":"c1","creationTimestamp":"2026-11-01T10:00:00Z"},
"spec":{"group":"example.com","scope":"Namespaced",
 "names":{"plural":"widgets","singular":"widget","kind":"Widget","listKind":"WidgetList","shortNames":["wd"],"categories":["shop"]},
 "versions":[
  {"name":"v1","served":true,"storage":true,
   "additionalPrinterColumns":[{"name":"Size","type":"integer","jsonPath":".spec.size"},{"name":"Colour","type":"string","jsonPath":".spec.colour","priority":1},{"name":"Made","type":"date","jsonPath":".metadata.creationTimestamp"}],
   "selectableFields":[{"jsonPath":".spec.colour"}]},
  {"name":"v2","served":true,"storage":false},
  {"name":"v0","served":false,"storage":false}]}}`

func widget(name string, size int, colour string) string {
	return fmt.Sprintf(`{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"name":%q,"namespace":"shop","uid":"u-%s","creationTimestamp":"2026-11-30T12:00:00Z","labels":{"colour":%q}},"spec":{"size":%d,"colour":%q}}`,
		name, name, colour, size, colour)
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	r := testetcd.SandboxT(t)
	e := testetcd.StartT(t, r)
	cli := e.ClientT(t)
	ctx := context.Background()
	put := func(resource string, obj any) {
		t.Helper()
		var err error
		switch o := obj.(type) {
		case *corev1.ConfigMap:
			_, err = testetcd.PutObject(ctx, cli, resource, o)
		case *corev1.Namespace:
			_, err = testetcd.PutObject(ctx, cli, resource, o)
		case *corev1.Secret:
			_, err = testetcd.PutObject(ctx, cli, resource, o)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	created := metav1.NewTime(time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC))
	put("namespaces", &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", CreationTimestamp: created}, Status: corev1.NamespaceStatus{Phase: corev1.NamespaceActive}})
	for i, name := range []string{"alpha", "beta", "gamma"} {
		put("configmaps", &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", CreationTimestamp: created, Labels: map[string]string{"app": "shop", "n": fmt.Sprint(i)}},
			Data:       map[string]string{"k": name, "i": fmt.Sprint(i)},
		})
	}
	put("configmaps", &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "elsewhere", Namespace: "web", CreationTimestamp: created, Labels: map[string]string{"app": "web"}}})
	put("secrets", &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "open", Namespace: "shop"}, Data: map[string][]byte{"k": []byte("v")}})
	for k, v := range map[string]string{
		// Encrypted at rest with a key the reader has not got.
		"/registry/secrets/shop/locked": "k8s:enc:aescbc:v1:key1:" + strings.Repeat("\x17", 48),
		"/registry/apiextensions.k8s.io/customresourcedefinitions/widgets.example.com": widgetCRD,
		"/registry/example.com/widgets/shop/w1":                                        widget("w1", 3, "teal"),
		"/registry/example.com/widgets/shop/w2":                                        widget("w2", 5, "red"),
	} {
		if _, err := cli.Put(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := cli.Get(ctx, "/registry/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	rd := snapshotReader(t, cli)
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	srv, err := New(Config{Reader: rd, Version: "20261201T120000Z-test", Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	if len(srv.Problems()) != 0 {
		t.Fatalf("problems: %v", srv.Problems())
	}
	creds, err := NewCredentials(nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(rctx, ln, srv, creds, nil) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		rd.Close()
	})
	ctls, err := creds.ClientTLS()
	if err != nil {
		t.Fatal(err)
	}
	anon := ctls.Clone()
	anon.Certificates = nil
	return &fixture{
		srv: srv, url: "https://" + ln.Addr().String(), rev: resp.Header.Revision,
		client: &http.Client{Transport: &http.Transport{TLSClientConfig: ctls}, Timeout: 30 * time.Second},
		anon:   &http.Client{Transport: &http.Transport{TLSClientConfig: anon}, Timeout: 30 * time.Second},
	}
}

// snapshotReader takes an etcd snapshot as the backup does (the
// Maintenance API) and opens it.
func snapshotReader(t *testing.T, cli *clientv3.Client) objects.Reader {
	t.Helper()
	rc, err := cli.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	p := filepath.Join(t.TempDir(), "snap.db")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(f, rc); err != nil {
		t.Fatal(err)
	}
	f.Close()
	s, err := objects.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (f *fixture) do(t *testing.T, c *http.Client, method, path, accept string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, f.url+path, strings.NewReader(`{"kind":"ConfigMap"}`))
	if err != nil {
		t.Fatal(err)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

func (f *fixture) getJSON(t *testing.T, path, accept string, want int) map[string]any {
	t.Helper()
	code, _, b := f.do(t, f.client, "GET", path, accept)
	if code != want {
		t.Fatalf("GET %s: %d, want %d\n%s", path, code, want, b)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("GET %s: %v\n%s", path, err, b)
	}
	return m
}

func names(list map[string]any) []string {
	var out []string
	items, _ := list["items"].([]any)
	for _, it := range items {
		m, _ := it.(map[string]any)
		out = append(out, str(m, "metadata", "namespace")+"/"+str(m, "metadata", "name"))
	}
	return out
}

// TestServeRefusesWithoutClientCert: no client certificate, no data,
// whatever the path; the answer is a Status saying what is missing.
func TestServeRefusesWithoutClientCert(t *testing.T) {
	f := newFixture(t)
	for _, p := range []string{"/api/v1/namespaces/shop/configmaps/alpha", "/version", "/apis", "/"} {
		code, _, b := f.do(t, f.anon, "GET", p, "")
		if code != http.StatusUnauthorized || !strings.Contains(string(b), `"reason":"Unauthorized"`) || strings.Contains(string(b), "alpha") {
			t.Errorf("GET %s without a client certificate: %d %s", p, code, b)
		}
	}
	// A certificate from another CA does not pass the handshake.
	other, err := NewCredentials(nil)
	if err != nil {
		t.Fatal(err)
	}
	oc, _ := other.ClientTLS()
	mine := f.client.Transport.(*http.Transport).TLSClientConfig
	oc.RootCAs = mine.RootCAs
	_, err = (&http.Client{Transport: &http.Transport{TLSClientConfig: oc}}).Get(f.url + "/version")
	if err == nil {
		t.Error("a client certificate of another CA was accepted")
	}
}

// TestServeRefusesWrites: every write is 405 with the backup's message.
func TestServeRefusesWrites(t *testing.T) {
	f := newFixture(t)
	for _, m := range []string{"POST", "PUT", "PATCH", "DELETE"} {
		code, _, b := f.do(t, f.client, m, "/api/v1/namespaces/shop/configmaps/alpha", "")
		var st map[string]any
		json.Unmarshal(b, &st)
		if code != http.StatusMethodNotAllowed || st["kind"] != "Status" || st["reason"] != "MethodNotAllowed" ||
			!strings.Contains(fmt.Sprint(st["message"]), "read-only view of backup 20261201T120000Z-test") {
			t.Errorf("%s: %d %s", m, code, b)
		}
	}
	// The object is still there, unchanged.
	if cm := f.getJSON(t, "/api/v1/namespaces/shop/configmaps/alpha", "", 200); str(cm, "data", "k") != "alpha" {
		t.Errorf("after the refused writes: %v", cm)
	}
}

func TestServeDiscovery(t *testing.T) {
	f := newFixture(t)
	// Legacy.
	core := f.getJSON(t, "/api/v1", "", 200)
	var cm map[string]any
	for _, r := range core["resources"].([]any) {
		if m := r.(map[string]any); m["name"] == "configmaps" {
			cm = m
		}
	}
	if cm == nil || cm["namespaced"] != true || cm["kind"] != "ConfigMap" || fmt.Sprint(cm["shortNames"]) != "[cm]" || fmt.Sprint(cm["verbs"]) != "[get list watch]" {
		t.Errorf("/api/v1 configmaps: %v", cm)
	}
	g := f.getJSON(t, "/apis/example.com", "", 200)
	if str(g, "preferredVersion", "version") != "v2" || len(g["versions"].([]any)) != 2 {
		t.Errorf("/apis/example.com (v2 and v1 served, v0 not): %v", g)
	}
	wl := f.getJSON(t, "/apis/example.com/v1", "", 200)
	if b, _ := json.Marshal(wl["resources"]); string(b) != `[{"categories":["shop"],"kind":"Widget","name":"widgets","namespaced":true,"shortNames":["wd"],"singularName":"widget","verbs":["get","list","watch"]}]` {
		t.Errorf("/apis/example.com/v1: %s", b)
	}
	f.getJSON(t, "/apis/example.com/v0", "", 404)
	// Aggregated, as kubectl asks for it.
	accept := "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"
	code, h, b := f.do(t, f.client, "GET", "/apis", accept)
	if code != 200 || h.Get("Content-Type") != aggregatedType {
		t.Fatalf("/apis aggregated: %d %s", code, h.Get("Content-Type"))
	}
	var agg struct {
		Items []struct {
			Metadata struct{ Name string }
			Versions []struct {
				Version   string
				Resources []struct {
					Resource     string
					Scope        string
					ResponseKind struct{ Group, Version, Kind string }
				}
			}
		}
	}
	if err := json.Unmarshal(b, &agg); err != nil {
		t.Fatal(err)
	}
	found := map[string]string{}
	for _, it := range agg.Items {
		for _, v := range it.Versions {
			for _, r := range v.Resources {
				found[it.Metadata.Name+"/"+v.Version+"/"+r.Resource] = r.Scope + " " + r.ResponseKind.Kind
			}
		}
	}
	for k, want := range map[string]string{
		"apps/v1/deployments":                                         "Namespaced Deployment",
		"example.com/v1/widgets":                                      "Namespaced Widget",
		"example.com/v2/widgets":                                      "Namespaced Widget",
		"apiextensions.k8s.io/v1/customresourcedefinitions":           "Cluster CustomResourceDefinition",
		"rbac.authorization.k8s.io/v1/clusterroles":                   "Cluster ClusterRole",
		"networking.k8s.io/v1/ingresses":                              "Namespaced Ingress",
		"admissionregistration.k8s.io/v1/validatingadmissionpolicies": "Cluster ValidatingAdmissionPolicy",
	} {
		if found[k] != want {
			t.Errorf("aggregated discovery %s: %q, want %q", k, found[k], want)
		}
	}
	if _, ok := found["example.com/v0/widgets"]; ok {
		t.Error("v0 is not served by the CRD but is in discovery")
	}
	code, h, _ = f.do(t, f.client, "GET", "/api", accept)
	if code != 200 || h.Get("Content-Type") != aggregatedType {
		t.Errorf("/api aggregated: %d %s", code, h.Get("Content-Type"))
	}
}

func TestServeGetList(t *testing.T) {
	f := newFixture(t)
	cm := f.getJSON(t, "/api/v1/namespaces/shop/configmaps/beta", "", 200)
	if cm["kind"] != "ConfigMap" || cm["apiVersion"] != "v1" || str(cm, "data", "k") != "beta" || str(cm, "metadata", "labels", "app") != "shop" {
		t.Errorf("get beta: %v", cm)
	}
	nf := f.getJSON(t, "/api/v1/namespaces/shop/configmaps/nope", "", 404)
	if nf["reason"] != "NotFound" || !strings.Contains(fmt.Sprint(nf["message"]), `configmaps "nope" not found in backup`) {
		t.Errorf("not found: %v", nf)
	}
	// Namespaced and all namespaces, in key order; the list at the
	// snapshot's revision.
	all := f.getJSON(t, "/api/v1/configmaps", "", 200)
	if got := names(all); !slices.Equal(got, []string{"shop/alpha", "shop/beta", "shop/gamma", "web/elsewhere"}) {
		t.Errorf("all configmaps: %v", got)
	}
	if all["kind"] != "ConfigMapList" || str(all, "metadata", "resourceVersion") != fmt.Sprint(f.rev) {
		t.Errorf("list kind %v resourceVersion %v, etcd revision %d", all["kind"], all["metadata"], f.rev)
	}
	if got := names(f.getJSON(t, "/api/v1/namespaces/web/configmaps", "", 200)); !slices.Equal(got, []string{"web/elsewhere"}) {
		t.Errorf("configmaps in web: %v", got)
	}
	// Cluster-scoped.
	if ns := f.getJSON(t, "/api/v1/namespaces/shop", "", 200); str(ns, "status", "phase") != "Active" {
		t.Errorf("namespace shop: %v", ns)
	}
	// Custom resources, at each served version.
	if got := names(f.getJSON(t, "/apis/example.com/v1/namespaces/shop/widgets", "", 200)); !slices.Equal(got, []string{"shop/w1", "shop/w2"}) {
		t.Errorf("widgets: %v", got)
	}
	if w := f.getJSON(t, "/apis/example.com/v2/namespaces/shop/widgets/w1", "", 200); w["apiVersion"] != "example.com/v2" || fmt.Sprint(w["spec"]) != "map[colour:teal size:3]" {
		t.Errorf("w1 at v2 (None conversion): %v", w)
	}
	f.getJSON(t, "/apis/example.com/v1/widgets/w1", "", 404)    // namespaced, no namespace
	f.getJSON(t, "/api/v1/namespaces/shop/pods/p/log", "", 404) // no containers in a backup
}

func TestServeSelectorsAndPages(t *testing.T) {
	f := newFixture(t)
	for q, want := range map[string][]string{
		"labelSelector=" + url.QueryEscape("n in (0,2)"):                                  {"shop/alpha", "shop/gamma"},
		"labelSelector=" + url.QueryEscape("app=shop,n!=1"):                               {"shop/alpha", "shop/gamma"},
		"labelSelector=app%3Dweb":                                                         {"web/elsewhere"},
		"fieldSelector=metadata.name%3Dbeta":                                              {"shop/beta"},
		"fieldSelector=metadata.namespace%3Dweb":                                          {"web/elsewhere"},
		"fieldSelector=" + url.QueryEscape("metadata.name!=beta,metadata.namespace=shop"): {"shop/alpha", "shop/gamma"},
	} {
		if got := names(f.getJSON(t, "/api/v1/configmaps?"+q, "", 200)); !slices.Equal(got, want) {
			t.Errorf("%s: %v, want %v", q, got, want)
		}
	}
	if got := names(f.getJSON(t, "/api/v1/namespaces/shop/configmaps?fieldSelector=metadata.name%3Dbeta", "", 200)); !slices.Equal(got, []string{"shop/beta"}) {
		t.Errorf("by name in shop: %v", got)
	}
	// A CRD's selectable field.
	if got := names(f.getJSON(t, "/apis/example.com/v1/namespaces/shop/widgets?fieldSelector=spec.colour%3Dred", "", 200)); !slices.Equal(got, []string{"shop/w2"}) {
		t.Errorf("widgets spec.colour=red: %v", got)
	}
	st := f.getJSON(t, "/api/v1/configmaps?fieldSelector=data.k%3Dbeta", "", 400)
	if !strings.Contains(fmt.Sprint(st["message"]), `"data.k"`) || !strings.Contains(fmt.Sprint(st["message"]), "metadata.name, metadata.namespace") {
		t.Errorf("unsupported field: %v", st)
	}
	f.getJSON(t, "/api/v1/configmaps?labelSelector=%3D%3D%3D", "", 400)
	// Pages of one, as kubectl's chunking asks.
	var got []string
	q := "limit=1"
	for range 10 {
		l := f.getJSON(t, "/api/v1/configmaps?"+q, "", 200)
		got = append(got, names(l)...)
		c := str(l, "metadata", "continue")
		if c == "" {
			break
		}
		q = "limit=1&continue=" + url.QueryEscape(c)
	}
	if !slices.Equal(got, []string{"shop/alpha", "shop/beta", "shop/gamma", "web/elsewhere"}) {
		t.Errorf("paged: %v", got)
	}
}

const tableAccept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"

func TestServeTables(t *testing.T) {
	f := newFixture(t)
	tab := f.getJSON(t, "/apis/example.com/v1/namespaces/shop/widgets", tableAccept, 200)
	if tab["kind"] != "Table" || tab["apiVersion"] != "meta.k8s.io/v1" {
		t.Fatalf("not a Table: %v", tab)
	}
	var cols []string
	for _, c := range tab["columnDefinitions"].([]any) {
		m := c.(map[string]any)
		cols = append(cols, fmt.Sprintf("%s:%s:%v", m["name"], m["type"], m["priority"]))
	}
	if want := []string{"Name:string:0", "Size:integer:0", "Colour:string:1", "Made:date:0"}; !slices.Equal(cols, want) {
		t.Errorf("columns %v, want %v", cols, want)
	}
	rows := tab["rows"].([]any)
	if len(rows) != 2 {
		t.Fatalf("rows: %v", rows)
	}
	r0 := rows[0].(map[string]any)
	if got := fmt.Sprint(r0["cells"]); got != "[w1 3 teal 24h]" {
		t.Errorf("w1's cells %s, want [w1 3 teal 24h] (created a day before the clock)", got)
	}
	if obj := r0["object"].(map[string]any); obj["kind"] != "PartialObjectMetadata" || str(obj, "metadata", "namespace") != "shop" || str(obj, "metadata", "uid") != "u-w1" {
		t.Errorf("row object: %v", obj)
	}
	// includeObject=Object; a built-in's columns.
	tab = f.getJSON(t, "/api/v1/namespaces/shop/configmaps/gamma?includeObject=Object", tableAccept, 200)
	r0 = tab["rows"].([]any)[0].(map[string]any)
	if got := fmt.Sprint(r0["cells"]); got != "[gamma 2 24h]" || str(r0["object"].(map[string]any), "data", "k") != "gamma" {
		t.Errorf("gamma as a table row: %v", r0)
	}
}

// TestServeWatch: the one state, then the stream stays open (kubectl get
// -w from a list's resourceVersion sees nothing more; from "0" it gets an
// ADDED event per object first).
func TestServeWatch(t *testing.T) {
	f := newFixture(t)
	events := func(q string, wait time.Duration) ([]string, bool) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", f.url+"/api/v1/namespaces/shop/configmaps?watch=true&"+q, nil)
		resp, err := f.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			b, _ := io.ReadAll(resp.Body)
			return []string{fmt.Sprint(resp.StatusCode), string(b)}, true
		}
		var got []string
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			var ev struct {
				Type   string
				Object map[string]any
			}
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				t.Fatalf("event %q: %v", sc.Text(), err)
			}
			got = append(got, ev.Type+" "+str(ev.Object, "metadata", "name"))
		}
		return got, ctx.Err() == nil // ended by the server
	}
	got, ended := events("resourceVersion=0", time.Second)
	if !slices.Equal(got, []string{"ADDED alpha", "ADDED beta", "ADDED gamma"}) || ended {
		t.Errorf("watch from 0: %v (ended by the server: %v)", got, ended)
	}
	got, ended = events(fmt.Sprintf("resourceVersion=%d&labelSelector=n%%3D1", f.rev), time.Second)
	if len(got) != 0 || ended {
		t.Errorf("watch from the list's revision: %v (ended: %v)", got, ended)
	}
	got, ended = events("resourceVersion=0&fieldSelector=metadata.name%3Dbeta&timeoutSeconds=1", 20*time.Second)
	if !slices.Equal(got, []string{"ADDED beta"}) || !ended {
		t.Errorf("watch of beta with timeoutSeconds=1: %v (ended by the server: %v)", got, ended)
	}
	got, _ = events("sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan&timeoutSeconds=1", 20*time.Second)
	if !slices.Equal(got, []string{"ADDED alpha", "ADDED beta", "ADDED gamma", "BOOKMARK "}) {
		t.Errorf("watch-list: %v", got)
	}
	got, _ = events("resourceVersion=1", time.Second)
	if len(got) != 2 || got[0] != "410" || !strings.Contains(got[1], "Expired") {
		t.Errorf("watch from an older revision: %v", got)
	}
}

// TestServeClosesWatchesOnStop: Run returns promptly with a watch open.
func TestServeClosesWatchesOnStop(t *testing.T) {
	r := testetcd.SandboxT(t)
	e := testetcd.StartT(t, r)
	rd := snapshotReader(t, e.ClientT(t))
	defer rd.Close()
	srv, err := New(Config{Reader: rd})
	if err != nil {
		t.Fatal(err)
	}
	creds, _ := NewCredentials(nil)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, ln, srv, creds, nil) }()
	ctls, _ := creds.ClientTLS()
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: ctls}}
	resp, err := c.Get("https://" + ln.Addr().String() + "/api/v1/configmaps?watch=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil || time.Since(start) > 3*time.Second {
			t.Errorf("Run: %v after %s", err, time.Since(start))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return with a watch open")
	}
	if _, err := io.ReadAll(resp.Body); err != nil {
		t.Logf("watch body after stop: %v", err)
	}
}

func TestKubeconfigAndCredentials(t *testing.T) {
	creds, err := NewCredentials([]string{"10.1.2.3", "backup.example"})
	if err != nil {
		t.Fatal(err)
	}
	leaf := creds.server.Certificate[0]
	cert, err := parseCert(leaf)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(cert.DNSNames) != "[localhost backup.example]" || len(cert.IPAddresses) != 3 {
		t.Errorf("server SANs %v %v", cert.DNSNames, cert.IPAddresses)
	}
	data, err := creds.Kubeconfig("https://127.0.0.1:1234", "kubekeep-x")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "kc")
	os.WriteFile(p, []byte("old"), 0o644)
	if err := WriteKubeconfig(p, data); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(p)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("kubeconfig mode %v", fi.Mode())
	}
	for _, want := range []string{"server: https://127.0.0.1:1234", "certificate-authority-data:", "client-certificate-data:", "client-key-data:", "current-context: kubekeep-x"} {
		if !strings.Contains(string(data), want) {
			t.Errorf("kubeconfig lacks %q:\n%s", want, data)
		}
	}
	_ = tls.VersionTLS12
}

func parseCert(der []byte) (*x509.Certificate, error) { return x509.ParseCertificate(der) }

// TestServeUnreadableObject: a Secret encrypted with a key the version's
// EncryptionConfiguration lacks is an error naming the provider and key
// when asked for, and is left out of lists with a warning kubectl prints,
// the other Secrets still listed.
func TestServeUnreadableObject(t *testing.T) {
	f := newFixture(t)
	st := f.getJSON(t, "/api/v1/namespaces/shop/secrets/locked", "", 500)
	if m := fmt.Sprint(st["message"]); !strings.Contains(m, `aescbc key "key1"`) {
		t.Errorf("get the locked Secret: %v", st)
	}
	for _, accept := range []string{"", tableAccept} {
		code, h, b := f.do(t, f.client, "GET", "/api/v1/namespaces/shop/secrets", accept)
		var l map[string]any
		json.Unmarshal(b, &l)
		if code != 200 || (accept == "" && !slices.Equal(names(l), []string{"shop/open"})) || (accept != "" && len(l["rows"].([]any)) != 1) {
			t.Errorf("list secrets (Accept %q): %d %s", accept, code, b)
		}
		if w := h.Values("Warning"); len(w) != 1 || !strings.HasPrefix(w[0], `299 - "kubekeep serve: secrets/shop/locked left out of the list: `) || !strings.Contains(w[0], `aescbc key \"key1\"`) {
			t.Errorf("warnings: %q", w)
		}
	}
}

// TestServeReviews: `kubectl auth can-i` and `auth whoami` post reviews,
// which create nothing: they get the truth (get, list and watch, nothing
// else) instead of the 405 of a write.
func TestServeReviews(t *testing.T) {
	f := newFixture(t)
	post := func(path, body string) (int, map[string]any) {
		t.Helper()
		resp, err := f.client.Post(f.url+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m
	}
	for verb, allowed := range map[string]bool{"get": true, "list": true, "watch": true, "delete": false, "create": false, "patch": false} {
		code, m := post("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
			`{"kind":"SelfSubjectAccessReview","apiVersion":"authorization.k8s.io/v1","spec":{"resourceAttributes":{"namespace":"shop","verb":"`+verb+`","resource":"configmaps"}}}`)
		st, _ := m["status"].(map[string]any)
		if code != 201 || st["allowed"] != allowed || m["kind"] != "SelfSubjectAccessReview" {
			t.Errorf("can-i %s: %d %v", verb, code, m)
		}
	}
	code, m := post("/apis/authentication.k8s.io/v1/selfsubjectreviews", `{"kind":"SelfSubjectReview","apiVersion":"authentication.k8s.io/v1"}`)
	if code != 201 || str(m, "status", "userInfo", "username") != "kubekeep-serve-client" {
		t.Errorf("whoami: %d %v", code, m)
	}
	if code, _ := post("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", `not json`); code != 400 {
		t.Errorf("a review that is not JSON: %d", code)
	}
	// Without the client certificate, no answer.
	resp, err := f.anon.Post(f.url+"/apis/authentication.k8s.io/v1/selfsubjectreviews", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Errorf("whoami without the certificate: %d", resp.StatusCode)
	}
}
