package oss

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"time"
	"unicode"

	"github.com/aliyun/alibabacloud-oss-go-sdk-v2/oss/credentials"
)

// The environment variables static credentials come from (the names of
// the Alibaba Cloud CLI and SDKs; the OSS SDK's own provider reads
// OSS_ACCESS_KEY_ID instead, so kubekeep does not use it).
const (
	EnvAccessKeyID     = "ALIBABA_CLOUD_ACCESS_KEY_ID"
	EnvAccessKeySecret = "ALIBABA_CLOUD_ACCESS_KEY_SECRET"
	EnvSecurityToken   = "ALIBABA_CLOUD_SECURITY_TOKEN"
)

// DefaultMetadataURL is the ECS instance metadata service.
const DefaultMetadataURL = "http://100.100.100.200"

// StaticCredentials signs with a fixed AccessKey pair (and an STS token,
// if not empty).
func StaticCredentials(id, secret, token string) credentials.CredentialsProvider {
	return credentials.NewStaticCredentialsProvider(id, secret, token)
}

// EnvCredentials reads ALIBABA_CLOUD_ACCESS_KEY_ID and
// ALIBABA_CLOUD_ACCESS_KEY_SECRET (and ALIBABA_CLOUD_SECURITY_TOKEN)
// now; ok is false when either of the first two is unset.
func EnvCredentials() (p credentials.CredentialsProvider, ok bool) {
	id, secret := os.Getenv(EnvAccessKeyID), os.Getenv(EnvAccessKeySecret)
	if id == "" || secret == "" {
		return nil, false
	}
	return StaticCredentials(id, secret, os.Getenv(EnvSecurityToken)), true
}

// RAMRole configures RAMRoleCredentials.
type RAMRole struct {
	// MetadataURL is the metadata service base (default
	// DefaultMetadataURL; tests point it at a fake).
	MetadataURL string
	// Role is the RAM role's name (default: the one attached to the
	// instance, as the metadata service lists it).
	Role string
}

// RAMRoleCredentials signs with the STS credentials of the ECS
// instance's RAM role, read from the metadata service (an IMDSv2 token
// first, plain GETs where the service hands none out) and refreshed by
// the SDK's fetcher provider before they expire. The SDK's own ECS role
// provider only knows 100.100.100.200 and no IMDSv2 token, hence this
// one. Errors never quote the metadata service's answer: it holds
// secrets.
func RAMRoleCredentials(cfg RAMRole) credentials.CredentialsProvider {
	if cfg.MetadataURL == "" {
		cfg.MetadataURL = DefaultMetadataURL
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil // the metadata service is link-local: never through a proxy
	md := &metadata{base: strings.TrimRight(cfg.MetadataURL, "/"), role: cfg.Role,
		http: &http.Client{Transport: tr, Timeout: metadataTimeout}}
	return credentials.NewCredentialsFetcherProvider(credentials.CredentialsFetcherFunc(md.fetch))
}

// DefaultCredentials is EnvCredentials when both variables are set, else
// the instance's RAM role from metadataURL ("" for the real service).
func DefaultCredentials(metadataURL string) credentials.CredentialsProvider {
	if p, ok := EnvCredentials(); ok {
		return p
	}
	return RAMRoleCredentials(RAMRole{MetadataURL: metadataURL})
}

const metadataTimeout = 3 * time.Second

type metadata struct {
	base string
	role string
	http *http.Client
}

var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

func (m *metadata) token(ctx context.Context) string {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, m.base+"/latest/api/token", nil)
	if err != nil {
		return ""
	}
	req.Header.Set("X-aliyun-ecs-metadata-token-ttl-seconds", "300")
	resp, err := m.http.Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1024))
	tok := strings.TrimSpace(string(body))
	if err != nil || resp.StatusCode != http.StatusOK || tok == "" ||
		strings.ContainsFunc(tok, func(r rune) bool { return r > unicode.MaxASCII || !unicode.IsPrint(r) }) {
		return ""
	}
	return tok
}

func (m *metadata) get(ctx context.Context, tok, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.base+"/latest/meta-data/"+path, nil)
	if err != nil {
		return nil, fmt.Errorf("metadata %s: %w", path, err)
	}
	if tok != "" {
		req.Header.Set("X-aliyun-ecs-metadata-token", tok)
	}
	resp, err := m.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("metadata %s: %w", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return nil, fmt.Errorf("metadata %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("metadata %s at %s: HTTP %d", path, m.base, resp.StatusCode)
	}
	return body, nil
}

func (m *metadata) fetch(ctx context.Context) (credentials.Credentials, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*metadataTimeout)
	defer cancel()
	tok := m.token(ctx)
	role := m.role
	if role == "" {
		body, err := m.get(ctx, tok, "ram/security-credentials/")
		if err != nil {
			return credentials.Credentials{}, fmt.Errorf("no RAM role on this instance (set %s and %s, or attach a role): %w", EnvAccessKeyID, EnvAccessKeySecret, err)
		}
		role = strings.TrimSpace(string(body))
	}
	if !idPattern.MatchString(role) {
		return credentials.Credentials{}, fmt.Errorf("RAM role name %.40q from the metadata service is not a name", role)
	}
	body, err := m.get(ctx, tok, "ram/security-credentials/"+role)
	if err != nil {
		return credentials.Credentials{}, fmt.Errorf("RAM role %s: %w", role, err)
	}
	var v struct {
		AccessKeyID     string `json:"AccessKeyId"`
		AccessKeySecret string `json:"AccessKeySecret"`
		SecurityToken   string `json:"SecurityToken"`
		Expiration      string `json:"Expiration"`
		Code            string `json:"Code"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		return credentials.Credentials{}, fmt.Errorf("RAM role %s: the metadata service's credentials are not valid JSON", role)
	}
	if v.Code != "Success" {
		return credentials.Credentials{}, fmt.Errorf("RAM role %s: the metadata service answered Code %.40q, not Success", role, v.Code)
	}
	if v.AccessKeyID == "" || v.AccessKeySecret == "" || v.SecurityToken == "" {
		return credentials.Credentials{}, fmt.Errorf("RAM role %s: %w", role, errors.New("the metadata service's credentials lack AccessKeyId, AccessKeySecret or SecurityToken"))
	}
	exp, err := time.Parse("2006-01-02T15:04:05Z", v.Expiration)
	if err != nil {
		return credentials.Credentials{}, fmt.Errorf("RAM role %s: the metadata service's credentials have no valid Expiration", role)
	}
	return credentials.Credentials{AccessKeyID: v.AccessKeyID, AccessKeySecret: v.AccessKeySecret,
		SecurityToken: v.SecurityToken, Expires: &exp}, nil
}
