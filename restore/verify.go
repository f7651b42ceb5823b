package restore

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
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
// written since; then the apiserver's /readyz when it can be reached.
func (r *runner) verify(ctx context.Context) error {
	set := r.src.set
	if set == nil || len(set.Etcd.Endpoints) == 0 {
		r.skip("the version's layout says nothing about reaching etcd")
		return nil
	}
	var wantRev, wantKeys int64
	if r.src.etcd != nil {
		wantRev, wantKeys = r.src.etcd.Revision, r.src.etcd.Keys
	}
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
	return r.do("check the apiserver's /readyz, when reachable", func() error {
		r.checkReadyz(ctx)
		return nil
	})
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

func (r *runner) checkReadyz(ctx context.Context) {
	host, port := "127.0.0.1", "6443"
	if a, err := r.analyze(); err == nil && a.endpointHost != "" {
		host = a.endpointHost
	}
	pool := x509.NewCertPool()
	if p, err := layout.Join(r.opts.Root, "/etc/kubernetes/pki/ca.crt"); err == nil {
		if data, err := readFileLimited(p); err == nil {
			pool.AppendCertsFromPEM(data)
		}
	}
	url := "https://" + net.JoinHostPort(host, port) + "/readyz"
	if !answers(net.JoinHostPort(host, port), 2*time.Second) {
		r.note("apiserver not reachable at %s (yet): check again with curl -k %s", url, url)
		return
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: host}}}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := client.Do(req)
	if err != nil {
		r.warn("apiserver %s: %v", url, err)
		return
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		r.warn("apiserver %s answered %s: %s", url, strconv.Itoa(resp.StatusCode), body)
		return
	}
	r.note("apiserver ready at %s", url)
}
