package restore

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kubekeep/kubekeep/backup"
	"github.com/kubekeep/kubekeep/config"
	"github.com/kubekeep/kubekeep/internal/sandbox"
	"github.com/kubekeep/kubekeep/rsyncish"
)

// TestRestoreFilesSymlinkedPKI: a node whose /etc/kubernetes/pki is a
// symlink to /data/pki (absolute or relative), backed up and restored
// into an empty dir: the link is back as it was and every PKI file is
// back at /data/pki, byte for byte and with its mode (issue 13, finding
// 1). Before, the version held the link and pki/etcd/* below it and the
// restore failed (mkdirat … file exists, later: refused as a path below a
// stored symlink); ca.key, sa.key and front-proxy-ca.key were in no
// version.
func TestRestoreFilesSymlinkedPKI(t *testing.T) {
	for _, link := range []string{"/data/pki", "../../data/pki"} {
		t.Run(link, func(t *testing.T) {
			r, err := sandbox.Build(t.TempDir(), sandbox.Options{})
			if err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(r.Path("/data"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(r.Path("/etc/kubernetes/pki"), r.Path("/data/pki")); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(link, r.Path("/etc/kubernetes/pki")); err != nil {
				t.Fatal(err)
			}
			store, err := rsyncish.Open(filepath.Join(t.TempDir(), "store"), rsyncish.Options{AllowSameFilesystem: true})
			if err != nil {
				t.Fatal(err)
			}
			// No etcd runs: the files are what this is about (the
			// version is etcd-failed, and taken by its ID).
			etcdCfg := config.Default().Etcd
			etcdCfg.DialTimeout = 200 * time.Millisecond
			res, err := backup.Run(context.Background(), backup.Options{Root: r.Dir, Store: store, Etcd: etcdCfg})
			if err != nil {
				t.Fatal(err)
			}

			to := t.TempDir()
			out, err := RestoreFiles(context.Background(), FilesOptions{Store: store, Version: res.ID, To: to})
			if err != nil {
				t.Fatalf("restore files: %v", err)
			}
			if len(out.Kept) != 0 {
				t.Errorf("an empty dir, yet kept %v", out.Kept)
			}
			if l, err := os.Readlink(filepath.Join(to, "etc/kubernetes/pki")); err != nil || l != link {
				t.Errorf("/etc/kubernetes/pki restored as %q, %v; want the link to %s", l, err, link)
			}
			n := 0
			err = filepath.WalkDir(r.Path("/data/pki"), func(p string, de fs.DirEntry, err error) error {
				if err != nil || de.IsDir() {
					return err
				}
				rel, _ := filepath.Rel(r.Dir, p)
				want, err := os.ReadFile(p)
				if err != nil {
					return err
				}
				wfi, _ := de.Info()
				got, err := os.ReadFile(filepath.Join(to, rel))
				gfi, serr := os.Lstat(filepath.Join(to, rel))
				if err != nil || serr != nil || !bytes.Equal(got, want) || gfi.Mode() != wfi.Mode() {
					t.Errorf("/%s not restored as it was: %v %v", rel, err, serr)
				}
				n++
				return nil
			})
			if err != nil || n < 20 {
				t.Fatalf("compared %d PKI files: %v", n, err)
			}
			for _, key := range []string{"ca.key", "sa.key", "front-proxy-ca.key", "etcd/ca.key"} {
				if _, err := os.Stat(filepath.Join(to, "data/pki", key)); err != nil {
					t.Errorf("%s: %v", key, err)
				}
			}
			// Through the restored relative link the node sees its PKI.
			if link[0] != '/' {
				if _, err := os.Stat(filepath.Join(to, "etc/kubernetes/pki/ca.key")); err != nil {
					t.Errorf("through the restored link: %v", err)
				}
			}
		})
	}
}
