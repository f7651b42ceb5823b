package restore

import (
	"context"
	"crypto/x509"
	"fmt"
	"net"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kubekeep/kubekeep/etcdsnap"
	"github.com/kubekeep/kubekeep/layout"
)

// DefaultVerifyTimeout bounds how long verify waits for etcd to come up:
// the kubelet needs a while to start a static pod.
const DefaultVerifyTimeout = 2 * time.Minute

// verify checks that etcd serves the restored data: revision at least the
// snapshot's plus the bump, and the snapshot's key count while nothing has
// written since; then waits for the apiserver's /readyz to answer ok.
func (r *runner) verify(ctx context.Context) error {
	set := r.src.set
	if set == nil || len(set.Etcd.Endpoints) == 0 {
		r.skip("the version's layout says nothing about reaching etcd")
		return nil
	}
	var wantRev, wantKeys int64
	wantRev, wantKeys = r.src.etcdRevision(), r.src.etcdKeys()
	if r.opts.Revision > wantRev {
		wantRev = r.opts.Revision
	}
	minRev := wantRev + etcdsnap.RevisionBump
	cc := etcdsnap.ClientConfig{Endpoints: set.Etcd.Endpoints, DialTimeout: 5 * time.Second}
	for _, f := range []struct {
		dst *string
		src string
	}{{&cc.CAFile, set.Etcd.CAFile}, {&cc.CertFile, set.Etcd.CertFile}, {&cc.KeyFile, set.Etcd.KeyFile}} {
		if f.src == "" {
			continue
		}
		p, err := layout.Join(r.opts.Root, f.src)
		if err != nil {
			return err
		}
		*f.dst = p
	}
	timeout := r.opts.VerifyTimeout
	if timeout <= 0 {
		timeout = DefaultVerifyTimeout
	}
	if err := r.do(fmt.Sprintf("wait up to %s for etcd on %v; expect revision >= %d and %d keys", timeout, set.Etcd.Endpoints, minRev, wantKeys), func() error {
		rev, keys, err := waitEtcd(ctx, cc, timeout)
		if err != nil {
			return fmt.Errorf("etcd not healthy: %w (check the etcd container logs: crictl logs $(crictl ps -a --name etcd -q | head -1))", err)
		}
		switch {
		case rev < minRev:
			return fmt.Errorf("etcd is at revision %d, below %d: it is not running on the restored data dir", rev, minRev)
		case rev == minRev && wantKeys > 0 && keys != wantKeys:
			return fmt.Errorf("etcd at revision %d holds %d keys, the backup %d", rev, keys, wantKeys)
		case rev > minRev:
			r.note("etcd healthy at revision %d (written to since the restore), %d keys (backup: %d)", rev, keys, wantKeys)
		default:
			r.note("etcd healthy at revision %d with %d keys, as backed up", rev, keys)
		}
		return nil
	}); err != nil {
		return err
	}
	return r.verifyAPIServer(ctx)
}

// verifyAPIServer waits, bounded, for the apiserver's /readyz to answer
// ok. A timeout fails the phase, saying so: a control plane whose
// apiserver never gets ready is not restored, and `--phase verify` checks
// again.
func (r *runner) verifyAPIServer(ctx context.Context) error {
	timeout := r.opts.ReadyzTimeout
	if timeout < 0 {
		r.note("apiserver /readyz not checked (readyz timeout below 0)")
		return nil
	}
	if timeout == 0 {
		timeout = DefaultReadyzTimeout
	}
	addr := r.apiServerAddr()
	url := "https://" + addr + "/readyz"
	caHost := "/etc/kubernetes/pki/ca.crt"
	return r.do(fmt.Sprintf("wait up to %s for the apiserver's %s to answer ok (trusting %s)", timeout, url, caHost), func() error {
		pool := x509.NewCertPool()
		p, err := layout.Join(r.opts.Root, caHost)
		if err != nil {
			return err
		}
		data, err := readFileLimited(p)
		if err != nil {
			return fmt.Errorf("the cluster CA to check the apiserver with: %w", err)
		}
		if !pool.AppendCertsFromPEM(data) {
			return fmt.Errorf("the cluster CA %s holds no PEM certificate", caHost)
		}
		took, err := waitReadyz(ctx, addr, pool, timeout, readyzInterval)
		if err != nil {
			r.printf("  %v", err)
			return fmt.Errorf("apiserver not ready: %w; check the kube-apiserver container (crictl ps -a --name kube-apiserver; crictl logs ID), then re-run this phase", err)
		}
		r.note("apiserver ready at %s after %s", url, took.Round(time.Second))
		return nil
	})
}

// apiServerAddr is where verify asks for /readyz: Options.APIServer, else
// the saved controlPlaneEndpoint when it is usable here, else the local
// secure port.
func (r *runner) apiServerAddr() string {
	if a := strings.TrimSuffix(strings.TrimPrefix(r.opts.APIServer, "https://"), "/"); a != "" {
		if _, _, err := net.SplitHostPort(a); err == nil {
			return a
		}
		return net.JoinHostPort(a, "6443")
	}
	host, port := "127.0.0.1", "6443"
	if a, err := r.analyze(); err == nil && a.endpointHost != "" {
		host = a.endpointHost
		if a.endpointPort != "" {
			port = a.endpointPort
		}
	}
	return net.JoinHostPort(host, port)
}

func waitEtcd(ctx context.Context, cc etcdsnap.ClientConfig, timeout time.Duration) (rev, keys int64, err error) {
	deadline := time.Now().Add(timeout)
	for {
		rev, keys, err = etcdCounts(ctx, cc)
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			return rev, keys, err
		}
		select {
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

func etcdCounts(ctx context.Context, cc etcdsnap.ClientConfig) (int64, int64, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cli, _, _, err := etcdsnap.ConnectAny(cctx, cc)
	if err != nil {
		return 0, 0, err
	}
	defer cli.Close()
	resp, err := cli.Get(cctx, "\x00", clientv3.WithFromKey(), clientv3.WithCountOnly())
	if err != nil {
		return 0, 0, err
	}
	return resp.Header.Revision, resp.Count, nil
}
