// Package s3 is a backend.Backend on S3 and S3-compatible object stores
// (MinIO, versitygw, Alibaba OSS's S3 endpoint), through minio-go v7:
// the off-site tier's storage. Objects live under <prefix>/<type>/<name>
// in one bucket.
//
// How it keeps backend's guarantees on S3:
//   - Save: one PUT (multipart above PartSize, minio-go aborting the
//     upload on failure) with the exact length and Content-MD5, so the
//     server refuses a body cut short or changed on the way; If-None-Match
//     "*" where the server honours conditional writes, and a HEAD before
//     for those that do not, so an existing object is never replaced
//     (ErrExists). S3 PUTs are atomic: nothing is visible before the
//     upload completes.
//   - Lock: with Lock set, every object is written with an Object Lock
//     retention (governance or compliance) until now + Days: the
//     credentials the master holds cannot delete or overwrite it before
//     then, whatever they are allowed to do otherwise.
//   - Load: a HEAD for the size (S3 answers a range past the end with
//     fewer bytes, not an error), then a ranged GET whose byte count is
//     checked.
//   - Remove: S3 deletes a missing key without complaint; a HEAD first
//     keeps ErrNotFound. On a versioned bucket (every bucket with Object
//     Lock is one) a plain delete would only add a delete marker and
//     keep paying for the data, so Remove deletes each version of the key
//     by its version id; a version under retention is refused by the
//     server, and Remove reports that as ErrLocked (the other versions
//     are still deleted). That needs s3:DeleteObjectVersion and
//     s3:ListBucketVersions: the prune's credentials, not the agent's.
//   - Clock: S3 refuses a request signed more than 15 minutes off its
//     own clock. A refused HEAD has no body, so the error reads "Access
//     Denied" like wrong credentials; the backend keeps the server's Date
//     header of each answer and, when a refusal comes with the clocks that
//     far apart, says so (the error names both times), so an operator
//     fixes NTP instead of rotating keys.
package s3

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/kubekeep/kubekeep/rsyncish/backend"
)

// ErrLocked: the object is still under its Object Lock retention (or a
// legal hold); it cannot be deleted before then, by anyone.
var ErrLocked = errors.New("object is under Object Lock retention")

// LockMode is an S3 Object Lock retention mode.
type LockMode string

// Object Lock modes.
const (
	Governance LockMode = "GOVERNANCE" // removable early only with s3:BypassGovernanceRetention
	Compliance LockMode = "COMPLIANCE" // removable by nobody before it ends
)

// Lock is the retention every saved object gets.
type Lock struct {
	Mode LockMode
	Days int
}

// Config says where the tier is and how to reach it. Credentials come
// from the caller (the environment or the instance), never from a file
// kubekeep writes, and are never logged: Location leaves them out.
type Config struct {
	Endpoint string // host[:port]
	Secure   bool   // HTTPS
	Region   string
	Bucket   string
	Prefix   string // key prefix inside the bucket, without leading or trailing '/'
	// Creds signs requests (credentials.NewStaticV4, NewEnvAWS, NewIAM...).
	Creds *credentials.Credentials
	// Lock, when set, puts an Object Lock retention on every object; the
	// bucket must have Object Lock enabled (Open checks).
	Lock *Lock
	// PartSize is the multipart part size (0: 16 MiB).
	PartSize uint64
	// Transport overrides the HTTP transport (tests, bandwidth limits).
	Transport http.RoundTripper
	// Now is the clock retention dates are computed from (nil: time.Now).
	Now func() time.Time
}

// Backend is an S3 tier.
type Backend struct {
	cfg   Config
	cli   *minio.Client
	clock *clockWatch
}

var _ backend.Backend = (*Backend)(nil)

// Open connects to the tier and checks the bucket exists (and, with Lock
// set, that it has Object Lock enabled).
func Open(ctx context.Context, cfg Config) (*Backend, error) {
	if cfg.Endpoint == "" || cfg.Bucket == "" || cfg.Creds == nil {
		return nil, errors.New("s3: endpoint, bucket and credentials are required")
	}
	cfg.Prefix = strings.Trim(cfg.Prefix, "/")
	if cfg.Prefix != "" {
		if err := backend.ValidName(cfg.Prefix); err != nil {
			return nil, fmt.Errorf("s3: prefix: %w", err)
		}
	}
	if cfg.PartSize == 0 {
		cfg.PartSize = 16 << 20
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if l := cfg.Lock; l != nil && (l.Days <= 0 || l.Mode != Governance && l.Mode != Compliance) {
		return nil, fmt.Errorf("s3: lock %+v: want mode GOVERNANCE or COMPLIANCE and days > 0", *l)
	}
	clock := &clockWatch{next: cfg.Transport, now: cfg.Now}
	if clock.next == nil {
		var err error
		if clock.next, err = minio.DefaultTransport(cfg.Secure); err != nil {
			return nil, fmt.Errorf("s3 %s: %w", cfg.Endpoint, err)
		}
	}
	cli, err := minio.New(cfg.Endpoint, &minio.Options{Creds: cfg.Creds, Secure: cfg.Secure, Region: cfg.Region, Transport: clock})
	if err != nil {
		return nil, fmt.Errorf("s3 %s: %w", cfg.Endpoint, err)
	}
	b := &Backend{cfg: cfg, cli: cli, clock: clock}
	ok, err := cli.BucketExists(ctx, cfg.Bucket)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", b.Location(), b.clock.explain(err))
	}
	if !ok {
		return nil, fmt.Errorf("%s: bucket %q does not exist", b.Location(), cfg.Bucket)
	}
	if cfg.Lock != nil {
		enabled, _, _, _, err := cli.GetObjectLockConfig(ctx, cfg.Bucket)
		if err != nil || enabled != "Enabled" {
			return nil, fmt.Errorf("%s: lock days %d asked for, but the bucket has no Object Lock enabled (%v)", b.Location(), cfg.Lock.Days, err)
		}
	}
	return b, nil
}

// Location implements backend.Backend: s3://endpoint/bucket/prefix.
func (b *Backend) Location() string {
	return "s3://" + path.Join(b.cfg.Endpoint, b.cfg.Bucket, b.cfg.Prefix)
}

// Close implements backend.Backend.
func (b *Backend) Close() error { return nil }

func (b *Backend) key(h backend.Handle) (string, error) {
	if err := h.Valid(); err != nil {
		return "", err
	}
	return path.Join(b.cfg.Prefix, string(h.Type), h.Name), nil
}

func (b *Backend) typePrefix(t backend.FileType) string {
	return path.Join(b.cfg.Prefix, string(t)) + "/"
}

// Save implements backend.Backend.
func (b *Backend) Save(ctx context.Context, h backend.Handle, rd backend.RewindReader) error {
	key, err := b.key(h)
	if err != nil {
		return err
	}
	if _, err := b.Stat(ctx, h); err == nil {
		return fmt.Errorf("save %s: %w", b.where(h), backend.ErrExists)
	} else if !errors.Is(err, backend.ErrNotFound) {
		return err
	}
	if err := rd.Rewind(); err != nil {
		return fmt.Errorf("save %s: %w", b.where(h), err)
	}
	opts := minio.PutObjectOptions{ContentType: "application/octet-stream", SendContentMd5: true, PartSize: b.cfg.PartSize}
	opts.SetMatchETagExcept("*")
	if l := b.cfg.Lock; l != nil {
		opts.Mode = minio.RetentionMode(l.Mode)
		opts.RetainUntilDate = b.cfg.Now().Add(time.Duration(l.Days) * 24 * time.Hour).UTC()
	}
	info, err := b.cli.PutObject(ctx, b.cfg.Bucket, key, rd, rd.Length(), opts)
	if err != nil {
		if code := minio.ToErrorResponse(err).Code; code == "PreconditionFailed" || code == "ConditionalRequestConflict" {
			return fmt.Errorf("save %s: %w", b.where(h), backend.ErrExists)
		}
		return fmt.Errorf("save %s: %w", b.where(h), err)
	}
	if info.Size != rd.Length() {
		return fmt.Errorf("save %s: stored %d bytes, %d announced", b.where(h), info.Size, rd.Length())
	}
	return nil
}

// Load implements backend.Backend.
func (b *Backend) Load(ctx context.Context, h backend.Handle, length int, offset int64, fn func(io.Reader) error) error {
	key, err := b.key(h)
	if err != nil {
		return err
	}
	if length < 0 || offset < 0 {
		return fmt.Errorf("load %s: negative range %d+%d", b.where(h), offset, length)
	}
	fi, err := b.Stat(ctx, h)
	if err != nil {
		return err
	}
	if offset > fi.Size || length > 0 && offset+int64(length) > fi.Size {
		return fmt.Errorf("load %s: range %d+%d of %d bytes: %w", b.where(h), offset, length, fi.Size, backend.ErrShortRead)
	}
	n := fi.Size - offset
	if length > 0 {
		n = int64(length)
	}
	if n == 0 {
		return fn(strings.NewReader(""))
	}
	var opts minio.GetObjectOptions
	if err := opts.SetRange(offset, offset+n-1); err != nil {
		return fmt.Errorf("load %s: %w", b.where(h), err)
	}
	obj, err := b.cli.GetObject(ctx, b.cfg.Bucket, key, opts)
	if err != nil {
		return b.mapErr("load", h, err)
	}
	defer obj.Close()
	cr := &exactReader{r: obj, left: n}
	if err := fn(cr); err != nil {
		return b.mapErr("load", h, err)
	}
	return nil
}

// exactReader fails rather than end early: a connection cut mid-body is
// an error, never a short object.
type exactReader struct {
	r    io.Reader
	left int64
}

func (e *exactReader) Read(p []byte) (int, error) {
	if e.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > e.left {
		p = p[:e.left]
	}
	n, err := e.r.Read(p)
	e.left -= int64(n)
	if err == io.EOF && e.left > 0 {
		err = fmt.Errorf("%w: %d bytes missing", io.ErrUnexpectedEOF, e.left)
	}
	if err == io.EOF || e.left == 0 {
		return n, io.EOF
	}
	return n, err
}

// Stat implements backend.Backend.
func (b *Backend) Stat(ctx context.Context, h backend.Handle) (backend.FileInfo, error) {
	key, err := b.key(h)
	if err != nil {
		return backend.FileInfo{}, err
	}
	oi, err := b.cli.StatObject(ctx, b.cfg.Bucket, key, minio.StatObjectOptions{})
	if err != nil {
		return backend.FileInfo{}, b.mapErr("stat", h, err)
	}
	return backend.FileInfo{Name: h.Name, Size: oi.Size, ModTime: oi.LastModified}, nil
}

// List implements backend.Backend.
func (b *Backend) List(ctx context.Context, t backend.FileType, fn func(backend.FileInfo) error) error {
	if err := (backend.Handle{Type: t, Name: "x"}).Valid(); err != nil {
		return err
	}
	prefix := b.typePrefix(t)
	lctx, cancel := context.WithCancel(ctx)
	defer cancel() // stops minio-go's listing goroutine on an early return
	for oi := range b.cli.ListObjects(lctx, b.cfg.Bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if oi.Err != nil {
			return fmt.Errorf("list %s/%s: %w", b.Location(), t, oi.Err)
		}
		name := strings.TrimPrefix(oi.Key, prefix)
		if backend.ValidName(name) != nil {
			continue
		}
		if err := fn(backend.FileInfo{Name: name, Size: oi.Size, ModTime: oi.LastModified}); err != nil {
			return err
		}
	}
	return nil
}

// Remove implements backend.Backend: every version of the object goes
// (see the package doc); a version still under retention stays, and
// Remove returns ErrLocked.
func (b *Backend) Remove(ctx context.Context, h backend.Handle) error {
	key, err := b.key(h)
	if err != nil {
		return err
	}
	if _, err := b.Stat(ctx, h); err != nil {
		return err
	}
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var versions []string
	for oi := range b.cli.ListObjects(lctx, b.cfg.Bucket, minio.ListObjectsOptions{Prefix: key, WithVersions: true}) {
		if oi.Err != nil {
			if minio.ToErrorResponse(oi.Err).Code == "NotImplemented" {
				break // no versioning on this server: the plain delete below
			}
			return b.mapErr("remove", h, oi.Err)
		}
		if oi.Key == key {
			versions = append(versions, oi.VersionID)
		}
	}
	if len(versions) == 0 {
		versions = []string{""}
	}
	var locked error
	for _, v := range versions {
		if v == "null" {
			v = ""
		}
		err := b.cli.RemoveObject(ctx, b.cfg.Bucket, key, minio.RemoveObjectOptions{VersionID: v})
		if err == nil {
			continue
		}
		if lockRefusal(err) {
			locked = fmt.Errorf("remove %s (version %s): %w", b.where(h), v, ErrLocked)
			continue
		}
		return b.mapErr("remove", h, err)
	}
	return locked
}

// lockRefusal says whether a delete was refused for a retention or a legal
// hold (AWS answers AccessDenied; MinIO and versitygw name the lock).
func lockRefusal(err error) bool {
	e := minio.ToErrorResponse(err)
	msg := strings.ToLower(e.Message)
	return e.Code == "AccessDenied" && (strings.Contains(msg, "lock") || strings.Contains(msg, "worm") || strings.Contains(msg, "retention") || strings.Contains(msg, "protected")) ||
		e.Code == "ObjectLocked" || e.Code == "InvalidRequest" && strings.Contains(msg, "lock")
}

func (b *Backend) where(h backend.Handle) string { return b.Location() + "/" + h.String() }

func (b *Backend) mapErr(op string, h backend.Handle, err error) error {
	switch minio.ToErrorResponse(err).Code {
	case "NoSuchKey", "NotFound":
		return fmt.Errorf("%s %s: %w", op, b.where(h), backend.ErrNotFound)
	}
	return fmt.Errorf("%s %s: %w", op, b.where(h), b.clock.explain(err))
}

// maxSkew is how far S3 lets a request's signing time be from its clock.
const maxSkew = 15 * time.Minute

// clockWatch is the HTTP transport under minio-go that keeps the last
// answer's Date header, to tell a clock off by more than S3 allows from
// other refusals.
type clockWatch struct {
	next http.RoundTripper
	now  func() time.Time

	mu            sync.Mutex
	server, local time.Time // the last answer's Date, and when it came
}

func (c *clockWatch) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := c.next.RoundTrip(r)
	if err == nil {
		if d, perr := http.ParseTime(resp.Header.Get("Date")); perr == nil {
			c.mu.Lock()
			c.server, c.local = d, c.now()
			c.mu.Unlock()
		}
	}
	return resp, err
}

// explain adds the clock difference to a refusal that it explains.
func (c *clockWatch) explain(err error) error {
	if c == nil || err == nil {
		return err
	}
	code := minio.ToErrorResponse(err).Code
	c.mu.Lock()
	server, local := c.server, c.local
	c.mu.Unlock()
	skew := local.Sub(server)
	if server.IsZero() || (skew < maxSkew && -skew < maxSkew && code != "RequestTimeTooSkewed") {
		return err
	}
	if code != "RequestTimeTooSkewed" && code != "AccessDenied" && code != "SignatureDoesNotMatch" {
		return err
	}
	return fmt.Errorf("this host's clock (%s) is %s off the server's (%s); S3 refuses requests signed more than %s off its clock: fix this host's time (NTP, chrony): %w",
		local.UTC().Format(time.RFC3339), skew.Abs().Round(time.Second), server.UTC().Format(time.RFC3339), maxSkew, err)
}
