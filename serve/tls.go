package serve

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"time"

	clientcmdv1 "k8s.io/client-go/tools/clientcmd/api/v1"
	"sigs.k8s.io/yaml"
)

// Credentials are a throwaway CA made for one serve, the server
// certificate it signs and the one client certificate it accepts. The CA
// key never leaves the process; the client key goes only into the
// kubeconfig (written 0600).
type Credentials struct {
	caPEM      []byte
	pool       *x509.CertPool
	server     tls.Certificate
	clientCert []byte // PEM
	clientKey  []byte // PEM
}

// credentialLifetime bounds the certificates: a serve is a session, not
// a service.
const credentialLifetime = 30 * 24 * time.Hour

// NewCredentials makes the CA and the certificates. hosts are the names
// and IPs the server certificate is for (127.0.0.1, ::1 and localhost are
// always in it).
func NewCredentials(hosts []string) (*Credentials, error) {
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "kubekeep-serve-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(credentialLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	leaf := func(cn string, usage x509.ExtKeyUsage, hosts []string) ([]byte, *ecdsa.PrivateKey, error) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, nil, err
		}
		tmpl := &x509.Certificate{
			SerialNumber: serial(),
			Subject:      pkix.Name{CommonName: cn},
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(credentialLifetime),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		}
		for _, h := range hosts {
			if ip := net.ParseIP(h); ip != nil {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			} else if h != "" {
				tmpl.DNSNames = append(tmpl.DNSNames, h)
			}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		return der, key, err
	}
	all := append([]string{"127.0.0.1", "::1", "localhost"}, hosts...)
	srvDER, srvKey, err := leaf("kubekeep-serve", x509.ExtKeyUsageServerAuth, dedupe(all))
	if err != nil {
		return nil, err
	}
	cliDER, cliKey, err := leaf(clientUser, x509.ExtKeyUsageClientAuth, nil)
	if err != nil {
		return nil, err
	}
	c := &Credentials{caPEM: pemBlock("CERTIFICATE", caDER), pool: x509.NewCertPool()}
	c.pool.AddCert(ca)
	c.server = tls.Certificate{Certificate: [][]byte{srvDER, caDER}, PrivateKey: srvKey}
	c.clientCert = pemBlock("CERTIFICATE", cliDER)
	if c.clientKey, err = keyPEM(cliKey); err != nil {
		return nil, err
	}
	return c, nil
}

func dedupe(l []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range l {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func keyPEM(k *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pemBlock("EC PRIVATE KEY", der), nil
}

// CAPEM is the CA certificate.
func (c *Credentials) CAPEM() []byte { return c.caPEM }

// ServerTLS is the server side: TLS 1.2 or later, the server certificate,
// client certificates verified against the CA when given. A client
// without one still completes the handshake, so that the Server can
// answer it with a 401 Status saying what it needs rather than a TLS
// alert curl and kubectl print as a bare handshake failure.
func (c *Credentials) ServerTLS() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{c.server},
		ClientCAs:    c.pool,
		ClientAuth:   tls.VerifyClientCertIfGiven,
		NextProtos:   []string{"h2", "http/1.1"},
	}
}

// ClientTLS is what the kubeconfig holds, as a tls.Config (tests).
func (c *Credentials) ClientTLS() (*tls.Config, error) {
	cert, err := tls.X509KeyPair(c.clientCert, c.clientKey)
	if err != nil {
		return nil, err
	}
	return &tls.Config{RootCAs: c.pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// Kubeconfig is a kubeconfig for server (https://HOST:PORT) that trusts
// the CA and carries the client certificate, with one context named
// name, current.
func (c *Credentials) Kubeconfig(server, name string) ([]byte, error) {
	cfg := clientcmdv1.Config{
		Kind: "Config", APIVersion: "v1",
		Clusters: []clientcmdv1.NamedCluster{{Name: name, Cluster: clientcmdv1.Cluster{
			Server: server, CertificateAuthorityData: c.caPEM,
		}}},
		AuthInfos: []clientcmdv1.NamedAuthInfo{{Name: name, AuthInfo: clientcmdv1.AuthInfo{
			ClientCertificateData: c.clientCert, ClientKeyData: c.clientKey,
		}}},
		Contexts: []clientcmdv1.NamedContext{{Name: name, Context: clientcmdv1.Context{
			Cluster: name, AuthInfo: name, Namespace: "default",
		}}},
		CurrentContext: name,
	}
	return yaml.Marshal(cfg)
}

// WriteKubeconfig writes data to path with mode 0600 (it holds the client
// key), replacing what is there: the file is created fresh, never
// truncated in place with an older, wider mode.
func WriteKubeconfig(path string, data []byte) error {
	tmp := path + ".tmp"
	_ = os.Remove(tmp)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// Run serves h over TLS with creds on ln until ctx is done, then closes
// h's watches (when h is a *Server) and shuts the server down, waiting
// up to five seconds for requests in flight.
func Run(ctx context.Context, ln net.Listener, h http.Handler, creds *Credentials, logger *slog.Logger) error {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	srv := &http.Server{
		Handler:           h,
		TLSConfig:         creds.ServerTLS(),
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(tls.NewListener(ln, srv.TLSConfig)) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	if s, ok := h.(*Server); ok {
		s.Close()
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := srv.Shutdown(sctx)
	if err2 := <-errc; err2 != nil && !errors.Is(err2, http.ErrServerClosed) && err == nil {
		err = err2
	}
	if errors.Is(err, context.DeadlineExceeded) {
		_ = srv.Close()
		err = nil
	}
	return err
}
