package rsyncish

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// TestNonUTF8Names: file names are bytes. Two names that differ only in a
// byte that is not valid UTF-8 are two files, each with its own content,
// and a symlink's target comes back byte for byte.
func TestNonUTF8Names(t *testing.T) {
	root, dir, out := t.TempDir(), t.TempDir(), t.TempDir()
	files := map[string][]byte{
		"etc/kubernetes/key\xff":       []byte("first"),
		"etc/kubernetes/key\xfe":       []byte("second"),
		"etc/kubernetes/key\ufffd":     []byte("the replacement character itself"),
		"etc/kubernetes/d\xc3\x28/f":   []byte("inside a badly named dir"),
		"etc/kubernetes/caf\xe9.latin": randBytes(70 << 10),
	}
	for p, data := range files {
		writeFile(t, filepath.Join(root, p), data, 0o600)
	}
	if err := os.Symlink("target\xff", filepath.Join(root, "etc/kubernetes/link\xfa")); err != nil {
		t.Fatal(err)
	}
	s := openTest(t, dir, 16<<10)
	vi := backup(t, s, root, "/etc/kubernetes")
	if vi.Files != len(files) || vi.Symlinks != 1 {
		t.Errorf("version holds %d files and %d symlinks, want %d and 1", vi.Files, vi.Symlinks, len(files))
	}
	if err := s.RestoreFiles(context.Background(), vi.ID, out, nil); err != nil {
		t.Fatal(err)
	}
	for p, want := range files {
		got, err := os.ReadFile(filepath.Join(out, p))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%q: restored %q, %v; want %q", p, got, err, want[:min(len(want), 40)])
		}
	}
	if target, err := os.Readlink(filepath.Join(out, "etc/kubernetes/link\xfa")); err != nil || target != "target\xff" {
		t.Errorf("symlink: %q %v", target, err)
	}
	sameTree(t, root, out, "etc/kubernetes")
	// One file read by its name (the manifest's quick scan does not
	// recognise a name stored as bytes: the full decode finds it).
	for p, want := range files {
		rc, _, err := s.OpenFile(vi.ID, "/"+p)
		if err != nil {
			t.Fatalf("OpenFile %q: %v", p, err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("OpenFile %q: %q, %v; want %q", p, got[:min(len(got), 40)], err, want[:min(len(want), 40)])
		}
	}
	// The next version sees the same names: nothing is read again.
	vi2 := backup(t, s, root, "/etc/kubernetes")
	if vi2.Stats.FilesRead != 0 || vi2.Stats.FilesReused != len(files) {
		t.Errorf("unchanged tree with odd names: %+v", vi2.Stats)
	}
	unlock := lockTest(t, s)
	defer unlock()
	if rep, err := s.Verify(context.Background(), true); err != nil || !rep.Clean() {
		t.Fatalf("verify: %v %+v", err, rep)
	}
}
