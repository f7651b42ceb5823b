// Package plainetcd starts a real embedded etcd on loopback over plain
// HTTP, for the objects package's tests and benchmark: those exercise the
// bbolt file etcd writes, not the transport (internal/testetcd covers TLS).
package plainetcd

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Etcd is a running embedded etcd and a client connected to it.
type Etcd struct {
	Dir    string
	Client *clientv3.Client
	server *embed.Etcd
}

// Options tune Start.
type Options struct {
	// QuotaBytes raises etcd's 2 GiB default backend quota (0 keeps it).
	QuotaBytes int64
	// Name and PeerURL must match what `etcdutl snapshot restore` was told
	// when starting on a restored data dir; empty picks a default name and
	// a free port.
	Name    string
	PeerURL *url.URL
}

// Name is the member name Start uses when Options.Name is empty.
const Name = "objects-test"

// FreeURL is an http URL on a loopback port that was free a moment ago.
func FreeURL() (*url.URL, error) { return freeURL() }

// Start runs etcd with its data dir under dir. fsync is off: these runs
// never survive a crash, and it keeps the machine's disk free for others.
func Start(dir string, opts Options) (*Etcd, error) {
	cfg := embed.NewConfig()
	cfg.Name = Name
	if opts.Name != "" {
		cfg.Name = opts.Name
	}
	cfg.Dir = dir
	// etcd's own logs would drown test output; failures surface as errors.
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cfg.UnsafeNoFsync = true
	if opts.QuotaBytes > 0 {
		cfg.QuotaBackendBytes = opts.QuotaBytes
	}
	cu, err := freeURL()
	if err != nil {
		return nil, err
	}
	pu := opts.PeerURL
	if pu == nil {
		if pu, err = freeURL(); err != nil {
			return nil, err
		}
	}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(60 * time.Second):
		e.Close()
		return nil, fmt.Errorf("embedded etcd not ready after 60s")
	}
	c, err := clientv3.New(clientv3.Config{
		Endpoints:          []string{cu.String()},
		DialTimeout:        10 * time.Second,
		MaxCallRecvMsgSize: 64 << 20,
		Logger:             zap.NewNop(),
	})
	if err != nil {
		e.Close()
		return nil, fmt.Errorf("connect to embedded etcd: %w", err)
	}
	return &Etcd{Dir: dir, Client: c, server: e}, nil
}

// Endpoint is the client URL.
func (e *Etcd) Endpoint() string { return e.Client.Endpoints()[0] }

// Stop closes the client and the server.
func (e *Etcd) Stop() {
	_ = e.Client.Close()
	e.server.Close()
}

// SnapshotTo writes a Maintenance.Snapshot stream (bbolt image plus sha256
// trailer, as etcdctl snapshot save gets it) to path.
func (e *Etcd) SnapshotTo(ctx context.Context, path string) (int64, error) {
	rc, err := e.Client.Snapshot(ctx)
	if err != nil {
		return 0, fmt.Errorf("snapshot: %w", err)
	}
	defer rc.Close()
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(f, rc)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return n, fmt.Errorf("snapshot to %s: %w", path, err)
	}
	return n, nil
}

func freeURL() (*url.URL, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("pick a loopback port: %w", err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return &url.URL{Scheme: "http", Host: addr}, nil
}
