package kubenode

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	clientcmdv1 "k8s.io/client-go/tools/clientcmd/api/v1"
	"sigs.k8s.io/yaml"
)

// APIClient is a minimal HTTPS client for the apiserver a kubeconfig
// names, with the kubeconfig's own credentials (client certificate or
// token). The main module does not carry client-go's REST stack (its
// dependencies are not in go.sum), and tests mostly want kubectl anyway:
// this is for the few calls the harness makes itself.
type APIClient struct {
	Server string // https://10.127.0.1:6443
	User   string // the kubeconfig user's name
	http   *http.Client
	token  string
}

// NewAPIClient reads kubeconfig's current context.
func NewAPIClient(kubeconfig string) (*APIClient, error) {
	data, err := os.ReadFile(kubeconfig)
	if err != nil {
		return nil, err
	}
	var cfg clientcmdv1.Config
	if err := yaml.Unmarshal(data, &cfg); err != nil {
		return nil, fmt.Errorf("kubenode: %s: %w", kubeconfig, err)
	}
	var (
		ctx     *clientcmdv1.Context
		cluster *clientcmdv1.Cluster
		user    *clientcmdv1.AuthInfo
	)
	for i := range cfg.Contexts {
		if cfg.Contexts[i].Name == cfg.CurrentContext {
			ctx = &cfg.Contexts[i].Context
		}
	}
	if ctx == nil {
		return nil, fmt.Errorf("kubenode: %s: current context %q not found", kubeconfig, cfg.CurrentContext)
	}
	for i := range cfg.Clusters {
		if cfg.Clusters[i].Name == ctx.Cluster {
			cluster = &cfg.Clusters[i].Cluster
		}
	}
	for i := range cfg.AuthInfos {
		if cfg.AuthInfos[i].Name == ctx.AuthInfo {
			user = &cfg.AuthInfos[i].AuthInfo
		}
	}
	if cluster == nil || user == nil {
		return nil, fmt.Errorf("kubenode: %s: cluster %q or user %q not found", kubeconfig, ctx.Cluster, ctx.AuthInfo)
	}
	rel := func(p string) string {
		if p != "" && !filepath.IsAbs(p) {
			return filepath.Join(filepath.Dir(kubeconfig), p)
		}
		return p
	}
	load := func(inline []byte, file string) ([]byte, error) {
		if len(inline) > 0 || file == "" {
			return inline, nil
		}
		return os.ReadFile(rel(file))
	}
	caPEM, err := load(cluster.CertificateAuthorityData, cluster.CertificateAuthority)
	if err != nil {
		return nil, err
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if len(caPEM) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			return nil, fmt.Errorf("kubenode: %s: no CA certificate in the cluster's certificate-authority", kubeconfig)
		}
		tc.RootCAs = pool
	}
	if cluster.InsecureSkipTLSVerify {
		tc.InsecureSkipVerify = true
	}
	tc.ServerName = cluster.TLSServerName
	certPEM, err := load(user.ClientCertificateData, user.ClientCertificate)
	if err != nil {
		return nil, err
	}
	keyPEM, err := load(user.ClientKeyData, user.ClientKey)
	if err != nil {
		return nil, err
	}
	if len(certPEM) > 0 {
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, fmt.Errorf("kubenode: %s: client certificate: %w", kubeconfig, err)
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	token := user.Token
	if token == "" && user.TokenFile != "" {
		b, err := os.ReadFile(rel(user.TokenFile))
		if err != nil {
			return nil, err
		}
		token = strings.TrimSpace(string(b))
	}
	return &APIClient{
		Server: strings.TrimRight(cluster.Server, "/"),
		User:   ctx.AuthInfo,
		token:  token,
		http: &http.Client{
			Timeout:   30 * time.Second,
			Transport: &http.Transport{TLSClientConfig: tc, Proxy: nil, ForceAttemptHTTP2: true},
		},
	}, nil
}

// Do sends method path (e.g. "/api/v1/nodes") with body (JSON-encoded
// unless nil or []byte) and decodes a 2xx answer into out (nil: drop
// it). Any other status is an error holding the apiserver's message.
func (c *APIClient) Do(ctx context.Context, method, path string, body, out any) error {
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		r = bytes.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			return err
		}
		r = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.Server+path, r)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	if r != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return &StatusError{Code: resp.StatusCode, Body: strings.TrimSpace(string(data))}
	}
	switch o := out.(type) {
	case nil:
		return nil
	case *[]byte:
		*o = data
		return nil
	default:
		return json.Unmarshal(data, out)
	}
}

// StatusError is a non-2xx answer.
type StatusError struct {
	Code int
	Body string
}

func (e *StatusError) Error() string { return fmt.Sprintf("HTTP %d: %s", e.Code, e.Body) }

// Close drops idle connections.
func (c *APIClient) Close() { c.http.CloseIdleConnections() }
