// Package ecsmeta reads the ECS instance metadata service
// (http://100.100.100.200 on a VM), with an IMDSv2 token when the service
// hands one out. Values are untrusted bytes from the network: bodies are
// size-limited, tokens validated, and no value is quoted in an error.
// cloudsnap (instance identity, ECS credentials) and tiers/oss (the RAM
// role's STS credentials) share it.
package ecsmeta

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
	"unicode"
)

// Client reads one metadata service.
type Client struct {
	base string
	http *http.Client
}

// New returns a client of the service at base (never through a proxy:
// the service is link-local), each request bounded by timeout.
func New(base string, timeout time.Duration) *Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	return &Client{base: strings.TrimRight(base, "/"), http: &http.Client{Transport: tr, Timeout: timeout}}
}

// Base is the service's URL.
func (c *Client) Base() string { return c.base }

// Token asks for an IMDSv2 token; "" (IMDSv1) when the service hands out
// none or an unusable one.
func (c *Client) Token(ctx context.Context) string {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, c.base+"/latest/api/token", nil)
	if err != nil {
		return ""
	}
	req.Header.Set("X-aliyun-ecs-metadata-token-ttl-seconds", "300")
	resp, err := c.http.Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if err != nil || resp.StatusCode != http.StatusOK {
		return ""
	}
	tok := strings.TrimSpace(string(body))
	if tok == "" || strings.ContainsFunc(tok, func(r rune) bool { return r > unicode.MaxASCII || !unicode.IsPrint(r) }) {
		return ""
	}
	return tok
}

// Get reads one metadata path (under /latest/meta-data/) with token tok
// ("" for none); the body is at most 64 KiB.
func (c *Client) Get(ctx context.Context, tok, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/latest/meta-data/"+path, nil)
	if err != nil {
		return nil, fmt.Errorf("metadata %s: %w", path, err)
	}
	if tok != "" {
		req.Header.Set("X-aliyun-ecs-metadata-token", tok)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("metadata %s: %w", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return nil, fmt.Errorf("metadata %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("metadata %s at %s: HTTP %d", path, c.base, resp.StatusCode)
	}
	return body, nil
}
