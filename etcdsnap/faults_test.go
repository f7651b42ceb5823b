package etcdsnap_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kubekeep/kubekeep/etcdsnap"
	"github.com/kubekeep/kubekeep/etcdsnap/snapread"
	"github.com/kubekeep/kubekeep/internal/testetcd"
)

// failedSnapshot asserts a snapshot failed with kind, named what it should,
// and faked nothing.
func failedSnapshot(t *testing.T, cc etcdsnap.ClientConfig, kind error, mention ...string) {
	t.Helper()
	var buf bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	info, err := etcdsnap.Snapshot(ctx, cc, &buf)
	t.Logf("error: %v", err)
	if !errors.Is(err, kind) {
		t.Fatalf("got %v, want kind %v", err, kind)
	}
	var e *snapread.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %T is not an *snapread.Error", err)
	}
	for _, m := range mention {
		if !strings.Contains(err.Error(), m) {
			t.Errorf("error does not mention %q", m)
		}
	}
	if info.Verified || info.TrailerVerified || info.Error == "" {
		t.Errorf("failed snapshot reported as %+v", info)
	}
}

func TestSnapshotFaults(t *testing.T) {
	r := testetcd.SandboxT(t)
	srv := testetcd.StartT(t, r)
	ctx := ctxT(t)
	cli := srv.ClientT(t)
	// ~6 MiB of values so a cut lands mid-stream.
	val := strings.Repeat("v", 64<<10)
	for i := range 96 {
		if _, err := cli.Put(ctx, fmt.Sprintf("/big/%03d", i), val); err != nil {
			t.Fatal(err)
		}
	}
	good := clientConfig(r, srv.Endpoint())
	other := testetcd.SandboxT(t) // a second cluster with its own PKI

	t.Run("wrong CA", func(t *testing.T) {
		cc := good
		cc.CAFile = other.Path(other.EtcdCAFile)
		failedSnapshot(t, cc, snapread.ErrUnknownAuthority, cc.CAFile, srv.Endpoint())
	})
	t.Run("client cert from another cluster", func(t *testing.T) {
		cc := good
		cc.CertFile, cc.KeyFile = other.Path(other.EtcdClientCert), other.Path(other.EtcdClientKey)
		failedSnapshot(t, cc, snapread.ErrUnknownAuthority, cc.CertFile, srv.Endpoint())
	})
	t.Run("expired client cert", func(t *testing.T) {
		cc := good
		cc.CertFile, cc.KeyFile = issueClientCert(t, r, time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour))
		failedSnapshot(t, cc, snapread.ErrCertExpired, cc.CertFile, "expired")
	})
	t.Run("missing key file", func(t *testing.T) {
		cc := good
		cc.KeyFile = filepath.Join(t.TempDir(), "nope.key")
		failedSnapshot(t, cc, snapread.ErrCertFile, cc.KeyFile)
	})
	t.Run("hung endpoint", func(t *testing.T) {
		p := startProxy(t, "", -1, true)
		cc := good
		cc.Endpoints, cc.DialTimeout = []string{p.endpoint()}, 500*time.Millisecond
		failedSnapshot(t, cc, snapread.ErrTimeout, p.endpoint())
	})
	t.Run("stream cut mid-way", func(t *testing.T) {
		p := startProxy(t, strings.TrimPrefix(srv.Endpoint(), "https://"), 2<<20, false)
		cc := good
		cc.Endpoints = []string{p.endpoint()}
		failedSnapshot(t, cc, snapread.ErrStreamCut, p.endpoint(), "broke after")
	})
	t.Run("sink fails", func(t *testing.T) {
		info, err := etcdsnap.Snapshot(ctx, good, &failingWriter{after: 1 << 20})
		if !errors.Is(err, snapread.ErrSink) || info.Verified || info.TrailerVerified {
			t.Fatalf("got %v %+v", err, info)
		}
	})
	t.Run("corrupted trailer", func(t *testing.T) {
		var buf bytes.Buffer
		info, err := etcdsnap.Snapshot(ctx, good, &buf)
		if err != nil || !info.TrailerVerified {
			t.Fatalf("good snapshot: %v", err)
		}
		img := buf.Bytes()
		for name, bad := range map[string][]byte{
			"flipped trailer byte": flip(img, len(img)-1),
			"flipped data byte":    flip(img, len(img)/2),
			"truncated":            img[:len(img)-512],
			"trailer cut off":      img[:len(img)-snapread.TrailerSize],
		} {
			_, _, err := snapread.CopyVerified(io.Discard, bytes.NewReader(bad))
			if !errors.Is(err, snapread.ErrBadTrailer) {
				t.Errorf("%s: %v, want ErrBadTrailer", name, err)
			}
		}
		if _, sum, err := snapread.CopyVerified(io.Discard, bytes.NewReader(img)); err != nil || sum != info.SHA256 {
			t.Errorf("intact image: %v sum %s want %s", err, sum, info.SHA256)
		}
		// A restore refuses a bad trailer too (etcdutl's own check).
		path := filepath.Join(t.TempDir(), "bad.db")
		if err := os.WriteFile(path, flip(img, len(img)-1), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := etcdsnap.RestoreDataDir(ctx, restoreConfig(r, path, filepath.Join(t.TempDir(), "d"))); err == nil {
			t.Error("restore of a snapshot with a bad trailer succeeded")
		}
	})
	t.Run("etcd stopped", func(t *testing.T) {
		srv.Stop()
		failedSnapshot(t, good, snapread.ErrUnreachable, srv.Endpoint(), "connection refused")
	})
}

func flip(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 0xff
	return c
}

type failingWriter struct{ after, n int }

func (f *failingWriter) Write(p []byte) (int, error) {
	if f.n+len(p) > f.after {
		return 0, errors.New("disk full")
	}
	f.n += len(p)
	return len(p), nil
}

func TestRawCopy(t *testing.T) {
	r := testetcd.SandboxT(t)
	srv := testetcd.StartT(t, r)
	ctx := ctxT(t)
	if _, err := srv.LoadCluster(ctx); err != nil {
		t.Fatal(err)
	}
	cli := srv.ClientT(t)
	for i := range 100 {
		if _, err := cli.Put(ctx, fmt.Sprintf("/raw/%03d", i), fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	want := stateAt(t, cli, 0)
	locked, err := etcdsnap.DataDirLocked(srv.DataDir())
	if err != nil || !locked {
		t.Fatalf("running etcd: locked=%v err=%v", locked, err)
	}
	info, err := etcdsnap.RawCopy(ctx, srv.DataDir(), io.Discard)
	if !errors.Is(err, snapread.ErrDataDirLocked) || info.Verified {
		t.Fatalf("raw copy of a live db: %v %+v", err, info)
	}

	srv.Stop()
	locked, err = etcdsnap.DataDirLocked(srv.DataDir())
	if err != nil || locked {
		t.Fatalf("stopped etcd: locked=%v err=%v", locked, err)
	}
	path := filepath.Join(t.TempDir(), "raw.db")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	info, err = etcdsnap.RawCopy(ctx, srv.DataDir(), f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := info.Check(path); err != nil || !info.Verified || info.Source != "raw" || info.Keys != int64(len(want)) {
		t.Fatalf("raw copy check: %v %+v", err, info)
	}
	sameState(t, "raw copy", want, dbState(t, path))

	cfg := restoreConfig(r, path, filepath.Join(t.TempDir(), "restored"))
	if _, err := etcdsnap.RestoreDataDir(ctx, cfg); err == nil {
		t.Fatal("restore of a raw db without SkipHashCheck succeeded")
	}
	cfg.DataDir = filepath.Join(t.TempDir(), "restored")
	cfg.SkipHashCheck = true
	_, got := restoreAndRead(t, cfg)
	sameState(t, "restore of raw copy", want, got)

	// The restored data dir serves: start etcd on it, as the static pod would.
	if err := os.RemoveAll(srv.DataDir()); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(cfg.DataDir, srv.DataDir()); err != nil {
		t.Fatal(err)
	}
	if err := srv.Restart(ctx); err != nil {
		t.Fatalf("etcd on restored data dir: %v", err)
	}
	cli = srv.ClientT(t)
	sameState(t, "etcd serving the restored dir", want, stateAt(t, cli, 0))
	resp, err := cli.Get(ctx, "/raw/000")
	if err != nil || resp.Header.Revision < etcdsnap.RevisionBump {
		t.Fatalf("restored etcd revision: %v %v", err, resp)
	}
	// Old revisions are compacted, so informers relist.
	if _, err := cli.Get(ctx, "/raw/000", clientv3.WithRev(5)); err == nil {
		t.Error("read at a pre-restore revision succeeded; want compacted")
	}
}
