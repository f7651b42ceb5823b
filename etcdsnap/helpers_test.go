package etcdsnap_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kubekeep/kubekeep/etcdsnap/snapread"
	"github.com/kubekeep/kubekeep/internal/sandbox"
)

// issueClientCert signs a client certificate with the sandbox's etcd CA,
// valid from notBefore to notAfter, and returns the cert and key paths.
func issueClientCert(t *testing.T, r *sandbox.Root, notBefore, notAfter time.Time) (string, string) {
	t.Helper()
	caPEM, err := os.ReadFile(r.Path(r.EtcdCAFile))
	if err != nil {
		t.Fatal(err)
	}
	caKeyPEM, err := os.ReadFile(r.Path(sandbox.PKIDir + "/etcd/ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	ca, err := tls.X509KeyPair(caPEM, caKeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(ca.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "kube-etcd-healthcheck-client"},
		NotBefore:    notBefore, NotAfter: notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, key.Public(), ca.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cert, keyPath := filepath.Join(dir, "client.crt"), filepath.Join(dir, "client.key")
	if err := os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return cert, keyPath
}

// cutProxy forwards TCP to target and, once cutAfter bytes have gone from
// the server to the client, closes both sides: a network cut mid-stream.
// cutAfter < 0 never cuts; silent accepts but never forwards (a hung peer).
type cutProxy struct {
	l        net.Listener
	target   string
	cutAfter int64
	silent   bool
	sent     atomic.Int64
	wg       sync.WaitGroup
}

func startProxy(t *testing.T, target string, cutAfter int64, silent bool) *cutProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{l: l, target: target, cutAfter: cutAfter, silent: silent}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(func() { l.Close(); p.wg.Wait() })
	return p
}

func (p *cutProxy) endpoint() string { return "https://" + p.l.Addr().String() }

func (p *cutProxy) serve() {
	defer p.wg.Done()
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		conns = append(conns, c)
		if p.silent {
			continue
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		conns = append(conns, s)
		go func() { _, _ = io.Copy(s, c); s.Close() }()
		go func() {
			buf := make([]byte, 32<<10)
			for {
				n, err := s.Read(buf)
				if n > 0 {
					if p.cutAfter >= 0 && p.sent.Add(int64(n)) > p.cutAfter {
						c.Close()
						s.Close()
						return
					}
					if _, werr := c.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					c.Close()
					return
				}
			}
		}()
	}
}

// stateAt reads every key etcd holds at rev (0: now) as key -> value.
func stateAt(t *testing.T, cli *clientv3.Client, rev int64) map[string]string {
	t.Helper()
	opts := []clientv3.OpOption{clientv3.WithPrefix()}
	if rev > 0 {
		opts = append(opts, clientv3.WithRev(rev))
	}
	resp, err := cli.Get(context.Background(), "", opts...)
	if err != nil {
		t.Fatal(err)
	}
	m := make(map[string]string, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		m[string(kv.Key)] = string(kv.Value)
	}
	return m
}

// dbState reads every live key of a db file as key -> value.
func dbState(t *testing.T, path string) map[string]string {
	t.Helper()
	kvs, err := snapread.ReadKeys(path)
	if err != nil {
		t.Fatal(err)
	}
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		m[kv.Key] = string(kv.Value)
	}
	return m
}

// sameState fails the test with every difference between want and got.
func sameState(t *testing.T, what string, want, got map[string]string) {
	t.Helper()
	var diffs []string
	for k, v := range want {
		if g, ok := got[k]; !ok {
			diffs = append(diffs, "missing "+k)
		} else if g != v {
			diffs = append(diffs, "different value "+k)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			diffs = append(diffs, "unexpected "+k)
		}
	}
	if len(diffs) > 0 {
		sort.Strings(diffs)
		if len(diffs) > 20 {
			diffs = append(diffs[:20], "...")
		}
		t.Fatalf("%s: %d keys wanted, %d got; differences: %v", what, len(want), len(got), diffs)
	}
}

// memSink keeps segments in memory, in order, checking that they chain.
type memSink struct {
	mu      sync.Mutex
	segs    [][]byte
	lastRev int64
	err     error
}

func (m *memSink) AppendSegment(data []byte, firstRev, lastRev int64, _ time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.segs != nil && firstRev != m.lastRev+1 && m.err == nil {
		m.err = fmt.Errorf("segment chain broken: previous ended at %d, next starts at %d", m.lastRev, firstRev)
	}
	m.segs = append(m.segs, append([]byte(nil), data...))
	m.lastRev = lastRev
	return nil
}

func (m *memSink) readers() []io.Reader {
	m.mu.Lock()
	defer m.mu.Unlock()
	var rs []io.Reader
	for _, s := range m.segs {
		rs = append(rs, bytes.NewReader(s))
	}
	return rs
}
