package main

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubekeep/kubekeep/backup"
	"github.com/kubekeep/kubekeep/backup/versionread"
	"github.com/kubekeep/kubekeep/internal/testetcd"
	"github.com/kubekeep/kubekeep/rsyncish"
)

// As a user meets a store prune trimmed the delta journal of (only the
// chains of the kept versions and the window from the newest one): `get`
// of every kept version answers what it held, `verify` is clean, `get
// --at` in the window works, and `get --at` into the trimmed stretch
// fails rather than replaying across the hole. Before, prune trimmed
// nothing here.
func TestCLIGetAfterPruneTrimmedTheJournal(t *testing.T) {
	w := newJournalWorld(t, 3*time.Minute)
	put := func(v string) {
		t.Helper()
		if _, err := testetcd.PutObject(w.ctx, w.cli, "configmaps", &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: "cm", Namespace: "shop"}, Data: map[string]string{"k": v}}); err != nil {
			t.Fatal(err)
		}
		r, err := w.cli.Get(w.ctx, testetcd.Key("configmaps", "shop", "cm"))
		if err != nil {
			t.Fatal(err)
		}
		w.waitJournal(r.Header.Revision)
		time.Sleep(30 * time.Millisecond)
	}
	if _, err := testetcd.PutObject(w.ctx, w.cli, "configmaps", &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "cm", Namespace: "shop"}, Data: map[string]string{"k": "v0"}}); err != nil {
		t.Fatal(err)
	}
	full := w.backup()
	w.startStream(full.Etcd.Revision)
	put("v1")
	old := w.backup() // kept: sparse and old
	put("v2")
	midAt := time.Now().UTC() // trimmed: between old and the next kept version
	time.Sleep(30 * time.Millisecond)
	put("v3")
	mid := w.backup()
	put("v4")
	base := w.backup("--full")
	put("v5")
	last := w.backup()
	put("v6")
	lateAt := time.Now().UTC()
	time.Sleep(30 * time.Millisecond)
	put("v7")
	if old.EtcdKind != versionread.EtcdKindJournal || mid.EtcdKind != versionread.EtcdKindJournal || last.EtcdKind != versionread.EtcdKindJournal || base.EtcdKind != versionread.EtcdKindFull {
		t.Fatalf("kinds %s %s %s %s, want journal, journal, full, journal", old.EtcdKind, mid.EtcdKind, base.EtcdKind, last.EtcdKind)
	}

	store, err := rsyncish.Open(w.storeDir, rsyncish.Options{AllowSameFilesystem: true})
	if err != nil {
		t.Fatal(err)
	}
	unlock, err := store.Lock(w.ctx)
	if err != nil {
		t.Fatal(err)
	}
	pr, err := backup.PruneWith(w.ctx, store, rsyncish.RetentionPolicy{KeepLast: 1, Needs: func(v rsyncish.VersionInfo) []string {
		if v.ID == last.ID {
			return []string{old.ID}
		}
		return nil
	}}, false)
	unlock()
	if err != nil {
		t.Fatal(err)
	}
	if pr.DeltaSegmentsTrimmed == 0 || len(pr.DeltaHolesTrimmed) != 1 {
		t.Fatalf("prune trimmed %d segments, holes %v: want the journal between %s and %s gone", pr.DeltaSegmentsTrimmed, pr.DeltaHolesTrimmed, old.ID, base.ID)
	}

	for id, want := range map[string]string{full.ID: "v0", old.ID: "v1", base.ID: "v4", last.ID: "v5"} {
		out := w.must("get", "--version", id, "configmaps/shop/cm")
		if !strings.Contains(out, "k: "+want) {
			t.Errorf("get --version %s after prune:\n%s\nwant k: %s", id, out, want)
		}
	}
	if out, err := w.run("verify"); err != nil || strings.Contains(out, "gap") {
		t.Errorf("verify after prune: %v\n%s", err, out)
	}
	if out := w.must("get", "--at", lateAt.Format(time.RFC3339Nano), "configmaps/shop/cm"); !strings.Contains(out, "k: v6") {
		t.Errorf("get --at in the window:\n%s\nwant k: v6", out)
	}
	out, err := w.run("get", "--at", midAt.Format(time.RFC3339Nano), "configmaps/shop/cm")
	if err == nil {
		t.Fatalf("get --at %s in the trimmed stretch answered:\n%s", midAt, out)
	}
	t.Logf("get --at in the trimmed stretch: %v\n%s", err, out)
	if strings.Contains(out, "k: v") {
		t.Errorf("get --at in the trimmed stretch printed an object:\n%s", out)
	}
	for _, want := range []string{"prune trimmed the etcd delta journal", "no version it kept needed it", old.ID, base.ID} {
		if !strings.Contains(err.Error()+out, want) {
			t.Errorf("get --at in the trimmed stretch: %v\n%s\nwant it to say %q", err, out, want)
		}
	}
}
