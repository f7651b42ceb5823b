package serve

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/kubekeep/kubekeep/etcdsnap/snapread"
	"github.com/kubekeep/kubekeep/objects"
)

// Config is what a Server serves and how.
type Config struct {
	// Reader is the version's objects (a key index or a snapshot file,
	// moved forward by journal events for --at), with the version's
	// EncryptionConfiguration set so Secrets read decrypted. The Server
	// only reads it, concurrently; the caller closes it after the Server.
	Reader objects.Reader
	// Version names what is served (the version ID, and the time for
	// --at), in messages and in the refusal of writes.
	Version string
	// GetHint is how an operator reads one object of this version back for
	// kubectl apply, named in the refusal of writes (default: kubekeep get
	// RESOURCE/NAMESPACE/NAME).
	GetHint string
	// Logger gets one line per request at debug level (method, path,
	// status, duration; never a body) and what New could not serve.
	Logger *slog.Logger
	// Now is the clock of Table AGE columns; nil: time.Now.
	Now func() time.Time
	// Fallback, when set, opens the same state without the key index
	// (the materialised snapshot). A read that finds the index damaged
	// (snapread.ErrKeyIndex) calls it once and is retried on what it
	// returns, and every later read goes there: the index only speeds
	// reads up, the snapshot is the truth. The caller closes what it
	// returned, after the Server.
	Fallback func() (objects.Reader, error)
}

// Server answers the Kubernetes API read-only from one version. Its
// ServeHTTP refuses requests without a verified client certificate; use
// it behind the TLS config of a Credentials (Run does).
type Server struct {
	cfg       Config
	rev       int64
	resources []*resource
	groups    []*apiGroup
	// byPath finds a resource by "group/version/plural".
	byPath   map[string]*resource
	version  map[string]string
	problems []string

	done      chan struct{}
	closeOnce sync.Once

	mu       sync.RWMutex
	rd       objects.Reader
	fellBack bool
}

func (s *Server) reader() objects.Reader {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.rd
}

// fallBack switches to Config.Fallback's reader after err, when err is
// damage to the key index and there is a fallback not yet taken; it
// reports whether the read should be tried again.
func (s *Server) fallBack(err error) bool {
	if !errors.Is(err, snapread.ErrKeyIndex) || s.cfg.Fallback == nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fellBack {
		return s.rd != s.cfg.Reader
	}
	s.fellBack = true
	s.cfg.Logger.Warn("the version's etcd key index is damaged; reading the whole snapshot instead (verify --read-data names the damage)", "version", s.cfg.Version, "err", err)
	rd, ferr := s.cfg.Fallback()
	if ferr != nil {
		s.cfg.Logger.Error("reading the whole snapshot failed", "version", s.cfg.Version, "err", ferr)
		return false
	}
	s.rd = rd
	return true
}

// New reads the CRDs in the snapshot and builds the discovery documents.
// A CRD that does not read is left out and named in Problems.
func New(cfg Config) (*Server, error) {
	if cfg.Reader == nil {
		return nil, errors.New("serve: no reader")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{cfg: cfg, rev: cfg.Reader.Revision(), byPath: map[string]*resource{}, done: make(chan struct{}), rd: cfg.Reader}
	rs, err := builtinResources()
	if err != nil {
		return nil, err
	}
	crds, problems, err := crdResources(s.reader())
	if err != nil && s.fallBack(err) {
		crds, problems, err = crdResources(s.reader())
	}
	if err != nil {
		return nil, err
	}
	for _, r := range crds {
		cols, err := crdColumns(r.crd)
		if err != nil {
			problems = append(problems, err.Error())
			cols = []column{nameColumn, ageColumn}
		}
		r.columns = cols
	}
	for _, r := range append(rs, crds...) {
		key := r.group + "/" + r.version + "/" + r.plural
		if _, dup := s.byPath[key]; dup {
			problems = append(problems, fmt.Sprintf("%s/%s %s is defined twice: the first is served", r.group, r.version, r.plural))
			continue
		}
		s.byPath[key] = r
		s.resources = append(s.resources, r)
	}
	s.groups = groupResources(s.resources)
	s.problems = problems
	for _, p := range problems {
		cfg.Logger.Warn("not served", "problem", p)
	}
	s.version = s.versionInfo()
	return s, nil
}

// Problems are what New left out (CRDs that did not read).
func (s *Server) Problems() []string { return s.problems }

// Revision is the etcd revision served: every list's resourceVersion.
func (s *Server) Revision() int64 { return s.rev }

// Close ends the open watches; ServeHTTP answers on.
func (s *Server) Close() { s.closeOnce.Do(func() { close(s.done) }) }

var kubeVersionRE = regexp.MustCompile(`(?m)^\s*kubernetesVersion:\s*"?(v?(\d+)\.(\d+)\.\d+[^\s"]*)"?`)

// versionInfo is /version: the kubernetesVersion of the kubeadm
// ClusterConfiguration in the snapshot when there is one, marked
// +kubekeep (build metadata, which version parsers accept).
func (s *Server) versionInfo() map[string]string {
	v := map[string]string{
		"major": "", "minor": "", "gitVersion": "v0.0.0+kubekeep", "gitCommit": "", "gitTreeState": "",
		"buildDate": "", "goVersion": runtime.Version(), "compiler": runtime.Compiler,
		"platform": runtime.GOOS + "/" + runtime.GOARCH,
	}
	obj, err := s.reader().Get(objects.Ref{Resource: "configmaps", Namespace: "kube-system", Name: "kubeadm-config"})
	if err != nil {
		return v
	}
	cc := str(obj.Content(), "data", "ClusterConfiguration")
	if m := kubeVersionRE.FindStringSubmatch(cc); m != nil {
		gv := m[1]
		if !strings.HasPrefix(gv, "v") {
			gv = "v" + gv
		}
		v["major"], v["minor"], v["gitVersion"] = m[2], m[3], gv+"+kubekeep"
	}
	return v
}

// statusError is a metav1.Status answer.
type statusError struct {
	code    int
	reason  string
	message string
	details map[string]any
}

func (e *statusError) Error() string { return e.message }

func (s *Server) readOnlyMessage() string {
	hint := s.cfg.GetHint
	if hint == "" {
		hint = "kubekeep get RESOURCE/NAMESPACE/NAME"
	}
	return fmt.Sprintf("kubekeep serve is a read-only view of backup %s (etcd revision %d): writes are refused. "+
		"To put an object back, apply it to the live cluster: %s | kubectl apply -f -",
		s.cfg.Version, s.rev, hint)
}

func writeStatus(w http.ResponseWriter, e *statusError) {
	st := map[string]any{
		"kind": "Status", "apiVersion": "v1", "metadata": map[string]any{},
		"status": "Failure", "message": e.message, "reason": e.reason, "code": e.code,
	}
	if e.details != nil {
		st["details"] = e.details
	}
	writeJSON(w, e.code, "application/json", st)
}

func writeJSON(w http.ResponseWriter, code int, contentType string, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code = http.StatusInternalServerError
		b, _ = json.Marshal(map[string]any{"kind": "Status", "apiVersion": "v1", "status": "Failure",
			"message": "encode the answer: " + err.Error(), "reason": "InternalError", "code": code})
		contentType = "application/json"
	}
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Cache-Control", "no-cache, private")
	w.WriteHeader(code)
	_, _ = w.Write(b)
}

type recorder struct {
	http.ResponseWriter
	code int
}

func (r *recorder) WriteHeader(code int) {
	if r.code == 0 {
		r.code = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// ServeHTTP answers one request: 401 without a verified client
// certificate, 405 for every write, the API otherwise.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &recorder{ResponseWriter: w}
	defer func() {
		s.cfg.Logger.Debug("request", "method", r.Method, "path", r.URL.Path, "query", r.URL.RawQuery,
			"status", rec.code, "took", time.Since(start).Round(time.Microsecond).String())
	}()
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
		writeStatus(rec, &statusError{code: http.StatusUnauthorized, reason: "Unauthorized",
			message: "Unauthorized: kubekeep serve answers only clients with the certificate of the kubeconfig it wrote (--kubeconfig-out); the API shows decrypted Secrets"})
		return
	}
	if s.serveReview(rec, r) {
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		writeStatus(rec, &statusError{code: http.StatusMethodNotAllowed, reason: "MethodNotAllowed", message: s.readOnlyMessage()})
		return
	}
	err := s.route(rec, r)
	if err != nil && rec.code == 0 && s.fallBack(err) {
		rec.Header().Del("Warning")
		err = s.route(rec, r)
	}
	if err != nil {
		var se *statusError
		if !errors.As(err, &se) {
			se = &statusError{code: http.StatusInternalServerError, reason: "InternalError", message: err.Error()}
		}
		writeStatus(rec, se)
	}
}

func notFoundPath() *statusError {
	return &statusError{code: http.StatusNotFound, reason: "NotFound", message: "the server could not find the requested resource"}
}

func badRequest(format string, args ...any) *statusError {
	return &statusError{code: http.StatusBadRequest, reason: "BadRequest", message: fmt.Sprintf(format, args...)}
}

func (s *Server) route(w http.ResponseWriter, r *http.Request) error {
	p := strings.Trim(r.URL.Path, "/")
	segs := strings.Split(p, "/")
	if p == "" {
		segs = nil
	}
	switch {
	case p == "version":
		writeJSON(w, http.StatusOK, "application/json", s.version)
		return nil
	case p == "healthz" || p == "readyz" || p == "livez":
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok"))
		return nil
	case p == "openapi/v2":
		// An OpenAPI v2 document without paths or schemas: kubectl apply
		// and create validate against it before they send anything,
		// and with no /openapi/v2 at all they stop there ("failed to
		// download openapi") instead of reaching the 405 that says why.
		// An empty protobuf message is an empty openapi_v2.Document.
		if strings.Contains(r.Header.Get("Accept"), "protobuf") {
			w.Header().Set("Content-Type", "application/com.github.proto-openapi.spec.v2.v1.0+protobuf")
			w.WriteHeader(http.StatusOK)
			return nil
		}
		writeJSON(w, http.StatusOK, "application/json", map[string]any{
			"swagger": "2.0", "paths": map[string]any{},
			"info": map[string]any{"title": "kubekeep serve: read-only backup " + s.cfg.Version, "version": s.version["gitVersion"]},
		})
		return nil
	case p == "":
		paths := []string{"/api", "/api/v1", "/apis", "/healthz", "/livez", "/openapi/v2", "/readyz", "/version"}
		for _, g := range s.groups {
			if g.name != "" {
				paths = append(paths, "/apis/"+g.name)
				for _, v := range g.versions {
					paths = append(paths, "/apis/"+g.name+"/"+v)
				}
			}
		}
		sort.Strings(paths)
		writeJSON(w, http.StatusOK, "application/json", map[string]any{"paths": paths})
		return nil
	case segs[0] == "api":
		if len(segs) == 1 {
			return s.serveCoreVersions(w, r)
		}
		return s.serveGroupVersion(w, r, "", segs[1], segs[2:])
	case segs[0] == "apis":
		switch len(segs) {
		case 1:
			return s.serveGroups(w, r)
		case 2:
			return s.serveGroup(w, segs[1])
		}
		return s.serveGroupVersion(w, r, segs[1], segs[2], segs[3:])
	}
	return notFoundPath()
}

// serveGroupVersion answers /api/v1/... and /apis/G/V/...: the resource
// list, or a read of a resource.
func (s *Server) serveGroupVersion(w http.ResponseWriter, r *http.Request, group, version string, rest []string) error {
	if len(rest) == 0 {
		return s.serveResourceList(w, group, version)
	}
	var ns, plural, name, sub string
	switch {
	case rest[0] == "namespaces" && len(rest) >= 3 && s.byPath[group+"/"+version+"/"+rest[2]] != nil && s.byPath[group+"/"+version+"/"+rest[2]].namespaced:
		ns, plural = rest[1], rest[2]
		rest = rest[3:]
	default:
		plural = rest[0]
		rest = rest[1:]
	}
	res := s.byPath[group+"/"+version+"/"+plural]
	if res == nil {
		return notFoundPath()
	}
	if len(rest) > 0 {
		name = rest[0]
	}
	if len(rest) > 1 {
		sub = strings.Join(rest[1:], "/")
	}
	if len(rest) > 2 || (ns != "" && !res.namespaced) {
		return notFoundPath()
	}
	if res.namespaced && ns == "" && name != "" {
		// /api/v1/pods/NAME: a namespaced object needs its namespace.
		return notFoundPath()
	}
	if sub != "" && sub != "status" {
		return &statusError{code: http.StatusNotFound, reason: "NotFound",
			message: fmt.Sprintf("%s/%s: kubekeep serve answers reads of stored objects only; a backup has no containers, logs, proxies or scale to reach (%s)", res.plural, sub, s.cfg.Version)}
	}
	q := r.URL.Query()
	if name != "" {
		if q.Get("watch") == "true" || q.Get("watch") == "1" {
			return badRequest("watch of one object by name is not supported: watch the list with fieldSelector=metadata.name=%s", name)
		}
		return s.serveGet(w, r, res, ns, name)
	}
	return s.serveList(w, r, res, ns)
}
