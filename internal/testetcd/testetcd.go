// Package testetcd runs a real etcd (go.etcd.io/etcd/server/v3/embed)
// in-process on a sandbox root, configured as the sandbox's kubeadm
// etcd.yaml says: client-cert TLS with the sandbox's etcd PKI, the
// sandbox's ports and data dir, the node name as member name. Tests and
// `make demo` use it so etcdsnap is exercised against etcd, not a mock.
package testetcd

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/kubekeep/kubekeep/internal/sandbox"
)

// Options tune the server; zero values are fine for tests.
type Options struct {
	// QuotaBackendBytes raises etcd's 2 GiB default db quota (benchmarks).
	QuotaBackendBytes int64
	// ProgressNotifyInterval makes etcd send watch progress notifications
	// this often (default: etcd's 10 minutes).
	ProgressNotifyInterval time.Duration
	// Logger receives etcd's logs; default: errors only, to stderr.
	Logger *zap.Logger
}

// Server is a running (or stopped) embedded etcd.
type Server struct {
	root *sandbox.Root
	opts Options

	mu     sync.Mutex
	etcd   *embed.Etcd
	client *clientv3.Client
}

// Start starts etcd on the sandbox and waits until it serves.
func Start(ctx context.Context, r *sandbox.Root) (*Server, error) {
	return StartWith(ctx, r, Options{})
}

// StartWith is Start with options.
func StartWith(ctx context.Context, r *sandbox.Root, opts Options) (*Server, error) {
	s := &Server{root: r, opts: opts}
	if err := s.start(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// StartT starts etcd for a test and stops it when the test ends.
func StartT(t testing.TB, r *sandbox.Root) *Server {
	return StartWithT(t, r, Options{})
}

// StartWithT is StartT with options.
func StartWithT(t testing.TB, r *sandbox.Root, opts Options) *Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := StartWith(ctx, r, opts)
	if err != nil {
		t.Fatalf("start etcd: %v", err)
	}
	t.Cleanup(s.Stop)
	return s
}

// SandboxT builds a sandbox root in a temp dir with free etcd ports, the
// usual first step of a test that needs etcd.
func SandboxT(t testing.TB) *sandbox.Root {
	t.Helper()
	cp, err := sandbox.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	pp, err := sandbox.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	r, err := sandbox.Build(t.TempDir(), sandbox.Options{EtcdClientPort: cp, EtcdPeerPort: pp})
	if err != nil {
		t.Fatalf("build sandbox: %v", err)
	}
	return r
}

func quietLogger() *zap.Logger {
	cfg := zap.NewProductionConfig()
	cfg.Level = zap.NewAtomicLevelAt(zapcore.ErrorLevel)
	cfg.Sampling = nil
	lg, err := cfg.Build()
	if err != nil {
		return zap.NewNop()
	}
	return lg.WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core { return shutdownFilter{c} }))
}

// shutdownFilter drops the error etcd logs for every listener it closes on
// a normal stop, which would otherwise bury real errors in test output.
type shutdownFilter struct{ zapcore.Core }

func (f shutdownFilter) With(fields []zapcore.Field) zapcore.Core {
	return shutdownFilter{f.Core.With(fields)}
}

func (f shutdownFilter) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if f.Enabled(e.Level) {
		return ce.AddCore(e, f)
	}
	return ce
}

func (f shutdownFilter) Write(e zapcore.Entry, fields []zapcore.Field) error {
	for _, fl := range fields {
		if err, ok := fl.Interface.(error); ok && (strings.Contains(err.Error(), "use of closed network connection") || err.Error() == "http: Server closed") {
			return nil
		}
	}
	return f.Core.Write(e, fields)
}

func (s *Server) config() (*embed.Config, error) {
	r := s.root
	cfg := embed.NewConfig()
	cfg.Name = r.Opts.NodeName
	cfg.Dir = r.Path(r.EtcdDataDir)
	clientURL, err := url.Parse("https://127.0.0.1:" + strconv.Itoa(r.Opts.EtcdClientPort))
	if err != nil {
		return nil, err
	}
	// Peers listen on loopback even when the sandbox advertises another
	// address: nothing else joins this one-member cluster and the
	// advertise address may not exist on the test machine.
	peerURL, err := url.Parse("https://127.0.0.1:" + strconv.Itoa(r.Opts.EtcdPeerPort))
	if err != nil {
		return nil, err
	}
	cfg.ListenClientUrls = []url.URL{*clientURL}
	cfg.AdvertiseClientUrls = []url.URL{*clientURL}
	cfg.ListenPeerUrls = []url.URL{*peerURL}
	cfg.AdvertisePeerUrls = []url.URL{*peerURL}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.ListenMetricsUrls = nil
	cfg.ClientTLSInfo = transport.TLSInfo{
		CertFile:       r.Path(r.EtcdServerCert),
		KeyFile:        r.Path(r.EtcdServerKey),
		TrustedCAFile:  r.Path(r.EtcdCAFile),
		ClientCertAuth: true,
	}
	cfg.PeerTLSInfo = transport.TLSInfo{
		CertFile:       r.Path(r.EtcdPeerCert),
		KeyFile:        r.Path(r.EtcdPeerKey),
		TrustedCAFile:  r.Path(r.EtcdCAFile),
		ClientCertAuth: true,
	}
	cfg.LogLevel = "error"
	lg := s.opts.Logger
	if lg == nil {
		lg = quietLogger()
	}
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(lg)
	if s.opts.QuotaBackendBytes > 0 {
		cfg.QuotaBackendBytes = s.opts.QuotaBackendBytes
	}
	if s.opts.ProgressNotifyInterval > 0 {
		cfg.WatchProgressNotifyInterval = s.opts.ProgressNotifyInterval
	}
	return cfg, nil
}

func (s *Server) start(ctx context.Context) error {
	cfg, err := s.config()
	if err != nil {
		return fmt.Errorf("testetcd: config: %w", err)
	}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("testetcd: start etcd on %s: %w", cfg.Dir, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return fmt.Errorf("testetcd: etcd failed while starting: %w", err)
	case <-ctx.Done():
		e.Close()
		return fmt.Errorf("testetcd: etcd not ready: %w", ctx.Err())
	}
	s.mu.Lock()
	s.etcd = e
	s.mu.Unlock()
	return nil
}

// Endpoint is the client URL, e.g. https://127.0.0.1:34567.
func (s *Server) Endpoint() string {
	return "https://127.0.0.1:" + strconv.Itoa(s.root.Opts.EtcdClientPort)
}

// Root is the sandbox the server runs on.
func (s *Server) Root() *sandbox.Root { return s.root }

// DataDir is the real path of the data dir.
func (s *Server) DataDir() string { return s.root.Path(s.root.EtcdDataDir) }

// ClientTLS is the healthcheck-client TLS config, the identity kubekeep uses.
func (s *Server) ClientTLS() (*tls.Config, error) { return clientTLS(s.root) }

// Client returns a shared client authenticated with the sandbox's client
// certificate; it is closed by Stop.
func (s *Server) Client() (*clientv3.Client, error) {
	return sharedClient(&s.mu, &s.client, s.root, s.Endpoint())
}

func clientTLS(r *sandbox.Root) (*tls.Config, error) {
	return transport.TLSInfo{
		CertFile:      r.Path(r.EtcdClientCert),
		KeyFile:       r.Path(r.EtcdClientKey),
		TrustedCAFile: r.Path(r.EtcdCAFile),
	}.ClientConfig()
}

// sharedClient returns *client, making it on first use (under mu).
func sharedClient(mu *sync.Mutex, client **clientv3.Client, r *sandbox.Root, endpoint string) (*clientv3.Client, error) {
	mu.Lock()
	defer mu.Unlock()
	if *client != nil {
		return *client, nil
	}
	tc, err := clientTLS(r)
	if err != nil {
		return nil, fmt.Errorf("testetcd: client TLS: %w", err)
	}
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{endpoint},
		TLS:         tc,
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("testetcd: client: %w", err)
	}
	*client = c
	return c, nil
}

// ClientT is Client for tests.
func (s *Server) ClientT(t testing.TB) *clientv3.Client {
	t.Helper()
	c, err := s.Client()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Stop stops etcd and waits until it has released the data dir. Stopping
// a stopped server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	e, c := s.etcd, s.client
	s.etcd, s.client = nil, nil
	s.mu.Unlock()
	if c != nil {
		c.Close()
	}
	if e != nil {
		e.Close()
		<-e.Server.StopNotify()
	}
}

// Restart stops etcd and starts it again on the same data dir and ports.
func (s *Server) Restart(ctx context.Context) error {
	s.Stop()
	return s.start(ctx)
}

// Running reports whether Start or Restart succeeded and Stop has not run.
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.etcd != nil
}
