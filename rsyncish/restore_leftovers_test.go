package rsyncish

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// A restore killed between writing a file under its temp name and renaming
// it into place leaves .kubekeep-restore.tmp-<pid>-<rand> beside the
// restored files (in /etc/kubernetes/pki, the manifests dir: where the
// kubelet reads). Running the restore again removes those of dead
// processes, and leaves a live restore's alone. Before, they stayed for
// good (found by the fault campaign).
func TestRestoreRemovesKilledRestoresTempFiles(t *testing.T) {
	src := t.TempDir()
	writeFile(t, filepath.Join(src, "etc/kubernetes/pki/ca.key"), []byte("key"), 0o600)
	s, err := Open(filepath.Join(t.TempDir(), "store"), Options{AllowSameFilesystem: true})
	if err != nil {
		t.Fatal(err)
	}
	v := commitVersion(t, s, func(w *VersionWriter) error { return w.AddTree(src, []string{"/etc"}, nil) })

	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	pki := filepath.Join(dst, "etc/kubernetes/pki")
	os.MkdirAll(pki, 0o755)
	deadTmp := filepath.Join(pki, restoreTemp+tmpMarker+strconv.Itoa(dead.Process.Pid)+"-0badf00d")
	liveTmp := filepath.Join(pki, restoreTemp+tmpMarker+strconv.Itoa(os.Getppid())+"-0c0ffee0")
	for _, p := range []string{deadTmp, liveTmp} {
		if err := os.WriteFile(p, []byte("half a key"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.RestoreFiles(context.Background(), v.ID, dst, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(deadTmp); !os.IsNotExist(err) {
		t.Errorf("a killed restore's temp file is still there after the next restore: %v", err)
	}
	if _, err := os.Lstat(liveTmp); err != nil {
		t.Errorf("a live process's temp file was removed: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(pki, "ca.key")); string(b) != "key" {
		t.Errorf("ca.key restored as %q", b)
	}
}
