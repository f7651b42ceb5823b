package oss_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	alioss "github.com/aliyun/alibabacloud-oss-go-sdk-v2/oss"

	"github.com/kubekeep/kubekeep/rsyncish/backend"
	"github.com/kubekeep/kubekeep/rsyncish/backend/backendtest"
	"github.com/kubekeep/kubekeep/tiers/oss"
	"github.com/kubekeep/kubekeep/tiers/oss/ossfake"
)

const (
	region    = "cn-hangzhou"
	accessKey = "LTAI5tKubekeepTestKey"
	secretKey = "kubekeep-test-secret-0123456789abcdef"
	prefix    = "cluster-a/store"
)

// clock is the fake's object clock; tests move it past retentions.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type env struct {
	fake  *ossfake.Server
	srv   *httptest.Server
	clock *clock
}

var bucketSeq atomic.Int64

func newEnv(t *testing.T, opts ossfake.Options) *env {
	c := &clock{t: time.Now()}
	opts.Region = region
	opts.Now = c.Now
	fake := ossfake.New(opts)
	fake.AddAccessKey(accessKey, secretKey)
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	return &env{fake: fake, srv: srv, clock: c}
}

func (e *env) bucket() string {
	name := fmt.Sprintf("kk-%d", bucketSeq.Add(1))
	e.fake.CreateBucket(name)
	return name
}

func (e *env) config(bucket string) oss.Config {
	return oss.Config{Endpoint: e.srv.URL, Region: region, Bucket: bucket, Prefix: prefix,
		Creds: oss.StaticCredentials(accessKey, secretKey, "")}
}

// client is a plain SDK client, for what the bucket owner does (WORM
// policies) and to look at the bucket from outside the tier.
func (e *env) client() *alioss.Client {
	return alioss.NewClient(alioss.LoadDefaultConfig().WithRegion(region).WithEndpoint(e.srv.URL).
		WithCredentialsProvider(oss.StaticCredentials(accessKey, secretKey, "")))
}

// worm gives bucket a retention policy of days, locked or not, the way
// its owner would.
func (e *env) worm(t *testing.T, bucket string, days int32, lock bool) {
	t.Helper()
	cli := e.client()
	ir, err := cli.InitiateBucketWorm(ctxT(t), &alioss.InitiateBucketWormRequest{Bucket: &bucket,
		InitiateWormConfiguration: &alioss.InitiateWormConfiguration{RetentionPeriodInDays: &days}})
	if err != nil {
		t.Fatal(err)
	}
	if lock {
		if _, err := cli.CompleteBucketWorm(ctxT(t), &alioss.CompleteBucketWormRequest{Bucket: &bucket, WormId: ir.WormId}); err != nil {
			t.Fatal(err)
		}
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func open(t *testing.T, cfg oss.Config) *oss.Backend {
	t.Helper()
	b, err := oss.Open(ctxT(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The suite every backend passes, objects in one PUT each.
func TestOSSSuite(t *testing.T) {
	e := newEnv(t, ossfake.Options{})
	backendtest.Run(t, func(t *testing.T) backend.Backend { return open(t, e.config(e.bucket())) })
}

// The suite again with the smallest part OSS takes, so every object above
// 100 KiB goes up in parts (the short, failing and cancelled readers hit
// a multipart upload half-way), and list pages of two keys, so List
// follows continuation tokens. No upload is ever left behind.
func TestOSSSuiteMultipart(t *testing.T) {
	e := newEnv(t, ossfake.Options{ListLimit: 2})
	backendtest.Run(t, func(t *testing.T) backend.Backend {
		bucket := e.bucket()
		cfg := e.config(bucket)
		cfg.PartSize = oss.MinPartSize
		t.Cleanup(func() {
			if n := e.fake.Uploads(bucket); n != 0 {
				t.Errorf("%d multipart uploads left in the bucket", n)
			}
		})
		return open(t, cfg)
	})
	if e.fake.Calls("UploadPart") == 0 || e.fake.Calls("AbortMultipartUpload") == 0 {
		t.Errorf("the multipart suite uploaded %d parts and aborted %d uploads; want both",
			e.fake.Calls("UploadPart"), e.fake.Calls("AbortMultipartUpload"))
	}
}

// Above the part size an object goes up in parts and comes back whole;
// the bucket holds only the object under prefix/type/name.
func TestOSSMultipart(t *testing.T) {
	e := newEnv(t, ossfake.Options{})
	bucket := e.bucket()
	cfg := e.config(bucket)
	cfg.PartSize = oss.MinPartSize
	b := open(t, cfg)
	data := bytes.Repeat([]byte("0123456789abcdef"), (350<<10)/16+3)
	h := backend.Handle{Type: backend.PackFile, Name: "big.pack"}
	if err := b.Save(ctxT(t), h, backend.NewByteReader(data)); err != nil {
		t.Fatal(err)
	}
	if got, ok := e.fake.Object(bucket, "cluster-a/store/packs/big.pack"); !ok || !bytes.Equal(got, data) {
		t.Fatalf("the bucket holds %d bytes under the key, want the %d saved", len(got), len(data))
	}
	objs := e.fake.Objects(bucket)
	if len(objs) != 1 || objs[0].Type != "Multipart" {
		t.Errorf("bucket objects %+v, want only the multipart cluster-a/store/packs/big.pack", objs)
	}
	if n := e.fake.Calls("UploadPart"); n != 4 {
		t.Errorf("%d parts uploaded, want 4 of at most 100 KiB", n)
	}
	got, err := backend.LoadAll(ctxT(t), b, h)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("load: %d bytes of %d, %v", len(got), len(data), err)
	}
	if err := b.Save(ctxT(t), h, backend.NewByteReader(data[:len(data)-1])); !errors.Is(err, backend.ErrExists) {
		t.Errorf("a second multipart save of the name = %v, want ErrExists", err)
	}
	if n := e.fake.Uploads(bucket); n != 0 {
		t.Errorf("%d uploads left after the refused one", n)
	}
}

// A PUT that landed but whose answer was lost is retried by the SDK; the
// retry finds the name taken by the same bytes, and that is a success,
// not ErrExists.
func TestOSSRetriedPutThatLanded(t *testing.T) {
	e := newEnv(t, ossfake.Options{})
	bucket := e.bucket()
	b := open(t, e.config(bucket))
	e.fake.LoseAnswer("PutObject", http.StatusServiceUnavailable)
	h := backend.Handle{Type: backend.IndexFile, Name: "landed.idx"}
	data := []byte("the first attempt got through")
	if err := b.Save(ctxT(t), h, backend.NewByteReader(data)); err != nil {
		t.Fatalf("save whose first answer was lost: %v", err)
	}
	if n := e.fake.Calls("PutObject"); n != 1 {
		t.Fatalf("%d PUTs stored, want the one whose answer was lost", n)
	}
	if got, _ := e.fake.Object(bucket, "cluster-a/store/index/landed.idx"); !bytes.Equal(got, data) {
		t.Errorf("stored %q", got)
	}
}

// On a versioned bucket OSS ignores x-oss-forbid-overwrite; the tier
// still refuses to replace.
func TestOSSVersionedBucketNoReplace(t *testing.T) {
	e := newEnv(t, ossfake.Options{})
	bucket := e.bucket()
	e.fake.SetVersioning(bucket, "Enabled")
	b := open(t, e.config(bucket))
	h := backend.Handle{Type: backend.ManifestFile, Name: "v1.manifest"}
	if err := b.Save(ctxT(t), h, backend.NewByteReader([]byte("first"))); err != nil {
		t.Fatal(err)
	}
	if err := b.Save(ctxT(t), h, backend.NewByteReader([]byte("second"))); !errors.Is(err, backend.ErrExists) {
		t.Errorf("second save on a versioned bucket = %v, want ErrExists", err)
	}
	if got, _ := e.fake.Object(bucket, "cluster-a/store/versions/v1.manifest"); string(got) != "first" {
		t.Errorf("the object is %q after a refused save", got)
	}
}

// tamper is a transport that changes requests or answers on the way.
type tamper struct {
	req  func(*http.Request)
	resp func(*http.Response)
}

func (t tamper) RoundTrip(r *http.Request) (*http.Response, error) {
	if t.req != nil {
		t.req(r)
	}
	resp, err := http.DefaultTransport.RoundTrip(r)
	if err == nil && t.resp != nil {
		t.resp(resp)
	}
	return resp, err
}

type flipReader struct {
	r    io.Reader
	done bool
}

func (f *flipReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if n > 0 && !f.done {
		p[0] ^= 0xff
		f.done = true
	}
	return n, err
}

// A body changed on the way is refused by OSS (Content-MD5), so nothing
// lands under the name; the CRC64 alone would catch it only after OSS had
// stored the wrong bytes.
func TestOSSCorruptedUploadNeverLands(t *testing.T) {
	e := newEnv(t, ossfake.Options{})
	for _, size := range []int{1000, 250 << 10} { // one PUT; parts
		bucket := e.bucket()
		cfg := e.config(bucket)
		cfg.PartSize = oss.MinPartSize
		cfg.RetryMaxAttempts = 1
		cfg.HTTPClient = &http.Client{Transport: tamper{req: func(r *http.Request) {
			if r.Method == http.MethodPut && r.Body != nil {
				r.Body = io.NopCloser(&flipReader{r: r.Body})
			}
		}}}
		b := open(t, cfg)
		h := backend.Handle{Type: backend.PackFile, Name: "corrupt.pack"}
		if err := b.Save(ctxT(t), h, backend.NewByteReader(bytes.Repeat([]byte{7}, size))); err == nil {
			t.Errorf("%d bytes: a save whose body was changed on the way succeeded", size)
		}
		if objs := e.fake.Objects(bucket); len(objs) != 0 {
			t.Errorf("%d bytes: the bucket holds %+v after a corrupted upload", size, objs)
		}
		if n := e.fake.Uploads(bucket); n != 0 {
			t.Errorf("%d bytes: %d uploads left", size, n)
		}
	}
}

// An answer cut short of its Content-Length is an error, never a short
// object.
func TestOSSCutDownloadIsAnError(t *testing.T) {
	e := newEnv(t, ossfake.Options{})
	bucket := e.bucket()
	cfg := e.config(bucket)
	cut := false
	var mu sync.Mutex
	cfg.HTTPClient = &http.Client{Transport: tamper{resp: func(r *http.Response) {
		mu.Lock()
		defer mu.Unlock()
		if cut && r.Request.Method == http.MethodGet {
			r.Body = io.NopCloser(io.LimitReader(r.Body, 100))
		}
	}}}
	b := open(t, cfg)
	h := backend.Handle{Type: backend.PackFile, Name: "cut.pack"}
	data := bytes.Repeat([]byte("x"), 5000)
	if err := b.Save(ctxT(t), h, backend.NewByteReader(data)); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	cut = true
	mu.Unlock()
	for _, r := range []struct{ off, n int }{{0, 0}, {10, 4000}, {1000, 0}} {
		var got []byte
		err := b.Load(ctxT(t), h, r.n, int64(r.off), func(rd io.Reader) error {
			var err error
			got, err = io.ReadAll(rd)
			return err
		})
		if err == nil {
			t.Errorf("load %d+%d of a cut answer: %d bytes and no error", r.off, r.n, len(got))
		}
	}
}
