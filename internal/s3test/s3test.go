// Package s3test starts a real S3 server for tests: versitygw (built from
// internal/versitygw through the module proxy, once, cached by content
// like the etcd 3.5 binary) serving a posix directory with versioning on
// 127.0.0.1, so off-site tiers are tested against S3's real wire protocol
// (signatures, ranges, multipart, Object Lock), not a mock of our own.
package s3test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/kubekeep/kubekeep/internal/gobuild"
	"github.com/kubekeep/kubekeep/internal/tailbuf"
)

// Server is a running versitygw.
type Server struct {
	// Endpoint is host:port, plain HTTP on loopback.
	Endpoint string
	// AccessKey and SecretKey are the root account's.
	AccessKey, SecretKey string
	// Root is the directory buckets live in.
	Root string

	cmd *exec.Cmd
	out *tailbuf.Buffer
}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// Binary builds versitygw (or finds it in the cache) and returns its path.
func Binary() (string, error) {
	buildOnce.Do(func() {
		var src string
		if src, buildErr = moduleDir(); buildErr != nil {
			return
		}
		var dir string
		dir, buildErr = gobuild.Cached("versitygw", src, []string{"tools.go", "go.mod", "go.sum"},
			[]string{"build", "-trimpath", "-buildvcs=false", "github.com/versity/versitygw/cmd/versitygw"})
		binPath = filepath.Join(dir, "versitygw")
	})
	return binPath, buildErr
}

func moduleDir() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		c := filepath.Join(d, "internal", "versitygw")
		if _, err := os.Stat(filepath.Join(c, "go.mod")); err == nil {
			return c, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("internal/versitygw not found above %s", wd)
		}
	}
}

// StartT starts a versitygw on a free loopback port for the test, with
// buckets under a temp dir (which needs xattrs: tmpfs or ext4), and stops
// it at the end of the test.
func StartT(t testing.TB) *Server {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		t.Fatalf("build versitygw: %v", err)
	}
	dir := t.TempDir()
	s := &Server{AccessKey: "kubekeep-test", SecretKey: randomHex(t, 20), Root: filepath.Join(dir, "root")}
	for _, d := range []string{s.Root, filepath.Join(dir, "versions")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.Endpoint = l.Addr().String()
	l.Close()
	s.out = &tailbuf.Buffer{Max: 64 << 10}
	s.cmd = exec.Command(bin, "--port", s.Endpoint, "posix", "--versioning-dir", filepath.Join(dir, "versions"), s.Root)
	s.cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY="+s.AccessKey, "ROOT_SECRET_KEY="+s.SecretKey)
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
		if t.Failed() {
			t.Logf("versitygw output:\n%s", s.out.String())
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.Endpoint+"/", nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			return s
		}
		if ctx.Err() != nil {
			t.Fatalf("versitygw on %s did not answer within 30s:\n%s", s.Endpoint, s.out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func randomHex(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// Bucket makes a bucket on the server (with Object Lock when lock is set),
// puts the root account's keys in the test's environment as an s3:// tier
// reads them (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), and returns a
// client with those keys for the test's own look at the bucket.
func (s *Server) Bucket(t testing.TB, name string, lock bool) *minio.Client {
	t.Helper()
	cli, err := minio.New(s.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(s.AccessKey, s.SecretKey, "")})
	if err != nil {
		t.Fatal(err)
	}
	if err := cli.MakeBucket(context.Background(), name, minio.MakeBucketOptions{ObjectLocking: lock}); err != nil {
		t.Fatalf("make bucket %s: %v", name, err)
	}
	t.Setenv("AWS_ACCESS_KEY_ID", s.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", s.SecretKey)
	return cli
}
