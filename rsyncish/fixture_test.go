package rsyncish

import (
	"bytes"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"
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
