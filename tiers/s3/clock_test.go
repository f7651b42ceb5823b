package s3_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/kubekeep/kubekeep/tiers/s3"
)

// A master whose clock is more than S3's 15 minutes off: the server
// refuses every request, and a refused HEAD has no body, so minio-go
// reports "Access Denied" as for wrong credentials. The error says the
// clocks are apart, by how much, and to fix the time. A refusal with the
// clocks in step stays what it was.
func TestClockSkewIsNamed(t *testing.T) {
	for _, c := range []struct {
		name      string
		serverOff time.Duration
		wantClock bool
	}{
		{"an hour ahead", time.Hour, true},
		{"40 minutes behind", -40 * time.Minute, true},
		{"in step", 3 * time.Second, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Date", time.Now().Add(c.serverOff).UTC().Format(http.TimeFormat))
				w.Header().Set("Content-Type", "application/xml")
				w.WriteHeader(http.StatusForbidden)
				if r.Method != http.MethodHead {
					w.Write([]byte(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>`))
				}
			}))
			defer srv.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, err := s3.Open(ctx, s3.Config{Endpoint: strings.TrimPrefix(srv.URL, "http://"), Bucket: "kk-dr", Prefix: "cp1", Region: "us-east-1",
				Creds: credentials.NewStaticV4("AKIDEXAMPLE", "not-a-secret-key", "")})
			if err == nil {
				t.Fatal("Open against a server refusing everything succeeded")
			}
			msg := err.Error()
			if got := strings.Contains(msg, "clock"); got != c.wantClock {
				t.Errorf("error mentions the clock: %v, want %v: %s", got, c.wantClock, msg)
			}
			if c.wantClock && (!strings.Contains(msg, "NTP") || !strings.Contains(msg, "s3://")) {
				t.Errorf("error does not name the tier and the fix: %s", msg)
			}
			if strings.Contains(msg, "not-a-secret-key") {
				t.Errorf("the secret is in the error: %s", msg)
			}
		})
	}
}
