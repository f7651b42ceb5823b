package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/kubekeep/kubekeep/backup"
	"github.com/kubekeep/kubekeep/backup/versionread"
	"github.com/kubekeep/kubekeep/etcdsnap"
	"github.com/kubekeep/kubekeep/internal/kubenode"
	"github.com/kubekeep/kubekeep/internal/testetcd"
	"github.com/kubekeep/kubekeep/rsyncish"
)

// serving is a `kubekeep serve` running in the test process.
type serving struct {
	url, kubeconfig string
	stderr          *syncBuffer
	cancel          context.CancelFunc
	done            chan error
	started         time.Duration
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startServe runs `kubekeep serve` with the global flags and serve args
// through cobra (flags parsed as an operator's are), writing its
// kubeconfig into the test's temp dir, until the test ends.
func startServe(t *testing.T, globals []string, args ...string) *serving {
	t.Helper()
	t.Setenv("KUBEKEEP_CONFIG", "")
	s := &serving{stderr: &syncBuffer{}, done: make(chan error, 1), kubeconfig: filepath.Join(t.TempDir(), "serve.conf")}
	cmd := newRootCommand()
	cmd.SetOut(io.Discard)
	cmd.SetErr(s.stderr)
	cmd.SetArgs(append(append(append([]string{}, globals...), "serve", "--kubeconfig-out", s.kubeconfig), args...))
	start := time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go func() { s.done <- cmd.ExecuteContext(ctx) }()
	// The kubeconfig is written once the server listens.
	for {
		if b, err := os.ReadFile(s.kubeconfig); err == nil {
			var kc struct {
				Clusters []struct {
					Cluster struct{ Server string } `json:"cluster"`
				} `json:"clusters"`
			}
			if yaml.Unmarshal(b, &kc) == nil && len(kc.Clusters) == 1 {
				s.url = kc.Clusters[0].Cluster.Server
				break
			}
		}
		select {
		case err := <-s.done:
			t.Fatalf("kubekeep serve exited: %v\n%s", err, s.stderr)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Since(start) > 2*time.Minute {
			t.Fatalf("kubekeep serve did not start in 2 min\n%s", s.stderr)
		}
	}
	s.started = time.Since(start)
	t.Cleanup(func() { s.stop(t) })
	return s
}

func (s *serving) stop(t *testing.T) {
	t.Helper()
	if s.cancel == nil {
		return
	}
	s.cancel()
	s.cancel = nil
	select {
	case err := <-s.done:
		if err != nil {
			t.Errorf("kubekeep serve: %v\n%s", err, s.stderr)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("kubekeep serve did not stop within 30 s of its context ending")
	}
}

// kubectl runs the real kubectl against the served kubeconfig.
func (s *serving) kubectl(t *testing.T, bin string, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	out, errOut, err := kubenode.Kubectl(ctx, bin, s.kubeconfig, args...)
	t.Logf("kubectl %s (%s)\n%s%s", strings.Join(args, " "), time.Since(start).Round(time.Millisecond), tailLines(out, 12), tailLines(errOut, 4))
	return out, errOut, err
}

func (s *serving) mustKubectl(t *testing.T, bin string, args ...string) string {
	t.Helper()
	out, errOut, err := s.kubectl(t, bin, args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s%s\nserve:\n%s", strings.Join(args, " "), err, out, errOut, s.stderr)
	}
	return out
}

const serveShop = `apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: target
  namespace: shop
  labels:
    app: shop
    tier: backend
data:
  currency: EUR
  rate: "1.08"
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: other
  namespace: shop
  labels:
    app: web
data:
  colour: blue
---
apiVersion: v1
kind: Secret
metadata:
  name: db
  namespace: shop
stringData:
  password: s3cr3t-serve-password
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: default
  namespace: shop
---
apiVersion: v1
kind: Pod
metadata:
  name: web-0
  namespace: shop
  labels:
    app: web
spec:
  automountServiceAccountToken: false
  containers:
  - name: web
    image: registry.k8s.io/pause:3.10
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names:
    plural: widgets
    singular: widget
    kind: Widget
    shortNames: [wd]
  versions:
  - name: v1
    served: true
    storage: true
    additionalPrinterColumns:
    - name: Size
      type: integer
      jsonPath: .spec.size
    - name: Colour
      type: string
      jsonPath: .spec.colour
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            x-kubernetes-preserve-unknown-fields: true
`

const serveWidget = `apiVersion: example.com/v1
kind: Widget
metadata:
  name: w1
  namespace: shop
spec:
  size: 3
  colour: teal
`

// rows are the lines of kubectl's table output, split into fields.
func rows(out string) [][]string {
	var rs [][]string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		rs = append(rs, strings.Fields(l))
	}
	return rs
}

// hasRow reports whether a row of out starts with the given fields.
func hasRow(out string, fields ...string) bool {
	for _, r := range rows(out) {
		if len(r) >= len(fields) && slices.Equal(r[:len(fields)], fields) {
			return true
		}
	}
	return false
}

// TestServeRealNodeKubectl is the "tried as a person would": a
// real kubeadm v1.34 node's kube-apiserver writes built-ins (protobuf),
// a Secret encrypted at rest, a CRD and a custom resource; kubekeep
// backs the node up; `kubekeep serve --version latest` serves the
// version; the real kubectl 1.34 reads it. Every assertion compares with
// what was written, or what the live apiserver says about it.
func TestServeRealNodeKubectl(t *testing.T) {
	kubenode.RunIsolated(t, func(t *testing.T) {
		// With the addons: CoreDNS's Deployment and Service, kube-proxy's
		// DaemonSet, their RBAC, as kubeadm writes them.
		n := kubenode.Init(t, kubenode.Options{})
		n.Apply(t, serveShop)
		n.Kubectl(t, "wait", "--for=condition=established", "--timeout=60s", "crd/widgets.example.com")
		n.Apply(t, serveWidget)
		live := func(args ...string) map[string]any {
			var m map[string]any
			if err := json.Unmarshal([]byte(n.Kubectl(t, append(args, "-o", "json")...)), &m); err != nil {
				t.Fatal(err)
			}
			return m
		}
		liveCM := live("get", "cm", "-n", "shop", "target")
		liveNS := n.Kubectl(t, "get", "ns", "-o", "name")

		dir := filepath.Join(t.TempDir(), "store")
		globals := []string{"--root", "/", "--store", dir, "--allow-same-filesystem", "--log-format", "json", "--log-level", "info"}
		if out, stderr, err := runCLILog(t, append(globals, "backup")...); err != nil {
			t.Fatalf("backup: %v\n%s\n%s", err, out, stderr)
		}
		// The live cluster moves on; the backup does not.
		n.Kubectl(t, "delete", "cm", "-n", "shop", "other")

		s := startServe(t, globals, "--version", "latest")
		t.Logf("kubekeep serve started in %s (open the version, read the CRDs, listen, write the kubeconfig)", s.started.Round(time.Millisecond))
		kc := func(args ...string) string { return s.mustKubectl(t, n.Bins.Kubectl, args...) }

		// get pods -A: the Pod the apiserver stored (no scheduler: Pending).
		out := kc("get", "pods", "-A")
		if !hasRow(out, "NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE") || !hasRow(out, "shop", "web-0", "0/1", "Pending", "0") {
			t.Errorf("get pods -A:\n%s", out)
		}
		// get ns: every namespace the live apiserver had.
		out = kc("get", "ns")
		for _, l := range strings.Fields(liveNS) {
			if name := strings.TrimPrefix(l, "namespace/"); !hasRow(out, name, "Active") {
				t.Errorf("get ns lacks %s Active:\n%s", name, out)
			}
		}
		// get configmap -o yaml: what was written, with the live object's
		// uid and resourceVersion.
		var cm map[string]any
		if err := yaml.Unmarshal([]byte(kc("get", "configmap", "target", "-n", "shop", "-o", "yaml")), &cm); err != nil {
			t.Fatal(err)
		}
		if got := fmt.Sprint(cm["data"]); got != "map[currency:EUR rate:1.08]" {
			t.Errorf("served data %s, written currency=EUR rate=1.08", got)
		}
		for _, f := range []string{"uid", "resourceVersion", "creationTimestamp"} {
			if got, want := str2(cm, "metadata", f), str2(liveCM, "metadata", f); got != want {
				t.Errorf("served metadata.%s %q, the live apiserver's %q", f, got, want)
			}
		}
		// get secret -o json: decrypted (it is aescbc in etcd).
		var sec struct {
			Data map[string][]byte `json:"data"`
		}
		if err := json.Unmarshal([]byte(kc("get", "secret", "db", "-n", "shop", "-o", "json")), &sec); err != nil {
			t.Fatal(err)
		}
		if string(sec.Data["password"]) != "s3cr3t-serve-password" {
			t.Errorf("served Secret password %q, written s3cr3t-serve-password", sec.Data["password"])
		}
		// CRDs and the custom resource with its printer columns, by plural
		// and by short name.
		if out = kc("get", "crd"); !hasRow(out, "widgets.example.com") {
			t.Errorf("get crd:\n%s", out)
		}
		for _, res := range []string{"widgets", "wd"} {
			out = kc("get", res, "-n", "shop")
			if !hasRow(out, "NAME", "SIZE", "COLOUR") || !hasRow(out, "w1", "3", "teal") {
				t.Errorf("get %s -n shop:\n%s", res, out)
			}
		}
		// Selectors: the ConfigMap deleted live is still in the backup.
		if out = kc("get", "cm", "-n", "shop", "-l", "app=web"); !hasRow(out, "other", "1") || hasRow(out, "target") {
			t.Errorf("get cm -l app=web:\n%s", out)
		}
		if out = kc("get", "cm", "-A", "-l", "tier=backend,app in (shop)"); !hasRow(out, "shop", "target", "2") || hasRow(out, "shop", "other") {
			t.Errorf("get cm -A -l tier=backend,app in (shop):\n%s", out)
		}
		if out = kc("get", "cm", "-n", "shop", "--field-selector", "metadata.name=target", "-o", "name"); strings.TrimSpace(out) != "configmap/target" {
			t.Errorf("get cm --field-selector metadata.name=target: %q", out)
		}
		if _, errOut, err := s.kubectl(t, n.Bins.Kubectl, "get", "cm", "-n", "shop", "--field-selector", "data.colour=blue"); err == nil || !strings.Contains(errOut, "metadata.name, metadata.namespace") {
			t.Errorf("an unsupported field selector: %v\n%s", err, errOut)
		}
		// describe.
		out = kc("describe", "configmap", "target", "-n", "shop")
		for _, want := range []string{"Name:", "target", "Namespace:", "shop", "app=shop", "currency:", "EUR"} {
			if !strings.Contains(out, want) {
				t.Errorf("describe configmap lacks %q:\n%s", want, out)
			}
		}
		// More of what a person types.
		out = kc("get", "deploy,ds,svc", "-n", "kube-system")
		for _, row := range [][]string{{"deployment.apps/coredns", "0/2", "0", "0"}, {"daemonset.apps/kube-proxy", "0", "0", "0", "0", "0", "kubernetes.io/os=linux"}, {"service/kube-dns", "ClusterIP", "10.96.0.10", "<none>", "53/UDP,53/TCP,9153/TCP"}} {
			if !hasRow(out, row...) {
				t.Errorf("get deploy,ds,svc -n kube-system lacks %v:\n%s", row, out)
			}
		}
		if out = kc("get", "all", "-n", "shop"); !hasRow(out, "pod/web-0", "0/1", "Pending") {
			t.Errorf("get all -n shop:\n%s", out)
		}
		if out = kc("get", "nodes"); !hasRow(out, kubenode.Hostname) || !strings.Contains(out, "control-plane") {
			t.Errorf("get nodes:\n%s", out)
		}
		if out = kc("api-resources", "--api-group", "example.com"); !hasRow(out, "widgets", "wd", "example.com/v1", "true", "Widget") {
			t.Errorf("api-resources --api-group example.com:\n%s", out)
		}
		if out = kc("auth", "can-i", "list", "secrets", "-A"); strings.TrimSpace(out) != "yes" {
			t.Errorf("auth can-i list secrets -A: %q", out)
		}
		if out, _, err := s.kubectl(t, n.Bins.Kubectl, "auth", "can-i", "delete", "cm", "-n", "shop"); err == nil || !strings.HasPrefix(out, "no - kubekeep serve is a read-only view of backup") {
			t.Errorf("auth can-i delete cm: %v %q", err, out)
		}
		if out = kc("auth", "whoami"); !strings.Contains(out, "kubekeep-serve-client") {
			t.Errorf("auth whoami:\n%s", out)
		}
		if out = kc("version"); !strings.Contains(out, "Server Version: "+kubenode.KubernetesVersion+"+kubekeep") {
			t.Errorf("kubectl version:\n%s", out)
		}
		for _, args := range [][]string{
			{"describe", "pod", "web-0", "-n", "shop"},
			{"describe", "namespace", "shop"},
			{"describe", "secret", "db", "-n", "shop"},
			{"describe", "widget", "w1", "-n", "shop"},
			{"describe", "deployment", "coredns", "-n", "kube-system"},
			{"describe", "node", kubenode.Hostname},
		} {
			out = kc(args...)
			if !strings.Contains(out, "Name:") || !strings.Contains(out, args[2]) {
				t.Errorf("kubectl %s:\n%s", strings.Join(args, " "), out)
			}
			if args[1] == "secret" && (!strings.Contains(out, "password:  21 bytes") || strings.Contains(out, "s3cr3t")) {
				t.Errorf("describe secret shows sizes, never values:\n%s", out)
			}
		}
		// get -w: the one state, then it waits (until killed here); of a
		// list and of one object (whose watch starts with a synthetic
		// ADDED event kubectl does not print again).
		watch := func(args ...string) string {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			w := exec.CommandContext(ctx, n.Bins.Kubectl, append([]string{"--kubeconfig", s.kubeconfig, "--cache-dir", t.TempDir()}, args...)...)
			var wout, werr bytes.Buffer
			w.Stdout, w.Stderr = &wout, &werr
			err := w.Run()
			if ctx.Err() == nil {
				t.Errorf("kubectl %s ended by itself (%v): it should watch until stopped\n%s%s", strings.Join(args, " "), err, wout.String(), werr.String())
			}
			t.Logf("kubectl %s, stopped after 5 s:\n%s%s", strings.Join(args, " "), wout.String(), werr.String())
			return wout.String()
		}
		if out := watch("get", "cm", "-n", "shop", "-w"); !hasRow(out, "target", "2") || !hasRow(out, "other", "1") || len(rows(out)) != 3 {
			t.Errorf("kubectl get cm -w printed:\n%s", out)
		}
		if out := watch("get", "cm", "target", "-n", "shop", "-w"); !hasRow(out, "target", "2") || len(rows(out)) != 2 {
			t.Errorf("kubectl get cm target -w printed:\n%s", out)
		}
		// Writes are refused, saying why.
		for _, args := range [][]string{
			{"delete", "cm", "target", "-n", "shop"},
			{"label", "cm", "target", "-n", "shop", "x=y"},
			{"create", "cm", "new", "-n", "shop", "--from-literal=k=v"},
		} {
			out, errOut, err := s.kubectl(t, n.Bins.Kubectl, args...)
			if err == nil || !strings.Contains(errOut, "read-only view of backup") {
				t.Errorf("kubectl %s: %v\n%s%s", strings.Join(args, " "), err, out, errOut)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		// (The widget as written would be "unchanged": apply sends nothing.)
		changed := strings.Replace(serveWidget, "size: 3", "size: 4", 1)
		out, errOut, err := kubenode.KubectlInput(ctx, n.Bins.Kubectl, s.kubeconfig, strings.NewReader(changed), "apply", "-f", "-")
		cancel()
		if err == nil || !strings.Contains(errOut, "read-only view of backup") {
			t.Errorf("kubectl apply: %v\n%s%s", err, out, errOut)
		}
		// Without the client certificate: 401, whatever the path.
		ca := filepath.Join(t.TempDir(), "ca.crt")
		var kcfg struct {
			Clusters []struct {
				Cluster struct {
					CA []byte `json:"certificate-authority-data"`
				} `json:"cluster"`
			} `json:"clusters"`
		}
		b, _ := os.ReadFile(s.kubeconfig)
		if err := yaml.Unmarshal(b, &kcfg); err != nil || len(kcfg.Clusters) != 1 {
			t.Fatalf("kubeconfig: %v", err)
		}
		os.WriteFile(ca, kcfg.Clusters[0].Cluster.CA, 0o600)
		for _, p := range []string{"/api/v1/namespaces/shop/secrets/db", "/version"} {
			c := exec.Command("curl", "-sS", "--cacert", ca, "-w", "\n%{http_code}", s.url+p)
			o, err := c.CombinedOutput()
			if err != nil || !strings.HasSuffix(strings.TrimSpace(string(o)), "401") || strings.Contains(string(o), "s3cr3t") {
				t.Errorf("curl %s without the client certificate: %v\n%s", p, err, o)
			}
		}
		if fi, err := os.Stat(s.kubeconfig); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("kubeconfig mode: %v %v", fi.Mode(), err)
		}
	})
}

func str2(m map[string]any, path ...string) string {
	var cur any = m
	for _, k := range path {
		mm, _ := cur.(map[string]any)
		cur = mm[k]
	}
	s, _ := cur.(string)
	return s
}

func tailLines(s string, n int) string {
	l := strings.SplitAfter(s, "\n")
	if len(l) > n {
		l = append([]string{"[...]\n"}, l[len(l)-n:]...)
	}
	return strings.Join(l, "")
}

// TestServeAtAndAList: `serve --at T` serves the version plus the etcd
// changes recorded up to T (a ConfigMap created after the backup, as it
// was at T, not as it is now); `--version latest` does not have it; a
// list of 400 ConfigMaps through the real kubectl equals what etcd holds
// at the backup's revision.
func TestServeAtAndAList(t *testing.T) {
	bins := kubenode.Binaries(t)
	f := newObjectsFixture(t)
	ve := versionread.VersionEtcd(f.v1)
	sink, err := backup.DeltaSink(f.store)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	streamCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- etcdsnap.NewDeltaStreamer(f.cli, ve.Revision, f.v1.Time, sink, etcdsnap.DeltaConfig{Flush: 20 * time.Millisecond}).Run(streamCtx)
	}()
	j, _ := f.store.Journal(versionread.DeltaJournal)
	durable := func(rev int64) {
		deadline := time.Now().Add(30 * time.Second)
		for {
			segs, _ := j.List()
			if len(segs) > 0 && int64(segs[len(segs)-1].Last) >= rev {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("revision %d never became durable", rev)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	durable(f.putCM(t, "shop", "at-target", "before"))
	time.Sleep(100 * time.Millisecond)
	at := time.Now().UTC().Format(time.RFC3339Nano)
	time.Sleep(100 * time.Millisecond)
	durable(f.putCM(t, "shop", "at-target", "after"))
	stop()
	<-done

	globals := []string{"--root", f.root, "--store", f.dir, "--allow-same-filesystem", "--log-format", "json", "--log-level", "info"}
	s := startServe(t, globals, "--at", at)
	t.Logf("serve --at started in %s", s.started.Round(time.Millisecond))
	if out := s.mustKubectl(t, bins.Kubectl, "get", "cm", "at-target", "-n", "shop", "-o", "jsonpath={.data.k}"); out != "before" {
		t.Errorf("serve --at %s: at-target's k is %q, was \"before\" then", at, out)
	}
	s.stop(t)

	s = startServe(t, globals, "--version", "latest")
	t.Logf("serve --version latest started in %s", s.started.Round(time.Millisecond))
	if _, errOut, err := s.kubectl(t, bins.Kubectl, "get", "cm", "at-target", "-n", "shop"); err == nil || !strings.Contains(errOut, `configmaps "at-target" not found in backup `+f.v1.ID) {
		t.Errorf("at-target in the backup taken before it: %v %s", err, errOut)
	}
	// kubectl takes the aggregated discovery: two requests (/api, /apis),
	// not one per group version.
	_, errOut, err := s.kubectl(t, bins.Kubectl, "-v=6", "get", "cm", "-n", "shop", "-o", "name")
	if err != nil {
		t.Fatal(err)
	}
	var reqs []string
	for _, l := range strings.Split(errOut, "\n") {
		if _, u, ok := strings.Cut(l, `verb="GET" url="`+s.url); ok {
			u, _, _ = strings.Cut(u, `"`)
			reqs = append(reqs, u)
		}
	}
	if len(reqs) != 3 || !strings.HasPrefix(reqs[0], "/api?") || !strings.HasPrefix(reqs[1], "/apis?") || !strings.HasPrefix(reqs[2], "/api/v1/namespaces/shop/configmaps?") {
		t.Errorf("kubectl's requests: %q\n%s", reqs, tailLines(errOut, 20))
	}
	out := s.mustKubectl(t, bins.Kubectl, "get", "cm", "-A", "-o", "custom-columns=NS:.metadata.namespace,NAME:.metadata.name,RV:.metadata.resourceVersion", "--no-headers")
	var got []string
	for _, r := range rows(out) {
		got = append(got, r[1]+" "+r[2])
	}
	var want []string
	for _, ns := range []string{"kube-public", "kube-system", "shop", "web"} {
		want = append(want, etcdNames(t, f.cli, "/registry/configmaps/"+ns+"/", ve.Revision)...)
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") || len(got) < 400 {
		t.Errorf("get cm -A: %d objects, etcd had %d at revision %d", len(got), len(want), ve.Revision)
	}
}

// TestServeProcess runs `kubekeep serve` as an operator does, as its own
// process: the kubeconfig goes into a fresh 0700 temp dir (0600 file),
// stderr says where and how to use it, a request with its credential
// reads a Secret while the log (at debug level) never holds the value,
// and SIGTERM ends it with exit 0 and the temp dir removed.
func TestServeProcess(t *testing.T) {
	bin := buildCLI(t)
	root := testetcd.SandboxT(t)
	srv := testetcd.StartT(t, root)
	if _, err := srv.LoadCluster(context.Background()); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "store")
	globals := []string{"--root", root.Dir, "--store", dir, "--allow-same-filesystem", "--log-format", "json"}
	if out, stderr, err := runCLILog(t, append(globals, "backup")...); err != nil {
		t.Fatalf("backup: %v\n%s\n%s", err, out, stderr)
	}
	cmd := exec.Command(bin, append(globals, "--log-level", "debug", "serve")...)
	cmd.Env = append(os.Environ(), "KUBEKEEP_CONFIG=")
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	var kubeconfig string
	deadline := time.Now().Add(time.Minute)
	for kubeconfig == "" {
		for _, l := range strings.Split(stderr.String(), "\n") {
			if p, ok := strings.CutPrefix(l, "kubeconfig: "); ok {
				kubeconfig = p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no kubeconfig line in a minute:\n%s", stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(stderr.String(), "kubectl --kubeconfig "+kubeconfig+" get pods -A") {
		t.Errorf("stderr has no example kubectl line:\n%s", stderr)
	}
	if fi, err := os.Stat(filepath.Dir(kubeconfig)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("kubeconfig dir: %v %v", fi.Mode(), err)
	}
	if fi, err := os.Stat(kubeconfig); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("kubeconfig: %v %v", fi.Mode(), err)
	}
	client, server := kubeconfigClient(t, kubeconfig)
	resp, err := client.Get(server + "/api/v1/namespaces/shop/secrets/db-password")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var sec corev1.Secret
	if err := json.Unmarshal(body, &sec); err != nil || string(sec.Data["password"]) != "not-a-real-password" {
		t.Errorf("the Secret through serve: %d %v %s", resp.StatusCode, err, body)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("exit after SIGTERM: %v\n%s", err, stderr)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("serve did not stop within 20 s of SIGTERM\n%s", stderr)
	}
	if _, err := os.Stat(filepath.Dir(kubeconfig)); !os.IsNotExist(err) {
		t.Errorf("the kubeconfig's temp dir is still there after exit: %v", err)
	}
	log := stderr.String()
	if !strings.Contains(log, `"msg":"request"`) {
		t.Errorf("no request logged at debug level:\n%s", log)
	}
	for _, secret := range []string{"not-a-real-password", base64.StdEncoding.EncodeToString([]byte("not-a-real-password")), "PRIVATE KEY"} {
		if strings.Contains(log, secret) {
			t.Errorf("the log holds %q:\n%s", secret, log)
		}
	}
}

// kubeconfigClient is an HTTP client with the kubeconfig's own
// credentials, read as kubectl reads them, and its server URL.
func kubeconfigClient(t *testing.T, kubeconfig string) (*http.Client, string) {
	t.Helper()
	b, _ := os.ReadFile(kubeconfig)
	var kc struct {
		Clusters []struct {
			Cluster struct {
				Server string `json:"server"`
				CA     []byte `json:"certificate-authority-data"`
			} `json:"cluster"`
		} `json:"clusters"`
		Users []struct {
			User struct {
				Cert []byte `json:"client-certificate-data"`
				Key  []byte `json:"client-key-data"`
			} `json:"user"`
		} `json:"users"`
	}
	if err := yaml.Unmarshal(b, &kc); err != nil || len(kc.Clusters) != 1 || len(kc.Users) != 1 {
		t.Fatalf("kubeconfig: %v\n%s", err, b)
	}
	cert, err := tls.X509KeyPair(kc.Users[0].User.Cert, kc.Users[0].User.Key)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(kc.Clusters[0].Cluster.CA)
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}}}, kc.Clusters[0].Cluster.Server
}

// TestServeDamagedKeyIndexFallsBack: a version whose key index is damaged
// serves anyway: the first read that meets the damage switches the server
// to the whole snapshot, with a warning, as get does, and is answered
// from there. Before, every read reaching the damaged block was a 500
// ("damaged key index: block at offset 8: checksum mismatch").
func TestServeDamagedKeyIndexFallsBack(t *testing.T) {
	f := newObjectsFixture(t)
	read := func(name string) []byte {
		rc, _, err := f.store.OpenStream(f.v1.ID, name)
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		b, err := io.ReadAll(rc)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	snap, idx := read(versionread.EtcdSnapshotStream), read(versionread.EtcdKeyIndexStream)
	idx[20] ^= 0xff // the first block
	unlock, err := f.store.Lock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	w, err := f.store.NewVersion(context.Background(), rsyncish.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{versionread.EtcdSnapshotStream: snap, versionread.EtcdKeyIndexStream: idx} {
		if _, err := w.AddStream(name, bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.SetMeta(versionread.MetaEtcd, versionread.VersionEtcd(f.v1)); err != nil {
		t.Fatal(err)
	}
	vi, err := w.Commit()
	unlock()
	if err != nil {
		t.Fatal(err)
	}
	globals := []string{"--root", f.root, "--store", f.dir, "--allow-same-filesystem", "--log-format", "json", "--log-level", "info"}
	s := startServe(t, globals, "--version", vi.ID)
	client, server := kubeconfigClient(t, s.kubeconfig)
	for path, want := range map[string]string{
		"/api/v1/namespaces/shop/configmaps/target": `"name":"target"`,
		"/api/v1/namespaces/shop/configmaps":        `"name":"cm-399"`,
	} {
		resp, err := client.Get(server + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), want) {
			t.Errorf("GET %s: %d %.300s", path, resp.StatusCode, b)
		}
	}
	if !strings.Contains(s.stderr.String(), "key index is damaged") {
		t.Errorf("no warning about the damaged index:\n%s", s.stderr)
	}
}

// A serve killed with -9 cannot remove its kubeconfig dir (it holds the
// client key); the next serve does, once the killed one is gone, and
// leaves a live one's dir alone.
func TestServeKilledDirRemovedByNext(t *testing.T) {
	bin := buildCLI(t)
	root := testetcd.SandboxT(t)
	srv := testetcd.StartT(t, root)
	if _, err := srv.LoadCluster(context.Background()); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "store")
	globals := []string{"--root", root.Dir, "--store", dir, "--allow-same-filesystem"}
	if out, stderr, err := runCLILog(t, append(globals, "backup")...); err != nil {
		t.Fatalf("backup: %v\n%s\n%s", err, out, stderr)
	}
	tmp := t.TempDir()
	start := func() (*exec.Cmd, string) {
		t.Helper()
		cmd := exec.Command(bin, append(globals, "serve")...)
		cmd.Env = append(os.Environ(), "KUBEKEEP_CONFIG=", "TMPDIR="+tmp)
		stderr := &syncBuffer{}
		cmd.Stderr = stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
			for _, l := range strings.Split(stderr.String(), "\n") {
				if p, ok := strings.CutPrefix(l, "kubeconfig: "); ok {
					return cmd, p
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("no kubeconfig line in a minute:\n%s", stderr)
			}
		}
	}
	killed, kc1 := start()
	_, kc2 := start() // stays running
	if err := killed.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed.Wait()
	if _, err := os.Stat(kc1); err != nil {
		t.Fatalf("the killed serve's kubeconfig: %v (the test expects it left behind)", err)
	}
	_, kc3 := start()
	if _, err := os.Stat(filepath.Dir(kc1)); !os.IsNotExist(err) {
		t.Errorf("the killed serve's dir (with its client key) is still there after the next serve started: %v", err)
	}
	for _, kc := range []string{kc2, kc3} {
		if _, err := os.Stat(kc); err != nil {
			t.Errorf("a live serve's kubeconfig %s was removed: %v", kc, err)
		}
	}
}
