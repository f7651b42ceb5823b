package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kubekeep/kubekeep/backup/versionread"
	"github.com/kubekeep/kubekeep/etcdsnap"
	"github.com/kubekeep/kubekeep/etcdsnap/snapread"
)

// As a user meets it: with a delta stream writing the store's journal (the
// agent's), `kubekeep backup` records a journal version, `versions` says
// which kind each version is and its base, `restore etcd --to` of the
// journal version gives what etcd held at its revision, and --full takes a
// full snapshot anyway. Before, every backup was a full snapshot and the
// listing had no kind.
func TestCLIJournalVersions(t *testing.T) {
	w := newJournalWorld(t, 3*time.Minute)
	cli, ctx := w.cli, w.ctx
	kk, backupJSON := w.must, w.backup
	if _, err := cli.Put(ctx, "/cli/before", "x"); err != nil {
		t.Fatal(err)
	}
	full := backupJSON()
	if full.EtcdKind != versionread.EtcdKindFull {
		t.Fatalf("first backup: kind %q, want full", full.EtcdKind)
	}

	stopStream := w.startStream(full.Etcd.Revision)
	put, err := cli.Put(ctx, "/cli/journal", "y")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Delete(ctx, "/cli/before"); err != nil {
		t.Fatal(err)
	}
	// The stream has written its first segments (a running agent's has).
	w.waitJournal(put.Header.Revision)
	jv := backupJSON()
	if jv.EtcdKind != versionread.EtcdKindJournal || jv.Etcd.Base != full.ID || jv.Etcd.Revision <= put.Header.Revision {
		t.Fatalf("backup with the delta stream running: %+v %+v, want a journal version on %s past revision %d", jv, jv.Etcd, full.ID, put.Header.Revision)
	}
	forced := backupJSON("--full")
	if forced.EtcdKind != versionread.EtcdKindFull {
		t.Errorf("backup --full: kind %q", forced.EtcdKind)
	}
	stopStream()

	var listed []struct {
		ID       string `json:"id"`
		EtcdKind string `json:"etcdKind"`
		Base     string `json:"base"`
		Latest   bool   `json:"latest"`
	}
	if err := json.Unmarshal([]byte(kk("versions", "-o", "json")), &listed); err != nil {
		t.Fatal(err)
	}
	if len(listed) != 3 || listed[0].EtcdKind != "full" || listed[1].EtcdKind != "journal" || listed[1].Base != full.ID ||
		listed[2].EtcdKind != "full" || listed[2].Base != "" || !listed[2].Latest {
		t.Errorf("versions -o json: %+v", listed)
	}
	if table := kk("versions"); !strings.Contains(table, "journal on "+full.ID) {
		t.Errorf("versions table does not say the journal version's base:\n%s", table)
	}

	if out := kk("drill", "--version", jv.ID); !strings.Contains(out, "journal version on base "+full.ID) {
		t.Errorf("drill of the journal version:\n%s", out)
	}

	to := filepath.Join(t.TempDir(), "etcd")
	kk("restore", "etcd", "--version", jv.ID, "--to", to)
	kvs, err := snapread.ReadKeys(etcdsnap.DBPath(to))
	if err != nil {
		t.Fatal(err)
	}
	want, err := cli.Get(ctx, "\x00", clientv3WithFromKeyAt(jv.Etcd.Revision)...)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, kv := range kvs {
		got[string(kv.Key)] = string(kv.Value)
	}
	if len(got) != len(want.Kvs) {
		t.Errorf("restore etcd of the journal version: %d keys, etcd held %d at revision %d", len(got), len(want.Kvs), jv.Etcd.Revision)
	}
	for _, kv := range want.Kvs {
		if got[string(kv.Key)] != string(kv.Value) {
			t.Errorf("restored %s = %q, etcd held %q", kv.Key, got[string(kv.Key)], kv.Value)
		}
	}
	if _, ok := got["/cli/before"]; ok || got["/cli/journal"] != "y" {
		t.Errorf("restored state: %v", got)
	}
}

func clientv3WithFromKeyAt(rev int64) []clientv3.OpOption {
	return []clientv3.OpOption{clientv3.WithFromKey(), clientv3.WithRev(rev)}
}
