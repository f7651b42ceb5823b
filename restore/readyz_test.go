package restore

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// testCA is a CA that signs apiserver-like serving certificates.
type testCA struct {
	cert *x509.Certificate
	key  crypto.Signer
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kubernetes"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key}
}

// loadTestCA reads a restored cluster CA (ca.crt, ca.key) from disk.
func loadTestCA(t *testing.T, crtPath, keyPath string) *testCA {
	t.Helper()
	crtPEM, err := os.ReadFile(crtPath)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	cb, _ := pem.Decode(crtPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		t.Fatalf("%s or %s holds no PEM", crtPath, keyPath)
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	var key crypto.Signer
	if k, err := x509.ParsePKCS1PrivateKey(kb.Bytes); err == nil {
		key = k
	} else if k, err := x509.ParseECPrivateKey(kb.Bytes); err == nil {
		key = k
	} else if k, err := x509.ParsePKCS8PrivateKey(kb.Bytes); err == nil {
		key = k.(crypto.Signer)
	} else {
		t.Fatalf("%s: unknown key format", keyPath)
	}
	return &testCA{cert: cert, key: key}
}

func (ca *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// servingCert is what kubeadm gives the apiserver: DNS SANs "kubernetes…"
// and the node's addresses, but not 127.0.0.1.
func (ca *testCA) servingCert(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "kube-apiserver"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames:    []string{"master-1", "kubernetes", "kubernetes.default", "kubernetes.default.svc"},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// fakeAPIServer answers /readyz like a starting kube-apiserver: 500 with
// the failing checks until readyAfter has passed (never when negative),
// then 200 "ok".
func fakeAPIServer(t *testing.T, cert tls.Certificate, readyAfter time.Duration) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	start := time.Now()
	var asked atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" {
			http.NotFound(w, r)
			return
		}
		asked.Add(1)
		if readyAfter < 0 || time.Since(start) < readyAfter {
			w.WriteHeader(http.StatusInternalServerError)
			fmt.Fprint(w, "[+]ping ok\n[+]etcd ok\n[-]poststarthook/rbac/bootstrap-roles failed: reason withheld\nreadyz check failed\n")
			return
		}
		fmt.Fprint(w, "ok")
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the "another CA" case's handshake errors
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, &asked
}

// verify waits, bounded, for /readyz: an apiserver that gets ready after
// a while is waited for (it used to be asked once); one that never does
// ends the wait at the timeout with an error that says it timed out and
// what the apiserver last answered; a cancelled context ends it at once;
// a server the cluster CA did not sign is never taken as ready.
func TestWaitReadyz(t *testing.T) {
	ca := newTestCA(t)
	cert := ca.servingCert(t)

	t.Run("ready after a delay", func(t *testing.T) {
		srv, asked := fakeAPIServer(t, cert, 1500*time.Millisecond)
		took, err := waitReadyz(context.Background(), srv.Listener.Addr().String(), ca.pool(), 30*time.Second, 100*time.Millisecond)
		if err != nil {
			t.Fatalf("waitReadyz: %v", err)
		}
		if took < 1500*time.Millisecond || asked.Load() < 3 {
			t.Errorf("returned after %s and %d requests, before the server was ready", took, asked.Load())
		}
	})
	t.Run("never ready", func(t *testing.T) {
		srv, _ := fakeAPIServer(t, cert, -1)
		start := time.Now()
		_, err := waitReadyz(context.Background(), srv.Listener.Addr().String(), ca.pool(), time.Second, 100*time.Millisecond)
		if err == nil {
			t.Fatal("a never-ready apiserver passed")
		}
		for _, want := range []string{"TIMED OUT", "within 1s", "HTTP 500", "[-]poststarthook/rbac/bootstrap-roles failed"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error lacks %q: %v", want, err)
			}
		}
		if strings.Contains(err.Error(), "[+]ping") {
			t.Errorf("error lists the passing checks too: %v", err)
		}
		if d := time.Since(start); d < time.Second || d > 10*time.Second {
			t.Errorf("waited %s for a 1s timeout", d)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		srv, _ := fakeAPIServer(t, cert, -1)
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(300*time.Millisecond, cancel)
		start := time.Now()
		_, err := waitReadyz(ctx, srv.Listener.Addr().String(), ca.pool(), time.Minute, 100*time.Millisecond)
		if !errors.Is(err, context.Canceled) || strings.Contains(err.Error(), "TIMED OUT") {
			t.Errorf("cancelled wait: %v", err)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("a cancelled wait went on for %s", d)
		}
	})
	t.Run("another CA", func(t *testing.T) {
		srv, asked := fakeAPIServer(t, newTestCA(t).servingCert(t), 0)
		_, err := waitReadyz(context.Background(), srv.Listener.Addr().String(), ca.pool(), time.Second, 100*time.Millisecond)
		if err == nil || !strings.Contains(err.Error(), "certificate") || asked.Load() != 0 {
			t.Errorf("an apiserver with a certificate of another CA: %v (%d requests served)", err, asked.Load())
		}
	})
	t.Run("nothing listening", func(t *testing.T) {
		srv, _ := fakeAPIServer(t, cert, 0)
		addr := srv.Listener.Addr().String()
		srv.Close()
		_, err := waitReadyz(context.Background(), addr, ca.pool(), time.Second, 100*time.Millisecond)
		if err == nil || !strings.Contains(err.Error(), "TIMED OUT") || !strings.Contains(err.Error(), "refused") {
			t.Errorf("nothing listening: %v", err)
		}
	})
}
