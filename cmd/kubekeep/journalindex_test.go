package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubekeep/kubekeep/backup/versionread"
	"github.com/kubekeep/kubekeep/internal/testetcd"
	"github.com/kubekeep/kubekeep/rsyncish"
)

// `get`, `objects` and `diff` of a journal version read its journal key
// index, not the journal since the base: with the segment holding an
// early change of another object rotten, every object the rotten segment
// does not hold the value of still comes out right, listings and diffs
// still work, and the one object whose value is in it fails naming the
// segment. Before, each of these replayed every segment since the base
// and failed on the rotten one (and cost what the journal held).
func TestJournalVersionReadThroughItsKeyIndex(t *testing.T) {
	w := newJournalWorld(t, 3*time.Minute)
	cli, ctx := w.cli, w.ctx
	put := func(name, v string) int64 {
		t.Helper()
		if _, err := testetcd.PutObject(ctx, cli, "configmaps", &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop"}, Data: map[string]string{"k": v}}); err != nil {
			t.Fatal(err)
		}
		r, err := cli.Get(ctx, testetcd.Key("configmaps", "shop", name))
		if err != nil {
			t.Fatal(err)
		}
		return r.Header.Revision
	}
	// A db a kubeadm etcd's size at least in keys: the key bucket of a
	// tiny one is stored inline, which bbolt hands out copied, and the
	// base then has no key index (its readers take the slow way).
	for i := range 200 {
		if _, err := cli.Put(ctx, fmt.Sprintf("/filler/%03d", i), strings.Repeat("f", 64)); err != nil {
			t.Fatal(err)
		}
	}
	put("kept", "base")
	put("changed", "base")
	put("deleted", "base")
	put("early", "base")
	full := w.backup()
	if full.EtcdKind != versionread.EtcdKindFull {
		t.Fatalf("first backup: %q", full.EtcdKind)
	}
	w.startStream(full.Etcd.Revision)

	earlyRev := put("early", "journal")
	w.waitJournal(earlyRev)
	// The segment holding that change: named by revisions, the first
	// that covers it.
	segs, err := w.journal.List()
	if err != nil {
		t.Fatal(err)
	}
	var earlySeg string
	for _, si := range segs {
		if int64(si.First) <= earlyRev && int64(si.Last) >= earlyRev {
			earlySeg = si.File
			break
		}
	}
	if earlySeg == "" {
		t.Fatalf("no segment holds revision %d: %+v", earlyRev, segs)
	}
	put("changed", "v2")
	put("added", "v2")
	r, err := cli.Delete(ctx, testetcd.Key("configmaps", "shop", "deleted"))
	if err != nil {
		t.Fatal(err)
	}
	w.waitJournal(r.Header.Revision)
	v2 := w.backup()
	w.waitJournal(put("changed", "v3"))
	v3 := w.backup()
	for _, v := range []backupResult{v2, v3} {
		if v.EtcdKind != versionread.EtcdKindJournal || v.Etcd.Base != full.ID {
			t.Fatalf("backup with the stream running: %+v, want a journal version on %s", v, full.ID)
		}
	}
	// Each journal version carries the index.
	store, err := rsyncish.Open(w.storeDir, rsyncish.Options{AllowSameFilesystem: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{v2.ID, v3.ID} {
		vr, err := store.OpenVersion(id)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range []string{versionread.EtcdJournalKeysStream, versionread.EtcdJournalSegsStream} {
			st, err := vr.Stream(s)
			if err != nil {
				t.Errorf("version %s: %v", id, err)
				continue
			}
			st.Close()
		}
		vr.Close()
	}

	// Before the rot: a diff from the base reads the changed values.
	diff := w.must("diff", full.ID, v2.ID)
	for _, want := range [][2]string{{"added", "added"}, {"removed", "deleted"}, {"changed", "changed"}, {"changed", "early"}} {
		if !diffRow(diff, want[0], want[1]) {
			t.Errorf("diff %s %s lacks %s %s:\n%s", full.ID, v2.ID, want[0], want[1], diff)
		}
	}
	if diffRow(diff, "", "kept") {
		t.Errorf("diff %s %s lists the unchanged ConfigMap:\n%s", full.ID, v2.ID, diff)
	}

	// Rot the segment with the early change, in the middle of its events.
	segPath := filepath.Join(w.storeDir, "journals", versionread.DeltaJournal, earlySeg)
	data, err := os.ReadFile(segPath)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0xff
	if err := os.WriteFile(segPath, data, 0o600); err != nil {
		t.Fatal(err)
	}

	value := func(version, name string) string {
		t.Helper()
		out, err := w.run("get", "--version", version, "cm/shop/"+name, "-o", "json")
		if err != nil {
			t.Errorf("get cm/shop/%s --version %s: %v\n%s", name, version, err, out)
			return ""
		}
		var cm corev1.ConfigMap
		if err := json.Unmarshal([]byte(out), &cm); err != nil {
			t.Fatalf("get cm/shop/%s: %v\n%s", name, err, out)
		}
		return cm.Data["k"]
	}
	for _, c := range []struct{ version, name, want string }{
		{v2.ID, "kept", "base"}, {v2.ID, "changed", "v2"}, {v2.ID, "added", "v2"},
		{v3.ID, "kept", "base"}, {v3.ID, "changed", "v3"}, {v3.ID, "added", "v2"},
		{full.ID, "early", "base"}, {full.ID, "changed", "base"},
	} {
		if got := value(c.version, c.name); got != c.want {
			t.Errorf("get cm/shop/%s --version %s: data.k %q, want %q", c.name, c.version, got, c.want)
		}
	}
	if out, err := w.run("get", "--version", v3.ID, "cm/shop/deleted"); err == nil || !strings.Contains(fmt.Sprint(err), "not found") {
		t.Errorf("get of the deleted ConfigMap at %s: %v\n%s", v3.ID, err, out)
	}
	// The one value in the rotten segment: an error naming it.
	if out, err := w.run("get", "--version", v3.ID, "cm/shop/early"); err == nil || !strings.Contains(fmt.Sprint(err), earlySeg) {
		t.Errorf("get of the ConfigMap whose change is in the rotten segment %s: %v\n%s", earlySeg, err, out)
	}

	listing := w.must("objects", "--version", v3.ID, "configmaps", "-n", "shop")
	for _, name := range []string{"kept", "changed", "added", "early"} {
		if !strings.Contains(listing, name) {
			t.Errorf("objects configmaps -n shop --version %s lacks %s:\n%s", v3.ID, name, listing)
		}
	}
	if strings.Contains(listing, "deleted") {
		t.Errorf("objects at %s lists the deleted ConfigMap:\n%s", v3.ID, listing)
	}
	diff = w.must("diff", v2.ID, v3.ID)
	if !diffRow(diff, "changed", "changed") || diffRow(diff, "", "added") || diffRow(diff, "", "kept") || diffRow(diff, "", "early") {
		t.Errorf("diff %s %s:\n%s", v2.ID, v3.ID, diff)
	}
}

// diffRow says whether a diff table has a row for ConfigMap shop/name with
// change ("" any).
func diffRow(table, change, name string) bool {
	for _, line := range strings.Split(table, "\n") {
		f := strings.Fields(line)
		if len(f) >= 4 && f[1] == "configmaps" && f[2] == "shop" && f[3] == name && (change == "" || f[0] == change) {
			return true
		}
	}
	return false
}
