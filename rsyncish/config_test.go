package rsyncish

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kubekeep/kubekeep/rsyncish/format"
)

// TestDamagedConfig: one changed byte in config.json (or its loss) locks
// nobody out. Every reader and a backup work from what the manifests
// record, with a warning; verify reports it; repair writes config.json
// again with the store's own id.
func TestDamagedConfig(t *testing.T) {
	for _, damage := range []string{"flipped", "deleted"} {
		t.Run(damage, func(t *testing.T) {
			root, dir := t.TempDir(), t.TempDir()
			sampleTree(t, root)
			stream := randBytes(100 << 10)
			s := openTest(t, dir, 16<<10)
			v1 := treeAndStream(t, s, root, stream, WriteOptions{})
			orig, _ := os.ReadFile(filepath.Join(dir, configFile))
			var want format.Config
			if err := format.UnsealJSON(orig, &want); err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(dir, configFile)
			if damage == "flipped" {
				data := bytes.Clone(orig)
				data[12] ^= 1
				os.WriteFile(p, data, 0o600)
			} else {
				os.Remove(p)
			}
			var logs bytes.Buffer
			s, err := Open(dir, Options{AllowSameFilesystem: true, NoCreate: true, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			if err != nil {
				t.Fatalf("open with a %s config.json: %v", damage, err)
			}
			if !strings.Contains(logs.String(), "config.json") || s.ConfigProblem() == nil {
				t.Errorf("no warning about config.json: %q", logs.String())
			}
			if got := s.config(); got.StoreID != want.StoreID || got.Format != want.Format || !got.Created.Equal(want.Created) {
				t.Errorf("recovered %+v, config.json held %+v", got, want)
			}
			if vs, err := s.Versions(); err != nil || len(vs) != 1 {
				t.Fatalf("versions: %v %v", vs, err)
			}
			versionWhole(t, s, v1.ID, root, stream)
			// A backup still works.
			v2 := treeAndStream(t, s, root, stream, WriteOptions{})
			versionWhole(t, s, v2.ID, root, stream)
			unlock := lockTest(t, s)
			rep, err := s.Verify(context.Background(), true)
			if err != nil || len(rep.Problems) != 1 || rep.Problems[0].Kind != "config" || !strings.Contains(rep.Problems[0].Detail, "repair") {
				t.Fatalf("verify: %v %+v", err, rep.Problems)
			}
			res, err := s.Repair(context.Background(), RepairOptions{})
			unlock()
			if err != nil || res.Config == "" || !res.Clean() {
				t.Fatalf("repair: %v %+v", err, res)
			}
			data, _ := os.ReadFile(p)
			var got format.Config
			if err := format.UnsealJSON(data, &got); err != nil || got.StoreID != want.StoreID || !got.Created.Equal(want.Created) || got.Format != format.StoreFormat {
				t.Fatalf("rebuilt config.json %+v (%v), want %+v", got, err, want)
			}
			s, err = Open(dir, Options{AllowSameFilesystem: true, NoCreate: true, Logger: testLogger(t)})
			if err != nil || s.ConfigProblem() != nil {
				t.Fatalf("reopen after repair: %v %v", err, s.ConfigProblem())
			}
			unlock = lockTest(t, s)
			defer unlock()
			if rep, err := s.Verify(context.Background(), true); err != nil || !rep.Clean() {
				t.Fatalf("verify after repair: %v %+v", err, rep)
			}
		})
	}

	// A store written before manifests recorded the config (format 1)
	// still opens with a damaged config.json; repair gives it a new id.
	dir := filepath.Join(t.TempDir(), "store")
	copyDir(t, fixtureV1, dir)
	os.WriteFile(filepath.Join(dir, configFile), []byte("garbage"), 0o600)
	s, err := Open(dir, Options{AllowSameFilesystem: true, NoCreate: true, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if vs, err := s.Versions(); err != nil || len(vs) != 2 {
		t.Fatalf("versions of the old store: %v %v", vs, err)
	}
	rc, _, err := s.OpenStream(must(t, s), "etcd.db")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if !bytes.Equal(got, fixtureStream()) {
		t.Error("old store's stream differs")
	}
	unlock := lockTest(t, s)
	defer unlock()
	res, err := s.Repair(context.Background(), RepairOptions{})
	if err != nil || !strings.Contains(res.Config, "new store id") {
		t.Fatalf("repair of the old store: %v %+v", err, res)
	}
	if s.config().Format != 1 {
		t.Errorf("the old store is format %d after repair, want 1", s.config().Format)
	}
}

func must(t *testing.T, s *Store) string {
	t.Helper()
	id, err := s.Resolve(Newest)
	if err != nil {
		t.Fatal(err)
	}
	return id
}
