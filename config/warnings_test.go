package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Issue 13: metrics.listen on every interface passed without a word, and
// /metrics and /healthz tell whoever can reach them about the backups.
func TestConfigWarnsOfMetricsBeyondLoopback(t *testing.T) {
	for _, tc := range []struct {
		listen string
		want   string // "" = no warning
	}{
		{`":9477"`, `":9477" listens on every interface`},
		{"0.0.0.0:9477", "listens on every interface"},
		{`"[::]:9477"`, "listens on every interface"},
		{"10.0.0.5:9477", "listens on 10.0.0.5, not loopback"},
		{"master.example.com:9477", "listens on master.example.com, not loopback"},
		{"127.0.0.1:9477", ""},
		{"127.0.0.53:9477", ""},
		{`"[::1]:9477"`, ""},
		{"localhost:9477", ""},
		{`""`, ""},
	} {
		t.Run(tc.listen, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "kubekeep.yaml")
			doc := "root: /\n# the agent\nmetrics:\n  listen: " + tc.listen + "\n"
			if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
				t.Fatal(err)
			}
			_, warns, err := Check(path)
			if err != nil {
				t.Fatal(err)
			}
			if tc.want == "" {
				if len(warns) != 0 {
					t.Fatalf("unexpected warnings: %v", warns)
				}
				return
			}
			if len(warns) != 1 {
				t.Fatalf("want one warning, got %v", warns)
			}
			got := warns[0].Error()
			prefix := path + ":4: metrics.listen: warning: "
			if !strings.HasPrefix(got, prefix) || !strings.Contains(got, tc.want) || !strings.Contains(got, "use 127.0.0.1:9477") {
				t.Errorf("got %q, want %q…%q", got, prefix, tc.want)
			}
		})
	}
}

func TestConfigWarnsOfPlainHTTPToECS(t *testing.T) {
	cfg, err := Parse("k.yaml", []byte("cloud:\n  endpoint: http://ecs.cn-hangzhou.aliyuncs.com\n"))
	if err != nil {
		t.Fatal(err)
	}
	ws := cfg.Warnings("k.yaml", nil)
	if len(ws) != 1 || !strings.HasPrefix(ws[0].Error(), "k.yaml: cloud.endpoint: warning: ") || !strings.Contains(ws[0].Error(), "use https://") {
		t.Fatalf("got %v", ws)
	}
	for _, ok := range []string{"https://ecs.cn-hangzhou.aliyuncs.com", "http://127.0.0.1:8080", "http://localhost:8080"} {
		c := Default()
		c.Cloud.Endpoint = ok
		if ws := c.Warnings("k.yaml", nil); len(ws) != 0 {
			t.Errorf("%s: unexpected %v", ok, ws)
		}
	}
}

// The shipped example and the defaults are what an operator starts from:
// they must not warn.
func TestConfigExampleHasNoWarnings(t *testing.T) {
	_, warns, err := Check(filepath.Join("..", "examples", "kubeadm.yaml"))
	if err != nil || len(warns) != 0 {
		t.Fatalf("%v %v", err, warns)
	}
}
