package cloudsnap

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/auth/credentials"

	"github.com/kubekeep/kubekeep/internal/ecsmeta"
)

// metadataClient reads the ECS instance metadata service (internal/ecsmeta).
type metadataClient struct {
	*ecsmeta.Client
}

const metadataTimeout = 3 * time.Second

func newMetadataClient(base string) *metadataClient {
	return &metadataClient{ecsmeta.New(base, metadataTimeout)}
}

// raw GETs one metadata path with a fresh token and returns the body (at
// most 64 KiB).
func (m *metadataClient) raw(ctx context.Context, path string) ([]byte, error) {
	return m.Get(ctx, m.Token(ctx), path)
}

// get returns one metadata value (instance-id, region-id, zone-id).
func (m *metadataClient) get(ctx context.Context, path string) (string, error) {
	body, err := m.raw(ctx, path)
	if err != nil {
		return "", err
	}
	return ParseMetadataValue(body)
}

// ParseMetadataValue validates a plain metadata value: one line, an id
// made of letters, digits, '-', '_' and '.', as instance, region and zone
// ids and RAM role names are.
func ParseMetadataValue(body []byte) (string, error) {
	v := strings.TrimSpace(string(body))
	if !idPattern.MatchString(v) {
		return "", fmt.Errorf("metadata value %.40q is not an id", v)
	}
	return v, nil
}

// RoleCredentials are the STS credentials of an ECS RAM role.
type RoleCredentials struct {
	AccessKeyID     string
	AccessKeySecret string
	SecurityToken   string
	Expiration      time.Time
}

// ParseRoleCredentials parses the metadata service's answer for
// ram/security-credentials/<role>. Its errors never quote the body: it
// holds secrets.
func ParseRoleCredentials(body []byte) (*RoleCredentials, error) {
	var v struct {
		AccessKeyID     string `json:"AccessKeyId"`
		AccessKeySecret string `json:"AccessKeySecret"`
		SecurityToken   string `json:"SecurityToken"`
		Expiration      string `json:"Expiration"`
		Code            string `json:"Code"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		return nil, errors.New("RAM role credentials from the metadata service are not valid JSON")
	}
	if v.Code != "Success" {
		return nil, fmt.Errorf("metadata service answered RAM role credentials with Code %.40q, not Success", v.Code)
	}
	if v.AccessKeyID == "" || v.AccessKeySecret == "" || v.SecurityToken == "" {
		return nil, errors.New("RAM role credentials from the metadata service lack AccessKeyId, AccessKeySecret or SecurityToken")
	}
	exp, err := time.Parse("2006-01-02T15:04:05Z", v.Expiration)
	if err != nil {
		return nil, errors.New("RAM role credentials from the metadata service have no valid Expiration")
	}
	return &RoleCredentials{AccessKeyID: v.AccessKeyID, AccessKeySecret: v.AccessKeySecret,
		SecurityToken: v.SecurityToken, Expiration: exp}, nil
}

// roleProvider is an SDK credentials provider for the instance's RAM
// role, read from a configurable metadata URL (the SDK's own provider only
// knows 100.100.100.200).
type roleProvider struct {
	md *metadataClient

	mu     sync.Mutex
	cached *RoleCredentials
}

func (p *roleProvider) GetProviderName() string { return "ecs_ram_role" }

func (p *roleProvider) GetCredentials() (*credentials.Credentials, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	// Refresh a few minutes early so a long wait never signs with a token
	// that expires in flight.
	if p.cached == nil || time.Until(p.cached.Expiration) < 3*time.Minute {
		ctx, cancel := context.WithTimeout(context.Background(), 3*metadataTimeout)
		defer cancel()
		role := os.Getenv("ALIBABA_CLOUD_ECS_METADATA")
		if role == "" {
			body, err := p.md.raw(ctx, "ram/security-credentials/")
			if err != nil {
				return nil, fmt.Errorf("no RAM role on this instance: %w", err)
			}
			if role, err = ParseMetadataValue(body); err != nil {
				return nil, fmt.Errorf("RAM role name: %w", err)
			}
		}
		body, err := p.md.raw(ctx, "ram/security-credentials/"+role)
		if err != nil {
			return nil, fmt.Errorf("RAM role %s: %w", role, err)
		}
		rc, err := ParseRoleCredentials(body)
		if err != nil {
			return nil, fmt.Errorf("RAM role %s: %w", role, err)
		}
		p.cached = rc
	}
	return &credentials.Credentials{AccessKeyId: p.cached.AccessKeyID, AccessKeySecret: p.cached.AccessKeySecret,
		SecurityToken: p.cached.SecurityToken, ProviderName: p.GetProviderName()}, nil
}

// credentialChain tries the SDK's environment provider
// (ALIBABA_CLOUD_ACCESS_KEY_ID / _SECRET / _SECURITY_TOKEN), then the RAM
// role. Nothing here is ever logged.
type credentialChain struct {
	providers []credentials.CredentialsProvider
}

func newCredentialChain(md *metadataClient) *credentialChain {
	return &credentialChain{providers: []credentials.CredentialsProvider{
		credentials.NewEnvironmentVariableCredentialsProvider(),
		&roleProvider{md: md},
	}}
}

func (c *credentialChain) GetProviderName() string { return "kubekeep" }

func (c *credentialChain) GetCredentials() (*credentials.Credentials, error) {
	var msgs []string
	for _, p := range c.providers {
		cc, err := p.GetCredentials()
		if err == nil {
			return cc, nil
		}
		msgs = append(msgs, p.GetProviderName()+": "+err.Error())
	}
	return nil, fmt.Errorf("no Alibaba Cloud credentials: set ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET (and ALIBABA_CLOUD_SECURITY_TOKEN for STS) or attach a RAM role to the instance (%s)",
		strings.Join(msgs, "; "))
}
