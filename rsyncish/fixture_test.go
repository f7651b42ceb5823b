package rsyncish

import (
	"bytes"
	"context"
	"io"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kubekeep/kubekeep/rsyncish/format"
)

// The store under testdata/store-v1 was written by the code of commit
// b9a8248 (store format 1, "kubekeep-manifest 1"), before names became
// bytes and zero runs became runs: TestReadFormat1Store holds every later
// kubekeep to reading it. It was made with
//
//	KUBEKEEP_WRITE_FIXTURE=$PWD/testdata/store-v1 go test -run TestWriteFixture ./rsyncish
//
// at that commit; running it again with newer code would write a newer
// format, so the committed fixture is never regenerated.
const fixtureV1 = "testdata/store-v1"

// fixtureBytes is deterministic content, so the test knows what the
// fixture's files hold without storing them twice.
func fixtureBytes(seed uint64, n int) []byte {
	rng := mrand.New(mrand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// fixtureTree is the tree of the fixture's versions: version v (1 or 2).
func fixtureTree(t testing.TB, root string, v int) {
	writeFile(t, filepath.Join(root, "etc/kubernetes/pki/ca.key"), fixtureBytes(1, 1675), 0o600)
	writeFile(t, filepath.Join(root, "etc/kubernetes/pki/ca.crt"), fixtureBytes(2, 1100), 0o644)
	admin := []byte("apiVersion: v1\n")
	if v == 2 {
		admin = fixtureBytes(3, 40<<10)
	}
	writeFile(t, filepath.Join(root, "etc/kubernetes/admin.conf"), admin, 0o600)
	// A sparse file: data, a hole of several blocks, data.
	wal := make([]byte, 300<<10)
	copy(wal, fixtureBytes(4, 5000))
	copy(wal[200<<10:], fixtureBytes(5, 70<<10))
	writeFile(t, filepath.Join(root, "var/lib/etcd/member/wal/0.wal"), wal, 0o600)
	os.Remove(filepath.Join(root, "etc/kubernetes/ca-link"))
	if err := os.Symlink("pki/ca.crt", filepath.Join(root, "etc/kubernetes/ca-link")); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "etc/kubernetes/manifests"), 0o700); err != nil {
		t.Fatal(err)
	}
	old := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, p := range []string{"etc/kubernetes/pki/ca.key", "etc/kubernetes/manifests"} {
		if err := os.Chtimes(filepath.Join(root, p), old, old); err != nil {
			t.Fatal(err)
		}
	}
}

// fixtureStream is the etcd.db stream of the fixture's second version.
func fixtureStream() []byte { return fixtureBytes(6, 100<<10) }

// TestWriteFixture writes the format-1 fixture (see fixtureV1); it runs
// only when asked to.
func TestWriteFixture(t *testing.T) {
	dir := os.Getenv("KUBEKEEP_WRITE_FIXTURE")
	if dir == "" {
		t.Skip("KUBEKEEP_WRITE_FIXTURE not set")
	}
	root := t.TempDir()
	s := openTest(t, dir, 16<<10)
	fixtureTree(t, root, 1)
	v1 := backup(t, s, root, "/etc/kubernetes", "/var/lib/etcd")
	fixtureTree(t, root, 2)
	commitVersion(t, s, func(w *VersionWriter) error {
		if err := w.AddTree(root, []string{"/etc/kubernetes", "/var/lib/etcd"}, nil); err != nil {
			return err
		}
		_, err := w.AddStream("etcd.db", bytes.NewReader(fixtureStream()))
		return err
	})
	if err := s.MarkVerified(v1.ID, Verification{Method: "drill", Time: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}); err != nil {
		t.Fatal(err)
	}
	j, err := s.Journal("etcd-deltas")
	if err != nil {
		t.Fatal(err)
	}
	for i := range uint64(3) {
		if err := j.Append(fixtureBytes(10+i, 100), 10+10*i, 19+10*i, time.Date(2026, 1, 1, 0, 0, int(i), 0, time.UTC)); err != nil {
			t.Fatal(err)
		}
	}
	unlock := lockTest(t, s)
	unlock()
	os.Remove(filepath.Join(dir, lockFile))
}

// TestReadFormat1Store opens the store an older kubekeep wrote (format 1)
// and holds this code to everything it held: both versions verify and
// restore the exact bytes, the stream, the verification mark and the
// journal read back. A new version on top upgrades the store to format 2
// and leaves the old manifests as they are.
func TestReadFormat1Store(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	copyDir(t, fixtureV1, dir)
	s := openTest(t, dir, 16<<10)
	vs, err := s.Versions()
	if err != nil || len(vs) != 2 {
		t.Fatalf("versions: %d %v", len(vs), err)
	}
	if !vs[0].Verified || vs[1].Verified {
		t.Errorf("verification marks: %v %v", vs[0].Verified, vs[1].Verified)
	}
	want1, want2 := t.TempDir(), t.TempDir()
	fixtureTree(t, want1, 1)
	fixtureTree(t, want2, 2)
	check := func(id, want string) {
		t.Helper()
		out := t.TempDir()
		if err := s.RestoreFiles(context.Background(), id, out, nil); err != nil {
			t.Fatalf("restore %s: %v", id, err)
		}
		for _, p := range []string{"etc/kubernetes/pki/ca.key", "etc/kubernetes/pki/ca.crt", "etc/kubernetes/admin.conf", "var/lib/etcd/member/wal/0.wal"} {
			a, _ := os.ReadFile(filepath.Join(want, p))
			b, err := os.ReadFile(filepath.Join(out, p))
			if err != nil || !bytes.Equal(a, b) {
				t.Errorf("version %s: %s differs (%v)", id, p, err)
			}
		}
		if l, err := os.Readlink(filepath.Join(out, "etc/kubernetes/ca-link")); err != nil || l != "pki/ca.crt" {
			t.Errorf("version %s: symlink %q %v", id, l, err)
		}
		if st, err := os.Stat(filepath.Join(out, "etc/kubernetes/pki/ca.key")); err != nil || st.Mode().Perm() != 0o600 || !st.ModTime().Equal(time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)) {
			t.Errorf("version %s: ca.key mode/mtime %v", id, st)
		}
	}
	check(vs[0].ID, want1)
	check(vs[1].ID, want2)
	rc, _, err := s.OpenStream(vs[1].ID, "etcd.db")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if !bytes.Equal(got, fixtureStream()) {
		t.Error("stream differs")
	}
	j, err := s.Journal("etcd-deltas")
	if err != nil {
		t.Fatal(err)
	}
	segs, err := j.List()
	if err != nil || len(segs) != 3 {
		t.Fatalf("journal: %v %v", segs, err)
	}
	for i, si := range segs {
		if data, err := j.Read(si); err != nil || !bytes.Equal(data, fixtureBytes(10+uint64(i), 100)) {
			t.Errorf("segment %d: %v", i, err)
		}
	}
	unlock := lockTest(t, s)
	rep, err := s.Verify(context.Background(), true)
	unlock()
	if err != nil || !rep.Clean() || rep.Versions != 2 || rep.Segments != 3 {
		t.Fatalf("verify: %v %+v", err, rep)
	}

	// A version written now: format 2, the store upgraded, the old ones
	// untouched and still readable.
	v3 := backup(t, s, want2, "/etc/kubernetes", "/var/lib/etcd")
	check(v3.ID, want2)
	check(vs[0].ID, want1)
	cfg, _ := os.ReadFile(filepath.Join(dir, configFile))
	if !bytes.Contains(cfg, []byte(`"format":2`)) {
		t.Errorf("config.json not upgraded: %s", cfg)
	}
	for id, magic := range map[string]string{vs[0].ID: format.ManifestMagicV1, vs[1].ID: format.ManifestMagicV1, v3.ID: format.ManifestMagic} {
		data, _ := os.ReadFile(filepath.Join(dir, versionsDir, id+manifestExt))
		if !bytes.HasPrefix(data, []byte(magic+"\n")) {
			t.Errorf("manifest %s starts %q, want %q", id, data[:20], magic)
		}
	}
	if _, err := Open(dir, Options{Logger: testLogger(t), NoCreate: true}); err != nil {
		t.Errorf("reopening the upgraded store: %v", err)
	}
}
