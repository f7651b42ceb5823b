package ossfake_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	alioss "github.com/aliyun/alibabacloud-oss-go-sdk-v2/oss"
	"github.com/aliyun/alibabacloud-oss-go-sdk-v2/oss/credentials"

	"github.com/kubekeep/kubekeep/tiers/oss/ossfake"
)

const (
	region = "cn-hangzhou"
	id     = "LTAI5tFakeTest"
	secret = "fake-test-secret"
	bucket = "kk-bucket"
)

type tamper func(*http.Request)

func (t tamper) RoundTrip(r *http.Request) (*http.Response, error) {
	t(r)
	return http.DefaultTransport.RoundTrip(r)
}

func setup(t *testing.T, opts ossfake.Options, tr http.RoundTripper) (*ossfake.Server, *alioss.Client) {
	t.Helper()
	opts.Region = region
	f := ossfake.New(opts)
	f.AddAccessKey(id, secret)
	f.CreateBucket(bucket)
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	cfg := alioss.LoadDefaultConfig().WithRegion(region).WithEndpoint(srv.URL).WithRetryMaxAttempts(1).
		WithCredentialsProvider(credentials.NewStaticCredentialsProvider(id, secret))
	if tr != nil {
		cfg = cfg.WithHttpClient(&http.Client{Transport: tr})
	}
	return f, alioss.NewClient(cfg)
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func serviceError(t *testing.T, err error) *alioss.ServiceError {
	t.Helper()
	var se *alioss.ServiceError
	if !errors.As(err, &se) {
		t.Fatalf("error %v is not an OSS service error", err)
	}
	return se
}

func put(c *alioss.Client, key, body string, meta map[string]string) error {
	_, err := c.PutObject(context.Background(), &alioss.PutObjectRequest{Bucket: alioss.Ptr(bucket), Key: alioss.Ptr(key),
		Body: strings.NewReader(body), Metadata: meta})
	return err
}

// The real SDK's V4 signatures pass; anything the signature covers,
// changed after signing, does not: a signed header, the query, the path.
// The answer is OSS's XML error, parsed by the SDK into code, EC and
// request id.
func TestSignatureCoversWhatOSSSigns(t *testing.T) {
	for _, c := range []struct {
		name   string
		change func(*http.Request)
	}{
		{"an x-oss header", func(r *http.Request) { r.Header.Set("x-oss-meta-owner", "mallory") }},
		{"the content type", func(r *http.Request) { r.Header.Set("Content-Type", "text/html") }},
		{"the key", func(r *http.Request) { r.URL.Path += "x" }},
		{"the query", func(r *http.Request) { r.URL.RawQuery = "acl" }},
	} {
		t.Run(c.name, func(t *testing.T) {
			armed := false
			f, cli := setup(t, ossfake.Options{}, tamper(func(r *http.Request) {
				if armed {
					c.change(r)
				}
			}))
			if err := put(cli, "dir/a b+c.txt", "hello", map[string]string{"owner": "kubekeep"}); err != nil {
				t.Fatalf("an untouched request: %v", err)
			}
			armed = true
			se := serviceError(t, put(cli, "dir/other", "hello", map[string]string{"owner": "kubekeep"}))
			if se.StatusCode != http.StatusForbidden || se.Code != "SignatureDoesNotMatch" || se.EC == "" || se.RequestID == "" {
				t.Errorf("changed after signing: %d %s EC %q request %q, want 403 SignatureDoesNotMatch with EC and request id",
					se.StatusCode, se.Code, se.EC, se.RequestID)
			}
			if len(f.Objects(bucket)) != 1 {
				t.Errorf("objects %+v, want only the untouched one", f.Objects(bucket))
			}
		})
	}
}

// A wrong secret and an unknown key are refused; a HEAD's error comes in
// x-oss-err and still parses.
func TestWrongKeys(t *testing.T) {
	f := ossfake.New(ossfake.Options{Region: region})
	f.AddAccessKey(id, secret)
	f.CreateBucket(bucket)
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	for _, c := range []struct{ id, secret, code string }{{id, "wrong", "SignatureDoesNotMatch"}, {"LTAI5tUnknown", secret, "InvalidAccessKeyId"}} {
		cli := alioss.NewClient(alioss.LoadDefaultConfig().WithRegion(region).WithEndpoint(srv.URL).
			WithCredentialsProvider(credentials.NewStaticCredentialsProvider(c.id, c.secret)))
		_, err := cli.HeadObject(ctxT(t), &alioss.HeadObjectRequest{Bucket: alioss.Ptr(bucket), Key: alioss.Ptr("k")})
		if se := serviceError(t, err); se.Code != c.code || se.StatusCode != http.StatusForbidden {
			t.Errorf("HEAD with %s/%s: %d %s, want 403 %s", c.id, c.secret, se.StatusCode, se.Code, c.code)
		}
	}
}

// A request dated outside the 15-minute window is refused with
// RequestTimeTooSkewed and the server's time, from which the SDK corrects
// its clock and retries.
func TestClockSkew(t *testing.T) {
	skewed := func() time.Time { return time.Now().Add(40 * time.Minute) }
	_, once := setup(t, ossfake.Options{WallClock: skewed}, nil)
	if se := serviceError(t, put(once, "k", "v", nil)); se.Code != "RequestTimeTooSkewed" {
		t.Fatalf("a request 40 minutes off, one attempt: %s, want RequestTimeTooSkewed", se.Code)
	}
	// With the SDK's retries, its clock correction gets it through.
	f := ossfake.New(ossfake.Options{Region: region, WallClock: skewed})
	f.AddAccessKey(id, secret)
	f.CreateBucket(bucket)
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	retrying := alioss.NewClient(alioss.LoadDefaultConfig().WithRegion(region).WithEndpoint(srv.URL).
		WithCredentialsProvider(credentials.NewStaticCredentialsProvider(id, secret)))
	if err := put(retrying, "k", "v", nil); err != nil {
		t.Fatalf("with the SDK's retries and clock correction: %v", err)
	}
}

// Ranges as OSS serves them: by default an unsatisfiable range gets the
// whole object (200); with x-oss-range-behavior: standard a start past
// the end is 416 InvalidRange and an end past it is cut.
func TestRanges(t *testing.T) {
	_, cli := setup(t, ossfake.Options{}, nil)
	if err := put(cli, "r", "0123456789", nil); err != nil {
		t.Fatal(err)
	}
	get := func(rng string, standard bool) (int, string, error) {
		req := &alioss.GetObjectRequest{Bucket: alioss.Ptr(bucket), Key: alioss.Ptr("r"), Range: alioss.Ptr(rng)}
		if standard {
			req.RangeBehavior = alioss.Ptr("standard")
		}
		res, err := cli.GetObject(ctxT(t), req)
		if err != nil {
			return 0, "", err
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		return res.StatusCode, string(b), err
	}
	for _, c := range []struct {
		rng      string
		standard bool
		status   int
		body     string
	}{
		{"bytes=2-4", false, 206, "234"},
		{"bytes=-3", false, 206, "789"},
		{"bytes=5-20", false, 200, "0123456789"},
		{"bytes=10-20", false, 200, "0123456789"},
		{"bytes=5-20", true, 206, "56789"},
		{"bytes=10-", true, 416, ""},
	} {
		status, body, err := get(c.rng, c.standard)
		if c.status == 416 {
			if se := serviceError(t, err); se.StatusCode != 416 || se.Code != "InvalidRange" {
				t.Errorf("%s standard: %d %s, want 416 InvalidRange", c.rng, se.StatusCode, se.Code)
			}
			continue
		}
		if err != nil || status != c.status || body != c.body {
			t.Errorf("%s (standard %v): %d %q %v, want %d %q", c.rng, c.standard, status, body, err, c.status, c.body)
		}
	}
}

// Multipart rules: parts other than the last must be 100 KiB or more,
// and the completed object is the parts in order.
func TestMultipartRules(t *testing.T) {
	f, cli := setup(t, ossfake.Options{}, nil)
	key := alioss.Ptr("mp")
	up := func(small bool) error {
		init, err := cli.InitiateMultipartUpload(ctxT(t), &alioss.InitiateMultipartUploadRequest{Bucket: alioss.Ptr(bucket), Key: key})
		if err != nil {
			return err
		}
		first := bytes.Repeat([]byte("a"), ossfake.MinPartSize)
		if small {
			first = first[:1000]
		}
		var parts []alioss.UploadPart
		for i, p := range [][]byte{first, []byte("tail")} {
			r, err := cli.UploadPart(ctxT(t), &alioss.UploadPartRequest{Bucket: alioss.Ptr(bucket), Key: key, UploadId: init.UploadId,
				PartNumber: int32(i + 1), Body: bytes.NewReader(p)})
			if err != nil {
				return err
			}
			parts = append(parts, alioss.UploadPart{PartNumber: int32(i + 1), ETag: r.ETag})
		}
		_, err = cli.CompleteMultipartUpload(ctxT(t), &alioss.CompleteMultipartUploadRequest{Bucket: alioss.Ptr(bucket), Key: key,
			UploadId: init.UploadId, CompleteMultipartUpload: &alioss.CompleteMultipartUpload{Parts: parts}})
		return err
	}
	if se := serviceError(t, up(true)); se.Code != "EntityTooSmall" {
		t.Errorf("a 1000-byte first part: %s, want EntityTooSmall", se.Code)
	}
	if err := up(false); err != nil {
		t.Fatal(err)
	}
	got, _ := f.Object(bucket, "mp")
	if want := append(bytes.Repeat([]byte("a"), ossfake.MinPartSize), "tail"...); !bytes.Equal(got, want) {
		t.Errorf("completed object: %d bytes, want %d", len(got), len(want))
	}
}
