package serve

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/kubekeep/kubekeep/etcdsnap/snapread"
	"github.com/kubekeep/kubekeep/objects"
)

// content is an object as served at res's version: the stored object, with
// its apiVersion relabelled when res is a custom resource at another
// version of a CRD without a conversion webhook (the apiserver's None
// conversion). The map is shared with the reader's object: never
// changed in place.
func (s *Server) content(res *resource, obj *objects.Object) map[string]any {
	c := obj.Content()
	if res.crd != nil && res.crd.noneConversion {
		if av := res.apiVersion(); c["apiVersion"] != av {
			m := make(map[string]any, len(c))
			for k, v := range c {
				m[k] = v
			}
			m["apiVersion"] = av
			return m
		}
	}
	return c
}

// readError is a 404 Status for an object not in the backup, err itself
// (a 500, or the fallback's cue) otherwise.
func (s *Server) readError(res *resource, name string, err error) error {
	var nf *objects.NotFoundError
	if errors.As(err, &nf) {
		return &statusError{code: http.StatusNotFound, reason: "NotFound",
			message: fmt.Sprintf("%s %q not found in backup %s", res.groupResource(), name, s.cfg.Version),
			details: map[string]any{"name": name, "group": res.group, "kind": res.plural}}
	}
	return err
}

func (s *Server) serveGet(w http.ResponseWriter, r *http.Request, res *resource, ns, name string) error {
	obj, err := s.reader().Get(objects.Ref{Group: res.group, Resource: res.plural, Namespace: ns, Name: name})
	if err != nil {
		return s.readError(res, name, err)
	}
	c := s.content(res, obj)
	if tv, ok := wantsTable(r); ok {
		t, err := s.table(res, []map[string]any{c}, r.URL.Query().Get("includeObject"), tv)
		if err != nil {
			return err
		}
		t["metadata"] = map[string]any{"resourceVersion": strconv.FormatInt(obj.ModRevision, 10)}
		writeJSON(w, http.StatusOK, "application/json", t)
		return nil
	}
	writeJSON(w, http.StatusOK, "application/json", c)
	return nil
}

// wantsTable reports whether the client asked for a meta.k8s.io Table
// (kubectl get's human-readable output) and which version.
func wantsTable(r *http.Request) (string, bool) {
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		mt := mediaParams(part)
		if mt["as"] == "Table" && mt["g"] == "meta.k8s.io" && (mt["v"] == "v1" || mt["v"] == "v1beta1") {
			return mt["v"], true
		}
	}
	return "", false
}

// selector is a request's label and field selectors, checked.
type selector struct {
	labels labels.Selector
	fields fields.Selector
	// fieldPaths maps each field the selector names to where its value
	// is in the object.
	fieldPaths map[string]string
}

func (s *Server) selectorOf(res *resource, q url.Values) (*selector, error) {
	sel := &selector{labels: labels.Everything(), fields: fields.Everything(), fieldPaths: map[string]string{}}
	var err error
	if ls := q.Get("labelSelector"); ls != "" {
		if sel.labels, err = labels.Parse(ls); err != nil {
			return nil, badRequest("labelSelector %q: %v", ls, err)
		}
	}
	if fs := q.Get("fieldSelector"); fs != "" {
		if sel.fields, err = fields.ParseSelector(fs); err != nil {
			return nil, badRequest("fieldSelector %q: %v", fs, err)
		}
		for _, req := range sel.fields.Requirements() {
			switch req.Field {
			case "metadata.name", "metadata.namespace":
				sel.fieldPaths[req.Field] = req.Field
				continue
			}
			if p, ok := res.fields[req.Field]; ok {
				sel.fieldPaths[req.Field] = p
				continue
			}
			supported := []string{"metadata.name", "metadata.namespace"}
			for f := range res.fields {
				supported = append(supported, f)
			}
			sort.Strings(supported[2:])
			return nil, badRequest("field label not supported: %q: kubekeep serve selects %s by %s", req.Field, res.groupResource(), strings.Join(supported, ", "))
		}
	}
	return sel, nil
}

func (sel *selector) matches(obj map[string]any) bool {
	if !sel.labels.Empty() {
		v, _ := lookup(obj, "metadata", "labels")
		m, _ := v.(map[string]any)
		set := labels.Set{}
		for k, v := range m {
			if s, ok := v.(string); ok {
				set[k] = s
			}
		}
		if !sel.labels.Matches(set) {
			return false
		}
	}
	if !sel.fields.Empty() {
		set := fields.Set{}
		for f, p := range sel.fieldPaths {
			v, _ := lookup(obj, strings.Split(p, ".")...)
			switch t := v.(type) {
			case nil:
				set[f] = ""
			case string:
				set[f] = t
			default:
				set[f] = fmt.Sprint(t)
			}
		}
		if !sel.fields.Matches(set) {
			return false
		}
	}
	return true
}

// listObjects reads the objects of res (in ns, or all) that match sel, in
// key order (namespace, then name). An object that cannot be read (a
// value encrypted with a key the version's EncryptionConfiguration does
// not hold, or by KMS; a value that does not decode) is left out of the
// list with a Warning header naming it and why, which kubectl prints, so
// one such Secret does not hide all the others; damage to the key index
// (snapread.ErrKeyIndex) fails the list.
func (s *Server) listObjects(w http.ResponseWriter, res *resource, ns string, sel *selector) ([]map[string]any, error) {
	// A name given exactly needs one read, not the whole list.
	if name, ok := sel.fields.RequiresExactMatch("metadata.name"); ok && (ns != "" || !res.namespaced) {
		obj, err := s.reader().Get(objects.Ref{Group: res.group, Resource: res.plural, Namespace: ns, Name: name})
		var nf *objects.NotFoundError
		if errors.As(err, &nf) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		c := s.content(res, obj)
		if !sel.matches(c) {
			return nil, nil
		}
		return []map[string]any{c}, nil
	}
	items, err := s.reader().Items(res.filter(ns))
	if err != nil {
		return nil, err
	}
	out := make([]map[string]any, 0, len(items))
	skipped := 0
	for _, it := range items {
		obj, err := s.reader().GetKey(it.Key)
		if errors.Is(err, snapread.ErrKeyIndex) {
			return nil, fmt.Errorf("read %s: %w", it.Key, err)
		}
		if err != nil {
			if skipped++; skipped <= maxWarnings {
				w.Header().Add("Warning", warning(fmt.Sprintf("kubekeep serve: %s left out of the list: %v", it.Ref, err)))
			}
			continue
		}
		c := s.content(res, obj)
		if sel.matches(c) {
			out = append(out, c)
		}
	}
	if skipped > maxWarnings {
		w.Header().Add("Warning", warning(fmt.Sprintf("kubekeep serve: %d more %s left out of the list", skipped-maxWarnings, res.groupResource())))
	}
	return out, nil
}

// maxWarnings bounds the Warning headers of one answer.
const maxWarnings = 10

// warning is an RFC 7234 warning value as the apiserver sends them (code
// 299, agent "-"), which client-go prints as "Warning: text".
func warning(text string) string {
	return "299 - " + strconv.Quote(strings.ToValidUTF8(text, "?"))
}

func (s *Server) serveList(w http.ResponseWriter, r *http.Request, res *resource, ns string) error {
	q := r.URL.Query()
	sel, err := s.selectorOf(res, q)
	if err != nil {
		return err
	}
	if q.Get("watch") == "true" || q.Get("watch") == "1" {
		return s.serveWatch(w, r, res, ns, sel)
	}
	objs, err := s.listObjects(w, res, ns, sel)
	if err != nil {
		return err
	}
	rv := strconv.FormatInt(s.rev, 10)
	meta := map[string]any{"resourceVersion": rv}
	// limit and continue page through the list (kubectl asks for 500 at a
	// time); the token holds the revision, so it cannot cross versions.
	off := 0
	if c := q.Get("continue"); c != "" {
		if off, err = s.parseContinue(c); err != nil {
			return err
		}
		objs = objs[min(off, len(objs)):]
	}
	if lim, err := strconv.Atoi(q.Get("limit")); err == nil && lim > 0 && lim < len(objs) {
		meta["continue"] = base64.RawURLEncoding.EncodeToString([]byte(fmt.Sprintf("kubekeep/%d/%d", s.rev, off+lim)))
		meta["remainingItemCount"] = len(objs) - lim
		objs = objs[:lim]
	}
	if tv, ok := wantsTable(r); ok {
		t, err := s.table(res, objs, q.Get("includeObject"), tv)
		if err != nil {
			return err
		}
		t["metadata"] = meta
		writeJSON(w, http.StatusOK, "application/json", t)
		return nil
	}
	items := make([]any, len(objs))
	for i, o := range objs {
		items[i] = o
	}
	writeJSON(w, http.StatusOK, "application/json", map[string]any{
		"kind": res.kind + "List", "apiVersion": res.apiVersion(), "metadata": meta, "items": items,
	})
	return nil
}

func (s *Server) parseContinue(c string) (int, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	parts := strings.Split(string(b), "/")
	if err != nil || len(parts) != 3 || parts[0] != "kubekeep" {
		return 0, badRequest("continue %q: not a token of this server", c)
	}
	if parts[1] != strconv.FormatInt(s.rev, 10) {
		return 0, &statusError{code: http.StatusGone, reason: "Expired", message: fmt.Sprintf("continue token of revision %s: this server serves revision %d", parts[1], s.rev)}
	}
	off, err := strconv.Atoi(parts[2])
	if err != nil || off < 0 {
		return 0, badRequest("continue %q: bad offset", c)
	}
	return off, nil
}

// table renders objects as a meta.k8s.io Table, with each row's object as
// asked by includeObject: Metadata (the default: PartialObjectMetadata,
// which kubectl reads namespaces from), Object or None.
func (s *Server) table(res *resource, objs []map[string]any, include, version string) (map[string]any, error) {
	cols := res.columns
	if cols == nil {
		cols = []column{nameColumn, ageColumn}
	}
	now := s.cfg.Now()
	defs := make([]any, len(cols))
	for i, c := range cols {
		defs[i] = c.def
	}
	rows := make([]any, 0, len(objs))
	for _, o := range objs {
		cells := make([]any, len(cols))
		for i, c := range cols {
			cells[i] = c.cell(o, now)
		}
		row := map[string]any{"cells": cells}
		switch include {
		case "", "Metadata":
			row["object"] = map[string]any{"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/" + version, "metadata": o["metadata"]}
		case "Object":
			row["object"] = o
		case "None":
		default:
			return nil, badRequest("includeObject %q: want None, Metadata or Object", include)
		}
		rows = append(rows, row)
	}
	return map[string]any{"kind": "Table", "apiVersion": "meta.k8s.io/" + version, "columnDefinitions": defs, "rows": rows}, nil
}

// serveWatch answers a watch with the one state a backup has: from
// resourceVersion "" or "0" (a watch that wants the current state first),
// an ADDED event per object; from the served revision (what a list
// returned, as `kubectl get -w` watches), nothing, since nothing changes;
// from an older one, 410 Expired, as etcd answers a compacted revision.
// sendInitialEvents=true adds the bookmark that ends the initial events.
// The stream then stays open until the client goes away, timeoutSeconds
// pass or the server closes.
func (s *Server) serveWatch(w http.ResponseWriter, r *http.Request, res *resource, ns string, sel *selector) error {
	q := r.URL.Query()
	rv := q.Get("resourceVersion")
	initial := rv == "" || rv == "0" || q.Get("sendInitialEvents") == "true"
	if !initial {
		n, err := strconv.ParseInt(rv, 10, 64)
		if err != nil {
			return badRequest("resourceVersion %q: not a revision", rv)
		}
		if n < s.rev {
			return &statusError{code: http.StatusGone, reason: "Expired",
				message: fmt.Sprintf("too old resource version: %d (%d): backup %s holds the state at revision %d only", n, s.rev, s.cfg.Version, s.rev)}
		}
	}
	var objs []map[string]any
	if initial {
		var err error
		if objs, err = s.listObjects(w, res, ns, sel); err != nil {
			return err
		}
	}
	tv, asTable := wantsTable(r)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-cache, private")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	send := func(typ string, obj any) error {
		b, err := jsonLine(map[string]any{"type": typ, "object": obj})
		if err != nil {
			return err
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
		if flusher != nil {
			flusher.Flush()
		}
		return nil
	}
	for _, o := range objs {
		var obj any = o
		if asTable {
			t, err := s.table(res, []map[string]any{o}, q.Get("includeObject"), tv)
			if err != nil {
				return nil // headers are out: end the stream
			}
			t["metadata"] = map[string]any{"resourceVersion": str(o, "metadata", "resourceVersion")}
			obj = t
		}
		if send("ADDED", obj) != nil {
			return nil
		}
	}
	if q.Get("sendInitialEvents") == "true" && q.Get("allowWatchBookmarks") == "true" {
		_ = send("BOOKMARK", map[string]any{"kind": res.kind, "apiVersion": res.apiVersion(), "metadata": map[string]any{
			"resourceVersion": strconv.FormatInt(s.rev, 10),
			"annotations":     map[string]any{"k8s.io/initial-events-end": "true"},
		}})
	}
	if flusher != nil {
		flusher.Flush()
	}
	var timeout <-chan time.Time
	if ts, err := strconv.Atoi(q.Get("timeoutSeconds")); err == nil && ts > 0 {
		t := time.NewTimer(time.Duration(ts) * time.Second)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-r.Context().Done():
	case <-s.done:
	case <-timeout:
	}
	return nil
}

func jsonLine(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}
