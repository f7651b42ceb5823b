package rsyncish

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// statusVersion commits a version of root's /etc holding status st (no
// status meta at all when st is "-").
func statusVersion(t *testing.T, s *Store, root, st string) VersionInfo {
	t.Helper()
	return commitVersion(t, s, func(w *VersionWriter) error {
		if err := w.AddTree(root, []string{"/etc"}, nil); err != nil {
			return err
		}
		if st == "-" {
			return nil
		}
		return w.SetMeta(MetaStatus, st)
	})
}

// "latest" is the newest good version: the ones after it that recorded a
// status other than ok (an etcd failure, a degraded set, a restore's
// safety version of a broken node) are passed over, loudly; "newest" and
// an explicit ID still reach them. Before, "latest" was simply the newest.
func TestResolveLatestIsTheNewestGoodVersion(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "etc/kubernetes/pki/ca.key"), []byte("key"), 0o600)
	var logs bytes.Buffer
	s, err := Open(filepath.Join(t.TempDir(), "store"), Options{AllowSameFilesystem: true, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Resolve(Latest); !errors.Is(err, ErrNotFound) {
		t.Fatalf("latest of an empty store: %v", err)
	}
	statusVersion(t, s, root, "ok")
	legacy := statusVersion(t, s, root, "-") // a writer that records no status
	failed := statusVersion(t, s, root, "etcd-failed")
	degraded := statusVersion(t, s, root, "degraded")

	for _, name := range []string{"", Latest} {
		if id, err := s.Resolve(name); err != nil || id != legacy.ID {
			t.Errorf("Resolve(%q) = %s, %v; want the newest good version %s", name, id, err, legacy.ID)
		}
	}
	if !strings.Contains(logs.String(), degraded.ID+" (degraded)") || !strings.Contains(logs.String(), failed.ID+" (etcd-failed)") {
		t.Errorf("passing over versions that are not good is not logged with their status:\n%s", logs.String())
	}
	if id, err := s.Resolve(Newest); err != nil || id != degraded.ID {
		t.Errorf("Resolve(newest) = %s, %v; want %s", id, err, degraded.ID)
	}
	if id, err := s.Resolve(failed.ID); err != nil || id != failed.ID {
		t.Errorf("an explicit ID of a failed version: %s, %v", id, err)
	}
	if v, err := s.NewestGood(); err != nil || v.ID != legacy.ID {
		t.Errorf("NewestGood = %s, %v", v.ID, err)
	}
	if v, err := s.Newest(); err != nil || v.ID != degraded.ID || v.Status() != "degraded" || v.Good() {
		t.Errorf("Newest = %s status %q good %v, %v", v.ID, v.Status(), v.Good(), err)
	}
	vs, _ := s.Versions()
	var statuses []string
	for _, v := range vs {
		statuses = append(statuses, v.Status())
	}
	if !reflect.DeepEqual(statuses, []string{"ok", "", "etcd-failed", "degraded"}) || !vs[0].Good() || !vs[1].Good() {
		t.Errorf("statuses as listed: %q", statuses)
	}

	// Only versions that are not good: "latest" refuses, naming the
	// newest and how to reach it anyway.
	s2 := openTest(t, filepath.Join(t.TempDir(), "store"), 0)
	statusVersion(t, s2, root, "etcd-failed")
	bad := statusVersion(t, s2, root, "files-only")
	_, err = s2.Resolve(Latest)
	if !errors.Is(err, ErrNoGoodVersion) || !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), bad.ID) ||
		!strings.Contains(err.Error(), "files-only") || !strings.Contains(err.Error(), `"newest"`) {
		t.Errorf("latest with no good version: %v", err)
	}
}

// Lacks names the regular files of an earlier version that the version
// being written does not hold, per top-level path, leaving out what the
// current excludes cover.
func TestLacksNamesLostFiles(t *testing.T) {
	root := t.TempDir()
	for _, p := range []string{"etc/kubernetes/pki/ca.key", "etc/kubernetes/pki/ca.crt", "etc/kubernetes/pki/apiserver.crt",
		"etc/kubernetes/manifests/etcd.yaml", "etc/kubernetes/manifests/kube-apiserver.yaml", "etc/kubernetes/admin.conf",
		"var/lib/kubelet/pki/kubelet.crt"} {
		writeFile(t, filepath.Join(root, p), []byte(p), 0o600)
	}
	paths := []string{"/etc/kubernetes/pki", "/etc/kubernetes/manifests", "/etc/kubernetes/admin.conf", "/var/lib/kubelet/pki"}
	s := openTest(t, filepath.Join(t.TempDir(), "store"), 0)
	ref := backup(t, s, root, paths...)

	for _, p := range []string{"etc/kubernetes/pki/ca.key", "etc/kubernetes/admin.conf", "var/lib/kubelet/pki/kubelet.crt"} {
		if err := os.Remove(filepath.Join(root, p)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.RemoveAll(filepath.Join(root, "etc/kubernetes/manifests")); err != nil {
		t.Fatal(err)
	}
	unlock := lockTest(t, s)
	defer unlock()
	// ref as the writer's parent (its files are in memory) and not (its
	// manifest is read): the same answer.
	for _, parent := range []string{"", "none"} {
		w, err := s.NewVersion(t.Context(), WriteOptions{Parent: parent})
		if err != nil {
			t.Fatal(err)
		}
		if err := w.AddTree(root, paths, nil); err != nil {
			t.Fatal(err)
		}
		loss, err := w.Lacks(ref.ID, []string{"/var/lib/kubelet"})
		if err != nil {
			t.Fatal(err)
		}
		want := &Loss{Ref: ref.ID, Files: 6, Missing: []string{"/etc/kubernetes/admin.conf", "/etc/kubernetes/manifests/etcd.yaml",
			"/etc/kubernetes/manifests/kube-apiserver.yaml", "/etc/kubernetes/pki/ca.key"},
			Paths: []PathLoss{{"/etc/kubernetes/pki", 3, 1}, {"/etc/kubernetes/manifests", 2, 2}, {"/etc/kubernetes/admin.conf", 1, 1}}}
		if !reflect.DeepEqual(loss, want) {
			t.Errorf("parent %q: Lacks = %+v\nwant   %+v", parent, loss, want)
		}
		if _, err := w.Lacks("20990101T000000Z-00000000", nil); !errors.Is(err, ErrNotFound) {
			t.Errorf("Lacks of a missing version: %v", err)
		}
		w.Abort()
	}
}

// A restore's safety version is never "latest", even when it is good (a
// restore of a healthy node after a bad helm upgrade): a re-run of a
// restore phase with --version latest must land on what the restore
// restored from. Before, a good safety version became latest.
func TestResolveLatestSkipsSafetyVersions(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "etc/kubernetes/pki/ca.key"), []byte("key"), 0o600)
	s, err := Open(filepath.Join(t.TempDir(), "store"), Options{AllowSameFilesystem: true})
	if err != nil {
		t.Fatal(err)
	}
	restored := statusVersion(t, s, root, "ok")
	safety := commitVersion(t, s, func(w *VersionWriter) error {
		if err := w.AddTree(root, []string{"/etc"}, nil); err != nil {
			return err
		}
		if err := w.SetMeta(MetaStatus, StatusOK); err != nil {
			return err
		}
		return w.SetMeta(MetaOrigin, OriginSafety)
	})
	if id, err := s.Resolve(Latest); err != nil || id != restored.ID {
		t.Errorf("Resolve(latest) = %s, %v; want %s, not the good safety version %s", id, err, restored.ID, safety.ID)
	}
	if id, err := s.Resolve(Newest); err != nil || id != safety.ID {
		t.Errorf("Resolve(newest) = %s, %v; want the safety version %s", id, err, safety.ID)
	}
	vi, err := s.Version(safety.ID)
	if err != nil || !vi.Good() || vi.Latest() || vi.Origin() != OriginSafety {
		t.Errorf("safety version: good=%v latest=%v origin=%q err=%v", vi.Good(), vi.Latest(), vi.Origin(), err)
	}
}
