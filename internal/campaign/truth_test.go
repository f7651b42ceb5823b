package campaign

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// entry is one backed-up path as the test saw it on the root.
type entry struct {
	typ   byte // 'f' file, 'd' dir, 'l' symlink
	mode  fs.FileMode
	uid   uint32
	gid   uint32
	size  int64
	sum   [32]byte
	link  string
	mtime int64 // files only, ns
}

func (e entry) String() string {
	switch e.typ {
	case 'f':
		return fmt.Sprintf("file %v uid %d gid %d %d bytes sha256 %x mtime %d", e.mode, e.uid, e.gid, e.size, e.sum[:6], e.mtime)
	case 'l':
		return "symlink -> " + e.link
	}
	return fmt.Sprintf("dir %v uid %d gid %d", e.mode, e.uid, e.gid)
}

// fileState maps host paths to what they were.
type fileState map[string]entry

// captureFiles reads every backed-up path under the root, by the test
// itself.
func (w *world) captureFiles() *fileState {
	st, err := walkTree(w.root.Dir, w.plan)
	if err != nil {
		w.t.Fatalf("reading the root: %v", err)
	}
	return &st
}

// walkTree reads the plan's paths under dir.
func walkTree(dir string, plan []planPath) (fileState, error) {
	st := fileState{}
	for _, p := range plan {
		base := filepath.Join(dir, p.Path)
		if _, err := os.Lstat(base); os.IsNotExist(err) {
			continue
		}
		err := filepath.WalkDir(base, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(dir, path)
			e, err := readEntry(path)
			if err != nil {
				return err
			}
			st["/"+rel] = e
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return st, nil
}

func readEntry(path string) (entry, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return entry{}, err
	}
	sys := fi.Sys().(*syscall.Stat_t)
	e := entry{mode: fi.Mode().Perm(), uid: sys.Uid, gid: sys.Gid}
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		e.typ, e.mode, e.uid, e.gid = 'l', 0, 0, 0
		e.link, err = os.Readlink(path)
	case fi.IsDir():
		e.typ = 'd'
	case fi.Mode().IsRegular():
		e.typ, e.size, e.mtime = 'f', fi.Size(), fi.ModTime().UnixNano()
		var b []byte
		b, err = os.ReadFile(path)
		e.sum = sha256.Sum256(b)
	default:
		err = fmt.Errorf("%s: unexpected file type %v", path, fi.Mode().Type())
	}
	return e, err
}

// compareTree holds a restored tree at dir to the truth: every path
// equal, none missing, nothing else but the parents of backed-up paths.
func compareTree(dir string, plan []planPath, want *fileState) []string {
	got, err := walkTree(dir, plan)
	if err != nil {
		return []string{"reading the restored tree: " + err.Error()}
	}
	var diffs []string
	for p, we := range *want {
		ge, ok := got[p]
		switch {
		case !ok:
			diffs = append(diffs, "missing "+p+" ("+we.String()+")")
		case ge != we:
			diffs = append(diffs, fmt.Sprintf("%s: restored %s, was %s", p, ge, we))
		}
	}
	for p, ge := range got {
		if _, ok := (*want)[p]; !ok {
			diffs = append(diffs, "extra "+p+" ("+ge.String()+")")
		}
	}
	// Anything outside the backed-up paths but their parents.
	parents := map[string]bool{"/": true}
	for _, pp := range plan {
		for d := filepath.Dir(pp.Path); d != "/"; d = filepath.Dir(d) {
			parents[d] = true
		}
	}
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		rel, _ := filepath.Rel(dir, path)
		hp := filepath.Clean("/" + rel)
		if parents[hp] {
			return nil
		}
		for _, pp := range plan {
			if hp == pp.Path || strings.HasPrefix(hp, pp.Path+"/") {
				return filepath.SkipDir
			}
		}
		diffs = append(diffs, "restored outside every backed-up path: "+hp)
		if d.IsDir() {
			return filepath.SkipDir
		}
		return nil
	})
	sort.Strings(diffs)
	return diffs
}

// kvState maps etcd keys to the sha256 of their values.
type kvState map[string][32]byte

// etcdAt reads every key etcd held at rev, through clientv3 (the test's
// own read, not kubekeep's).
func (w *world) etcdAt(rev int64) (kvState, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return readKV(ctx, w.cli, rev)
}

func readKV(ctx context.Context, c *clientv3.Client, rev int64) (kvState, error) {
	opts := []clientv3.OpOption{clientv3.WithFromKey()}
	if rev > 0 {
		opts = append(opts, clientv3.WithRev(rev))
	}
	resp, err := c.Get(ctx, "\x00", opts...)
	if err != nil {
		return nil, fmt.Errorf("read etcd at revision %d: %w", rev, err)
	}
	st := kvState{}
	for _, kv := range resp.Kvs {
		st[string(kv.Key)] = sha256.Sum256(kv.Value)
	}
	return st, nil
}

func compareKV(got, want kvState) []string {
	var diffs []string
	for k, wv := range want {
		gv, ok := got[k]
		switch {
		case !ok:
			diffs = append(diffs, "missing key "+k)
		case gv != wv:
			diffs = append(diffs, "changed value of "+k)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			diffs = append(diffs, "extra key "+k)
		}
	}
	sort.Strings(diffs)
	return diffs
}

// restoredKV reads a restored data dir's member/snap/db with bbolt: the
// newest value of each key (revisions in order, tombstones delete), the
// key-less marker entry of the revision bump skipped. It also returns the
// highest main revision, which must carry the 1e9 bump.
func restoredKV(dataDir string) (kvState, int64, error) {
	db, err := bolt.Open(filepath.Join(dataDir, "member", "snap", "db"), 0o400, &bolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		return nil, 0, fmt.Errorf("open restored db: %w", err)
	}
	defer db.Close()
	cur := map[string][]byte{}
	var maxRev int64
	err = db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("key"))
		if b == nil {
			return fmt.Errorf("restored db has no key bucket")
		}
		return b.ForEach(func(k, v []byte) error {
			if len(k) < 17 {
				return fmt.Errorf("key bucket entry with a %d-byte revision", len(k))
			}
			if r := int64(binary.BigEndian.Uint64(k[:8])); r > maxRev {
				maxRev = r
			}
			var kv mvccpb.KeyValue
			if err := kv.Unmarshal(v); err != nil {
				return fmt.Errorf("key bucket entry: %w", err)
			}
			if len(kv.Key) == 0 {
				return nil // the revision bump's marker
			}
			if len(k) == 18 && k[17] == 't' {
				delete(cur, string(kv.Key))
				return nil
			}
			cur[string(kv.Key)] = bytes.Clone(kv.Value)
			return nil
		})
	})
	if err != nil {
		return nil, 0, err
	}
	st := kvState{}
	for k, v := range cur {
		st[k] = sha256.Sum256(v)
	}
	return st, maxRev, nil
}

// freePeerURL is a plain-HTTP loopback URL on a port free a moment ago.
func freePeerURL() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return "http://" + l.Addr().String(), nil
}

// serveRestored starts a real etcd (the embedded 3.6 server) on a restored
// data dir whose member was restored as name at peerURL, reads every key
// through clientv3, and stops it.
func serveRestored(dataDir, name, peerURL string) (kvState, int64, error) {
	cfg := embed.NewConfig()
	cfg.Name, cfg.Dir = name, dataDir
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cu, err := freePeerURL()
	if err != nil {
		return nil, 0, err
	}
	cURL, _ := url.Parse(cu)
	pURL, err := url.Parse(peerURL)
	if err != nil {
		return nil, 0, err
	}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cURL}, []url.URL{*cURL}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pURL}, []url.URL{*pURL}
	cfg.InitialCluster = name + "=" + peerURL
	cfg.ListenMetricsUrls = nil
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, 0, fmt.Errorf("start etcd on the restored data dir: %w", err)
	}
	defer func() {
		e.Close()
		<-e.Server.StopNotify()
	}()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		return nil, 0, fmt.Errorf("etcd on the restored data dir failed: %w", err)
	case <-time.After(60 * time.Second):
		return nil, 0, fmt.Errorf("etcd on the restored data dir not ready after 60s")
	}
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{cu}, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return nil, 0, err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := readKV(ctx, c, 0)
	if err != nil {
		return nil, 0, err
	}
	resp, err := c.Get(ctx, "/registry/namespaces/default")
	if err != nil {
		return nil, 0, err
	}
	return st, resp.Header.Revision, nil
}
