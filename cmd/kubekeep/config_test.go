package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/kubekeep/kubekeep/config"
)

// Flags override the file key by key: what a flag names changes, the
// rest of the file stays.
func TestEtcdFlagsOverrideTheFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "kubekeep.yaml")
	if err := os.WriteFile(file, []byte("etcd:\n  endpoints: [\"https://file:2379\"]\n  caFile: /file/ca.crt\n  certFile: /file/client.crt\n  keyFile: /file/client.key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, _, err := runKubekeep(t, "", "config", "show", "--config", file,
		"--etcd-endpoints", "https://flag-a:2379,https://flag-b:2379", "--etcd-certfile", "/flag/client.crt")
	if err != nil {
		t.Fatal(err)
	}
	var got config.Config
	if err := yaml.NewDecoder(strings.NewReader(out)).Decode(&got); err != nil {
		t.Fatalf("config show output: %v\n%s", err, out)
	}
	want := config.Etcd{Endpoints: []string{"https://flag-a:2379", "https://flag-b:2379"}, CAFile: "/file/ca.crt",
		CertFile: "/flag/client.crt", KeyFile: "/file/client.key"}
	e := got.Etcd
	if strings.Join(e.Endpoints, ",") != strings.Join(want.Endpoints, ",") || e.CAFile != want.CAFile || e.CertFile != want.CertFile || e.KeyFile != want.KeyFile {
		t.Errorf("etcd settings %+v, want %+v", e, want)
	}
}
