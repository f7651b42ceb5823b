package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/kubekeep/kubekeep/internal/s3test"
)

// The second-site story through the CLI, on a real S3 server with Object
// Lock: keygen, sync (incremental), the tier's versions, then on "a new
// machine" with only the identity: pull and restore. The master cannot
// read the tier back, and the bucket holds no plaintext.
func TestOffsiteSyncPullRestore(t *testing.T) {
	srv := s3test.StartT(t)
	srv.Bucket(t, "kk-dr", true)

	idFile := filepath.Join(t.TempDir(), "dr.agekey")
	recipient, err := runCLI(t, "offsite", "keygen", "--out", idFile)
	if err != nil {
		t.Fatal(err)
	}
	recipient = strings.TrimSpace(recipient)
	if fi, err := os.Stat(idFile); err != nil || fi.Mode().Perm() != 0o600 || !strings.HasPrefix(recipient, "age1") {
		t.Fatalf("keygen: %q, %v %v", recipient, fi.Mode(), err)
	}
	if _, err := runCLI(t, "offsite", "keygen", "--out", idFile); exitCode(err) != 2 {
		t.Errorf("keygen over an existing identity: %v, want exit 2", err)
	}

	dir, ids, root := storeWithVersions(t, 3)
	cfg := filepath.Join(t.TempDir(), "kubekeep.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`offsite:
  - name: dr
    url: s3://kk-dr/cp1
    endpoint: http://%s
    region: us-east-1
    recipients: [%s]
    lockDays: 1
`, srv.Endpoint, recipient)), 0o600)

	type syncJSON struct {
		Tier                              string
		VersionsUploaded, ObjectsUploaded int
		BytesUploaded, BytesSkipped       int64
	}
	// Without a terminal a sync writes one line (its bytes, time and
	// rate, from tiers' progress) on stderr.
	syncLine := regexp.MustCompile(`^offsite sync dr: ([\d.]+ (B|KiB|MiB) in \S+ \([\d.]+ [KMG]?i?B/s\)|done in \S+)\n$`)
	sync := func() syncJSON {
		t.Helper()
		out, stderr, err := runKubekeepEnv(t, "offsite", "sync", "--config", cfg, "--store", dir, "--log-level", "error", "-o", "json")
		if err != nil {
			t.Fatalf("offsite sync: %v\n%s", err, out)
		}
		var r syncJSON
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("sync -o json: %v\n%s", err, out)
		}
		if m := syncLine.FindStringSubmatch(stderr); m == nil || (r.BytesUploaded > 0) != (m[2] != "") {
			t.Errorf("sync uploaded %d bytes; its line on stderr: %q", r.BytesUploaded, stderr)
		}
		return r
	}
	if r := sync(); r.Tier != "dr" || r.VersionsUploaded != 3 || r.BytesUploaded == 0 {
		t.Fatalf("first sync: %+v", r)
	}
	if r := sync(); r.ObjectsUploaded != 0 || r.BytesSkipped == 0 {
		t.Errorf("second sync with nothing new: %+v", r)
	}

	versions := func(args ...string) []string {
		t.Helper()
		out, err := runCLI(t, append([]string{"offsite", "versions", "--config", cfg, "-o", "json"}, args...)...)
		if err != nil {
			t.Fatalf("offsite versions %v: %v\n%s", args, err, out)
		}
		var vs []struct{ ID string }
		if err := json.Unmarshal([]byte(out), &vs); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, v := range vs {
			got = append(got, v.ID)
		}
		return got
	}
	if got := versions("--store", dir); strings.Join(got, " ") != strings.Join(ids, " ") {
		t.Errorf("the master's offsite versions = %v, want %v", got, ids)
	}
	if got := versions("--identity", idFile); strings.Join(got, " ") != strings.Join(ids, " ") {
		t.Errorf("the tier's own versions = %v, want %v", got, ids)
	}
	if _, err := runCLI(t, "offsite", "verify", "--config", cfg, "--store", dir); err != nil {
		t.Errorf("offsite verify on the master: %v", err)
	}
	if out, err := runCLI(t, "offsite", "verify", "--config", cfg, "--identity", idFile, "--read-data"); err != nil {
		t.Errorf("offsite verify --read-data: %v\n%s", err, out)
	}

	// The bucket as its readers see it: no plaintext (the store's packs
	// hold the file content as is).
	plain := bytes.Repeat([]byte("x"), 64)
	objects := 0
	filepath.Walk(srv.Root, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			objects++
			if data, _ := os.ReadFile(p); bytes.Contains(data, plain) {
				t.Errorf("%s in the bucket holds backed-up bytes in the clear", p)
			}
		}
		return nil
	})
	if objects < 5 {
		t.Errorf("the bucket dir holds %d objects: the check above saw nothing", objects)
	}

	// A new machine: no store, the config, the identity.
	if _, err := runCLI(t, "offsite", "pull", "--config", cfg, "--store", filepath.Join(t.TempDir(), "x")); exitCode(err) != 2 {
		t.Errorf("pull without an identity: %v, want exit 2", err)
	}
	other := filepath.Join(t.TempDir(), "other.agekey")
	if _, err := runCLI(t, "offsite", "keygen", "--out", other); err != nil {
		t.Fatal(err)
	}
	if _, err := runCLI(t, "offsite", "pull", "--config", cfg, "--identity", other, "--store", filepath.Join(t.TempDir(), "y")); err == nil || !strings.Contains(err.Error(), "identity") {
		t.Errorf("pull with another identity: %v", err)
	}
	newStore := filepath.Join(t.TempDir(), "store")
	out, stderr, err := runKubekeepEnv(t, "offsite", "pull", "--config", cfg, "--identity", idFile, "--version", "latest", "--store", newStore, "--log-level", "error", "-o", "json")
	if err != nil {
		t.Fatalf("pull: %v\n%s", err, out)
	}
	if !regexp.MustCompile(`^offsite pull dr: [\d.]+ (B|KiB|MiB) in \S+ \([\d.]+ [KMG]?i?B/s\)\n$`).MatchString(stderr) {
		t.Errorf("pull's line on stderr: %q", stderr)
	}
	var pr struct{ Version string }
	if json.Unmarshal([]byte(out), &pr); pr.Version != ids[2] {
		t.Errorf("pull: %s, want version %s", out, ids[2])
	}
	to := t.TempDir()
	if out, err := runCLI(t, "restore", "files", "--store", newStore, "--version", "latest", "--to", to); err != nil {
		t.Fatalf("restore from the pulled store: %v\n%s", err, out)
	}
	got, _ := os.ReadFile(filepath.Join(to, "etc/kubernetes/pki/ca.crt"))
	want, _ := os.ReadFile(filepath.Join(root, "etc/kubernetes/pki/ca.crt"))
	if len(want) == 0 || !bytes.Equal(got, want) {
		t.Errorf("the file restored from the pulled store differs (%d bytes, want %d)", len(got), len(want))
	}

	// Wrong credentials: exit 1, the tier named, the secret not shown.
	t.Setenv("AWS_SECRET_ACCESS_KEY", "wrong-"+srv.SecretKey[:8])
	_, err = runCLI(t, "offsite", "sync", "--config", cfg, "--store", dir)
	if exitCode(err) != 1 || !strings.Contains(err.Error(), "dr") || strings.Contains(err.Error(), srv.SecretKey[:8]) {
		t.Errorf("sync with a wrong secret: %v", err)
	}
}
