// Package oss is a backend.Backend on Alibaba Cloud OSS through its
// native API (alibabacloud-oss-go-sdk-v2, V4 signatures): the off-site
// tier for oss:// URLs. Objects live under <prefix>/<type>/<name> in one
// bucket. OSS's S3-compatible endpoint would do for plain objects (tiers/s3
// talks to it), but it has no Object Lock; what makes an OSS tier
// immutable is the bucket's WORM retention policy, and that, RAM-role
// credentials from the instance metadata and the internal endpoint are
// native-API matters.
//
// Where it connects: Endpoint, by default the internal endpoint
// oss-<region>-internal.aliyuncs.com (what an ECS master in the bucket's
// region should use: no Internet traffic, no traffic fee); a master
// elsewhere sets the public oss-<region>.aliyuncs.com. Credentials: a
// static AccessKey pair from ALIBABA_CLOUD_ACCESS_KEY_ID /
// ALIBABA_CLOUD_ACCESS_KEY_SECRET (EnvCredentials), or the STS
// credentials of the instance's RAM role from the metadata service
// (RAMRoleCredentials), refreshed before they expire; DefaultCredentials
// picks the first that is there. Neither is ever logged or put in an
// error: Location leaves them out, and OSS's answers are reduced to
// status, code, message and request id.
//
// Immutability (LockDays > 0): Open reads the bucket's WORM policy
// (GetBucketWorm) and refuses, naming the tier, a bucket without one, one
// still InProgress (an unlocked policy can be removed, and OSS drops it
// after 24 hours unless locked) and one whose RetentionPeriodInDays is
// shorter than LockDays. It never creates, locks or extends a policy:
// that is the bucket owner's decision, made once with
// InitiateBucketWorm + CompleteBucketWorm (ossutil worm init / complete),
// and irreversible. While the policy runs OSS refuses to delete or
// overwrite any object younger than the retention (409 FileImmutable),
// whoever asks — the master's credentials included; Remove reports that
// as an error naming the object. Retention is per bucket, counted from
// each object's last modification.
//
// How it keeps backend's guarantees on OSS:
//   - Save: objects up to PartSize go up in one PutObject, read into
//     memory first so the exact length is known (a short or long reader
//     is an error before anything is sent) and the Content-MD5 is sent
//     (OSS refuses a body changed on the way), with the SDK's CRC64 check
//     of OSS's x-oss-hash-crc64ecma on top. Larger ones go up as a
//     multipart upload of PartSize parts (each with its Content-MD5, read
//     one at a time: memory stays at one part), completed only when every
//     byte announced was read, its CRC64 compared with the whole
//     object's, and aborted on any failure or cancellation, so no part
//     lingers. x-oss-forbid-overwrite: true on the PUT, the initiation and
//     the completion makes OSS refuse an existing name (409
//     FileAlreadyExists → ErrExists), atomically, even between two savers
//     racing. OSS ignores that header on a versioned bucket, so there a
//     HEAD goes first (racy, but a versioned bucket keeps the older
//     version). A retried PUT that finds the name taken by its own bytes
//     (same size and CRC64: the first attempt landed, its answer was
//     lost) is a success. Nothing is visible before the PUT or the
//     completion returns.
//   - Load: a GetObject with Range and x-oss-range-behavior: standard
//     (without it OSS answers a range it cannot satisfy with the whole
//     object); a range past the end (416, or fewer bytes than asked) is
//     ErrShortRead, and the byte count is checked, so a connection cut
//     mid-body is an error, never a short object. A whole-object read
//     also checks the CRC64.
//   - Stat: HeadObject. Missing is ErrNotFound.
//   - List: ListObjectsV2 under <prefix>/<type>/, page after page.
//   - Remove: OSS deletes a missing key without complaint; a HEAD first
//     keeps ErrNotFound.
package oss

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"strings"

	alioss "github.com/aliyun/alibabacloud-oss-go-sdk-v2/oss"
	"github.com/aliyun/alibabacloud-oss-go-sdk-v2/oss/credentials"

	"github.com/kubekeep/kubekeep/rsyncish/backend"
)

// ErrLocked: the bucket's WORM retention policy still protects the object
// (409 FileImmutable); nobody can delete or overwrite it before then.
var ErrLocked = errors.New("object is under the bucket's WORM retention")

// MinPartSize is the smallest multipart part OSS accepts (but for the
// last).
const MinPartSize = 100 << 10

// DefaultPartSize is the part size when Config.PartSize is 0.
const DefaultPartSize = 16 << 20

// InternalEndpoint is the OSS endpoint of region inside Alibaba Cloud's
// network (from an ECS instance in the same region).
func InternalEndpoint(region string) string {
	return "https://oss-" + region + "-internal.aliyuncs.com"
}

// Config says where the tier is and how to reach it.
type Config struct {
	// Endpoint is a URL (https://HOST[:PORT]) or a host (HTTPS); empty:
	// InternalEndpoint(Region).
	Endpoint string
	// Region is the bucket's region (cn-hangzhou...): V4 signatures name it.
	Region string
	Bucket string
	// Prefix is the key prefix inside the bucket, without leading or
	// trailing '/'.
	Prefix string
	// Creds signs requests: EnvCredentials, RAMRoleCredentials,
	// DefaultCredentials, StaticCredentials.
	Creds credentials.CredentialsProvider
	// LockDays > 0 makes Open require a Locked WORM retention policy of at
	// least that many days on the bucket.
	LockDays int
	// PartSize is the multipart part size and the largest object sent in
	// one PUT (0: DefaultPartSize; at least MinPartSize).
	PartSize int64
	// HTTPClient overrides the SDK's HTTP client (tests, bandwidth limits).
	HTTPClient *http.Client
	// RetryMaxAttempts is how often the SDK tries a request that failed
	// in a retryable way (0: the SDK's default, 3).
	RetryMaxAttempts int
}

// Backend is an OSS tier.
type Backend struct {
	cfg       Config
	cli       *alioss.Client
	host      string // the endpoint's host, for Location
	versioned bool
}

var _ backend.Backend = (*Backend)(nil)

// Open connects to the tier, checks the credentials and that the bucket
// exists (GetBucketVersioning, which also says whether
// x-oss-forbid-overwrite takes effect), and with LockDays > 0 that the
// bucket's WORM policy is Locked with a long enough retention.
func Open(ctx context.Context, cfg Config) (*Backend, error) {
	if cfg.Region == "" || cfg.Bucket == "" || cfg.Creds == nil {
		return nil, errors.New("oss: region, bucket and credentials are required")
	}
	cfg.Prefix = strings.Trim(cfg.Prefix, "/")
	if cfg.Prefix != "" {
		if err := backend.ValidName(cfg.Prefix); err != nil {
			return nil, fmt.Errorf("oss://%s: prefix: %w", cfg.Bucket, err)
		}
	}
	if cfg.Endpoint == "" {
		cfg.Endpoint = InternalEndpoint(cfg.Region)
	}
	if !strings.Contains(cfg.Endpoint, "://") {
		cfg.Endpoint = "https://" + cfg.Endpoint
	}
	u, err := url.Parse(cfg.Endpoint)
	if err != nil || u.Host == "" || u.Scheme != "http" && u.Scheme != "https" || u.Path != "" && u.Path != "/" {
		return nil, fmt.Errorf("oss://%s: endpoint %q: want https://HOST[:PORT]", cfg.Bucket, cfg.Endpoint)
	}
	if cfg.PartSize == 0 {
		cfg.PartSize = DefaultPartSize
	}
	if cfg.PartSize < MinPartSize || cfg.PartSize > 5<<30 {
		return nil, fmt.Errorf("oss://%s: part size %d: want %d bytes to 5 GiB", cfg.Bucket, cfg.PartSize, MinPartSize)
	}
	if cfg.LockDays < 0 {
		return nil, fmt.Errorf("oss://%s: lock days %d < 0", cfg.Bucket, cfg.LockDays)
	}
	// NewConfig, not LoadDefaultConfig: OSS_SDK_LOG_LEVEL must not turn on
	// the SDK's request dumps (they carry the STS token).
	sc := alioss.NewConfig().
		WithRegion(cfg.Region).
		WithEndpoint(cfg.Endpoint).
		WithCredentialsProvider(cfg.Creds).
		WithSignatureVersion(alioss.SignatureVersionV4)
	if cfg.HTTPClient != nil {
		sc = sc.WithHttpClient(cfg.HTTPClient)
	}
	if cfg.RetryMaxAttempts > 0 {
		sc = sc.WithRetryMaxAttempts(cfg.RetryMaxAttempts)
	}
	b := &Backend{cfg: cfg, cli: alioss.NewClient(sc), host: u.Host}
	vr, err := b.cli.GetBucketVersioning(ctx, &alioss.GetBucketVersioningRequest{Bucket: &cfg.Bucket})
	if err != nil {
		return nil, b.openErr(err)
	}
	if vr.VersionStatus != nil && *vr.VersionStatus != "" {
		b.versioned = true
	}
	if cfg.LockDays > 0 {
		if err := b.checkWorm(ctx); err != nil {
			return nil, err
		}
	}
	return b, nil
}

func (b *Backend) openErr(err error) error {
	var se *alioss.ServiceError
	if errors.As(err, &se) {
		switch se.Code {
		case "NoSuchBucket":
			return fmt.Errorf("%s: bucket %q does not exist in %s (%s)", b.Location(), b.cfg.Bucket, b.cfg.Region, summary(se))
		case "SignatureDoesNotMatch", "InvalidAccessKeyId", "InvalidSecurityToken", "SecurityTokenExpired":
			return fmt.Errorf("%s: OSS refused the credentials (check %s / %s or the instance's RAM role): %s",
				b.Location(), EnvAccessKeyID, EnvAccessKeySecret, summary(se))
		case "RequestTimeTooSkewed":
			return fmt.Errorf("%s: this machine's clock is more than 15 minutes off OSS's: %s", b.Location(), summary(se))
		}
	}
	return b.wrap("open", b.Location(), err)
}

// checkWorm refuses a bucket whose retention policy would not keep
// objects for LockDays.
func (b *Backend) checkWorm(ctx context.Context) error {
	wr, err := b.cli.GetBucketWorm(ctx, &alioss.GetBucketWormRequest{Bucket: &b.cfg.Bucket})
	var se *alioss.ServiceError
	if errors.As(err, &se) && se.Code == "NoSuchWORMConfiguration" {
		return fmt.Errorf("%s: lock days %d asked for, but bucket %q has no WORM retention policy; its owner creates and locks one "+
			"(InitiateBucketWorm with RetentionPeriodInDays >= %d, then CompleteBucketWorm; kubekeep never creates or changes it)",
			b.Location(), b.cfg.LockDays, b.cfg.Bucket, b.cfg.LockDays)
	}
	if err != nil {
		return b.wrap("get WORM policy of", b.Location(), err)
	}
	w := wr.WormConfiguration
	if w == nil {
		return fmt.Errorf("%s: lock days %d asked for, but OSS answered GetBucketWorm without a policy", b.Location(), b.cfg.LockDays)
	}
	id := alioss.ToString(w.WormId)
	if w.State != alioss.BucketWormStateLocked {
		return fmt.Errorf("%s: lock days %d asked for, but bucket %q's WORM policy %s is %s, not Locked "+
			"(an unlocked policy can be removed and expires 24 hours after it was created; lock it with CompleteBucketWorm)",
			b.Location(), b.cfg.LockDays, b.cfg.Bucket, id, w.State)
	}
	var days int32
	if w.RetentionPeriodInDays != nil {
		days = *w.RetentionPeriodInDays
	}
	if int(days) < b.cfg.LockDays {
		return fmt.Errorf("%s: lock days %d asked for, but bucket %q's locked WORM policy %s keeps objects only %d days "+
			"(extend it with ExtendBucketWorm, or lower lockDays)", b.Location(), b.cfg.LockDays, b.cfg.Bucket, id, days)
	}
	return nil
}

// Location implements backend.Backend: oss://endpoint-host/bucket/prefix.
func (b *Backend) Location() string {
	return "oss://" + path.Join(b.host, b.cfg.Bucket, b.cfg.Prefix)
}

// Close implements backend.Backend.
func (b *Backend) Close() error { return nil }

func (b *Backend) key(h backend.Handle) (string, error) {
	if err := h.Valid(); err != nil {
		return "", err
	}
	return path.Join(b.cfg.Prefix, string(h.Type), h.Name), nil
}

func (b *Backend) where(h backend.Handle) string { return b.Location() + "/" + h.String() }

// summary is what an error shows of OSS's answer: never a header or the
// request (the SDK's own message has the request URL; a presigned one
// would carry a signature).
func summary(se *alioss.ServiceError) string {
	s := fmt.Sprintf("OSS %d %s", se.StatusCode, se.Code)
	if se.Message != "" {
		s += ": " + strings.TrimSuffix(se.Message, ".")
	}
	if se.RequestID != "" {
		s += " (request " + se.RequestID + ")"
	}
	return s
}

func code(err error) string {
	var se *alioss.ServiceError
	if errors.As(err, &se) {
		return se.Code
	}
	return ""
}

func (b *Backend) wrap(op, where string, err error) error {
	var se *alioss.ServiceError
	if errors.As(err, &se) {
		switch {
		case se.Code == "NoSuchKey" || se.StatusCode == http.StatusNotFound && se.Code != "NoSuchBucket" && se.Code != "NoSuchUpload":
			return fmt.Errorf("%s %s: %w", op, where, backend.ErrNotFound)
		case se.Code == "FileAlreadyExists":
			return fmt.Errorf("%s %s: %w", op, where, backend.ErrExists)
		case se.Code == "FileImmutable":
			return fmt.Errorf("%s %s: refused by the bucket's WORM retention policy: %s: %w", op, where, summary(se), ErrLocked)
		}
		return fmt.Errorf("%s %s: %s", op, where, summary(se))
	}
	return fmt.Errorf("%s %s: %w", op, where, err)
}

// Stat implements backend.Backend.
func (b *Backend) Stat(ctx context.Context, h backend.Handle) (backend.FileInfo, error) {
	key, err := b.key(h)
	if err != nil {
		return backend.FileInfo{}, err
	}
	hr, err := b.cli.HeadObject(ctx, &alioss.HeadObjectRequest{Bucket: &b.cfg.Bucket, Key: &key})
	if err != nil {
		return backend.FileInfo{}, b.wrap("stat", b.where(h), err)
	}
	fi := backend.FileInfo{Name: h.Name, Size: hr.ContentLength}
	if hr.LastModified != nil {
		fi.ModTime = *hr.LastModified
	}
	return fi, nil
}

// List implements backend.Backend.
func (b *Backend) List(ctx context.Context, t backend.FileType, fn func(backend.FileInfo) error) error {
	if err := (backend.Handle{Type: t, Name: "x"}).Valid(); err != nil {
		return err
	}
	prefix := path.Join(b.cfg.Prefix, string(t)) + "/"
	p := b.cli.NewListObjectsV2Paginator(&alioss.ListObjectsV2Request{Bucket: &b.cfg.Bucket, Prefix: &prefix, MaxKeys: 1000})
	for p.HasNext() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return b.wrap("list", b.Location()+"/"+string(t), err)
		}
		for _, o := range page.Contents {
			name := strings.TrimPrefix(alioss.ToString(o.Key), prefix)
			if backend.ValidName(name) != nil {
				continue
			}
			fi := backend.FileInfo{Name: name, Size: o.Size}
			if o.LastModified != nil {
				fi.ModTime = *o.LastModified
			}
			if err := fn(fi); err != nil {
				return err
			}
		}
	}
	return nil
}

// Remove implements backend.Backend. Under a running WORM retention OSS
// refuses it (an error naming the object and the policy, wrapping
// ErrLocked).
func (b *Backend) Remove(ctx context.Context, h backend.Handle) error {
	key, err := b.key(h)
	if err != nil {
		return err
	}
	if _, err := b.Stat(ctx, h); err != nil {
		return err
	}
	if _, err := b.cli.DeleteObject(ctx, &alioss.DeleteObjectRequest{Bucket: &b.cfg.Bucket, Key: &key}); err != nil {
		return b.wrap("remove", b.where(h), err)
	}
	return nil
}
