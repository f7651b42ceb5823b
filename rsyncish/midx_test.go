package rsyncish

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// midxStore is a store of n versions, each one stream of fresh random
// bytes in packs of its own, and the bytes of each.
func midxStore(t *testing.T, n int) (*Store, []VersionInfo, [][]byte) {
	s, vis, datas, _ := midxStorePacks(t, n)
	return s, vis, datas
}

// midxStorePacks is midxStore with the packs each version wrote.
func midxStorePacks(t *testing.T, n int) (*Store, []VersionInfo, [][]byte, [][]string) {
	t.Helper()
	s := openTest(t, filepath.Join(t.TempDir(), "store"), 16<<10)
	var vis []VersionInfo
	var datas [][]byte
	var packs [][]string
	seen := map[string]bool{}
	for range n {
		data := randBytes(40 << 10)
		vis = append(vis, commitVersion(t, s, func(w *VersionWriter) error {
			_, err := w.AddStream("s", bytes.NewReader(data))
			return err
		}))
		datas = append(datas, data)
		idxs, _ := filepath.Glob(filepath.Join(s.dir, indexDir, "*"+indexExt))
		var mine []string
		for _, p := range idxs {
			if id := strings.TrimSuffix(filepath.Base(p), indexExt); !seen[id] {
				seen[id] = true
				mine = append(mine, id)
			}
		}
		packs = append(packs, mine)
	}
	return s, vis, datas, packs
}

// readAll reads stream s of version id through a reader of its own and
// says how many pack index files that reader read.
func readAll(t *testing.T, s *Store, id string) ([]byte, int, error) {
	t.Helper()
	r, err := s.OpenStreamAt(id, "s")
	if err != nil {
		return nil, 0, err
	}
	defer r.Close()
	b, err := io.ReadAll(io.NewSectionReader(r, 0, r.Size()))
	n := 0
	if r.shared.x != nil {
		n = r.shared.x.indexesRead
	}
	return b, n, err
}

func packIndexes(t *testing.T, s *Store) int {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(s.dir, indexDir, "*"+indexExt))
	if err != nil {
		t.Fatal(err)
	}
	return len(m)
}

// A reader finds blobs through the multi-pack index and reads only the
// pack indexes it does not cover; a commit rebuilds it once midxRebuild
// packs are apart, not at every commit.
func TestMidxReadsOnlyThePackIndexesItDoesNotCover(t *testing.T) {
	n := 3 * midxRebuild
	s, vis, datas, wrote := midxStorePacks(t, n)
	packs := packIndexes(t, s)
	if packs < 3*midxRebuild {
		t.Fatalf("%d pack indexes, want one or more per version", packs)
	}
	for i, w := range wrote {
		if len(w) != 1 {
			t.Fatalf("version %d wrote %d packs, want one (the count below assumes it)", i, len(w))
		}
	}
	// Built by the first commit, rebuilt by each commit midxRebuild packs
	// after the last build: the newest (n-1) % midxRebuild are not in it.
	uncovered := (n - 1) % midxRebuild
	m := s.openMidx()
	if m == nil {
		t.Fatal("no multi-pack index after the commits")
	}
	covered := len(m.packs)
	m.close()
	if covered == packs || packs-covered >= midxRebuild || packs-covered != uncovered {
		t.Errorf("the multi-pack index covers %d of %d packs: want all but the newest %d (rebuilt only once %d are apart)", covered, packs, uncovered, midxRebuild)
	}
	for i, vi := range vis {
		got, read, err := readAll(t, s, vi.ID)
		if err != nil || !bytes.Equal(got, datas[i]) {
			t.Fatalf("version %d: %d bytes, %v", i, len(got), err)
		}
		if read != uncovered {
			t.Errorf("version %d: the reader read %d pack indexes, want the %d the multi-pack index does not cover (of %d)", i, read, uncovered, packs)
		}
	}
}

// Whatever happens to index.midx (bit rot, cut short, deleted, a pack it
// names pruned, entries pointing elsewhere), every read returns the
// stored bytes, verify warns of damage without calling the store
// damaged, and the next commit writes it again.
func TestMidxDamageCostsTimeNeverAWrongRead(t *testing.T) {
	for _, c := range []string{"flip", "truncate", "delete", "wrong-offsets", "pack-gone"} {
		t.Run(c, func(t *testing.T) {
			s, vis, datas, packs := midxStorePacks(t, midxRebuild+2)
			path := filepath.Join(s.dir, midxFile)
			raw, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			m, err := parseMidx(raw)
			if err != nil {
				t.Fatal(err)
			}
			entriesAt := len(raw) - 32 - len(m.entries)
			rng := rand.New(rand.NewPCG(uint64(len(c)), 7))
			from := 0
			switch c {
			case "flip":
				raw[rng.IntN(len(raw))] ^= 1 << rng.IntN(8)
			case "truncate":
				raw = raw[:rng.IntN(len(raw))]
			case "wrong-offsets":
				for o := entriesAt; o < len(raw)-32; o += midxEntry {
					raw[o+32+4] ^= 0x40 // every offset
				}
			case "pack-gone":
				// The first version's pack and index go (as a prune
				// removes them); the midx still names the pack.
				from = 1
				for _, p := range packs[0] {
					if !slices.Contains(m.packs, p) {
						t.Fatalf("the multi-pack index does not name pack %s of the first version", p)
					}
					os.Remove(filepath.Join(s.dir, indexDir, p+indexExt))
					os.Remove(filepath.Join(s.dir, packsDir, p+packExt))
				}
				os.Remove(filepath.Join(s.dir, versionsDir, vis[0].ID+manifestExt))
			}
			if c == "delete" {
				os.Remove(path)
			} else if c != "pack-gone" {
				if err := os.WriteFile(path, raw, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			for i := from; i < len(vis); i++ {
				got, _, err := readAll(t, s, vis[i].ID)
				if err != nil || !bytes.Equal(got, datas[i]) {
					t.Fatalf("version %d with the multi-pack index %s: %d bytes, %v", i, c, len(got), err)
				}
			}
			rep, err := s.Verify(context.Background(), false)
			if err != nil {
				t.Fatal(err)
			}
			warned := false
			for _, w := range rep.Warnings {
				warned = warned || strings.Contains(w, midxFile)
			}
			if !rep.Clean() {
				t.Errorf("verify: %+v, want no problem (index.midx is a cache)", rep.Problems)
			}
			if damaged := c == "flip" || c == "truncate" || c == "wrong-offsets"; warned != damaged {
				t.Errorf("verify warned of %s: %v, want %v (%q)", midxFile, warned, damaged, rep.Warnings)
			}
			more := randBytes(40 << 10)
			vi := commitVersion(t, s, func(w *VersionWriter) error {
				_, err := w.AddStream("s", bytes.NewReader(more))
				return err
			})
			if w := s.checkMidx(); w != "" || s.openMidx() == nil {
				t.Errorf("after the next commit: %q, want a whole multi-pack index", w)
			}
			if got, _, err := readAll(t, s, vi.ID); err != nil || !bytes.Equal(got, more) {
				t.Errorf("the next version: %d bytes, %v", len(got), err)
			}
		})
	}
}

func FuzzParseMidx(f *testing.F) {
	s := openTest(f, filepath.Join(f.TempDir(), "store"), 16<<10)
	commitVersion(f, s, func(w *VersionWriter) error {
		_, err := w.AddStream("s", bytes.NewReader(randBytes(40<<10)))
		return err
	})
	raw, err := os.ReadFile(filepath.Join(s.dir, midxFile))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(raw)
	f.Add([]byte(midxMagic))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseMidx(b)
		if err != nil {
			return
		}
		if len(m.entries)%midxEntry != 0 || len(m.entries) > len(b) {
			t.Fatalf("entries of %d bytes out of %d", len(m.entries), len(b))
		}
		var id [32]byte
		copy(id[:], b)
		m.lookup(id, func(pack int, off, length uint32) bool { return true })
	})
}
