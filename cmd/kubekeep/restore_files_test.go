package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// `restore files --to` onto an existing tree keeps what it replaces and
// says where; a --path the version holds nothing under is an error naming
// it, with nothing written.
func TestRestoreFilesKeepsReplacedAndChecksPaths(t *testing.T) {
	dir, ids, _ := storeWithVersions(t, 2)
	to := filepath.Join(t.TempDir(), "r")
	if out, err := runCLI(t, "restore", "files", "--store", dir, "--version", ids[1], "--to", to); err != nil || strings.Contains(out, "kept") {
		t.Fatalf("restore into an empty dir: %v\n%s", err, out)
	}
	ca := filepath.Join(to, "etc/kubernetes/pki/ca.crt")
	if err := os.WriteFile(ca, []byte("edited by hand"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := runCLI(t, "restore", "files", "--store", dir, "--version", ids[0], "--to", to)
	if err != nil {
		t.Fatalf("restore over a tree: %v\n%s", err, out)
	}
	if b, _ := os.ReadFile(ca); string(b) != strings.Repeat("x", 100) {
		t.Errorf("ca.crt not restored from the first version: %q", b)
	}
	kept, _ := filepath.Glob(filepath.Join(to, "etc/kubernetes/kubekeep-replaced-*/etc/kubernetes/pki/ca.crt"))
	if len(kept) != 1 {
		t.Fatalf("the replaced ca.crt is not kept: %v\n%s", kept, out)
	}
	if b, _ := os.ReadFile(kept[0]); string(b) != "edited by hand" {
		t.Errorf("kept ca.crt holds %q", b)
	}
	if keptDir := strings.TrimSuffix(kept[0], "/etc/kubernetes/pki/ca.crt"); !strings.Contains(out, "kept 1 replaced paths under "+keptDir+": /etc/kubernetes/pki/ca.crt") {
		t.Errorf("the output does not say what was kept where:\n%s", out)
	}

	fresh := filepath.Join(t.TempDir(), "typo")
	_, err = runCLI(t, "restore", "files", "--store", dir, "--to", fresh, "--path", "/etc/kubernetes/pki", "--path", "/etc/kubernets")
	if err == nil || exitCode(err) == 0 || !strings.Contains(err.Error(), "/etc/kubernets") {
		t.Errorf("a --path matching nothing: %v", err)
	}
	if _, err := os.Lstat(fresh); err == nil {
		t.Error("a refused restore wrote its target")
	}
}
