// Package cloudsnap takes, lists, prunes and rolls back to sets of Alibaba
// Cloud ECS disk snapshots of the master's VM. It is the only package that
// talks to ECS (through github.com/aliyun/alibaba-cloud-sdk-go), and it
// knows nothing about schedules: the agent decides when; cloudsnap only
// waits (on an injected Clock) for ECS to finish what it asked.
//
// A "set" is one snapshot of each chosen disk taken together: a snapshot-
// consistent group when every disk is ESSD, otherwise one CreateSnapshot per
// disk sharing a set id. Every snapshot or group kubekeep makes is tagged
// managed-by=kubekeep plus set id, cluster, instance, kubekeep version id
// and etcd revision; listing and pruning only ever look at those.
//
// ECS allows SnapshotQuota manual snapshots per disk, whoever took them.
// A set is refused before any snapshot is taken when a disk is full (and
// ECS's own refusal, when something took snapshots since the count, is
// turned into the same error): QuotaError says how many of the disk's
// snapshots are kubekeep's, how many of those prune would delete, and what
// makes room otherwise, since prune never deletes snapshots it did not make.
package cloudsnap

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk"
	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/requests"
	"github.com/aliyun/alibaba-cloud-sdk-go/services/ecs"
)

// Tags kubekeep writes on every snapshot and group it creates.
const (
	TagManagedBy    = "managed-by"
	ManagedByValue  = "kubekeep"
	TagSet          = "kubekeep-set"
	TagCluster      = "kubekeep-cluster"
	TagInstance     = "kubekeep-instance"
	TagVersion      = "kubekeep-version"
	TagEtcdRevision = "kubekeep-etcd-revision"
	TagRetention    = "kubekeep-retention-days"
	TagPurpose      = "kubekeep-purpose"
)

// DefaultMetadataURL is the ECS instance metadata service.
const DefaultMetadataURL = "http://100.100.100.200"

// SnapshotQuota is how many manual snapshots ECS allows per disk.
const SnapshotQuota = 256

// Clock is the time cloudsnap waits on. Production uses RealClock; tests
// pass a clock whose Sleep moves fake time, shared with the fake ECS.
type Clock interface {
	Now() time.Time
	// Sleep waits d, or returns ctx's error if ctx ends first.
	Sleep(ctx context.Context, d time.Duration) error
}

// RealClock is the wall clock.
var RealClock Clock = realClock{}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Options configure a Client. Credentials are deliberately absent: they
// come from ALIBABA_CLOUD_ACCESS_KEY_ID / _SECRET / _SECURITY_TOKEN or the
// instance's RAM role, never from configuration or flags.
type Options struct {
	// Endpoint is the ECS API URL. Empty means the SDK's regional endpoint
	// over HTTPS; http:// is accepted for a local endpoint such as the fake.
	Endpoint string
	// Region and InstanceID default to what the metadata service says.
	Region     string
	InstanceID string
	// MetadataURL is the metadata service base (default DefaultMetadataURL).
	MetadataURL string
	// Disks limits sets to these disk ids; empty means every disk attached
	// to the instance (system and data).
	Disks []string
	// Cluster goes into the tags to tell clusters in one account apart.
	Cluster string
	// Mode is "agent" or "policy"; in agent mode a set is refused on disks
	// that also have an automatic snapshot policy (it would double them).
	Mode string
	// RetentionDays is set on each snapshot and used by Prune (default 7).
	RetentionDays int
	// WaitTimeout bounds each wait for ECS: a set to finish, an instance to
	// stop or start, a disk's earlier snapshot to finish (default 30m).
	WaitTimeout time.Duration
	// PollInterval is how often waits ask ECS (default 10s).
	PollInterval time.Duration
	// RequestTimeout bounds one HTTP exchange with ECS (default 30s).
	RequestTimeout time.Duration
	// Retry governs retries of throttled and unavailable calls.
	Retry  RetryPolicy
	Clock  Clock
	Logger *slog.Logger
}

// Client talks to ECS for one instance.
type Client struct {
	opts     Options
	ecs      *ecs.Client
	region   string
	instance string
	clock    Clock
	log      *slog.Logger
}

var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

// New resolves the region and instance (from Options, else the metadata
// service) and builds an SDK client with the credential chain.
func New(ctx context.Context, opts Options) (*Client, error) {
	if opts.MetadataURL == "" {
		opts.MetadataURL = DefaultMetadataURL
	}
	if opts.RetentionDays <= 0 {
		opts.RetentionDays = 7
	}
	if opts.WaitTimeout <= 0 {
		opts.WaitTimeout = 30 * time.Minute
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = 10 * time.Second
	}
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = 30 * time.Second
	}
	if opts.Mode == "" {
		opts.Mode = "agent"
	}
	opts.Retry = opts.Retry.withDefaults()
	if opts.Clock == nil {
		opts.Clock = RealClock
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	md := newMetadataClient(opts.MetadataURL)
	if opts.Region == "" || opts.InstanceID == "" {
		if opts.Region == "" {
			v, err := md.get(ctx, "region-id")
			if err != nil {
				return nil, fmt.Errorf("region not given and the metadata service could not tell it (pass --region): %w", err)
			}
			opts.Region = v
		}
		if opts.InstanceID == "" {
			v, err := md.get(ctx, "instance-id")
			if err != nil {
				return nil, fmt.Errorf("instance id not given and the metadata service could not tell it (pass --instance-id): %w", err)
			}
			opts.InstanceID = v
		}
	}
	if !idPattern.MatchString(opts.Region) {
		return nil, fmt.Errorf("region %q is not a valid region id", opts.Region)
	}
	if !idPattern.MatchString(opts.InstanceID) {
		return nil, fmt.Errorf("instance id %q is not a valid instance id", opts.InstanceID)
	}
	for _, d := range opts.Disks {
		if !idPattern.MatchString(d) {
			return nil, fmt.Errorf("disk id %q is not a valid disk id", d)
		}
	}

	cfg := sdk.NewConfig()
	// Our own retry loop handles throttling, 5xx and transport errors with
	// backoff on the injected clock; the SDK's would retry 5xx instantly.
	cfg.AutoRetry = false
	cfg.Scheme = "HTTPS"
	cfg.HttpTransport = http.DefaultTransport.(*http.Transport).Clone()
	var host string
	if opts.Endpoint != "" {
		u, err := url.Parse(opts.Endpoint)
		if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") || (u.Path != "" && u.Path != "/") {
			return nil, fmt.Errorf("endpoint %q must be http(s)://host[:port]", opts.Endpoint)
		}
		cfg.Scheme = strings.ToUpper(u.Scheme)
		host = u.Host
	}
	client, err := ecs.NewClientWithOptions(opts.Region, cfg, newCredentialChain(md))
	if err != nil {
		return nil, fmt.Errorf("building ECS client: %w", err)
	}
	client.SetReadTimeout(opts.RequestTimeout)
	client.SetConnectTimeout(10 * time.Second)
	if host != "" {
		client.Domain = host
		// The SDK applies HTTP(S)_PROXY itself, even to loopback hosts, and
		// a proxy cannot reach the operator's local endpoint.
		if isLoopback(host) {
			client.SetNoProxy(regexp.QuoteMeta(host))
		}
	}
	return &Client{opts: opts, ecs: client, region: opts.Region, instance: opts.InstanceID,
		clock: opts.Clock, log: opts.Logger}, nil
}

func isLoopback(hostport string) bool {
	h := hostport
	if hh, _, err := net.SplitHostPort(hostport); err == nil {
		h = hh
	}
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(strings.Trim(h, "[]"))
	return ip != nil && ip.IsLoopback()
}

// Region is the region the client works in.
func (c *Client) Region() string { return c.region }

// InstanceID is the instance the client works on.
func (c *Client) InstanceID() string { return c.instance }

// Disk is a disk attached to the instance.
type Disk struct {
	ID, Type, Category, Device string
	SizeGiB                    int
	// AutoSnapshotPolicyID is set when an automatic snapshot policy
	// already snapshots this disk.
	AutoSnapshotPolicyID string
}

// Disks lists the disks sets are made of: those attached to the instance,
// limited to Options.Disks when that is set. A configured disk that is not
// attached is an error, not silently skipped.
func (c *Client) Disks(ctx context.Context) ([]Disk, error) {
	return c.disks(ctx, c.opts.Disks)
}

func (c *Client) disks(ctx context.Context, only []string) ([]Disk, error) {
	var all []Disk
	token := ""
	for {
		var resp *ecs.DescribeDisksResponse
		err := c.do(ctx, "DescribeDisks", false, func() (err error) {
			req := ecs.CreateDescribeDisksRequest()
			req.InstanceId = c.instance
			req.MaxResults = "100"
			req.NextToken = token
			resp, err = c.ecs.DescribeDisks(req)
			return err
		})
		if err != nil {
			return nil, err
		}
		for _, d := range resp.Disks.Disk {
			all = append(all, Disk{ID: d.DiskId, Type: d.Type, Category: d.Category, Device: d.Device,
				SizeGiB: d.Size, AutoSnapshotPolicyID: d.AutoSnapshotPolicyId})
		}
		if token = resp.NextToken; token == "" {
			break
		}
	}
	if len(all) == 0 {
		return nil, fmt.Errorf("instance %s has no disks attached (or does not exist in region %s)", c.instance, c.region)
	}
	if len(only) == 0 {
		return all, nil
	}
	var out []Disk
	for _, id := range only {
		found := false
		for _, d := range all {
			if d.ID == id {
				out = append(out, d)
				found = true
			}
		}
		if !found {
			return nil, fmt.Errorf("disk %s is not attached to instance %s", id, c.instance)
		}
	}
	return out, nil
}

// Instance is the instance's current state.
type Instance struct {
	ID, Name, Status, ZoneID string
}

// Instance describes the client's instance.
func (c *Client) Instance(ctx context.Context) (*Instance, error) {
	var resp *ecs.DescribeInstancesResponse
	err := c.do(ctx, "DescribeInstances", false, func() (err error) {
		req := ecs.CreateDescribeInstancesRequest()
		req.InstanceIds = jsonArray([]string{c.instance})
		resp, err = c.ecs.DescribeInstances(req)
		return err
	})
	if err != nil {
		return nil, err
	}
	for _, in := range resp.Instances.Instance {
		if in.InstanceId == c.instance {
			return &Instance{ID: in.InstanceId, Name: in.InstanceName, Status: in.Status, ZoneID: in.ZoneId}, nil
		}
	}
	return nil, fmt.Errorf("instance %s not found in region %s", c.instance, c.region)
}

// jsonArray encodes the JSON-array-in-a-string parameters ECS takes
// (InstanceIds, SnapshotIds, diskIds).
func jsonArray(items []string) string {
	b, _ := json.Marshal(items)
	return string(b)
}

// ErrTimeout is wrapped by every error that says a wait ran out of time.
var ErrTimeout = errors.New("timed out waiting for ECS")

func requestsInt(n int) requests.Integer { return requests.NewInteger(n) }
