package backup

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kubekeep/kubekeep/backup/versionread"
	"github.com/kubekeep/kubekeep/config"
	"github.com/kubekeep/kubekeep/internal/sandbox"
	"github.com/kubekeep/kubekeep/internal/testetcd"
	"github.com/kubekeep/kubekeep/rsyncish"
)

// moveAndLink moves hostPath to target inside r and leaves a symlink to
// link (as written, absolute or relative) in its place.
func moveAndLink(t *testing.T, r *sandbox.Root, hostPath, target, link string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(r.Path(target)), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(r.Path(hostPath), r.Path(target)); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(link, r.Path(hostPath)); err != nil {
		t.Fatal(err)
	}
}

// readTree returns every regular file below dir (a real path), by path
// relative to it, and every symlink as "-> target".
func readTree(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		switch {
		case de.Type()&fs.ModeSymlink != 0:
			l, err := os.Readlink(p)
			out[rel] = "-> " + l
			return err
		case de.Type().IsRegular():
			b, err := os.ReadFile(p)
			out[rel] = string(b)
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// etcdElsewhere starts etcd on r with its own server files read from where
// they really are (the sandbox's etcd is not run by a kubelet that follows
// an absolute link inside the root), and returns the etcd settings for
// backups: the defaults, or with useCopy, a client certificate kept
// outside the PKI dir, so etcd stays reachable when the PKI goes away.
func etcdElsewhere(t *testing.T, r *sandbox.Root, pkiDir string, useCopy bool) config.Etcd {
	t.Helper()
	keep := "/srv/etcd-certs"
	if err := os.MkdirAll(r.Path(keep), 0o700); err != nil {
		t.Fatal(err)
	}
	srv := *r
	for _, f := range []*string{&srv.EtcdCAFile, &srv.EtcdServerCert, &srv.EtcdServerKey, &srv.EtcdPeerCert, &srv.EtcdPeerKey,
		&srv.EtcdClientCert, &srv.EtcdClientKey} {
		data, err := os.ReadFile(r.Path(pkiDir + strings.TrimPrefix(*f, "/etc/kubernetes/pki")))
		if err != nil {
			t.Fatal(err)
		}
		*f = keep + "/" + path.Base(*f)
		if err := os.WriteFile(r.Path(*f), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	testetcd.StartT(t, &srv)
	ec := config.Default().Etcd
	if useCopy {
		ec.CAFile, ec.CertFile, ec.KeyFile = srv.EtcdCAFile, srv.EtcdClientCert, srv.EtcdClientKey
	}
	return ec
}

// TestRunSymlinkedPKI: /etc/kubernetes/pki a symlink to /data/pki,
// absolute or relative (issue 13, finding 1). The version holds the link
// as a link and every file of the directory it leads to, at /data/pki, and
// nothing below the link; it is good, and restored into an empty dir it
// puts back the link and the files, byte for byte. Before, it held the
// link and pki/etcd/* below it only: ca.key, sa.key and front-proxy-ca.key
// were missing, the status was ok, and the restore failed with "mkdirat:
// file exists". With the absolute link etcd's client certificate is found
// through it inside the root (before: outside it, and etcd-failed).
func TestRunSymlinkedPKI(t *testing.T) {
	for _, link := range []string{"/data/pki", "../../data/pki"} {
		t.Run(link, func(t *testing.T) {
			r := testetcd.SandboxT(t)
			want := readTree(t, r.Path("/etc/kubernetes/pki"))
			moveAndLink(t, r, "/etc/kubernetes/pki", "/data/pki", link)
			etcdCfg := etcdElsewhere(t, r, "/data/pki", false)
			store := openStore(t)
			res := mustRun(t, Options{Root: r.Dir, Store: store, Etcd: etcdCfg})
			if res.Status != versionread.StatusOK || !res.Good || len(res.Problems) != 0 {
				t.Fatalf("status %s problems %q warnings %q (etcd: %v)", res.Status, res.Problems, res.Warnings, res.EtcdError)
			}
			entries, err := store.List(res.ID)
			if err != nil {
				t.Fatal(err)
			}
			held := map[string]rsyncish.Entry{}
			for _, e := range entries {
				held[e.Path] = e
				if strings.HasPrefix(e.Path, "/etc/kubernetes/pki/") {
					t.Errorf("%s is stored below the symlink /etc/kubernetes/pki", e.Path)
				}
			}
			if e := held["/etc/kubernetes/pki"]; e.Type != "symlink" || e.Target != link {
				t.Errorf("the link is stored as %+v", e)
			}
			for _, f := range []string{"ca.key", "sa.key", "front-proxy-ca.key", "etcd/ca.key"} {
				if held["/data/pki/"+f].Type != "file" {
					t.Errorf("/data/pki/%s is not in the version", f)
				}
			}

			to := t.TempDir()
			if err := store.RestoreFiles(context.Background(), res.ID, to, nil); err != nil {
				t.Fatalf("restore: %v", err)
			}
			if l, err := os.Readlink(filepath.Join(to, "etc/kubernetes/pki")); err != nil || l != link {
				t.Errorf("restored link: %q, %v", l, err)
			}
			got := readTree(t, filepath.Join(to, "data/pki"))
			if len(got) != len(want) || len(want) < 20 {
				t.Errorf("restored %d files of the PKI, want %d", len(got), len(want))
			}
			for f, data := range want {
				if got[f] != data {
					t.Errorf("restored /data/pki/%s differs from the original", f)
				}
			}

			if next := mustRun(t, Options{Root: r.Dir, Store: store, Etcd: etcdCfg}); next.Status != versionread.StatusOK {
				t.Errorf("the next version: %s %q", next.Status, next.Problems)
			}
		})
	}
}

// TestRunSymlinkTargetVanishes: the PKI is behind a link; the directory it
// leads to goes away (a disk not mounted, the link left dangling). The
// version is degraded and names the CA keys where they were stored.
// Before, no version held them, so none could miss them.
func TestRunSymlinkTargetVanishes(t *testing.T) {
	r := testetcd.SandboxT(t)
	moveAndLink(t, r, "/etc/kubernetes/pki", "/data/pki", "/data/pki")
	etcdCfg := etcdElsewhere(t, r, "/data/pki", true)
	store := openStore(t)
	opts := Options{Root: r.Dir, Store: store, Etcd: etcdCfg}
	good := mustRun(t, opts)
	if good.Status != versionread.StatusOK {
		t.Fatalf("first version: %s %q", good.Status, good.Problems)
	}
	if err := os.RemoveAll(r.Path("/data/pki")); err != nil {
		t.Fatal(err)
	}
	bad := mustRun(t, opts)
	joined := strings.Join(bad.Problems, "\n")
	if bad.Status != versionread.StatusDegraded || bad.Good || !strings.Contains(joined, "must-never-lose") ||
		!strings.Contains(joined, "/data/pki/ca.key") || !strings.Contains(joined, "/data/pki/sa.key") {
		t.Fatalf("status %s problems %q", bad.Status, bad.Problems)
	}
	if id := latestID(t, store); id != good.ID {
		t.Errorf("latest = %s, want %s", id, good.ID)
	}
}

// TestRunPKIMovedBehindSymlink: files that move behind a symlink, or back,
// are not lost. An admin moves the PKI to /data/pki and links it: the next
// version holds the same files at /data/pki and is good; moved back, good
// again. And the first backup after an upgrade of kubekeep compares with a
// version written the old way (the link, and pki/etcd/* below it): its
// files are at /data/pki/etcd now, also not a loss. Before, each of these
// was degraded, must-never-lose files "gone", and stayed so.
func TestRunPKIMovedBehindSymlink(t *testing.T) {
	t.Run("moved", func(t *testing.T) {
		r := testetcd.SandboxT(t)
		testetcd.StartT(t, r)
		store := openStore(t)
		opts := Options{Root: r.Dir, Store: store, Etcd: config.Default().Etcd}
		mustRun(t, opts)
		moveAndLink(t, r, "/etc/kubernetes/pki", "/data/pki", "../../data/pki")
		if res := mustRun(t, opts); res.Status != versionread.StatusOK || len(res.Problems) != 0 {
			t.Fatalf("moved behind a link: %s %q", res.Status, res.Problems)
		}
		if err := os.Remove(r.Path("/etc/kubernetes/pki")); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(r.Path("/data/pki"), r.Path("/etc/kubernetes/pki")); err != nil {
			t.Fatal(err)
		}
		if res := mustRun(t, opts); res.Status != versionread.StatusOK || len(res.Problems) != 0 {
			t.Fatalf("moved back: %s %q", res.Status, res.Problems)
		}
	})
	t.Run("upgrade", func(t *testing.T) {
		r := testetcd.SandboxT(t)
		testetcd.StartT(t, r)
		moveAndLink(t, r, "/etc/kubernetes/pki", "/data/pki", "../../data/pki")
		store := openStore(t)
		old := writeOldVersion(t, store, r.Dir, []string{"/etc/kubernetes/pki", "/etc/kubernetes/pki/etcd", "/etc/kubernetes/admin.conf"})
		res := mustRun(t, Options{Root: r.Dir, Store: store, Etcd: config.Default().Etcd})
		if res.Status != versionread.StatusOK || len(res.Problems) != 0 {
			t.Fatalf("first version after %s: %s %q", old, res.Status, res.Problems)
		}
	})
}

// writeOldVersion commits a good version of paths as kubekeep wrote them
// before it placed what symlinks lead to.
func writeOldVersion(t *testing.T, store *rsyncish.Store, root string, paths []string) string {
	t.Helper()
	ctx := context.Background()
	unlock, err := store.Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	w, err := store.NewVersion(ctx, rsyncish.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.AddTree(root, paths, nil); err != nil {
		t.Fatal(err)
	}
	if err := w.SetMeta(versionread.MetaStatus, versionread.StatusOK); err != nil {
		t.Fatal(err)
	}
	vi, err := w.Commit()
	if err != nil {
		t.Fatal(err)
	}
	return vi.ID
}

// TestRunSymlinkLeavingTheRoot: /etc/kubernetes/pki a link out of the
// root, to a real directory holding a PKI: absolute, or relative with
// enough .. to climb out. Inside the root neither leads anywhere (the root
// is / of the node), so the version holds the dangling link only, says
// so, and nothing outside the root is read: no stored file is one of
// those outside, and the etcd client is not given the certificates there.
func TestRunSymlinkLeavingTheRoot(t *testing.T) {
	for _, rel := range []bool{false, true} {
		name := map[bool]string{false: "absolute", true: "relative"}[rel]
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			r, err := sandbox.Build(filepath.Join(dir, "root"), sandbox.Options{})
			if err != nil {
				t.Fatal(err)
			}
			outside := filepath.Join(dir, "outside", "pki")
			if err := os.MkdirAll(filepath.Dir(outside), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(r.Path("/etc/kubernetes/pki"), outside); err != nil {
				t.Fatal(err)
			}
			link := outside
			if rel {
				link = "../../../outside/pki"
			}
			if err := os.Symlink(link, r.Path("/etc/kubernetes/pki")); err != nil {
				t.Fatal(err)
			}
			secrets := readTree(t, outside)
			store := openStore(t)
			etcdCfg := config.Default().Etcd
			etcdCfg.DialTimeout = 300 * time.Millisecond
			res := mustRun(t, Options{Root: r.Dir, Store: store, Etcd: etcdCfg})
			if !strings.Contains(strings.Join(res.Warnings, "\n"), "/etc/kubernetes/pki (pki") ||
				!strings.Contains(strings.Join(res.Warnings, "\n"), "which does not exist under the root") {
				t.Errorf("no warning about the link: %q", res.Warnings)
			}
			cc, _ := ClientConfig(r.Dir, res.Set, etcdCfg)
			for _, f := range []string{cc.CAFile, cc.CertFile, cc.KeyFile} {
				if _, err := os.Stat(f); err == nil {
					t.Errorf("etcd client file %s opens (outside the root?)", f)
				}
			}
			to := t.TempDir()
			if err := store.RestoreFiles(context.Background(), res.ID, to, nil); err != nil {
				t.Fatal(err)
			}
			if l, err := os.Readlink(filepath.Join(to, "etc/kubernetes/pki")); err != nil || l != link {
				t.Errorf("the link: %q, %v", l, err)
			}
			stored := map[string]bool{}
			for _, data := range secrets {
				stored[data] = false
			}
			err = filepath.WalkDir(to, func(p string, de fs.DirEntry, err error) error {
				if err != nil || !de.Type().IsRegular() {
					return err
				}
				b, err := os.ReadFile(p)
				if _, ok := stored[string(b)]; ok && len(b) > 0 {
					t.Errorf("%s holds a file from outside the root", p)
				}
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestClientConfigResolvesInsideTheRoot: etcd's certificate paths go
// through an absolute link; the client reads them where the link leads
// inside the root, as etcd on the node does.
func TestClientConfigResolvesInsideTheRoot(t *testing.T) {
	r, err := sandbox.Build(t.TempDir(), sandbox.Options{})
	if err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(r.Path(r.EtcdCAFile))
	moveAndLink(t, r, "/etc/kubernetes/pki", "/data/pki", "/data/pki")
	cc, _ := ClientConfig(r.Dir, nil, config.Etcd{Endpoints: []string{"https://127.0.0.1:1"}, CAFile: r.EtcdCAFile})
	if got, err := os.ReadFile(cc.CAFile); err != nil || !bytes.Equal(got, want) || cc.CAFile != r.Path("/data/pki/etcd/ca.crt") {
		t.Errorf("CA file %s: %v", cc.CAFile, err)
	}
}

// TestRunNoDiscoverFollowsLinks: a backup of paths given by hand (a
// restore's safety backup of a node without manifests) places them the
// same way: /etc/kubernetes/pki named and a link, its target is stored
// too.
func TestRunNoDiscoverFollowsLinks(t *testing.T) {
	r, err := sandbox.Build(t.TempDir(), sandbox.Options{})
	if err != nil {
		t.Fatal(err)
	}
	moveAndLink(t, r, "/etc/kubernetes/pki", "/data/pki", "/data/pki")
	store := openStore(t)
	res := mustRun(t, Options{Root: r.Dir, Store: store, NoDiscover: true, Paths: []string{"/etc/kubernetes", "/etc/kubernetes/pki"}})
	entries, err := store.List(res.ID)
	if err != nil {
		t.Fatal(err)
	}
	held := map[string]string{}
	for _, e := range entries {
		held[e.Path] = e.Type
	}
	if held["/etc/kubernetes/pki"] != "symlink" || held["/data/pki/ca.key"] != "file" || held["/etc/kubernetes/admin.conf"] != "file" {
		t.Errorf("version holds %v", held)
	}
}
