// Package ossfake is an in-memory Alibaba Cloud OSS endpoint, faithful
// enough that the real alibabacloud-oss-go-sdk-v2 talks to it unchanged,
// for the calls kubekeep's OSS tier makes:
//
//   - Authentication as OSS documents V4 signing (OSS4-HMAC-SHA256, the
//     SDK v2's default): the canonical request (method, URI-encoded
//     /bucket/key, sorted encoded query, the x-oss-*, Content-Type and
//     Content-MD5 headers plus the AdditionalHeaders the Authorization
//     names, the x-oss-content-sha256 payload hash) is rebuilt from what
//     arrived and its HMAC-SHA256 chain keyed with "aliyun_v4"+secret over
//     date, region, "oss" and "aliyun_v4_request" compared with the
//     signature sent. A wrong secret is 403 SignatureDoesNotMatch, an
//     unknown key 403 InvalidAccessKeyId, a missing or wrong STS token 403
//     InvalidSecurityToken, an x-oss-date more than 15 minutes off 403
//     RequestTimeTooSkewed — each as OSS's XML error (Code, Message,
//     RequestId, HostId, EC) with x-oss-request-id and x-oss-ec headers; a
//     HEAD's error rides base64 in x-oss-err, as OSS sends it.
//   - Objects: PutObject (Content-Length and Content-MD5 checked, the
//     x-oss-hash-crc64ecma the SDK compares answered, x-oss-forbid-overwrite
//     honoured with 409 FileAlreadyExists unless versioning is on, where
//     OSS ignores it), GetObject with Range (OSS's default behaviour
//     returns the whole object for a range it cannot satisfy; with
//     x-oss-range-behavior: standard a start past the end is 416
//     InvalidRange and an end past it is cut), HeadObject, DeleteObject
//     (204 for a missing key, as OSS), multipart upload (Initiate,
//     UploadPart, Complete with part ETags, order and the 100 KiB minimum
//     part checked, Abort), ListObjectsV2 with prefix, max-keys and
//     continuation tokens, with encoding-type=url.
//   - Buckets: GetBucketVersioning, and the WORM retention policy
//     (InitiateBucketWorm → InProgress, which expires after 24 hours
//     unless CompleteBucketWorm locks it; AbortBucketWorm of an unlocked
//     one; GetBucketWorm, 404 NoSuchWORMConfiguration without one). While a
//     Locked policy's retention runs, deleting or overwriting an object
//     younger than the retention is refused with 409 FileImmutable.
//
// Requests are path-style (http://HOST/BUCKET/KEY, what the SDK sends to
// an IP endpoint). Object ages and WORM expiry follow Options.Now (a test
// clock); signature dates are checked against the wall clock. No public
// OSS emulator exists; this one covers what kubekeep calls.
package ossfake

import (
	"crypto/md5"
	"encoding/base64"
	"encoding/xml"
	"fmt"
	"hash/crc64"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"
)

// MinPartSize is the smallest part OSS accepts but for the last.
const MinPartSize = 100 << 10

// Options configure a Server. Zero values take the defaults noted.
type Options struct {
	// Region is the region the fake serves and signatures must name
	// (default cn-hangzhou).
	Region string
	// Now is the clock of object ages and WORM policies (default time.Now).
	Now func() time.Time
	// WallClock checks request dates (default time.Now).
	WallClock func() time.Time
	// ListLimit caps max-keys of ListObjectsV2 (default 1000, as OSS), so
	// tests can force continuation.
	ListLimit int
}

// Server is the fake: an http.Handler.
type Server struct {
	opts Options

	mu      sync.Mutex
	keys    map[string]accessKey
	buckets map[string]*bucket
	seq     int
	calls   map[string]int
	faults  map[string][]int // op -> HTTP statuses to answer instead (503s...)
	lost    map[string][]int // op -> HTTP statuses to answer after handling
}

type accessKey struct{ id, secret, token string }

type bucket struct {
	name       string
	versioning string // "", Enabled, Suspended
	objects    map[string]*object
	uploads    map[string]*upload
	worm       *worm
}

type object struct {
	data     []byte
	modified time.Time
	etag     string
	typ      string // Normal, Multipart
}

type upload struct {
	key     string
	started time.Time
	parts   map[int32]part
}

type part struct {
	data []byte
	etag string
}

type worm struct {
	id      string
	state   string // InProgress, Locked
	days    int32
	created time.Time
}

// New returns a fake with no buckets and no keys.
func New(opts Options) *Server {
	if opts.Region == "" {
		opts.Region = "cn-hangzhou"
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.WallClock == nil {
		opts.WallClock = time.Now
	}
	if opts.ListLimit <= 0 {
		opts.ListLimit = 1000
	}
	return &Server{opts: opts, keys: map[string]accessKey{}, buckets: map[string]*bucket{},
		calls: map[string]int{}, faults: map[string][]int{}, lost: map[string][]int{}}
}

// Region is the region the fake serves.
func (s *Server) Region() string { return s.opts.Region }

// AddAccessKey makes the fake accept requests signed with this pair.
func (s *Server) AddAccessKey(id, secret string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys[id] = accessKey{id: id, secret: secret}
}

// AddSTSKey makes the fake accept requests signed with this temporary
// pair that carry token in x-oss-security-token (a RAM role's STS
// credentials).
func (s *Server) AddSTSKey(id, secret, token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys[id] = accessKey{id: id, secret: secret, token: token}
}

// CreateBucket adds an empty bucket (unversioned, no WORM policy).
func (s *Server) CreateBucket(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buckets[name] = &bucket{name: name, objects: map[string]*object{}, uploads: map[string]*upload{}}
}

// SetVersioning sets a bucket's versioning status (Enabled, Suspended).
// The fake keeps no old versions; it only changes how
// x-oss-forbid-overwrite behaves, as OSS does.
func (s *Server) SetVersioning(bucketName, status string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if b := s.buckets[bucketName]; b != nil {
		b.versioning = status
	}
}

// ObjectInfo is what tests see of a stored object.
type ObjectInfo struct {
	Key      string
	Size     int
	Modified time.Time
	Type     string
}

// Objects lists a bucket's objects in key order.
func (s *Server) Objects(bucketName string) []ObjectInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.buckets[bucketName]
	if b == nil {
		return nil
	}
	var out []ObjectInfo
	for _, k := range b.sortedKeys() {
		o := b.objects[k]
		out = append(out, ObjectInfo{Key: k, Size: len(o.data), Modified: o.modified, Type: o.typ})
	}
	return out
}

// Object returns a copy of an object's bytes.
func (s *Server) Object(bucketName, key string) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.buckets[bucketName]
	if b == nil || b.objects[key] == nil {
		return nil, false
	}
	return append([]byte(nil), b.objects[key].data...), true
}

// Uploads is how many multipart uploads of a bucket are neither completed
// nor aborted.
func (s *Server) Uploads(bucketName string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if b := s.buckets[bucketName]; b != nil {
		return len(b.uploads)
	}
	return 0
}

// Calls is how many requests of an operation (PutObject, HeadObject,
// UploadPart...) were answered with success.
func (s *Server) Calls(op string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[op]
}

// Fail makes the next len(statuses) requests of op (after
// authentication) answer those HTTP statuses instead (500/503 as
// InternalError/ServiceUnavailable, others as InjectedFault).
func (s *Server) Fail(op string, statuses ...int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults[op] = append(s.faults[op], statuses...)
}

// LoseAnswer makes the next len(statuses) requests of op succeed but
// answer those statuses instead of the success: a connection that broke
// after OSS did the work, so the client retries something that landed.
func (s *Server) LoseAnswer(op string, statuses ...int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lost[op] = append(s.lost[op], statuses...)
}

func faultCode(status int) string {
	switch status {
	case http.StatusInternalServerError:
		return "InternalError"
	case http.StatusServiceUnavailable:
		return "ServiceUnavailable"
	}
	return "InjectedFault"
}

func (b *bucket) sortedKeys() []string {
	keys := make([]string, 0, len(b.objects))
	for k := range b.objects {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// apiError is an OSS error answer.
type apiError struct {
	status        int
	code, message string
	ec            string
	extra         [][2]string // more elements of the XML body
}

func errorf(status int, code, ec, format string, args ...any) *apiError {
	return &apiError{status: status, code: code, ec: ec, message: fmt.Sprintf(format, args...)}
}

func (s *Server) requestID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	return fmt.Sprintf("6A5F%020X", s.seq)
}

func (s *Server) writeError(w http.ResponseWriter, r *http.Request, reqID, host string, e *apiError) {
	var b strings.Builder
	b.WriteString(xml.Header)
	b.WriteString("<Error>\n")
	el := func(name, v string) {
		b.WriteString("  <" + name + ">")
		_ = xml.EscapeText(&b, []byte(v))
		b.WriteString("</" + name + ">\n")
	}
	el("Code", e.code)
	el("Message", e.message)
	el("RequestId", reqID)
	el("HostId", host)
	for _, kv := range e.extra {
		el(kv[0], kv[1])
	}
	if e.ec != "" {
		el("EC", e.ec)
		el("RecommendDoc", "https://api.aliyun.com/troubleshoot?q="+e.ec)
	}
	b.WriteString("</Error>\n")
	h := w.Header()
	h.Set("x-oss-request-id", reqID)
	h.Set("Server", "AliyunOSS")
	h.Set("Date", s.opts.WallClock().UTC().Format(http.TimeFormat))
	if e.ec != "" {
		h.Set("x-oss-ec", e.ec)
	}
	if r.Method == http.MethodHead {
		h.Set("x-oss-err", base64.StdEncoding.EncodeToString([]byte(b.String())))
		w.WriteHeader(e.status)
		return
	}
	h.Set("Content-Type", "application/xml")
	w.WriteHeader(e.status)
	_, _ = w.Write([]byte(b.String()))
}

func writeXML(w http.ResponseWriter, status int, v any) {
	out, err := xml.MarshalIndent(v, "", "  ")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(xml.Header))
	_, _ = w.Write(out)
}

var crcTable = crc64.MakeTable(crc64.ECMA)

func crc(data []byte) string { return fmt.Sprint(crc64.Checksum(data, crcTable)) }

func md5hex(data []byte) string {
	sum := md5.Sum(data)
	return strings.ToUpper(fmt.Sprintf("%x", sum[:]))
}

// ServeHTTP answers OSS requests.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	reqID := s.requestID()
	host := r.Host
	bucketName, key, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	if bucketName != "" {
		host = bucketName + ".oss-" + s.opts.Region + ".aliyuncs.com"
	}
	q, qerr := parseQuery(r.URL.RawQuery)
	if qerr != nil {
		s.writeError(w, r, reqID, host, errorf(http.StatusBadRequest, "InvalidArgument", "0017-00000001", "The query string is not well formed."))
		return
	}
	body, e := s.readBody(r)
	if e == nil {
		e = s.authenticate(r, q, body)
	}
	if e != nil {
		s.writeError(w, r, reqID, host, e)
		return
	}
	op := operation(r.Method, key, q)
	s.mu.Lock()
	if st := s.faults[op]; len(st) > 0 {
		s.faults[op] = st[1:]
		s.mu.Unlock()
		s.writeError(w, r, reqID, host, errorf(st[0], faultCode(st[0]), "", "Injected fault."))
		return
	}
	s.expireWorm()
	b := s.buckets[bucketName]
	var resp response
	switch {
	case bucketName == "":
		e = errorf(http.StatusBadRequest, "NotImplemented", "", "The fake serves no service-level operation.")
	case b == nil:
		e = errorf(http.StatusNotFound, "NoSuchBucket", "0015-00000101", "The specified bucket does not exist.")
		e.extra = [][2]string{{"BucketName", bucketName}}
	default:
		h, ok := handlers[op]
		if !ok {
			e = errorf(http.StatusBadRequest, "NotImplemented", "", "The fake does not implement %s.", op)
		} else {
			resp, e = h(s, b, key, q, r, body)
		}
	}
	if e == nil {
		s.calls[op]++
		if st := s.lost[op]; len(st) > 0 {
			s.lost[op] = st[1:]
			e = errorf(st[0], faultCode(st[0]), "", "Injected fault after the operation was done.")
		}
	}
	s.mu.Unlock()
	if e != nil {
		s.writeError(w, r, reqID, host, e)
		return
	}
	h := w.Header()
	h.Set("x-oss-request-id", reqID)
	h.Set("Server", "AliyunOSS")
	h.Set("Date", s.opts.WallClock().UTC().Format(http.TimeFormat))
	for k, v := range resp.headers {
		h.Set(k, v)
	}
	if resp.xml != nil {
		writeXML(w, resp.statusOr(http.StatusOK), resp.xml)
		return
	}
	w.WriteHeader(resp.statusOr(http.StatusOK))
	if r.Method != http.MethodHead {
		_, _ = w.Write(resp.body)
	}
}

type response struct {
	status  int
	headers map[string]string
	body    []byte
	xml     any
}

func (r response) statusOr(def int) int {
	if r.status != 0 {
		return r.status
	}
	return def
}

type handler func(s *Server, b *bucket, key string, q query, r *http.Request, body []byte) (response, *apiError)

// operation names a request the way OSS's API reference does.
func operation(method, key string, q query) string {
	if key == "" {
		switch {
		case method == http.MethodGet && q.has("list-type") && q.get("list-type") == "2":
			return "ListObjectsV2"
		case method == http.MethodGet && q.has("versioning"):
			return "GetBucketVersioning"
		case method == http.MethodGet && q.has("worm"):
			return "GetBucketWorm"
		case method == http.MethodPost && q.has("worm"):
			return "InitiateBucketWorm"
		case method == http.MethodPost && q.has("wormId"):
			return "CompleteBucketWorm"
		case method == http.MethodDelete && q.has("worm"):
			return "AbortBucketWorm"
		}
		return method + " bucket"
	}
	switch {
	case method == http.MethodPost && q.has("uploads"):
		return "InitiateMultipartUpload"
	case method == http.MethodPut && q.has("uploadId") && q.has("partNumber"):
		return "UploadPart"
	case method == http.MethodPost && q.has("uploadId"):
		return "CompleteMultipartUpload"
	case method == http.MethodDelete && q.has("uploadId"):
		return "AbortMultipartUpload"
	case method == http.MethodPut && len(q) == 0:
		return "PutObject"
	case method == http.MethodGet && !q.hasAnyOf("acl", "tagging", "symlink", "objectMeta"):
		return "GetObject"
	case method == http.MethodHead:
		return "HeadObject"
	case method == http.MethodDelete && len(q) == 0:
		return "DeleteObject"
	}
	return method + " object"
}

var handlers = map[string]handler{
	"PutObject":               (*Server).putObject,
	"GetObject":               (*Server).getObject,
	"HeadObject":              (*Server).headObject,
	"DeleteObject":            (*Server).deleteObject,
	"InitiateMultipartUpload": (*Server).initiateMultipart,
	"UploadPart":              (*Server).uploadPart,
	"CompleteMultipartUpload": (*Server).completeMultipart,
	"AbortMultipartUpload":    (*Server).abortMultipart,
	"ListObjectsV2":           (*Server).listObjectsV2,
	"GetBucketVersioning":     (*Server).getVersioning,
	"GetBucketWorm":           (*Server).getWorm,
	"InitiateBucketWorm":      (*Server).initiateWorm,
	"CompleteBucketWorm":      (*Server).completeWorm,
	"AbortBucketWorm":         (*Server).abortWorm,
}
