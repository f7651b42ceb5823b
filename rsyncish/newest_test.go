package rsyncish

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// commitAt commits a version of root's /etc taken at t.
func commitAt(t *testing.T, s *Store, root string, at time.Time) VersionInfo {
	t.Helper()
	unlock := lockTest(t, s)
	defer unlock()
	w, err := s.NewVersion(context.Background(), WriteOptions{Time: at})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.AddTree(root, []string{"/etc"}, nil); err != nil {
		w.Abort()
		t.Fatal(err)
	}
	vi, err := w.Commit()
	if err != nil {
		t.Fatal(err)
	}
	return vi
}

// NewestFirst walks the versions in exactly the reverse of Versions'
// order, also when several fall in one second (their IDs, the second and
// a random suffix, then order them differently from their times).
func TestNewestFirstIsVersionsReversed(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "etc/kubernetes/admin.conf"), []byte("conf"), 0o600)
	s := openTest(t, filepath.Join(t.TempDir(), "store"), 0)
	t0 := time.Date(2026, 11, 23, 11, 28, 31, 0, time.UTC)
	for _, d := range []time.Duration{0, time.Second, 2*time.Second + 100*time.Millisecond, 2*time.Second + 900*time.Millisecond,
		2*time.Second + 500*time.Millisecond, 2*time.Second + 300*time.Millisecond, time.Hour} {
		commitAt(t, s, root, t0.Add(d))
	}
	vs, err := s.Versions()
	if err != nil {
		t.Fatal(err)
	}
	var want, got []string
	for _, v := range slices.Backward(vs) {
		want = append(want, v.ID)
	}
	if err := s.NewestFirst(func(v VersionInfo) bool { got = append(got, v.ID); return true }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("NewestFirst = %v\nVersions reversed = %v", got, want)
	}
	var first []string
	if err := s.NewestFirst(func(v VersionInfo) bool { first = append(first, v.ID); return len(first) < 3 }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(first, want[:3]) {
		t.Errorf("stopped after 3: %v, want %v", first, want[:3])
	}
}

// "latest" reads the manifests of the versions it passes over, not of the
// whole store: a get resolves it on every call and a kept store holds
// dozens. An old version's manifest replaced by garbage is the witness:
// Versions warns of it; resolving latest must not even open it.
func TestResolveLatestReadsOnlyNewerVersions(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "etc/kubernetes/admin.conf"), []byte("conf"), 0o600)
	var logs bytes.Buffer
	s, err := Open(filepath.Join(t.TempDir(), "store"), Options{AllowSameFilesystem: true, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 23, 11, 0, 0, 0, time.UTC)
	old := commitAt(t, s, root, t0)
	var last VersionInfo
	for i := 1; i <= 3; i++ {
		last = commitAt(t, s, root, t0.Add(time.Duration(i)*5*time.Minute))
	}
	if err := os.WriteFile(filepath.Join(s.Dir(), versionsDir, old.ID+manifestExt), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	logs.Reset()
	for _, name := range []string{Latest, Newest, last.ID} {
		if id, err := s.Resolve(name); err != nil || id != last.ID {
			t.Errorf("Resolve(%s) = %s, %v; want %s", name, id, err, last.ID)
		}
	}
	if strings.Contains(logs.String(), old.ID) {
		t.Errorf("resolving the newest version read the oldest one's manifest:\n%s", logs.String())
	}
	if _, err := s.Versions(); err != nil || !strings.Contains(logs.String(), "unreadable version manifest") {
		t.Errorf("the witness: Versions does not warn of the garbage manifest (%v):\n%s", err, logs.String())
	}
}
