package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kubekeep/kubekeep/rsyncish"
	"github.com/kubekeep/kubekeep/rsyncish/format"
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

// rotBlock flips the first byte of the block that holds hostPath in
// version id, in its pack: bit rot on the second disk.
func rotBlock(t *testing.T, store, id, hostPath string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(store, "versions", id+".manifest"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := format.DecodeManifest(data)
	if err != nil {
		t.Fatal(err)
	}
	var blob format.ID
	for _, e := range m.Entries {
		if e.Path == hostPath && len(e.Extents) > 0 {
			blob = e.Extents[0].ID
		}
	}
	idx, _ := filepath.Glob(filepath.Join(store, "index", "*.idx"))
	for _, ip := range idx {
		raw, _ := os.ReadFile(ip)
		entries, _, err := format.DecodeIndex(raw)
		if err != nil {
			t.Fatal(err)
		}
		for _, ie := range entries {
			if ie.ID == blob && !blob.IsZero() {
				pack := filepath.Join(store, "packs", strings.TrimSuffix(filepath.Base(ip), ".idx")+".pack")
				b, err := os.ReadFile(pack)
				if err != nil {
					t.Fatal(err)
				}
				b[ie.Off] ^= 0xff
				if err := os.WriteFile(pack, b, 0o600); err != nil {
					t.Fatal(err)
				}
				return
			}
		}
	}
	t.Fatalf("no block of %s in version %s", hostPath, id)
}

// `restore files` of a version with a rotten file restores the rest, says
// so, names the damaged file with the version holding an intact copy and
// the command that restores it, and exits non-zero. Before, it stopped at
// the damaged file with a blob error and nothing said --path could
// restore the rest.
func TestRestoreFilesDamagedFile(t *testing.T) {
	dir, ids, root := storeWithVersions(t, 2)
	other := filepath.Join(root, "etc/kubernetes/admin.conf")
	if err := os.WriteFile(other, []byte("admin"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A third version, holding admin.conf; ca.crt as in the second, the
	// same block: the first version has the only intact ca.crt.
	s, err := rsyncish.Open(dir, rsyncish.Options{AllowSameFilesystem: true})
	if err != nil {
		t.Fatal(err)
	}
	unlock, err := s.Lock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	w, err := s.NewVersion(context.Background(), rsyncish.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.AddTree(root, []string{"/etc/kubernetes"}, nil); err != nil {
		t.Fatal(err)
	}
	vi, err := w.Commit()
	if err != nil {
		t.Fatal(err)
	}
	unlock()
	rotBlock(t, dir, vi.ID, "/etc/kubernetes/pki/ca.crt")

	to := filepath.Join(t.TempDir(), "r")
	out, err := runCLI(t, "restore", "files", "--store", dir, "--version", vi.ID, "--to", to)
	if exitCode(err) == 0 {
		t.Fatalf("a restore with a damaged file exited 0:\n%s", out)
	}
	if !strings.Contains(out, "restored version "+vi.ID+" under "+to) {
		t.Errorf("the output does not say what was restored:\n%s", out)
	}
	for _, want := range []string{"/etc/kubernetes/pki/ca.crt: ", "content does not match its hash",
		"kubekeep restore files --version " + ids[0] + " --path /etc/kubernetes/pki/ca.crt --to " + to} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not say %q:\n%v", want, err)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(to, "etc/kubernetes/admin.conf")); string(b) != "admin" {
		t.Errorf("the intact admin.conf was not restored: %q", b)
	}
	if _, err := os.Stat(filepath.Join(to, "etc/kubernetes/pki/ca.crt")); err == nil {
		t.Error("the damaged ca.crt was written")
	}
}
