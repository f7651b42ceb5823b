package ossfake

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"
)

// maxBody bounds what one request may carry (the fake keeps it all in
// memory; OSS's own limit is 5 GiB a PUT).
const maxBody = 256 << 20

// signingWindow is how far x-oss-date may be from the server's clock.
const signingWindow = 15 * time.Minute

// query is a request's query, decoded, in arrival order.
type query []struct{ k, v string }

func parseQuery(raw string) (query, error) {
	var q query
	for raw != "" {
		var kv string
		kv, raw, _ = strings.Cut(raw, "&")
		if kv == "" {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		dk, err := url.QueryUnescape(k)
		if err != nil {
			return nil, err
		}
		dv, err := url.QueryUnescape(v)
		if err != nil {
			return nil, err
		}
		q = append(q, struct{ k, v string }{dk, dv})
	}
	return q, nil
}

func (q query) has(k string) bool {
	for _, p := range q {
		if p.k == k {
			return true
		}
	}
	return false
}

func (q query) hasAnyOf(ks ...string) bool {
	for _, k := range ks {
		if q.has(k) {
			return true
		}
	}
	return false
}

func (q query) get(k string) string {
	for _, p := range q {
		if p.k == k {
			return p.v
		}
	}
	return ""
}

// uriEncode is OSS's URI encoding: everything but A-Z a-z 0-9 - _ . ~
// as %XX (upper case), '/' kept when keepSlash.
func uriEncode(s string, keepSlash bool) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.IndexByte("-_.~", c) >= 0 || c == '/' && keepSlash {
			b.WriteByte(c)
			continue
		}
		const hexd = "0123456789ABCDEF"
		b.WriteByte('%')
		b.WriteByte(hexd[c>>4])
		b.WriteByte(hexd[c&15])
	}
	return b.String()
}

// readBody reads a request's body whole, checking Content-Length (when
// sent) and Content-MD5 as OSS does.
func (s *Server) readBody(r *http.Request) ([]byte, *apiError) {
	// A body of unknown length comes chunked (Go's client sends an empty
	// PUT body that way); OSS takes chunked PUTs.
	if r.ContentLength > maxBody {
		return nil, errorf(http.StatusBadRequest, "EntityTooLarge", "0005-00000006", "Your proposed upload exceeds the maximum allowed size.")
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil || r.ContentLength >= 0 && int64(len(body)) != r.ContentLength {
		return nil, errorf(http.StatusBadRequest, "IncompleteBody", "0005-00000005", "You did not provide the number of bytes specified by the Content-Length HTTP header.")
	}
	if m := r.Header.Get("Content-MD5"); m != "" {
		sum := md5.Sum(body)
		if m != base64.StdEncoding.EncodeToString(sum[:]) {
			return nil, errorf(http.StatusBadRequest, "InvalidDigest", "0002-00000004", "The Content-MD5 you specified is not valid.")
		}
	}
	return body, nil
}

var errMalformed = errors.New("malformed")

// authorization is a parsed OSS4-HMAC-SHA256 Authorization header.
type authorization struct {
	keyID, date, region, product string
	additional                   []string
	signature                    string
}

func parseAuthorization(h string) (authorization, error) {
	var a authorization
	rest, ok := strings.CutPrefix(h, "OSS4-HMAC-SHA256 ")
	if !ok {
		return a, errMalformed
	}
	for _, f := range strings.Split(rest, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(f), "=")
		if !ok {
			return a, errMalformed
		}
		switch k {
		case "Credential":
			parts := strings.Split(v, "/")
			if len(parts) != 5 || parts[4] != "aliyun_v4_request" {
				return a, errMalformed
			}
			a.keyID, a.date, a.region, a.product = parts[0], parts[1], parts[2], parts[3]
		case "AdditionalHeaders":
			a.additional = strings.Split(v, ";")
		case "Signature":
			a.signature = v
		}
	}
	if a.keyID == "" || a.signature == "" {
		return a, errMalformed
	}
	return a, nil
}

// authenticate checks a request's V4 signature the way OSS documents it.
func (s *Server) authenticate(r *http.Request, q query, body []byte) *apiError {
	h := r.Header.Get("Authorization")
	if h == "" {
		return errorf(http.StatusForbidden, "AccessDenied", "0003-00000001", "You have no right to access this object because of bucket acl.")
	}
	a, err := parseAuthorization(h)
	if err != nil {
		return errorf(http.StatusBadRequest, "InvalidArgument", "0002-00000020", "Authorization header is invalid.")
	}
	s.mu.Lock()
	key, ok := s.keys[a.keyID]
	s.mu.Unlock()
	if !ok {
		e := errorf(http.StatusForbidden, "InvalidAccessKeyId", "0002-00000902", "The OSS Access Key Id you provided does not exist in our records.")
		e.extra = [][2]string{{"OSSAccessKeyId", a.keyID}}
		return e
	}
	if key.token != "" && r.Header.Get("x-oss-security-token") != key.token {
		return errorf(http.StatusForbidden, "InvalidSecurityToken", "0002-00000905", "The security token you provided is invalid.")
	}
	datetime := r.Header.Get("x-oss-date")
	t, err := time.Parse("20060102T150405Z", datetime)
	if err != nil {
		return errorf(http.StatusBadRequest, "InvalidArgument", "0002-00000020", "x-oss-date is missing or invalid.")
	}
	if d := s.opts.WallClock().Sub(t); d > signingWindow || d < -signingWindow {
		e := errorf(http.StatusForbidden, "RequestTimeTooSkewed", "0002-00000504", "The difference between the request time and the current time is too large.")
		e.extra = [][2]string{{"RequestTime", datetime}, {"ServerTime", s.opts.WallClock().UTC().Format("2006-01-02T15:04:05.000Z")}}
		return e
	}
	if a.date != t.Format("20060102") || a.region != s.opts.Region || a.product != "oss" {
		return errorf(http.StatusBadRequest, "InvalidArgument", "0002-00000020",
			"Invalid credential scope %s/%s/%s: want the request's date, region %s and product oss.", a.date, a.region, a.product, s.opts.Region)
	}
	payload := r.Header.Get("x-oss-content-sha256")
	if payload == "" {
		return errorf(http.StatusBadRequest, "InvalidArgument", "0002-00000020", "x-oss-content-sha256 is required.")
	}
	if payload != "UNSIGNED-PAYLOAD" {
		sum := sha256.Sum256(body)
		if payload != hex.EncodeToString(sum[:]) {
			return errorf(http.StatusBadRequest, "InvalidArgument", "0002-00000020", "x-oss-content-sha256 does not match the body.")
		}
	}
	canonical := canonicalRequest(r, q, a.additional, payload)
	scope := a.date + "/" + a.region + "/" + a.product + "/aliyun_v4_request"
	hashed := sha256.Sum256([]byte(canonical))
	stringToSign := "OSS4-HMAC-SHA256\n" + datetime + "\n" + scope + "\n" + hex.EncodeToString(hashed[:])
	mac := func(k []byte, v string) []byte {
		m := hmac.New(sha256.New, k)
		m.Write([]byte(v))
		return m.Sum(nil)
	}
	k := mac([]byte("aliyun_v4"+key.secret), a.date)
	k = mac(k, a.region)
	k = mac(k, a.product)
	k = mac(k, "aliyun_v4_request")
	want := hex.EncodeToString(mac(k, stringToSign))
	if !hmac.Equal([]byte(want), []byte(a.signature)) {
		e := errorf(http.StatusForbidden, "SignatureDoesNotMatch", "0002-00000040",
			"The request signature we calculated does not match the signature you provided. Check your key and signing method.")
		e.extra = [][2]string{{"OSSAccessKeyId", a.keyID}, {"SignatureProvided", a.signature},
			{"StringToSign", stringToSign}, {"CanonicalRequest", canonical}}
		return e
	}
	return nil
}

// canonicalRequest rebuilds OSS's V4 canonical request from what
// arrived.
func canonicalRequest(r *http.Request, q query, additional []string, payload string) string {
	// URI: /bucket/key, as sent path-style; OSS encodes it with '/' kept.
	uri := uriEncode(r.URL.Path, true)
	enc := make([][2]string, 0, len(q))
	for _, p := range q {
		enc = append(enc, [2]string{uriEncode(p.k, false), uriEncode(p.v, false)})
	}
	sort.Slice(enc, func(i, j int) bool { return enc[i][0] < enc[j][0] })
	var qs []string
	for _, p := range enc {
		if p[1] == "" {
			qs = append(qs, p[0])
		} else {
			qs = append(qs, p[0]+"="+p[1])
		}
	}
	extra := map[string]bool{}
	for _, h := range additional {
		extra[strings.ToLower(h)] = true
	}
	var names []string
	values := map[string][]string{}
	for k, v := range r.Header {
		low := strings.ToLower(k)
		if strings.HasPrefix(low, "x-oss-") || low == "content-type" || low == "content-md5" || extra[low] {
			names = append(names, low)
			values[low] = append(values[low], v...)
		}
	}
	if extra["host"] {
		names = append(names, "host")
		values["host"] = []string{r.Host}
	}
	sort.Strings(names)
	var hb strings.Builder
	for _, n := range names {
		vs := make([]string, len(values[n]))
		for i, v := range values[n] {
			vs[i] = strings.TrimSpace(v)
		}
		hb.WriteString(n + ":" + strings.Join(vs, ",") + "\n")
	}
	return r.Method + "\n" + uri + "\n" + strings.Join(qs, "&") + "\n" + hb.String() + "\n" +
		strings.Join(additional, ";") + "\n" + payload
}
