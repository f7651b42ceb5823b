package restore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kubekeep/kubekeep/backup"
	"github.com/kubekeep/kubekeep/backup/versionread"
	"github.com/kubekeep/kubekeep/config"
	"github.com/kubekeep/kubekeep/internal/sandbox"
	"github.com/kubekeep/kubekeep/internal/testetcd"
	"github.com/kubekeep/kubekeep/rsyncish"
	"github.com/kubekeep/kubekeep/rsyncish/format"
)

// fixture is one backed-up sandbox, shared by the tests: taking a real
// backup of a real TLS etcd costs seconds, and every test restores into a
// root of its own anyway.
type fixture struct {
	root  *sandbox.Root // the source, etcd stopped after the backup
	store *rsyncish.Store
	id    string
	info  backup.Result
	// kv is every key/value of the source etcd at the backup revision.
	kv map[string]string
	// tree is the source root's files as they were backed up.
	tree map[string]string
}

var (
	fixOnce sync.Once
	fix     *fixture
	fixErr  error
)

func getFixture(t *testing.T) *fixture {
	t.Helper()
	fixOnce.Do(func() { fix, fixErr = buildFixture() })
	if fixErr != nil {
		t.Fatalf("fixture: %v", fixErr)
	}
	return fix
}

func buildFixture() (*fixture, error) {
	dir, err := os.MkdirTemp("", "kubekeep-restore-fixture-")
	if err != nil {
		return nil, err
	}
	cp, err := sandbox.FreePort()
	if err != nil {
		return nil, err
	}
	pp, err := sandbox.FreePort()
	if err != nil {
		return nil, err
	}
	// A non-loopback advertise address makes the certificates' IP SANs
	// name an address, as on a real VM; etcd itself listens on loopback.
	root, err := sandbox.Build(filepath.Join(dir, "source"), sandbox.Options{EtcdClientPort: cp, EtcdPeerPort: pp, AdvertiseAddress: "10.0.0.5"})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srv, err := testetcd.Start(ctx, root)
	if err != nil {
		return nil, err
	}
	defer srv.Stop()
	if _, err := srv.LoadCluster(ctx); err != nil {
		return nil, err
	}
	cli, err := srv.Client()
	if err != nil {
		return nil, err
	}
	for i := range 200 {
		if _, err := cli.Put(ctx, fmt.Sprintf("/registry/configmaps/load/cm-%03d", i), strings.Repeat("v", i)); err != nil {
			return nil, err
		}
	}
	// History before the snapshot: a deleted key must stay deleted.
	if _, err := cli.Delete(ctx, "/registry/configmaps/load/cm-007"); err != nil {
		return nil, err
	}
	store, err := rsyncish.Open(filepath.Join(dir, "store"), rsyncish.Options{AllowSameFilesystem: true})
	if err != nil {
		return nil, err
	}
	res, err := backup.Run(ctx, backup.Options{Root: root.Dir, Store: store, Etcd: config.Default().Etcd})
	if err != nil {
		return nil, err
	}
	if res.Status != versionread.StatusOK {
		return nil, fmt.Errorf("fixture backup status %s: %v", res.Status, res.EtcdError)
	}
	kv := map[string]string{}
	resp, err := cli.Get(ctx, "\x00", clientv3.WithFromKey(), clientv3.WithRev(res.Etcd.Revision))
	if err != nil {
		return nil, err
	}
	for _, e := range resp.Kvs {
		kv[string(e.Key)] = string(e.Value)
	}
	// Changes after the backup must not show up in the restore.
	if _, err := cli.Put(ctx, "/registry/configmaps/load/after-backup", "x"); err != nil {
		return nil, err
	}
	tree, err := hashTree(root.Dir, root.EtcdDataDir)
	if err != nil {
		return nil, err
	}
	return &fixture{root: root, store: store, id: res.ID, info: *res, kv: kv, tree: tree}, nil
}

// hashTree describes every file, dir and symlink under dir (but the
// excluded host paths): type, mode and content hash or link target.
func hashTree(dir string, exclude ...string) (map[string]string, error) {
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		hp := "/" + strings.TrimPrefix(strings.TrimPrefix(p, dir), "/")
		for _, x := range exclude {
			if within(hp, x) {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			t, err := os.Readlink(p)
			if err != nil {
				return err
			}
			out[hp] = "link " + t
		case fi.IsDir():
			out[hp] = fmt.Sprintf("dir %v", fi.Mode())
		default:
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(data)
			out[hp] = fmt.Sprintf("file %v %s", fi.Mode(), hex.EncodeToString(sum[:]))
		}
		return nil
	})
	return out, err
}

func diffTrees(t *testing.T, what string, want, got map[string]string, only func(string) bool) {
	t.Helper()
	var keys []string
	for k := range want {
		keys = append(keys, k)
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	n := 0
	for _, k := range keys {
		if only != nil && !only(k) {
			continue
		}
		if want[k] != got[k] {
			n++
			if n <= 10 {
				t.Errorf("%s: %s: want %q, got %q", what, k, want[k], got[k])
			}
		}
	}
	if n > 10 {
		t.Errorf("%s: %d differences in all", what, n)
	}
}

// rootFor is a sandbox.Root describing dir with the fixture's ports and
// certificate paths, for starting etcd on what was restored there.
func (f *fixture) rootFor(dir string) *sandbox.Root {
	r := *f.root
	r.Dir = dir
	return &r
}

// sameHost is the fixture node seen from itself.
func (f *fixture) sameHost() (string, []net.IP) {
	return f.root.Opts.NodeName, []net.IP{net.ParseIP(f.root.Opts.AdvertiseAddress)}
}

func (f *fixture) opts(root string, phases ...string) Options {
	name, ips := f.sameHost()
	return Options{Root: root, Store: f.store, Version: f.id, Phases: phases, Hostname: name, HostIPs: ips,
		StopTimeout: 10 * time.Second, VerifyTimeout: 20 * time.Second}
}

// forgeVersion writes a copy of version id under newID with its entries
// and meta changed by edit: a hostile or damaged version, as a tampered
// or corrupted second disk could hold.
func forgeVersion(t *testing.T, s *rsyncish.Store, id, newID string, edit func(m *format.Manifest)) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(s.Dir(), "versions", id+".manifest"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := format.DecodeManifest(data)
	if err != nil {
		t.Fatal(err)
	}
	m.Header.ID = newID
	m.Header.Time = m.Header.Time.Add(-time.Hour) // never "latest"
	edit(m)
	var buf bytes.Buffer
	if err := format.EncodeManifest(&buf, m); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(s.Dir(), "versions", newID+".manifest")
	if err := os.WriteFile(p, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(p) })
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// readAll returns every key/value an etcd serves.
func readAll(t *testing.T, cli *clientv3.Client) (map[string]string, int64) {
	t.Helper()
	resp, err := cli.Get(context.Background(), "\x00", clientv3.WithFromKey())
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, e := range resp.Kvs {
		m[string(e.Key)] = string(e.Value)
	}
	return m, resp.Header.Revision
}

func jsonUnmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
