package rsyncish

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// treeAndStream makes one version of root's /etc/kubernetes and
// /var/lib/etcd plus a stream.
func treeAndStream(t *testing.T, s *Store, root string, stream []byte, opts WriteOptions) VersionInfo {
	t.Helper()
	unlock := lockTest(t, s)
	defer unlock()
	w, err := s.NewVersion(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.AddTree(root, []string{"/etc/kubernetes", "/var/lib/etcd"}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := w.AddStream("etcd.db", bytes.NewReader(stream)); err != nil {
		t.Fatal(err)
	}
	vi, err := w.Commit()
	if err != nil {
		t.Fatal(err)
	}
	return vi
}

// versionWhole restores version id and compares it with root and stream.
func versionWhole(t *testing.T, s *Store, id, root string, stream []byte) {
	t.Helper()
	out := t.TempDir()
	if err := s.RestoreFiles(context.Background(), id, out, nil); err != nil {
		t.Fatalf("restoring version %s: %v", id, err)
	}
	sameTree(t, root, out, "etc/kubernetes")
	sameTree(t, root, out, "var/lib/etcd")
	rc, _, err := s.OpenStream(id, "etcd.db")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, stream) {
		t.Fatalf("version %s: stream reads back wrong (%d bytes, %v)", id, len(got), err)
	}
}

// problemsOf returns the problems of a verify --read-data that name version id.
func problemsOf(t *testing.T, s *Store, id string) []string {
	t.Helper()
	unlock := lockTest(t, s)
	defer unlock()
	rep, err := s.Verify(context.Background(), true)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range rep.Problems {
		for _, v := range p.Versions {
			if v == id {
				out = append(out, p.String())
			}
		}
	}
	return out
}

// TestLostPackNotReused: a pack deleted, truncated or rotted while its
// index is intact must not be referenced by any later version. Each later
// backup (reusing unchanged files, reading every file, after a prune)
// stores those blocks again, and the new version verifies clean and
// restores byte-identical.
func TestLostPackNotReused(t *testing.T) {
	damages := map[string]func(t *testing.T, s *Store, pack string){
		"deleted": func(t *testing.T, s *Store, pack string) {
			if err := os.Remove(pack); err != nil {
				t.Fatal(err)
			}
		},
		"truncated": func(t *testing.T, s *Store, pack string) {
			st, _ := os.Stat(pack)
			if err := os.Truncate(pack, st.Size()/2); err != nil {
				t.Fatal(err)
			}
		},
		// Rot keeps the size: only verify --read-data sees it, and what
		// it found must reach the next backup.
		"rotted": func(t *testing.T, s *Store, pack string) {
			data, _ := os.ReadFile(pack)
			for i := 100; i < len(data); i += 8 << 10 {
				data[i] ^= 0x40
			}
			if err := os.WriteFile(pack, data, 0o600); err != nil {
				t.Fatal(err)
			}
			unlock := lockTest(t, s)
			defer unlock()
			rep, err := s.Verify(context.Background(), true)
			if err != nil || rep.Clean() {
				t.Fatalf("verify --read-data missed the rot: %v %+v", err, rep)
			}
		},
	}
	for name, damage := range damages {
		for _, how := range []string{"unchanged", "reread", "after-prune"} {
			t.Run(name+"/"+how, func(t *testing.T) {
				root, dir := t.TempDir(), t.TempDir()
				sampleTree(t, root)
				stream := randBytes(300 << 10)
				s := openTest(t, dir, 16<<10)
				v1 := treeAndStream(t, s, root, stream, WriteOptions{})
				packs, _ := filepath.Glob(filepath.Join(dir, packsDir, "*"+packExt))
				if len(packs) != 1 {
					t.Fatalf("want one pack, have %v", packs)
				}
				damage(t, s, packs[0])
				opts := WriteOptions{}
				switch how {
				case "reread":
					opts.Parent = "none"
				case "after-prune":
					unlock := lockTest(t, s)
					if _, err := s.Prune(context.Background(), RetentionPolicy{KeepLast: 5}, false); err != nil {
						t.Fatalf("prune of a store with a damaged pack: %v", err)
					}
					unlock()
				}
				v2 := treeAndStream(t, s, root, stream, opts)
				if probs := problemsOf(t, s, v2.ID); len(probs) > 0 {
					t.Errorf("the version written after the damage references lost data:\n%s", strings.Join(probs, "\n"))
				}
				versionWhole(t, s, v2.ID, root, stream)
				// The blocks stored again serve the old version too.
				versionWhole(t, s, v1.ID, root, stream)
			})
		}
	}
}

// TestRepair damages a store of two versions three ways and repairs it:
// what can be read is salvaged, nothing refers to lost data afterwards,
// the versions that lost data are named (and lose their verification
// mark), and the next backup stores the lost blocks again, which heals
// every version whose content is still on the host.
func TestRepair(t *testing.T) {
	setup := func(t *testing.T) (s *Store, dir, root string, v1, v2 VersionInfo, stream []byte, pack2 string) {
		root, dir = t.TempDir(), t.TempDir()
		sampleTree(t, root)
		s = openTest(t, dir, 16<<10)
		v1 = backup(t, s, root, "/etc/kubernetes", "/var/lib/etcd")
		before, _ := filepath.Glob(filepath.Join(dir, packsDir, "*"+packExt))
		stream = randBytes(200 << 10)
		v2 = treeAndStream(t, s, root, stream, WriteOptions{})
		after, _ := filepath.Glob(filepath.Join(dir, packsDir, "*"+packExt))
		for _, p := range after {
			if p != before[0] {
				pack2 = p
			}
		}
		if len(before) != 1 || len(after) != 2 {
			t.Fatalf("packs: %v then %v", before, after)
		}
		if err := s.MarkVerified(v2.ID, Verification{Method: "drill"}); err != nil {
			t.Fatal(err)
		}
		return
	}
	repair := func(t *testing.T, s *Store, opts RepairOptions) *RepairResult {
		t.Helper()
		unlock := lockTest(t, s)
		defer unlock()
		res, err := s.Repair(context.Background(), opts)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	clean := func(t *testing.T, s *Store) {
		t.Helper()
		unlock := lockTest(t, s)
		defer unlock()
		rep, err := s.Verify(context.Background(), true)
		if err != nil || !rep.Clean() {
			t.Fatalf("verify --read-data after repair and backup: %v %v", err, rep.Problems)
		}
	}

	t.Run("rotted-blob", func(t *testing.T) {
		s, dir, root, v1, v2, stream, pack2 := setup(t)
		// One blob of the stream rots; verify records it; repair
		// salvages the others.
		data, _ := os.ReadFile(pack2)
		data[len(data)-100] ^= 1
		os.WriteFile(pack2, data, 0o600)
		if probs := problemsOf(t, s, v2.ID); len(probs) == 0 {
			t.Fatal("verify missed the rot")
		}
		res := repair(t, s, RepairOptions{})
		if len(res.Packs) != 1 || res.Packs[0].Lost != 1 || res.Packs[0].Salvaged == 0 || res.Clean() {
			t.Fatalf("repair: %+v", res)
		}
		if len(res.Damaged) != 1 || res.Damaged[0].ID != v2.ID || strings.Join(res.Damaged[0].Paths, ",") != "etcd.db" {
			t.Fatalf("damaged: %+v", res.Damaged)
		}
		if len(res.MarksDropped) != 1 || res.MarksDropped[0] != v2.ID {
			t.Errorf("marks dropped: %v", res.MarksDropped)
		}
		if v, _ := s.Version(v2.ID); v.Verified {
			t.Error("a damaged version is still marked verified")
		}
		if _, err := os.Stat(pack2); err == nil {
			t.Error("the damaged pack is still there")
		}
		if _, err := os.Stat(filepath.Join(dir, damageFile)); err == nil {
			t.Error("the damage record outlived the repair")
		}
		// The same stream backed up again heals v2.
		v3 := treeAndStream(t, s, root, stream, WriteOptions{})
		clean(t, s)
		for _, id := range []string{v2.ID, v3.ID} {
			versionWhole(t, s, id, root, stream)
		}
		out := t.TempDir()
		if err := s.RestoreFiles(context.Background(), v1.ID, out, nil); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("missing-pack", func(t *testing.T) {
		s, _, root, v1, v2, _, pack2 := setup(t)
		os.Remove(pack2)
		res := repair(t, s, RepairOptions{})
		if len(res.Packs) != 1 || res.Packs[0].Problem != "pack missing" || len(res.Damaged) != 1 || res.Damaged[0].ID != v2.ID {
			t.Fatalf("repair: %+v", res)
		}
		// The stream's content is gone for good: a new one is backed up.
		stream2 := randBytes(200 << 10)
		v3 := treeAndStream(t, s, root, stream2, WriteOptions{})
		versionWhole(t, s, v3.ID, root, stream2)
		unlock := lockTest(t, s)
		rep, err := s.Verify(context.Background(), true)
		unlock()
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range rep.Problems {
			if len(p.Versions) != 1 || p.Versions[0] != v2.ID {
				t.Errorf("problem names versions other than the one that lost data: %s", p)
			}
		}
		if rep.Clean() {
			t.Error("verify no longer names the version that lost its stream")
		}
		_ = v1
	})

	t.Run("index-bit", func(t *testing.T) {
		s, dir, root, v1, v2, stream, pack2 := setup(t)
		// A flipped bit in a blob ID of the index: nothing is lost.
		idx := filepath.Join(dir, indexDir, strings.TrimSuffix(filepath.Base(pack2), packExt)+indexExt)
		data, _ := os.ReadFile(idx)
		data[len("KKIDX001")+4+5] ^= 1
		os.WriteFile(idx, data, 0o600)
		res := repair(t, s, RepairOptions{})
		if len(res.Packs) != 1 || !strings.HasPrefix(res.Packs[0].Problem, "index damaged") || !res.Clean() {
			t.Fatalf("repair: %+v", res)
		}
		clean(t, s)
		versionWhole(t, s, v2.ID, root, stream)
		_ = v1
	})

	t.Run("read-data", func(t *testing.T) {
		s, _, root, _, v2, stream, pack2 := setup(t)
		// Rot nobody has seen yet: only --read-data finds it.
		data, _ := os.ReadFile(pack2)
		data[10] ^= 1
		os.WriteFile(pack2, data, 0o600)
		if res := repair(t, s, RepairOptions{}); len(res.Packs) != 0 {
			t.Fatalf("repair without --read-data touched packs: %+v", res)
		}
		res := repair(t, s, RepairOptions{ReadData: true})
		if len(res.Packs) != 1 || len(res.Damaged) != 1 {
			t.Fatalf("repair --read-data: %+v", res)
		}
		treeAndStream(t, s, root, stream, WriteOptions{})
		clean(t, s)
		versionWhole(t, s, v2.ID, root, stream)
	})
}

// TestReadersVsPrune: readers never see damage from a concurrent prune. A
// reader that opened the newest version before a prune started reads it
// whole while prune would rewrite the pack under it (prune waits for it),
// and readers that come and go during a prune all succeed.
func TestReadersVsPrune(t *testing.T) {
	// v1's pack holds shared and gone; v2 reuses shared from it. Pruning
	// v1 leaves that pack 2/3 dead: it is rewritten.
	setup := func(t *testing.T) (dir string, s *Store, v2 VersionInfo, want []byte, root string) {
		dir, root = t.TempDir(), t.TempDir()
		s = openTest(t, dir, 16<<10)
		shared, gone, fresh := randBytes(4<<20), randBytes(8<<20), randBytes(1<<20)
		writeFile(t, filepath.Join(root, "etc/f"), shared[:100<<10], 0o600)
		commitVersion(t, s, func(w *VersionWriter) error {
			if err := w.AddTree(root, []string{"/etc"}, nil); err != nil {
				return err
			}
			_, err := w.AddStream("etcd.db", bytes.NewReader(append(append([]byte{}, shared...), gone...)))
			return err
		})
		want = append(append([]byte{}, shared...), fresh...)
		v2 = commitVersion(t, s, func(w *VersionWriter) error {
			if err := w.AddTree(root, []string{"/etc"}, nil); err != nil {
				return err
			}
			_, err := w.AddStream("etcd.db", bytes.NewReader(want))
			return err
		})
		return
	}
	prune := func(t *testing.T, dir string) chan *PruneResult {
		done := make(chan *PruneResult, 1)
		go func() {
			p := openTest(t, dir, 0) // another handle, as another process would be
			unlock := lockTest(t, p)
			defer unlock()
			res, err := p.Prune(context.Background(), RetentionPolicy{KeepLast: 1}, false)
			if err != nil {
				t.Error(err)
			}
			done <- res
		}()
		return done
	}
	readStream := func(s *Store, id string, want []byte) error {
		rc, _, err := s.OpenStream(id, "etcd.db")
		if err != nil {
			return err
		}
		defer rc.Close()
		got, err := io.ReadAll(rc)
		if err == nil && !bytes.Equal(got, want) {
			err = fmt.Errorf("stream of %d bytes differs", len(got))
		}
		return err
	}

	t.Run("open-before", func(t *testing.T) {
		dir, s, v2, want, _ := setup(t)
		rc, _, err := s.OpenStream(v2.ID, "etcd.db")
		if err != nil {
			t.Fatal(err)
		}
		done := prune(t, dir)
		time.Sleep(300 * time.Millisecond)
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("a reader that started before the prune: %d bytes, %v", len(got), err)
		}
		select {
		case res := <-done:
			if res == nil || res.PacksRewritten != 1 {
				t.Errorf("prune: %+v", res)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("prune never finished after the reader closed")
		}
		if err := readStream(s, v2.ID, want); err != nil {
			t.Fatalf("after the prune: %v", err)
		}
	})

	t.Run("come-and-go", func(t *testing.T) {
		dir, s, v2, want, root := setup(t)
		done := prune(t, dir)
		var pruned bool
		errs := make(chan error, 100)
		for i := 0; !pruned || i < 3; i++ {
			select {
			case <-done:
				pruned = true
			default:
			}
			go func() { errs <- readStream(s, v2.ID, want) }()
			go func() {
				out := t.TempDir()
				err := s.RestoreFiles(context.Background(), v2.ID, out, nil)
				if err == nil {
					a, _ := os.ReadFile(filepath.Join(root, "etc/f"))
					b, _ := os.ReadFile(filepath.Join(out, "etc/f"))
					if !bytes.Equal(a, b) {
						err = errors.New("restored file differs")
					}
				}
				errs <- err
			}()
			for range 2 {
				if err := <-errs; err != nil {
					t.Fatalf("a reader during the prune: %v", err)
				}
			}
		}
	})
}
