package etcdsnap

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/kubekeep/kubekeep/etcdsnap/snapread"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// DefaultDialTimeout applies when ClientConfig.DialTimeout is zero.
const DefaultDialTimeout = 5 * time.Second

// ClientConfig says how to reach etcd. File paths are real filesystem paths:
// the caller has already put the --root prefix in front of host paths.
type ClientConfig struct {
	// Endpoints such as "https://127.0.0.1:2379". A snapshot is taken from
	// the first endpoint that answers: a snapshot is one member's state.
	Endpoints []string
	// CAFile verifies the server; CertFile/KeyFile authenticate us. All
	// empty means plain http (only sensible for a test or a tunnel).
	CAFile, CertFile, KeyFile string
	DialTimeout               time.Duration
}

func (cc ClientConfig) dialTimeout() time.Duration {
	if cc.DialTimeout > 0 {
		return cc.DialTimeout
	}
	return DefaultDialTimeout
}

func (cc ClientConfig) secure() bool { return cc.CAFile != "" || cc.CertFile != "" || cc.KeyFile != "" }

// TLSConfig loads the CA and client key pair, checking each file on its own
// so the error names the one that is wrong, and refusing a client
// certificate outside its validity window before etcd gets to (etcd's
// answer to that is a bare TLS alert).
func (cc ClientConfig) TLSConfig(now time.Time) (*tls.Config, error) {
	if !cc.secure() {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if cc.CAFile != "" {
		pem, err := os.ReadFile(cc.CAFile)
		if err != nil {
			return nil, &snapread.Error{Op: "load CA", File: cc.CAFile, Kind: snapread.ErrCertFile, Err: err}
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, &snapread.Error{Op: "load CA", File: cc.CAFile, Kind: snapread.ErrCertFile, Err: errors.New("no PEM certificate in file")}
		}
		cfg.RootCAs = pool
	}
	if cc.CertFile != "" || cc.KeyFile != "" {
		if cc.CertFile == "" || cc.KeyFile == "" {
			return nil, &snapread.Error{Op: "load client certificate", File: cc.CertFile + cc.KeyFile, Kind: snapread.ErrCertFile,
				Err: errors.New("a client certificate needs both the cert and the key file")}
		}
		for _, f := range []string{cc.CertFile, cc.KeyFile} {
			if _, err := os.Stat(f); err != nil {
				return nil, &snapread.Error{Op: "load client certificate", File: f, Kind: snapread.ErrCertFile, Err: err}
			}
		}
		pair, err := tls.LoadX509KeyPair(cc.CertFile, cc.KeyFile)
		if err != nil {
			return nil, &snapread.Error{Op: "load client certificate", File: cc.CertFile + " + " + cc.KeyFile, Kind: snapread.ErrCertFile, Err: err}
		}
		leaf := pair.Leaf
		if leaf == nil {
			if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
				return nil, &snapread.Error{Op: "load client certificate", File: cc.CertFile, Kind: snapread.ErrCertFile, Err: err}
			}
		}
		if now.After(leaf.NotAfter) {
			return nil, &snapread.Error{Op: "load client certificate", File: cc.CertFile, Kind: snapread.ErrCertExpired,
				Err: fmt.Errorf("expired at %s (now %s); renew it, e.g. kubeadm certs renew etcd-healthcheck-client",
					leaf.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))}
		}
		if now.Before(leaf.NotBefore) {
			return nil, &snapread.Error{Op: "load client certificate", File: cc.CertFile, Kind: snapread.ErrCertExpired,
				Err: fmt.Errorf("not valid before %s (now %s): check the clock", leaf.NotBefore.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))}
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}

// Connect returns a client for endpoint that has answered a Status call, so
// a nil error means etcd is really there and accepts our certificates.
func Connect(ctx context.Context, cc ClientConfig, endpoint string) (*clientv3.Client, *clientv3.StatusResponse, error) {
	tlsCfg, err := cc.TLSConfig(time.Now())
	if err != nil {
		return nil, nil, err
	}
	return connect(ctx, cc, tlsCfg, endpoint)
}

func connect(ctx context.Context, cc ClientConfig, tlsCfg *tls.Config, endpoint string) (*clientv3.Client, *clientv3.StatusResponse, error) {
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{endpoint},
		TLS:         tlsCfg,
		DialTimeout: cc.dialTimeout(),
		Logger:      zap.NewNop(),
		Context:     ctx,
		// A snapshot of a big db is one long stream; the default 2 MiB
		// receive limit only matters for ordinary responses, not stream
		// chunks, but a large status or range must not fail on it.
		MaxCallRecvMsgSize: 64 << 20,
	})
	if err != nil {
		return nil, nil, &snapread.Error{Op: "connect", Endpoint: endpoint, Kind: snapread.ErrRPC, Err: err}
	}
	sctx, cancel := context.WithTimeout(ctx, cc.dialTimeout())
	defer cancel()
	st, err := cli.Status(sctx, endpoint)
	if err != nil {
		cli.Close()
		return nil, nil, diagnose(ctx, cc, tlsCfg, endpoint, "status", err)
	}
	return cli, st, nil
}

// ConnectAny tries each endpoint in order and returns the first that
// answers, or every endpoint's error joined.
func ConnectAny(ctx context.Context, cc ClientConfig) (*clientv3.Client, *clientv3.StatusResponse, string, error) {
	if len(cc.Endpoints) == 0 {
		return nil, nil, "", &snapread.Error{Op: "connect", Kind: snapread.ErrUnreachable, Err: errors.New("no endpoints configured")}
	}
	tlsCfg, err := cc.TLSConfig(time.Now())
	if err != nil {
		return nil, nil, "", err
	}
	var errs []error
	for _, ep := range cc.Endpoints {
		cli, st, err := connect(ctx, cc, tlsCfg, ep)
		if err == nil {
			return cli, st, ep, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	if len(errs) == 1 {
		return nil, nil, "", errs[0]
	}
	return nil, nil, "", errors.Join(errs...)
}

// diagnose turns an opaque gRPC failure into a specific one by redoing the
// connection by hand: TCP first, then the TLS handshake, then a read that
// surfaces a TLS 1.3 server's rejection of our client certificate (sent
// after the handshake completes on the client side).
func diagnose(ctx context.Context, cc ClientConfig, tlsCfg *tls.Config, endpoint, op string, rpcErr error) error {
	fail := func(kind error, file string, err error) error {
		return &snapread.Error{Op: op, Endpoint: endpoint, File: file, Kind: kind, Err: err}
	}
	host, secure, err := splitEndpoint(endpoint)
	if err != nil {
		return fail(snapread.ErrUnreachable, "", err)
	}
	timeout := cc.dialTimeout()
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < timeout {
		timeout = max(time.Until(dl), 100*time.Millisecond)
	}
	conn, err := (&net.Dialer{Timeout: timeout}).DialContext(context.WithoutCancel(ctx), "tcp", host)
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			return fail(snapread.ErrUnreachable, "", errors.New("connection refused (is etcd running?)"))
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return fail(snapread.ErrTimeout, "", fmt.Errorf("TCP connect: %w", err))
		}
		return fail(snapread.ErrUnreachable, "", err)
	}
	defer conn.Close()
	if secure && tlsCfg != nil {
		c := tlsCfg.Clone()
		c.ServerName, _, _ = net.SplitHostPort(host)
		tc := tls.Client(conn, c)
		_ = tc.SetDeadline(time.Now().Add(timeout))
		if err := tc.Handshake(); err != nil {
			return classifyTLS(fail, cc, err)
		}
		_ = tc.SetReadDeadline(time.Now().Add(min(timeout, 500*time.Millisecond)))
		var b [1]byte
		if _, err := tc.Read(b[:]); err != nil {
			var ne net.Error
			if !(errors.As(err, &ne) && ne.Timeout()) {
				if e := classifyTLS(fail, cc, err); e != nil && !errors.Is(e, snapread.ErrRPC) {
					return e
				}
			}
		}
	}
	switch {
	case errors.Is(rpcErr, context.DeadlineExceeded), strings.Contains(rpcErr.Error(), "DeadlineExceeded"):
		return fail(snapread.ErrTimeout, "", rpcErr)
	case ctx.Err() != nil:
		return fail(snapread.ErrTimeout, "", ctx.Err())
	}
	return fail(snapread.ErrRPC, "", rpcErr)
}

func classifyTLS(fail func(error, string, error) error, cc ClientConfig, err error) error {
	var ua x509.UnknownAuthorityError
	var he x509.HostnameError
	var ci x509.CertificateInvalidError
	var ce *tls.CertificateVerificationError
	var ne net.Error
	switch {
	case errors.As(err, &ua):
		return fail(snapread.ErrUnknownAuthority, cc.CAFile, fmt.Errorf("server certificate not signed by this CA: %w", err))
	case errors.As(err, &he):
		return fail(snapread.ErrTLS, cc.CAFile, fmt.Errorf("server certificate does not cover this address: %w", err))
	case errors.As(err, &ci) && ci.Reason == x509.Expired:
		return fail(snapread.ErrTLS, "", fmt.Errorf("server certificate expired: %w", err))
	case errors.As(err, &ce):
		return fail(snapread.ErrTLS, cc.CAFile, err)
	case errors.As(err, &ne) && ne.Timeout():
		return fail(snapread.ErrTimeout, "", fmt.Errorf("TLS handshake: %w", err))
	}
	// Alerts from the server arrive as *net.OpError{Op: "remote error"}
	// around an unexported type; only the text tells them apart.
	if msg := err.Error(); strings.Contains(msg, "remote error: tls: ") {
		switch {
		case strings.Contains(msg, "unknown certificate authority"):
			return fail(snapread.ErrUnknownAuthority, cc.CertFile, fmt.Errorf("etcd does not trust the CA of our client certificate: %w", err))
		case strings.Contains(msg, "expired certificate"):
			return fail(snapread.ErrCertExpired, cc.CertFile, fmt.Errorf("etcd rejected our client certificate as expired: %w", err))
		case strings.Contains(msg, "certificate"):
			return fail(snapread.ErrTLS, cc.CertFile, fmt.Errorf("etcd rejected our client certificate: %w", err))
		}
		return fail(snapread.ErrTLS, "", err)
	}
	if strings.Contains(err.Error(), "tls:") || strings.Contains(err.Error(), "x509:") {
		return fail(snapread.ErrTLS, "", err)
	}
	return fail(snapread.ErrRPC, "", err)
}

// splitEndpoint accepts "https://h:p", "http://h:p", "unixs://..." is not
// supported; a bare "h:p" means TLS when certificates are configured.
func splitEndpoint(ep string) (hostport string, secure bool, err error) {
	if !strings.Contains(ep, "://") {
		return ep, true, nil
	}
	u, err := url.Parse(ep)
	if err != nil {
		return "", false, fmt.Errorf("endpoint %q: %w", ep, err)
	}
	switch u.Scheme {
	case "https":
		secure = true
	case "http":
	default:
		return "", false, fmt.Errorf("endpoint %q: scheme %q not supported (use https:// or http://)", ep, u.Scheme)
	}
	if u.Port() == "" {
		return net.JoinHostPort(u.Hostname(), "2379"), secure, nil
	}
	return u.Host, secure, nil
}
