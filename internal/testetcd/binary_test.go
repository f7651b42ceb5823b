package testetcd_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/kubekeep/kubekeep/internal/testetcd"
)

// TestEtcd35ServesSandbox: the etcd 3.5 binary serves the sandbox over
// its client-cert TLS, reports a 3.5 version, keeps its data across a
// restart and releases the data dir when stopped.
func TestEtcd35ServesSandbox(t *testing.T) {
	r := testetcd.SandboxT(t)
	srv := testetcd.StartEtcd35T(t, r)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	keys, err := srv.LoadCluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cli := srv.ClientT(t)
	st, err := cli.Status(ctx, srv.Endpoint())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(st.Version, "3.5.") {
		t.Fatalf("server reports version %q, want 3.5.x", st.Version)
	}
	if locked, err := dataDirLocked(srv.DataDir()); err != nil || !locked {
		t.Errorf("data dir locked %v while etcd 3.5 runs (%v)", locked, err)
	}

	// client-cert-auth: a client trusting the CA but without a
	// certificate is refused.
	noCert, err := transport.TLSInfo{TrustedCAFile: r.Path(r.EtcdCAFile)}.ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	anon, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.Endpoint()}, TLS: noCert, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	actx, acancel := context.WithTimeout(ctx, 3*time.Second)
	_, err = anon.Get(actx, keys[0])
	acancel()
	anon.Close()
	if err == nil {
		t.Error("etcd 3.5 served a client without a certificate")
	}

	if err := srv.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	resp, err := srv.ClientT(t).Get(ctx, keys[len(keys)-1])
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("after restart: %v %v", err, resp)
	}
	if !srv.Running() {
		t.Fatal("not running after restart")
	}
	srv.Stop()
	if srv.Running() {
		t.Fatal("running after stop")
	}
	if err := srv.ExitError(); err != nil {
		t.Errorf("etcd 3.5 did not exit cleanly on SIGTERM: %v\n%s", err, tail(srv.Log(), 20))
	}
	if locked, err := dataDirLocked(srv.DataDir()); err != nil || locked {
		t.Errorf("data dir still locked after stop: %v %v", locked, err)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// dataDirLocked: does a process hold bbolt's flock on member/snap/db?
func dataDirLocked(dataDir string) (bool, error) {
	f, err := os.Open(filepath.Join(dataDir, "member", "snap", "db"))
	if err != nil {
		return false, err
	}
	defer f.Close()
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return false, nil
}
