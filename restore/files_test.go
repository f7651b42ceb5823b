package restore

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kubekeep/kubekeep/rsyncish"
)

// The files phase run alone over a live node whose ca.key and admin.conf
// differ from the version's (and where a dir stands in a file's way, and
// a symlink points elsewhere): the version's files are restored and
// everything they replaced is kept, with its bytes and mode, under the
// run's kubekeep-replaced dir, which the output names. What already
// matched is not copied; a second run replaces nothing.
func TestFilesPhaseKeepsReplacedFiles(t *testing.T) {
	f := getFixture(t)
	ctx := ctxT(t)
	dir := filepath.Join(t.TempDir(), "node")
	if _, err := Run(ctx, f.opts(dir, PhaseFiles)); err != nil {
		t.Fatal(err)
	}
	live := map[string]string{
		"/etc/kubernetes/pki/ca.key":  "the live CA key\n",
		"/etc/kubernetes/admin.conf":  "the live admin.conf\n",
		"/etc/kubernetes/pki/sa.pub/": "", // a dir in the way of the file
	}
	for p, data := range live {
		full := filepath.Join(dir, p)
		if strings.HasSuffix(p, "/") {
			if err := os.Remove(full); err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(full, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(full, "inside"), []byte("in the dir in the way"), 0o600); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(full, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	link := filepath.Join(dir, kubeletClientCert)
	if _, err := os.Lstat(link); err != nil {
		t.Fatalf("the fixture has no %s: %v", kubeletClientCert, err)
	}
	os.Remove(link)
	if err := os.Symlink("kubelet-client-elsewhere.pem", link); err != nil {
		t.Fatal(err)
	}

	var out bytes.Buffer
	o := f.opts(dir, PhaseFiles)
	o.Out = &out
	o.Now = func() time.Time { return time.Date(2026, 11, 23, 10, 4, 0, 0, time.UTC) }
	if _, err := Run(ctx, o); err != nil {
		t.Fatalf("files phase: %v\n%s", err, out.String())
	}
	got, err := hashTree(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/etc/kubernetes/pki/ca.key", "/etc/kubernetes/admin.conf", "/etc/kubernetes/pki/sa.pub", kubeletClientCert} {
		if got[p] != f.tree[p] {
			t.Errorf("%s not restored: %q, want %q", p, got[p], f.tree[p])
		}
	}
	kept := filepath.Join(dir, "etc/kubernetes/kubekeep-replaced-20261123T100400Z")
	for p, data := range map[string]string{
		"/etc/kubernetes/pki/ca.key":        "the live CA key\n",
		"/etc/kubernetes/admin.conf":        "the live admin.conf\n",
		"/etc/kubernetes/pki/sa.pub/inside": "in the dir in the way",
	} {
		fp := filepath.Join(kept, p)
		b, err := os.ReadFile(fp)
		if err != nil || string(b) != data {
			t.Errorf("the replaced %s is not kept at %s: %q %v", p, fp, b, err)
			continue
		}
		if fi, _ := os.Stat(fp); fi.Mode().Perm() != 0o600 {
			t.Errorf("kept %s has mode %v, the old file 0600", p, fi.Mode())
		}
	}
	if tgt, err := os.Readlink(filepath.Join(kept, kubeletClientCert)); err != nil || tgt != "kubelet-client-elsewhere.pem" {
		t.Errorf("the replaced symlink is not kept: %q %v", tgt, err)
	}
	if _, err := os.Lstat(filepath.Join(kept, "etc/kubernetes/pki/ca.crt")); err == nil {
		t.Error("ca.crt matched the version and was kept anyway")
	}
	text := out.String()
	for _, want := range []string{"keep the 4 paths this restore replaces", kept + "/", "/etc/kubernetes/pki/ca.key", "/etc/kubernetes/admin.conf"} {
		if !strings.Contains(text, want) {
			t.Errorf("the output does not say %q:\n%s", want, text)
		}
	}
	if fi, err := os.Stat(kept); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("kept dir mode: %v %v", fi, err)
	}

	out.Reset()
	o.Now = func() time.Time { return time.Date(2026, 11, 23, 11, 4, 0, 0, time.UTC) }
	if _, err := Run(ctx, o); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "keep the") {
		t.Errorf("a re-run over restored files kept something:\n%s", out.String())
	}
	// A run in the same second as an earlier one does not mix their kept
	// files: it takes the next free name.
	if err := os.WriteFile(filepath.Join(dir, "etc/kubernetes/admin.conf"), []byte("edited again\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	o.Now = func() time.Time { return time.Date(2026, 11, 23, 10, 4, 0, 0, time.UTC) }
	if _, err := Run(ctx, o); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(kept+"-2", "etc/kubernetes/admin.conf")); err != nil || string(b) != "edited again\n" {
		t.Errorf("a second run in the same second: %q %v", b, err)
	}
	if b, _ := os.ReadFile(filepath.Join(kept, "etc/kubernetes/admin.conf")); string(b) != "the live admin.conf\n" {
		t.Errorf("the first run's kept admin.conf was overwritten: %q", b)
	}
}

// A symlink in the target that leads out of the root is refused before
// anything is written: the files under /etc (restored first, in path
// order) used to be in place by the time /var failed.
func TestFilesRefuseEscapingLinkBeforeWriting(t *testing.T) {
	f := getFixture(t)
	ctx := ctxT(t)
	parent := t.TempDir()
	dir, outside := filepath.Join(parent, "node"), filepath.Join(parent, "outside")
	for _, d := range []string{dir, outside} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(outside, filepath.Join(dir, "var")); err != nil {
		t.Fatal(err)
	}
	check := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, rsyncish.ErrUnsafePath) || !strings.Contains(err.Error(), "/var under "+dir+" is a symlink to "+outside) {
			t.Errorf("%s: want a refusal naming /var, got %v", what, err)
		}
		ents, _ := os.ReadDir(dir)
		if len(ents) != 1 {
			t.Errorf("%s: written before refusing: %v", what, ents)
		}
		if ents, _ := os.ReadDir(outside); len(ents) != 0 {
			t.Errorf("%s: written outside the root: %v", what, ents)
		}
	}
	_, err := Run(ctx, f.opts(dir, PhaseFiles))
	check("files phase", err)
	_, err = RestoreFiles(ctx, FilesOptions{Store: f.store, Version: f.id, To: dir})
	check("RestoreFiles", err)
}

// RestoreFiles with paths: only what is at or below them; a path the
// version holds nothing under (a typo) is an error naming it, with
// nothing written, and so is a relative one.
func TestRestoreFilesPaths(t *testing.T) {
	f := getFixture(t)
	ctx := ctxT(t)
	dir := filepath.Join(t.TempDir(), "r")
	for _, bad := range []string{"/etc/kubernets/pki", "etc/kubernetes/pki"} {
		_, err := RestoreFiles(ctx, FilesOptions{Store: f.store, Version: f.id, To: dir, Paths: []string{"/etc/kubernetes/pki", bad}})
		if err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("path %s: %v", bad, err)
		}
		if _, err := os.Lstat(dir); err == nil {
			t.Errorf("path %s: %s written", bad, dir)
		}
	}
	res, err := RestoreFiles(ctx, FilesOptions{Store: f.store, Version: f.id, To: dir, Paths: []string{"/etc/kubernetes/pki/"}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := hashTree(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for p := range got {
		switch {
		case within(p, "/etc/kubernetes/pki"):
			n++
			if got[p] != f.tree[p] && !strings.HasPrefix(got[p], "dir") {
				t.Errorf("%s: %q, want %q", p, got[p], f.tree[p])
			}
		case p == "/" || p == "/etc" || p == "/etc/kubernetes":
		default:
			t.Errorf("%s restored, not below the path asked for", p)
		}
	}
	if n != res.Entries || n < 10 {
		t.Errorf("restored %d entries below the path, result says %d", n, res.Entries)
	}
}
