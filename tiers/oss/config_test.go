package oss_test

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/kubekeep/kubekeep/cloudsnap/ecsfake"
	"github.com/kubekeep/kubekeep/rsyncish/backend"
	"github.com/kubekeep/kubekeep/tiers/oss"
	"github.com/kubekeep/kubekeep/tiers/oss/ossfake"
)

// Bad credentials and a missing bucket are errors naming the tier, never
// showing a secret.
func TestOSSBadConfig(t *testing.T) {
	e := newEnv(t, ossfake.Options{})
	bucket := e.bucket()
	const wrongSecret = "not-the-secret-at-all-0000"
	for _, c := range []struct {
		name string
		cfg  func() oss.Config
		want []string
	}{
		{"wrong secret", func() oss.Config {
			cfg := e.config(bucket)
			cfg.Creds = oss.StaticCredentials(accessKey, wrongSecret, "")
			return cfg
		}, []string{"refused the credentials", "SignatureDoesNotMatch", oss.EnvAccessKeySecret}},
		{"unknown key", func() oss.Config {
			cfg := e.config(bucket)
			cfg.Creds = oss.StaticCredentials("LTAI5tNoSuchKey", secretKey, "")
			return cfg
		}, []string{"refused the credentials", "InvalidAccessKeyId"}},
		{"missing bucket", func() oss.Config { return e.config("no-such-bucket") }, []string{`bucket "no-such-bucket" does not exist`, "NoSuchBucket"}},
		{"region the bucket is not in", func() oss.Config {
			cfg := e.config(bucket)
			cfg.Region = "cn-shanghai"
			return cfg
		}, []string{"InvalidArgument", "region"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := oss.Open(ctxT(t), c.cfg())
			if err == nil {
				t.Fatal("open succeeded")
			}
			for _, w := range append(c.want, "oss://"+strings.TrimPrefix(e.srv.URL, "http://")) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("open error %q lacks %q", err, w)
				}
			}
			for _, s := range []string{secretKey, wrongSecret} {
				if strings.Contains(err.Error(), s) {
					t.Errorf("the error shows a secret: %v", err)
				}
			}
		})
	}
}

// Signed with the STS credentials of the instance's RAM role, read from
// a metadata service at a configurable URL (IMDSv2 token required), the
// tier works; the fake OSS refuses those keys without their token.
func TestOSSRAMRoleCredentials(t *testing.T) {
	e := newEnv(t, ossfake.Options{})
	md := ecsfake.New(ecsfake.Options{Region: region, RequireIMDSv2: true})
	md.AddInstance(ecsfake.InstanceSpec{ID: "i-master", Name: "master"})
	const stsID, stsSecret, stsToken = "STS.NTestRoleKey", "sts-secret-from-the-role", "CAIS-role-token"
	md.SetRAMRole("KubekeepOffsite", stsID, stsSecret, stsToken)
	e.fake.AddSTSKey(stsID, stsSecret, stsToken)
	mdSrv := httptest.NewServer(md)
	t.Cleanup(mdSrv.Close)

	bucket := e.bucket()
	cfg := e.config(bucket)
	cfg.Creds = oss.RAMRoleCredentials(oss.RAMRole{MetadataURL: mdSrv.URL})
	b := open(t, cfg)
	h := backend.Handle{Type: backend.PackFile, Name: "role.pack"}
	if err := b.Save(ctxT(t), h, backend.NewByteReader([]byte("signed by the role"))); err != nil {
		t.Fatal(err)
	}
	if got, err := backend.LoadAll(ctxT(t), b, h); err != nil || string(got) != "signed by the role" {
		t.Fatalf("load: %q, %v", got, err)
	}

	// The same keys without the token are refused: the token was sent.
	cfg.Creds = oss.StaticCredentials(stsID, stsSecret, "")
	if _, err := oss.Open(ctxT(t), cfg); err == nil || !strings.Contains(err.Error(), "InvalidSecurityToken") {
		t.Errorf("open with the role's keys but no token = %v, want InvalidSecurityToken", err)
	}

	// No role attached: a clear error, no secret.
	bare := ecsfake.New(ecsfake.Options{Region: region})
	bare.AddInstance(ecsfake.InstanceSpec{ID: "i-other"})
	bareSrv := httptest.NewServer(bare)
	t.Cleanup(bareSrv.Close)
	cfg.Creds = oss.RAMRoleCredentials(oss.RAMRole{MetadataURL: bareSrv.URL})
	if _, err := oss.Open(ctxT(t), cfg); err == nil || !strings.Contains(err.Error(), "no RAM role on this instance") {
		t.Errorf("open on an instance without a role = %v", err)
	}
}

// DefaultCredentials takes the environment's pair when both are set.
func TestOSSEnvCredentials(t *testing.T) {
	e := newEnv(t, ossfake.Options{})
	bucket := e.bucket()
	t.Setenv(oss.EnvAccessKeyID, accessKey)
	t.Setenv(oss.EnvAccessKeySecret, secretKey)
	t.Setenv(oss.EnvSecurityToken, "")
	cfg := e.config(bucket)
	cfg.Creds = oss.DefaultCredentials("http://127.0.0.1:1") // no metadata service: must not be asked
	open(t, cfg)
	t.Setenv(oss.EnvAccessKeySecret, "")
	if _, ok := oss.EnvCredentials(); ok {
		t.Error("EnvCredentials with an empty secret reported ok")
	}
}

// The default endpoint is the region's internal one; Location shows
// endpoint, bucket and prefix.
func TestOSSEndpointAndLocation(t *testing.T) {
	if got := oss.InternalEndpoint("cn-shanghai"); got != "https://oss-cn-shanghai-internal.aliyuncs.com" {
		t.Errorf("internal endpoint %q", got)
	}
	e := newEnv(t, ossfake.Options{})
	b := open(t, e.config(e.bucket()))
	if loc := b.Location(); !strings.HasPrefix(loc, "oss://127.0.0.1:") || !strings.HasSuffix(loc, "/cluster-a/store") || strings.Contains(loc, secretKey) {
		t.Errorf("location %q", loc)
	}
}
