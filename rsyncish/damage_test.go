package rsyncish

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kubekeep/kubekeep/rsyncish/format"
)

// copyDir copies a store so each damage starts from a clean one.
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	if out, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
}

// richStore has two versions (files and a stream), a verification mark and
// a journal segment: one of every kind of store file.
func richStore(t *testing.T) (dir string, ids []string) {
	root := t.TempDir()
	dir = filepath.Join(t.TempDir(), "store")
	sampleTree(t, root)
	s := openTest(t, dir, 16<<10)
	v1 := backup(t, s, root, "/etc/kubernetes", "/var/lib/etcd")
	writeFile(t, filepath.Join(root, "etc/kubernetes/admin.conf"), randBytes(40<<10), 0o600)
	unlock := lockTest(t, s)
	w, err := s.NewVersion(context.Background(), WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.AddTree(root, []string{"/etc/kubernetes"}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := w.AddStream("etcd.db", bytes.NewReader(randBytes(100<<10))); err != nil {
		t.Fatal(err)
	}
	v2, err := w.Commit()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.WriteAux("RESTORE.md", []byte("how to restore\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	unlock()
	if err := s.MarkVerified(v1.ID, Verification{Method: "drill"}); err != nil {
		t.Fatal(err)
	}
	j, err := s.Journal("etcd")
	if err != nil {
		t.Fatal(err)
	}
	if err := j.Append([]byte("put /registry/x"), 10, 12, time.Now()); err != nil {
		t.Fatal(err)
	}
	// A chain restarted after a gap: the journal records a break.
	if err := j.Append([]byte("put /registry/y"), 20, 22, time.Now()); err != nil {
		t.Fatal(err)
	}
	return dir, []string{v1.ID, v2.ID}
}

// TestBitRot flips one byte at several places in every file of the store;
// verify --read-data must report each flip, and a flip inside a pack must
// name the versions and paths that lose data.
func TestBitRot(t *testing.T) {
	clean, ids := richStore(t)
	var files []string
	err := filepath.WalkDir(clean, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel := strings.TrimPrefix(p, clean+"/")
		if d.Type().IsRegular() && rel != lockFile && rel != readLockFile {
			files = append(files, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]bool{}
	flips := 0
	for _, rel := range files {
		kinds[strings.SplitN(rel, "/", 2)[0]] = true
		st, err := os.Stat(filepath.Join(clean, rel))
		if err != nil {
			t.Fatal(err)
		}
		for _, at := range []int64{0, st.Size() / 3, st.Size() / 2, st.Size() - 40, st.Size() - 1} {
			if at < 0 {
				continue
			}
			dir := filepath.Join(t.TempDir(), "s")
			copyDir(t, clean, dir)
			p := filepath.Join(dir, rel)
			data, _ := os.ReadFile(p)
			data[at] ^= 0x20
			if err := os.WriteFile(p, data, 0o600); err != nil {
				t.Fatal(err)
			}
			flips++
			// A damaged config.json locks nobody out (the manifests
			// record what it held), but verify reports it.
			s, err := Open(dir, Options{AllowSameFilesystem: true, Logger: testLogger(t), NoCreate: true})
			if err != nil {
				t.Fatal(err)
			}
			rep, err := s.Verify(context.Background(), true)
			if err != nil {
				t.Fatal(err)
			}
			if rel == midxFile {
				// A cache of the pack indexes: a warning, not damage
				// (readers fall back; the next commit rewrites it).
				warned := false
				for _, w := range rep.Warnings {
					warned = warned || strings.Contains(w, midxFile)
				}
				if !rep.Clean() || !warned {
					t.Errorf("flip in %s at byte %d: problems %+v, warnings %q; want a warning only", rel, at, rep.Problems, rep.Warnings)
				}
				continue
			}
			if rep.Clean() {
				t.Errorf("flip in %s at byte %d of %d: verify --read-data found nothing", rel, at, len(data))
				continue
			}
			if strings.HasPrefix(rel, packsDir+"/") {
				named := false
				for _, pr := range rep.Problems {
					if len(pr.Versions) > 0 && len(pr.Paths) > 0 {
						named = true
					}
				}
				if !named {
					t.Errorf("flip in %s: problems name no version and path: %v", rel, rep.Problems)
				}
			}
		}
	}
	for _, k := range []string{packsDir, indexDir, versionsDir, verifiedDir, journalsDir, configFile} {
		if !kinds[k] {
			t.Errorf("the store had no %s file to damage", k)
		}
	}
	t.Logf("%d flips in %d files, every one caught (versions %v)", flips, len(files), ids)

	// Structure-only verify misses pack rot by design but must not miss a
	// missing pack.
	dir := filepath.Join(t.TempDir(), "s")
	copyDir(t, clean, dir)
	packs, _ := filepath.Glob(filepath.Join(dir, packsDir, "*"+packExt))
	os.Remove(packs[0])
	s, _ := Open(dir, Options{AllowSameFilesystem: true, Logger: testLogger(t)})
	if rep, _ := s.Verify(context.Background(), false); rep.Clean() {
		t.Error("a missing pack went unnoticed")
	}
}

// TestRestoreRefusesEscapes hands RestoreFiles manifests naming paths that
// leave the target, directly and through a symlink restored earlier.
func TestRestoreRefusesEscapes(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, 0)
	outside := t.TempDir()
	unlock := lockTest(t, s)
	w, err := s.NewVersion(context.Background(), WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	si, err := w.AddStream("payload", bytes.NewReader([]byte("pwned")))
	if err != nil {
		t.Fatal(err)
	}
	base, err := w.Commit()
	if err != nil {
		t.Fatal(err)
	}
	unlock()
	m, err := s.manifest(base.ID)
	if err != nil {
		t.Fatal(err)
	}
	payload := m.Entries[0].Extents
	forge := func(id string, entries ...format.Entry) {
		for i := range entries {
			if entries[i].Type == format.TypeFile {
				entries[i].Extents, entries[i].Size, entries[i].Mode = payload, si.Size, 0o644
			}
		}
		fm := &format.Manifest{Header: format.Header{ID: id, Time: time.Now().UTC(), BlockSize: DefaultBlockSize}, Entries: entries}
		f, err := os.Create(filepath.Join(dir, versionsDir, id+manifestExt))
		if err != nil {
			t.Fatal(err)
		}
		if err := format.EncodeManifest(f, fm); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	rel, _ := filepath.Rel("/", outside)
	depth := strings.Repeat("../", strings.Count(rel, "/")+8)
	cases := map[string][]format.Entry{
		"dotdot":   {{Path: "../../" + depth + rel + "/shadow", Type: format.TypeFile}},
		"rooted":   {{Path: "/../../" + rel + "/shadow", Type: format.TypeFile}},
		"inner":    {{Path: "/etc/../" + depth + rel + "/shadow", Type: format.TypeFile}},
		"relative": {{Path: "etc/shadow", Type: format.TypeFile}},
		"symlink-abs": {
			{Path: "/etc", Type: format.TypeSymlink, Target: outside},
			{Path: "/etc/shadow", Type: format.TypeFile},
		},
		"symlink-rel": {
			{Path: "/etc", Type: format.TypeSymlink, Target: depth + rel},
			{Path: "/etc/shadow", Type: format.TypeFile},
		},
	}
	for name, entries := range cases {
		t.Run(name, func(t *testing.T) {
			id := "forged-" + name
			forge(id, entries...)
			to := filepath.Join(t.TempDir(), "to")
			err := s.RestoreFiles(context.Background(), id, to, nil)
			if err == nil {
				t.Error("restore of a version that escapes succeeded")
			}
			ents, _ := os.ReadDir(outside)
			if len(ents) != 0 {
				t.Fatalf("restore wrote outside its target: %v", ents)
			}
			if _, err := os.Stat("/etc/shadow.kubekeep"); err == nil {
				t.Fatal("wrote to /etc")
			}
			if strings.HasPrefix(name, "symlink") {
				return
			}
			if !errors.Is(err, ErrUnsafePath) {
				t.Errorf("error %v does not say the path is unsafe", err)
			}
			rep, err := s.Verify(context.Background(), false)
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, p := range rep.Problems {
				found = found || (p.Kind == "path" && p.Versions[0] == id)
			}
			if !found {
				t.Errorf("verify does not report the unsafe path of %s", id)
			}
		})
	}
}

func TestPruneRetention(t *testing.T) {
	root, dir := t.TempDir(), t.TempDir()
	s := openTest(t, dir, 0)
	base := time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC) // a Monday
	var ids []string
	contents := map[string][]byte{}
	// 30 versions, 5 hours apart, each with a distinct big file.
	for i := range 30 {
		data := randBytes(200 << 10)
		writeFile(t, filepath.Join(root, "f"), data, 0o600)
		unlock := lockTest(t, s)
		w, err := s.NewVersion(context.Background(), WriteOptions{Time: base.Add(time.Duration(i) * 5 * time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		if err := w.AddTree(root, []string{"/f"}, nil); err != nil {
			t.Fatal(err)
		}
		vi, err := w.Commit()
		if err != nil {
			t.Fatal(err)
		}
		unlock()
		ids = append(ids, vi.ID)
		contents[vi.ID] = data
	}
	if err := s.MarkVerified(ids[2], Verification{Method: "drill"}); err != nil {
		t.Fatal(err)
	}
	policy := RetentionPolicy{KeepLast: 2, KeepDaily: 3, KeepWeekly: 2}
	unlock := lockTest(t, s)
	defer unlock()
	dry, err := s.Prune(context.Background(), policy, true)
	if err != nil {
		t.Fatal(err)
	}
	if vs, _ := s.Versions(); len(vs) != 30 {
		t.Fatalf("dry run removed versions: %d left", len(vs))
	}
	usedBefore, _, _ := s.Usage()
	res, err := s.Prune(context.Background(), policy, false)
	if err != nil {
		t.Fatal(err)
	}
	kept := map[string]bool{}
	for _, k := range res.Keep {
		kept[k.ID] = true
	}
	// last 2: 29, 28. Daily (UTC days hold versions 0-4, 5-9, ...): newest
	// of the last 3 days: 29 (day 6), 28 (day 5)... computed by hand:
	// v29 at +145h = day 6 01:00, v28 day 5 20:00, v27 day 5 15:00,
	// v24 day 5 00:00, v23 day 4 19:00. Daily: 29, 28, 23. Weekly (ISO
	// weeks from Monday): 29 is in week 2; 25..29 >= +168h? 168/5=33.6, so
	// all in week 1 except none; weekly keeps 29 only plus nothing older
	// in another week. Newest verified: 2.
	want := map[string]bool{ids[29]: true, ids[28]: true, ids[23]: true, ids[2]: true}
	for id := range want {
		if !kept[id] {
			t.Errorf("version %s not kept (kept %v)", id, res.Keep)
		}
	}
	if len(kept) != len(want) {
		t.Errorf("kept %d versions, want %d: %v", len(kept), len(want), res.Keep)
	}
	if len(dry.Remove) != len(res.Remove) || dry.BytesFreed == 0 {
		t.Errorf("dry run said remove %d / free %d, real removed %d", len(dry.Remove), dry.BytesFreed, len(res.Remove))
	}
	usedAfter, _, _ := s.Usage()
	t.Logf("store %d -> %d bytes; %+v", usedBefore, usedAfter, *res)
	if usedAfter > usedBefore/3 {
		t.Errorf("prune reclaimed too little: %d -> %d", usedBefore, usedAfter)
	}
	rep, err := s.Verify(context.Background(), true)
	if err != nil || !rep.Clean() {
		t.Fatalf("verify after prune: %v %+v", err, rep)
	}
	for id := range want {
		out := t.TempDir()
		if err := s.RestoreFiles(context.Background(), id, out, nil); err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(filepath.Join(out, "f"))
		if !bytes.Equal(got, contents[id]) {
			t.Errorf("version %s restores different content after prune", id)
		}
	}
}

func TestJournal(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, 0)
	j, err := s.Journal("etcd-deltas")
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 10 {
		first := uint64(100 + i*10)
		if err := j.Append([]byte(fmt.Sprintf("seg %d", i)), first, first+9, t0.Add(time.Duration(i)*2*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	segs, err := j.List()
	if err != nil || len(segs) != 10 {
		t.Fatalf("list: %d %v", len(segs), err)
	}
	for i, si := range segs {
		data, err := j.Read(si)
		if err != nil || string(data) != "seg "+strconv.Itoa(i) || si.First != uint64(100+i*10) || !si.Time.Equal(t0.Add(time.Duration(i)*2*time.Second)) {
			t.Fatalf("segment %d: %q %v %+v", i, data, err, si)
		}
	}
	n, err := j.Trim(150)
	if err != nil || n != 5 {
		t.Fatalf("trim removed %d, %v", n, err)
	}
	segs, _ = j.List()
	if len(segs) != 5 || segs[0].First != 150 {
		t.Fatalf("after trim: %+v", segs)
	}
	// A segment whose content does not match its name is refused.
	p := filepath.Join(dir, journalsDir, "etcd-deltas", segs[0].File)
	data, _ := os.ReadFile(p)
	data[len(data)-33] ^= 1
	os.WriteFile(p, data, 0o600)
	if _, err := j.Read(segs[0]); err == nil {
		t.Error("damaged segment read without error")
	}
	if _, err := s.Journal("../x"); err == nil {
		t.Error("journal name with a slash accepted")
	}
}

func TestLockAndLeftovers(t *testing.T) {
	dir := t.TempDir()
	s1 := openTest(t, dir, 0)
	s2 := openTest(t, dir, 0)
	unlock := lockTest(t, s1)
	_, err := s2.Lock(context.Background())
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), strconv.Itoa(os.Getpid())) {
		t.Fatalf("second lock: %v (want ErrLocked naming pid %d)", err, os.Getpid())
	}
	if _, err := s2.NewVersion(context.Background(), WriteOptions{}); err == nil {
		t.Error("NewVersion without the lock succeeded")
	}
	unlock()

	// Leftovers: a dead process's temp files and a pack without index go;
	// a live process's temp file and indexed packs stay.
	dead := exec.Command("true")
	_ = dead.Run()
	deadPID := dead.ProcessState.Pid()
	deadTmp := filepath.Join(dir, versionsDir, "x.manifest"+tmpMarker+strconv.Itoa(deadPID)+"-abcd")
	liveTmp := filepath.Join(dir, tmpDir, "snap"+tmpMarker+strconv.Itoa(os.Getpid())+"-abcd")
	orphan := filepath.Join(dir, packsDir, "deadbeef"+packExt)
	for _, p := range []string{deadTmp, liveTmp, orphan} {
		writeFile(t, p, []byte("x"), 0o600)
	}
	unlock = lockTest(t, s2)
	unlock()
	for p, want := range map[string]bool{deadTmp: false, liveTmp: true, orphan: false} {
		if _, err := os.Stat(p); (err == nil) != want {
			t.Errorf("%s: exists=%v, want %v", p, err == nil, want)
		}
	}
	f, err := s1.CreateTemp("etcd-*.db")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if filepath.Dir(f.Name()) != filepath.Join(dir, tmpDir) {
		t.Errorf("temp file %s not in the store", f.Name())
	}
	if st, _ := f.Stat(); st.Mode().Perm() != 0o600 {
		t.Errorf("temp file mode %v", st.Mode())
	}

	// A scratch file is the lock holder's, survives leftover cleaning,
	// and takes plain names only.
	if _, err := s1.OpenScratch("etcd-check.db"); err == nil {
		t.Error("OpenScratch without the lock succeeded")
	}
	unlock = lockTest(t, s1)
	for _, bad := range []string{"", "../x", "a/b", ".hidden", "x" + tmpMarker + "1-ab"} {
		if _, err := s1.OpenScratch(bad); err == nil {
			t.Errorf("OpenScratch(%q) succeeded", bad)
		}
	}
	sf, err := s1.OpenScratch("etcd-check.db")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sf.WriteString("kept"); err != nil {
		t.Fatal(err)
	}
	sf.Close()
	unlock()
	unlock = lockTest(t, s2)
	unlock()
	if data, err := os.ReadFile(filepath.Join(dir, tmpDir, "etcd-check.db")); err != nil || string(data) != "kept" {
		t.Errorf("scratch file after leftover cleaning: %q %v", data, err)
	}
	if st, err := os.Stat(filepath.Join(dir, tmpDir, "etcd-check.db")); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("scratch file mode: %v %v", st, err)
	}
}

func TestGuards(t *testing.T) {
	root, dir := t.TempDir(), t.TempDir()
	writeFile(t, filepath.Join(root, "etc/a"), []byte("a"), 0o600)
	s, err := Open(filepath.Join(dir, "store"), Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range append([]string{""}, storeDirs...) {
		st, err := os.Stat(filepath.Join(dir, "store", d))
		if err != nil || st.Mode().Perm() != 0o700 {
			t.Errorf("store dir %q: %v %v", d, st.Mode(), err)
		}
	}
	if st, _ := os.Stat(filepath.Join(dir, "store", configFile)); st.Mode().Perm() != 0o600 {
		t.Errorf("config mode %v", st.Mode())
	}
	unlock := lockTest(t, s)
	w, err := s.NewVersion(context.Background(), WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.AddTree(root, []string{"/etc"}, nil); !errors.Is(err, ErrSameFS) {
		t.Errorf("same filesystem: %v, want ErrSameFS", err)
	}
	w.Abort()
	unlock()
	if _, err := Open(filepath.Join(dir, "s2"), Options{Mountpoint: dir, Logger: testLogger(t)}); !errors.Is(err, ErrNotMounted) {
		t.Errorf("unmounted mountpoint: %v, want ErrNotMounted", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "s2")); err == nil {
		t.Error("store created in an unmounted mountpoint")
	}
	if _, err := Open(filepath.Join(dir, "s3"), Options{NoCreate: true, Logger: testLogger(t)}); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("NoCreate on a missing store: %v", err)
	}
	if _, err := Open(root, Options{Logger: testLogger(t)}); err == nil {
		t.Error("a store was created in a non-empty directory")
	}
	// Symlinks are stored, never followed out of the tree.
	os.Symlink("/etc", filepath.Join(root, "etc/out"))
	s4 := openTest(t, filepath.Join(dir, "s4"), 0)
	vi := backup(t, s4, root, "/etc", "/etc/out")
	ents, _ := s4.List(vi.ID)
	for _, e := range ents {
		if strings.HasPrefix(e.Path, "/etc/out/") {
			t.Errorf("followed a symlink: %s", e.Path)
		}
	}
	if vi.Files != 1 || vi.Symlinks != 1 {
		t.Errorf("files %d symlinks %d", vi.Files, vi.Symlinks)
	}
}

// A temp dir from MkdirTemp is 0700 in the store's tmp; a live process's
// stays through leftover cleaning, a dead one's goes with what it holds
// (a killed off-site sync's sealed objects).
func TestMkdirTempLeftovers(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, 0)
	live, err := s.MkdirTemp("offsite-")
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(live); err != nil || fi.Mode().Perm() != 0o700 || filepath.Dir(live) != filepath.Join(dir, tmpDir) {
		t.Fatalf("temp dir %s: %v %v", live, fi.Mode(), err)
	}
	dead := exec.Command("true")
	_ = dead.Run()
	killed := filepath.Join(dir, tmpDir, "offsite-"+tmpMarker+strconv.Itoa(dead.ProcessState.Pid())+"-abcd")
	writeFile(t, filepath.Join(killed, "seal-1.age"), []byte("sealed"), 0o600)
	unlock := lockTest(t, s)
	unlock()
	if _, err := os.Stat(live); err != nil {
		t.Errorf("the live process's temp dir went: %v", err)
	}
	if _, err := os.Stat(killed); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a dead process's temp dir stayed: %v", err)
	}
}
