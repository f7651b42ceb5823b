package serve

import (
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
	"k8s.io/client-go/kubernetes/scheme"
)

// clientUser is the client certificate's CommonName: who kubectl is here.
const clientUser = "kubekeep-serve-client"

// serveReview answers the reviews kubectl posts to ask what it may do and
// who it is (`kubectl auth can-i`, `auth can-i --list`, `auth whoami`):
// they create nothing, and their true answer is that this server allows
// get, list and watch of everything and nothing else. It reports false
// for any other POST path.
func (s *Server) serveReview(w http.ResponseWriter, r *http.Request) bool {
	if r.Method != http.MethodPost {
		return false
	}
	var kind, apiVersion string
	switch strings.Trim(r.URL.Path, "/") {
	case "apis/authorization.k8s.io/v1/selfsubjectaccessreviews":
		kind, apiVersion = "SelfSubjectAccessReview", "authorization.k8s.io/v1"
	case "apis/authorization.k8s.io/v1/selfsubjectrulesreviews":
		kind, apiVersion = "SelfSubjectRulesReview", "authorization.k8s.io/v1"
	case "apis/authentication.k8s.io/v1/selfsubjectreviews":
		kind, apiVersion = "SelfSubjectReview", "authentication.k8s.io/v1"
	default:
		return false
	}
	req, err := decodeBody(r)
	if err != nil {
		writeStatus(w, badRequest("%s: %v", kind, err))
		return true
	}
	spec, _ := req["spec"].(map[string]any)
	var status map[string]any
	switch kind {
	case "SelfSubjectAccessReview":
		verb := str(spec, "resourceAttributes", "verb")
		if _, ok := spec["nonResourceAttributes"]; ok {
			verb = str(spec, "nonResourceAttributes", "verb")
		}
		status = map[string]any{"allowed": slices.Contains(verbs, verb)}
		if slices.Contains(verbs, verb) {
			status["reason"] = "kubekeep serve answers get, list and watch of every object in the backup"
		} else {
			status["denied"] = true
			status["reason"] = "kubekeep serve is a read-only view of backup " + s.cfg.Version + ": get, list and watch only"
		}
	case "SelfSubjectRulesReview":
		status = map[string]any{
			"resourceRules":    []any{map[string]any{"verbs": verbs, "apiGroups": []string{"*"}, "resources": []string{"*"}}},
			"nonResourceRules": []any{map[string]any{"verbs": []string{"get"}, "nonResourceURLs": []string{"*"}}},
			"incomplete":       false,
		}
	case "SelfSubjectReview":
		status = map[string]any{"userInfo": map[string]any{"username": clientUser}}
	}
	writeJSON(w, http.StatusCreated, "application/json", map[string]any{
		"kind": kind, "apiVersion": apiVersion, "metadata": map[string]any{}, "spec": spec, "status": status,
	})
	return true
}

var protoSerializer = protobuf.NewSerializer(scheme.Scheme, scheme.Scheme)

// decodeBody reads a request body as JSON, or as Kubernetes protobuf
// (what kubectl's typed clients send) of a type client-go's scheme knows.
func decodeBody(r *http.Request) (map[string]any, error) {
	data, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if strings.Contains(r.Header.Get("Content-Type"), "protobuf") {
		obj, _, err := protoSerializer.Decode(data, nil, nil)
		if err != nil {
			return nil, err
		}
		return runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, err
	}
	return m, nil
}
