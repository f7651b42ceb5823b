package oss

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/aliyun/alibabacloud-oss-go-sdk-v2/oss/credentials"

	"github.com/kubekeep/kubekeep/internal/ecsmeta"
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
	md := &metadata{Client: ecsmeta.New(cfg.MetadataURL, metadataTimeout), role: cfg.Role}
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
	*ecsmeta.Client
	role string
}

var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

func (m *metadata) fetch(ctx context.Context) (credentials.Credentials, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*metadataTimeout)
	defer cancel()
	tok := m.Token(ctx)
	role := m.role
	if role == "" {
		body, err := m.Get(ctx, tok, "ram/security-credentials/")
		if err != nil {
			return credentials.Credentials{}, fmt.Errorf("no RAM role on this instance (set %s and %s, or attach a role): %w", EnvAccessKeyID, EnvAccessKeySecret, err)
		}
		role = strings.TrimSpace(string(body))
	}
	if !idPattern.MatchString(role) {
		return credentials.Credentials{}, fmt.Errorf("RAM role name %.40q from the metadata service is not a name", role)
	}
	body, err := m.Get(ctx, tok, "ram/security-credentials/"+role)
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
