package ossfake

import (
	"crypto/md5"
	"encoding/base64"
	"encoding/xml"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// protected says whether the bucket's retention policy keeps o from
// being deleted or overwritten now. OSS protects objects from the moment
// a policy is created (InProgress) as well as once it is Locked.
func (s *Server) protected(b *bucket, o *object) bool {
	w := b.worm
	return w != nil && s.opts.Now().Before(o.modified.Add(time.Duration(w.days)*24*time.Hour))
}

func immutable(key string) *apiError {
	e := errorf(http.StatusConflict, "FileImmutable", "0026-00000005", "The object you specified is immutable.")
	e.extra = [][2]string{{"Key", key}}
	return e
}

// mayWrite checks x-oss-forbid-overwrite and the retention policy before
// an object is created under key.
func (s *Server) mayWrite(b *bucket, key string, r *http.Request) *apiError {
	old := b.objects[key]
	if old == nil {
		return nil
	}
	// With versioning on, OSS ignores x-oss-forbid-overwrite.
	if strings.EqualFold(r.Header.Get("x-oss-forbid-overwrite"), "true") && b.versioning == "" {
		e := errorf(http.StatusConflict, "FileAlreadyExists", "0016-00000608", "The object you specified already exists and can not be overwritten.")
		e.extra = [][2]string{{"Key", key}}
		return e
	}
	if b.versioning == "" && s.protected(b, old) {
		return immutable(key)
	}
	return nil
}

func objectHeaders(o *object) map[string]string {
	return map[string]string{
		"ETag":                 `"` + o.etag + `"`,
		"Last-Modified":        o.modified.UTC().Format(http.TimeFormat),
		"x-oss-hash-crc64ecma": crc(o.data),
		"x-oss-object-type":    o.typ,
		"x-oss-storage-class":  "Standard",
		"Content-Type":         "application/octet-stream",
		"Accept-Ranges":        "bytes",
	}
}

func (s *Server) putObject(b *bucket, key string, _ query, r *http.Request, body []byte) (response, *apiError) {
	if e := s.mayWrite(b, key, r); e != nil {
		return response{}, e
	}
	o := &object{data: body, modified: s.opts.Now(), etag: md5hex(body), typ: "Normal"}
	b.objects[key] = o
	sum := md5.Sum(body)
	return response{headers: map[string]string{
		"ETag":                 `"` + o.etag + `"`,
		"Content-MD5":          base64.StdEncoding.EncodeToString(sum[:]),
		"x-oss-hash-crc64ecma": crc(body),
	}}, nil
}

func noSuchKey(key string) *apiError {
	e := errorf(http.StatusNotFound, "NoSuchKey", "0026-00000001", "The specified key does not exist.")
	e.extra = [][2]string{{"Key", key}}
	return e
}

func (s *Server) headObject(b *bucket, key string, _ query, _ *http.Request, _ []byte) (response, *apiError) {
	o := b.objects[key]
	if o == nil {
		return response{}, noSuchKey(key)
	}
	h := objectHeaders(o)
	h["Content-Length"] = strconv.Itoa(len(o.data))
	return response{headers: h}, nil
}

// parseRange parses "bytes=a-b", "bytes=a-" or "bytes=-n" against size;
// ok false means the range cannot be satisfied (or is malformed), and
// startPast that its start lies at or past the end.
func parseRange(h string, size int64, standard bool) (start, end int64, ok, startPast bool) {
	spec, found := strings.CutPrefix(h, "bytes=")
	if !found || strings.Contains(spec, ",") {
		return 0, 0, false, false
	}
	a, z, found := strings.Cut(spec, "-")
	if !found {
		return 0, 0, false, false
	}
	if a == "" {
		n, err := strconv.ParseInt(z, 10, 64)
		if err != nil || n <= 0 {
			return 0, 0, false, false
		}
		return max(0, size-n), size - 1, size > 0, size == 0
	}
	start, err := strconv.ParseInt(a, 10, 64)
	if err != nil || start < 0 {
		return 0, 0, false, false
	}
	end = size - 1
	if z != "" {
		if end, err = strconv.ParseInt(z, 10, 64); err != nil || end < start {
			return 0, 0, false, false
		}
	}
	if start >= size {
		return 0, 0, false, true
	}
	if end >= size {
		if !standard {
			return 0, 0, false, false
		}
		end = size - 1
	}
	return start, end, true, false
}

func (s *Server) getObject(b *bucket, key string, _ query, r *http.Request, _ []byte) (response, *apiError) {
	o := b.objects[key]
	if o == nil {
		return response{}, noSuchKey(key)
	}
	h := objectHeaders(o)
	size := int64(len(o.data))
	rh := r.Header.Get("Range")
	if rh == "" {
		h["Content-Length"] = strconv.FormatInt(size, 10)
		return response{headers: h, body: o.data}, nil
	}
	standard := strings.EqualFold(r.Header.Get("x-oss-range-behavior"), "standard")
	start, end, ok, startPast := parseRange(rh, size, standard)
	if !ok {
		if standard && startPast {
			e := errorf(http.StatusRequestedRangeNotSatisfiable, "InvalidRange", "0003-00000009", "The requested range cannot be satisfied")
			e.extra = [][2]string{{"RangeRequested", rh}, {"ActualObjectSize", strconv.FormatInt(size, 10)}}
			return response{}, e
		}
		// OSS's default behaviour: an unsatisfiable range is ignored and
		// the whole object returned.
		h["Content-Length"] = strconv.FormatInt(size, 10)
		return response{headers: h, body: o.data}, nil
	}
	h["Content-Range"] = fmt.Sprintf("bytes %d-%d/%d", start, end, size)
	h["Content-Length"] = strconv.FormatInt(end-start+1, 10)
	return response{status: http.StatusPartialContent, headers: h, body: o.data[start : end+1]}, nil
}

func (s *Server) deleteObject(b *bucket, key string, _ query, _ *http.Request, _ []byte) (response, *apiError) {
	o := b.objects[key]
	if o == nil {
		return response{status: http.StatusNoContent}, nil
	}
	if s.protected(b, o) {
		return response{}, immutable(key)
	}
	delete(b.objects, key)
	return response{status: http.StatusNoContent}, nil
}

func encodeIf(q query, v string) string {
	if q.get("encoding-type") == "url" {
		return url.QueryEscape(v)
	}
	return v
}

type initiateResult struct {
	XMLName      xml.Name `xml:"InitiateMultipartUploadResult"`
	Bucket       string   `xml:"Bucket"`
	Key          string   `xml:"Key"`
	UploadID     string   `xml:"UploadId"`
	EncodingType string   `xml:"EncodingType,omitempty"`
}

func (s *Server) initiateMultipart(b *bucket, key string, q query, r *http.Request, _ []byte) (response, *apiError) {
	if e := s.mayWrite(b, key, r); e != nil {
		return response{}, e
	}
	s.seq++
	id := fmt.Sprintf("%032X", s.seq)
	b.uploads[id] = &upload{key: key, started: s.opts.Now(), parts: map[int32]part{}}
	return response{xml: initiateResult{Bucket: b.name, Key: encodeIf(q, key), UploadID: id, EncodingType: q.get("encoding-type")}}, nil
}

func noSuchUpload() *apiError {
	return errorf(http.StatusNotFound, "NoSuchUpload", "0042-00000002",
		"The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.")
}

func (s *Server) uploadPart(b *bucket, key string, q query, _ *http.Request, body []byte) (response, *apiError) {
	u := b.uploads[q.get("uploadId")]
	if u == nil || u.key != key {
		return response{}, noSuchUpload()
	}
	n, err := strconv.Atoi(q.get("partNumber"))
	if err != nil || n < 1 || n > 10000 {
		return response{}, errorf(http.StatusBadRequest, "InvalidArgument", "0042-00000102", "Part number must be an integer between 1 and 10000, inclusive.")
	}
	p := part{data: body, etag: md5hex(body)}
	u.parts[int32(n)] = p
	sum := md5.Sum(body)
	return response{headers: map[string]string{
		"ETag":                 `"` + p.etag + `"`,
		"Content-MD5":          base64.StdEncoding.EncodeToString(sum[:]),
		"x-oss-hash-crc64ecma": crc(body),
	}}, nil
}

type completeRequest struct {
	Parts []struct {
		PartNumber int32  `xml:"PartNumber"`
		ETag       string `xml:"ETag"`
	} `xml:"Part"`
}

type completeResult struct {
	XMLName      xml.Name `xml:"CompleteMultipartUploadResult"`
	EncodingType string   `xml:"EncodingType,omitempty"`
	Location     string   `xml:"Location"`
	Bucket       string   `xml:"Bucket"`
	Key          string   `xml:"Key"`
	ETag         string   `xml:"ETag"`
}

func (s *Server) completeMultipart(b *bucket, key string, q query, r *http.Request, body []byte) (response, *apiError) {
	id := q.get("uploadId")
	u := b.uploads[id]
	if u == nil || u.key != key {
		return response{}, noSuchUpload()
	}
	var req completeRequest
	if err := xml.Unmarshal(body, &req); err != nil || len(req.Parts) == 0 {
		return response{}, errorf(http.StatusBadRequest, "MalformedXML", "0042-00000205", "The XML you provided was not well-formed or did not validate against our published schema.")
	}
	var data []byte
	var sums []byte
	for i, p := range req.Parts {
		if i > 0 && p.PartNumber <= req.Parts[i-1].PartNumber {
			return response{}, errorf(http.StatusBadRequest, "InvalidPartOrder", "0042-00000207", "The list of parts was not in ascending order.")
		}
		have, ok := u.parts[p.PartNumber]
		if !ok || strings.Trim(p.ETag, `"`) != have.etag {
			return response{}, errorf(http.StatusBadRequest, "InvalidPart", "0042-00000206",
				"One or more of the specified parts could not be found or the specified entity tag might not have matched the part's entity tag.")
		}
		if i < len(req.Parts)-1 && len(have.data) < MinPartSize {
			return response{}, errorf(http.StatusBadRequest, "EntityTooSmall", "0042-00000208", "Your proposed upload is smaller than the minimum allowed size.")
		}
		data = append(data, have.data...)
		sum := md5.Sum(have.data)
		sums = append(sums, sum[:]...)
	}
	if e := s.mayWrite(b, key, r); e != nil {
		return response{}, e
	}
	etag := fmt.Sprintf("%s-%d", md5hex(sums), len(req.Parts))
	b.objects[key] = &object{data: data, modified: s.opts.Now(), etag: etag, typ: "Multipart"}
	delete(b.uploads, id)
	return response{
		headers: map[string]string{"x-oss-hash-crc64ecma": crc(data)},
		xml: completeResult{EncodingType: q.get("encoding-type"), Location: "http://" + r.Host + "/" + b.name + "/" + key,
			Bucket: b.name, Key: encodeIf(q, key), ETag: `"` + etag + `"`},
	}, nil
}

func (s *Server) abortMultipart(b *bucket, key string, q query, _ *http.Request, _ []byte) (response, *apiError) {
	id := q.get("uploadId")
	if u := b.uploads[id]; u == nil || u.key != key {
		return response{}, noSuchUpload()
	}
	delete(b.uploads, id)
	return response{status: http.StatusNoContent}, nil
}

type listContent struct {
	Key          string `xml:"Key"`
	LastModified string `xml:"LastModified"`
	ETag         string `xml:"ETag"`
	Type         string `xml:"Type"`
	Size         int    `xml:"Size"`
	StorageClass string `xml:"StorageClass"`
}

type listResult struct {
	XMLName               xml.Name      `xml:"ListBucketResult"`
	Name                  string        `xml:"Name"`
	Prefix                string        `xml:"Prefix"`
	ContinuationToken     string        `xml:"ContinuationToken,omitempty"`
	MaxKeys               int           `xml:"MaxKeys"`
	EncodingType          string        `xml:"EncodingType,omitempty"`
	IsTruncated           bool          `xml:"IsTruncated"`
	NextContinuationToken string        `xml:"NextContinuationToken,omitempty"`
	KeyCount              int           `xml:"KeyCount"`
	Contents              []listContent `xml:"Contents"`
}

func (s *Server) listObjectsV2(b *bucket, _ string, q query, _ *http.Request, _ []byte) (response, *apiError) {
	prefix := q.get("prefix")
	maxKeys := 100
	if v := q.get("max-keys"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return response{}, errorf(http.StatusBadRequest, "InvalidArgument", "0017-00000103", "max-keys must be between 1 and 1000.")
		}
		maxKeys = n
	}
	maxKeys = min(maxKeys, s.opts.ListLimit)
	after := q.get("start-after")
	if tok := q.get("continuation-token"); tok != "" {
		k, err := base64.RawURLEncoding.DecodeString(tok)
		if err != nil {
			return response{}, errorf(http.StatusBadRequest, "InvalidArgument", "0017-00000105", "The continuation token provided is incorrect.")
		}
		after = string(k)
	}
	if q.get("delimiter") != "" {
		return response{}, errorf(http.StatusBadRequest, "NotImplemented", "", "The fake does not implement delimiter.")
	}
	res := listResult{Name: b.name, Prefix: encodeIf(q, prefix), MaxKeys: maxKeys, EncodingType: q.get("encoding-type"),
		ContinuationToken: encodeIf(q, q.get("continuation-token"))}
	keys := b.sortedKeys()
	i := sort.SearchStrings(keys, after)
	for ; i < len(keys); i++ {
		k := keys[i]
		if k <= after || !strings.HasPrefix(k, prefix) {
			continue
		}
		if len(res.Contents) == maxKeys {
			res.IsTruncated = true
			res.NextContinuationToken = encodeIf(q, base64.RawURLEncoding.EncodeToString([]byte(res.Contents[len(res.Contents)-1].rawKey(q))))
			break
		}
		o := b.objects[k]
		res.Contents = append(res.Contents, listContent{Key: encodeIf(q, k), LastModified: o.modified.UTC().Format("2006-01-02T15:04:05.000Z"),
			ETag: `"` + o.etag + `"`, Type: o.typ, Size: len(o.data), StorageClass: "Standard"})
	}
	res.KeyCount = len(res.Contents)
	return response{xml: res}, nil
}

func (c listContent) rawKey(q query) string {
	if q.get("encoding-type") == "url" {
		k, _ := url.QueryUnescape(c.Key)
		return k
	}
	return c.Key
}
