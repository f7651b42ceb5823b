package restore

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// DefaultReadyzTimeout bounds how long verify waits for the apiserver's
// /readyz to answer ok: after a restore the kubelet first starts etcd,
// then the apiserver, whose post-start hooks take a while on a cold etcd.
const DefaultReadyzTimeout = 3 * time.Minute

// readyzInterval is the pause between two /readyz requests.
const readyzInterval = time.Second

// kubeadmAPIServerName is a DNS SAN every apiserver certificate kubeadm
// signs carries, whatever the node's name and addresses: a check that
// dials 127.0.0.1 (not a SAN kubeadm puts in) verifies the name against it.
const kubeadmAPIServerName = "kubernetes"

// readyzClient returns an HTTPS client that trusts only pool and accepts a
// server certificate valid for the dialled host or for "kubernetes".
func readyzClient(pool *x509.CertPool, host string) *http.Client {
	verify := func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("the apiserver sent no certificate")
		}
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		var first error
		for _, name := range []string{host, kubeadmAPIServerName} {
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{DNSName: name, Roots: pool, Intermediates: inter})
			if err == nil {
				return nil
			}
			if first == nil {
				first = err
			}
		}
		return first
	}
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			// The chain and name are checked by VerifyConnection
			// instead of by the default, which knows one name only.
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true, VerifyConnection: verify, MinVersion: tls.VersionTLS12},
		},
	}
}

// waitReadyz asks https://hostport/readyz every interval until it answers
// 200, ctx ends, or timeout passes. It returns how long it waited, and on
// a timeout an error that says so and what the last answer was.
func waitReadyz(ctx context.Context, hostport string, pool *x509.CertPool, timeout, interval time.Duration) (time.Duration, error) {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return 0, fmt.Errorf("apiserver address %q: %w", hostport, err)
	}
	client := readyzClient(pool, host)
	defer client.CloseIdleConnections()
	url := "https://" + hostport + "/readyz"
	start := time.Now()
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	last := "no answer yet"
	for {
		req, err := http.NewRequestWithContext(wctx, http.MethodGet, url, nil)
		if err != nil {
			return 0, err
		}
		resp, err := client.Do(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Since(start), nil
			}
			last = fmt.Sprintf("HTTP %d: %s", resp.StatusCode, oneLine(string(body)))
		} else if wctx.Err() == nil {
			last = err.Error()
		}
		select {
		case <-wctx.Done():
		case <-time.After(interval):
			continue
		}
		if ctx.Err() != nil {
			return time.Since(start), fmt.Errorf("stopped waiting for %s: %w (last answer: %s)", url, ctx.Err(), last)
		}
		return time.Since(start), fmt.Errorf("TIMED OUT: %s did not answer ok within %s (last answer: %s)", url, timeout, last)
	}
}

// oneLine squeezes a /readyz body ("[+]ping ok\n[-]etcd failed…") onto
// one line, keeping only the failed checks when there are any.
func oneLine(body string) string {
	var failed, all []string
	for _, l := range strings.Split(strings.TrimSpace(body), "\n") {
		l = strings.TrimSpace(l)
		if l == "" {
			continue
		}
		all = append(all, l)
		if strings.HasPrefix(l, "[-]") {
			failed = append(failed, l)
		}
	}
	if len(failed) > 0 {
		return strings.Join(failed, "; ")
	}
	return strings.Join(all, "; ")
}
