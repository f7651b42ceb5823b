package s3_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/kubekeep/kubekeep/internal/s3test"
	"github.com/kubekeep/kubekeep/rsyncish/backend"
	"github.com/kubekeep/kubekeep/rsyncish/backend/backendtest"
	"github.com/kubekeep/kubekeep/tiers/s3"
)

var bucketSeq atomic.Int64

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func client(t *testing.T, srv *s3test.Server) *minio.Client {
	cli, err := minio.New(srv.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(srv.AccessKey, srv.SecretKey, "")})
	if err != nil {
		t.Fatal(err)
	}
	return cli
}

func newBucket(t *testing.T, srv *s3test.Server, locking bool) string {
	name := fmt.Sprintf("kk-%d", bucketSeq.Add(1))
	if err := client(t, srv).MakeBucket(ctxT(t), name, minio.MakeBucketOptions{ObjectLocking: locking}); err != nil {
		t.Fatalf("make bucket %s: %v", name, err)
	}
	return name
}

func config(srv *s3test.Server, bucket string) s3.Config {
	return s3.Config{Endpoint: srv.Endpoint, Bucket: bucket, Prefix: "cluster-a/store", Region: "us-east-1",
		Creds: credentials.NewStaticV4(srv.AccessKey, srv.SecretKey, ""), PartSize: 5 << 20}
}

// The suite every backend passes, against a real S3 server.
func TestS3Suite(t *testing.T) {
	srv := s3test.StartT(t)
	backendtest.Run(t, func(t *testing.T) backend.Backend {
		b, err := s3.Open(ctxT(t), config(srv, newBucket(t, srv, false)))
		if err != nil {
			t.Fatal(err)
		}
		return b
	})
}

// Above the part size an object goes up in parts and comes back whole.
func TestS3Multipart(t *testing.T) {
	srv := s3test.StartT(t)
	bucket := newBucket(t, srv, false)
	b, err := s3.Open(ctxT(t), config(srv, bucket))
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("0123456789abcdef"), (12<<20)/16+3)
	h := backend.Handle{Type: backend.PackFile, Name: "big.pack"}
	if err := b.Save(ctxT(t), h, backend.NewByteReader(data)); err != nil {
		t.Fatal(err)
	}
	got, err := backend.LoadAll(ctxT(t), b, h)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("multipart object: %d bytes back of %d, %v", len(got), len(data), err)
	}
	// The key is the prefix, the type and the name: nothing else in the
	// bucket (no parts left over from the upload).
	var keys []string
	for oi := range client(t, srv).ListObjects(ctxT(t), bucket, minio.ListObjectsOptions{Recursive: true}) {
		if oi.Err != nil {
			t.Fatal(oi.Err)
		}
		keys = append(keys, oi.Key)
	}
	if len(keys) != 1 || keys[0] != "cluster-a/store/packs/big.pack" {
		t.Errorf("bucket keys %v, want only cluster-a/store/packs/big.pack", keys)
	}
}

// With a lock, what the master's credentials saved they cannot take
// away: the object version is under compliance retention, a delete only
// hides it behind a marker, removing the version itself is refused, and
// the bytes are still there.
func TestS3LockedObjectsSurviveTheMaster(t *testing.T) {
	srv := s3test.StartT(t)
	bucket := newBucket(t, srv, true)
	cfg := config(srv, bucket)
	cfg.Lock = &s3.Lock{Mode: s3.Compliance, Days: 1}
	b, err := s3.Open(ctxT(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	h := backend.Handle{Type: backend.ManifestFile, Name: "20261201T000000Z-abcd.manifest"}
	data := []byte("the version the attacker wants gone")
	if err := b.Save(ctxT(t), h, backend.NewByteReader(data)); err != nil {
		t.Fatal(err)
	}
	cli := client(t, srv)
	key := "cluster-a/store/versions/" + h.Name
	oi, err := cli.StatObject(ctxT(t), bucket, key, minio.StatObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if oi.VersionID == "" {
		t.Fatal("the locked bucket gave the object no version id")
	}
	if err := b.Remove(ctxT(t), h); err != nil {
		t.Logf("remove through the backend: %v", err)
	}
	err = cli.RemoveObject(ctxT(t), bucket, key, minio.RemoveObjectOptions{VersionID: oi.VersionID})
	if err == nil {
		t.Fatal("the object version under compliance retention was removed")
	}
	obj, err := cli.GetObject(ctxT(t), bucket, key, minio.GetObjectOptions{VersionID: oi.VersionID})
	if err != nil {
		t.Fatal(err)
	}
	defer obj.Close()
	var got bytes.Buffer
	if _, err := got.ReadFrom(obj); err != nil || !bytes.Equal(got.Bytes(), data) {
		t.Fatalf("the locked version after the removal attempts: %q, %v", got.Bytes(), err)
	}
}

// Bad input names the tier: a missing bucket, lock days on a bucket
// without Object Lock, wrong credentials. The secret is never in the
// message.
func TestS3BadConfig(t *testing.T) {
	srv := s3test.StartT(t)
	plain := newBucket(t, srv, false)
	for _, c := range []struct {
		name string
		cfg  func() s3.Config
		want string
	}{
		{"missing bucket", func() s3.Config { return config(srv, "no-such-bucket") }, "does not exist"},
		{"lock without object lock", func() s3.Config {
			c := config(srv, plain)
			c.Lock = &s3.Lock{Mode: s3.Governance, Days: 14}
			return c
		}, "no Object Lock"},
		{"wrong secret", func() s3.Config {
			c := config(srv, plain)
			c.Creds = credentials.NewStaticV4(srv.AccessKey, "not-the-secret-at-all", "")
			return c
		}, srv.Endpoint},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := s3.Open(ctxT(t), c.cfg())
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("open: %v, want an error containing %q", err, c.want)
			}
			if strings.Contains(err.Error(), srv.SecretKey) || strings.Contains(err.Error(), "not-the-secret-at-all") {
				t.Errorf("the error shows a secret: %v", err)
			}
			if !strings.Contains(err.Error(), "s3://") && !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("the error does not name the tier: %v", err)
			}
		})
	}
}
