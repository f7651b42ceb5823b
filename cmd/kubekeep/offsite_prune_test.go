package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/kubekeep/kubekeep/internal/s3test"
	"github.com/kubekeep/kubekeep/rsyncish"
)

// offsiteWorld is a store with versions, an S3 server, a bucket, an
// identity and a config naming the tier.
type offsiteWorld struct {
	srv       *s3test.Server
	cli       *minio.Client
	bucket    string
	dir       string // the store
	ids       []string
	root      string
	idFile    string
	recipient string
}

func newOffsiteWorld(t *testing.T, versions int) *offsiteWorld {
	t.Helper()
	w := &offsiteWorld{srv: s3test.StartT(t), bucket: "kk-dr"}
	w.cli = w.srv.Bucket(t, w.bucket, true)
	w.idFile = filepath.Join(t.TempDir(), "dr.agekey")
	out, err := runCLI(t, "offsite", "keygen", "--out", w.idFile)
	if err != nil {
		t.Fatal(err)
	}
	w.recipient = strings.TrimSpace(out)
	w.dir, w.ids, w.root = storeWithVersions(t, versions)
	return w
}

// config writes a config with the tier and extra keys under it.
func (w *offsiteWorld) config(t *testing.T, extra string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "kubekeep.yaml")
	body := fmt.Sprintf(`offsite:
  - name: dr
    url: s3://%s/cp1
    endpoint: http://%s
    region: us-east-1
    recipients: [%s]
%s`, w.bucket, w.srv.Endpoint, w.recipient, extra)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func (w *offsiteWorld) objects(t *testing.T) int {
	n := 0
	for oi := range w.cli.ListObjects(context.Background(), w.bucket, minio.ListObjectsOptions{Recursive: true, WithVersions: true}) {
		if oi.Err != nil {
			t.Fatal(oi.Err)
		}
		if !oi.IsDeleteMarker {
			n++
		}
	}
	return n
}

type pruneJSON struct {
	Tier                                          string
	DryRun                                        bool
	VersionsKept, VersionsDeleted, ObjectsDeleted int
	BytesDeleted                                  int64
	LockedSkipped                                 int
	Deleted                                       []string
}

// kubekeep offsite prune: a retention that keeps nothing is refused
// naming the config key; --dry-run deletes nothing; the prune deletes the
// versions keepLast does not keep (the -o json of the contract), the tier's
// own versions are then the kept one, and a pull of it restores.
func TestOffsitePrune(t *testing.T) {
	w := newOffsiteWorld(t, 3)
	if out, err := runCLI(t, "offsite", "sync", "--config", w.config(t, ""), "--store", w.dir); err != nil {
		t.Fatalf("sync: %v\n%s", err, out)
	}
	_, err := runCLI(t, "offsite", "prune", "--config", w.config(t, ""), "--store", w.dir, "--tier", "dr")
	if exitCode(err) != 2 || !strings.Contains(err.Error(), "offsite[0].retention") {
		t.Errorf("prune without a retention: %v, want exit 2 naming offsite[0].retention", err)
	}
	cfg := w.config(t, "    retention: {keepLast: 1}\n")
	prune := func(args ...string) pruneJSON {
		t.Helper()
		out, err := runCLI(t, append([]string{"offsite", "prune", "--config", cfg, "--store", w.dir, "--tier", "dr", "-o", "json"}, args...)...)
		if err != nil {
			t.Fatalf("prune %v: %v\n%s", args, err, out)
		}
		var r pruneJSON
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("prune -o json: %v\n%s", err, out)
		}
		return r
	}
	before := w.objects(t)
	if r := prune("--dry-run"); !r.DryRun || r.VersionsDeleted != 2 || r.VersionsKept != 1 || w.objects(t) != before {
		t.Fatalf("dry run: %+v; the bucket holds %d object versions, %d before", r, w.objects(t), before)
	}
	r := prune()
	if r.Tier != "dr" || r.VersionsDeleted != 2 || r.VersionsKept != 1 || r.ObjectsDeleted < 2 || r.BytesDeleted <= 0 || r.LockedSkipped != 0 ||
		strings.Join(r.Deleted, " ") != strings.Join(w.ids[:2], " ") {
		t.Fatalf("prune: %+v, want versions %v deleted", r, w.ids[:2])
	}
	if got := w.objects(t); got != before-r.ObjectsDeleted {
		t.Errorf("the bucket holds %d object versions, %d before, %d deleted", got, before, r.ObjectsDeleted)
	}
	out, err := runCLI(t, "offsite", "versions", "--config", cfg, "--identity", w.idFile, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var vs []struct{ ID string }
	if err := json.Unmarshal([]byte(out), &vs); err != nil || len(vs) != 1 || vs[0].ID != w.ids[2] {
		t.Errorf("the tier's versions after the prune: %s (%v), want only %s", out, err, w.ids[2])
	}
	// The next sync does not put the pruned versions back.
	if out, err := runCLI(t, "offsite", "sync", "--config", cfg, "--store", w.dir, "-o", "json"); err != nil || !strings.Contains(out, `"objectsUploaded": 0`) {
		t.Errorf("sync after the prune: %v\n%s", err, out)
	}
	newStore := filepath.Join(t.TempDir(), "pulled")
	if out, err := runCLI(t, "offsite", "pull", "--config", cfg, "--identity", w.idFile, "--store", newStore); err != nil {
		t.Fatalf("pull after the prune: %v\n%s", err, out)
	}
	if out, err := runCLI(t, "verify", "--store", newStore, "--read-data"); err != nil {
		t.Errorf("verify of the store pulled after the prune: %v\n%s", err, out)
	}
	to := t.TempDir()
	if out, err := runCLI(t, "restore", "files", "--store", newStore, "--version", "latest", "--to", to); err != nil {
		t.Fatalf("restore from the pulled store: %v\n%s", err, out)
	}
	if got, _ := os.ReadFile(filepath.Join(to, "etc/kubernetes/pki/ca.crt")); len(got) != 102 {
		t.Errorf("restored ca.crt has %d bytes, want the last version's 102", len(got))
	}
}

// A `kubekeep offsite sync` killed with SIGKILL mid-upload (held to
// 8 MiB/s so the kill lands among the packs; the store holds the small
// version newOffsiteWorld writes and one of 40 MiB) leaves a tier the next sync
// finishes without uploading again what landed, and that then verifies
// with the identity and pulls into a store that verifies.
func TestOffsiteSyncKilled(t *testing.T) {
	w := newOffsiteWorld(t, 1)
	s, err := rsyncish.Open(w.dir, rsyncish.Options{AllowSameFilesystem: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 40<<20) // several packs
	rand.Read(data)
	unlock, err := s.Lock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	vw, err := s.NewVersion(context.Background(), rsyncish.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := vw.AddStream("etcd/snapshot.db", bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if _, err := vw.Commit(); err != nil {
		t.Fatal(err)
	}
	unlock()
	var total int64
	bigPacks := 0 // the 40 MiB version's (the small version's is a few hundred bytes)
	filepath.Walk(w.dir, func(p string, fi os.FileInfo, err error) error {
		rel, _ := filepath.Rel(w.dir, p)
		if err == nil && fi.Mode().IsRegular() && (rel == "config.json" || strings.HasPrefix(rel, "packs/") || strings.HasPrefix(rel, "index/") || strings.HasPrefix(rel, "versions/")) {
			total += fi.Size()
			if strings.HasPrefix(rel, "packs/") && fi.Size() > 1<<20 {
				bigPacks++
			}
		}
		return nil
	})
	cfg := w.config(t, "    bandwidth: 8MiB/s\n")
	bin := buildCLI(t)
	cmd := exec.Command(bin, "offsite", "sync", "--config", cfg, "--store", w.dir, "--log-level", "error")
	cmd.Env = append(os.Environ(), "KUBEKEEP_CONFIG=")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The 40 MiB version's packs in the tier (the small version's is a
	// few hundred bytes).
	packs := func() int {
		n := 0
		for oi := range w.cli.ListObjects(context.Background(), w.bucket, minio.ListObjectsOptions{Prefix: "cp1/packs/", Recursive: true}) {
			if oi.Err == nil && oi.Size > 1<<20 {
				n++
			}
		}
		return n
	}
	deadline := time.Now().Add(2 * time.Minute)
	for packs() == 0 {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("no pack landed within 2 minutes: %s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The pack's upload has completed on the server (a listed key can
	// still be completing); the next one takes 2 s to seal at 8 MiB/s.
	time.Sleep(300 * time.Millisecond)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("the sync was not killed mid-way (it ended: %v): %s", err, stderr.String())
	}
	// What landed whole: the server drops an upload cut by the kill once
	// it sees the connection go, so count after a pause.
	time.Sleep(time.Second)
	landed, landedBytes := 0, int64(0)
	for oi := range w.cli.ListObjects(context.Background(), w.bucket, minio.ListObjectsOptions{Prefix: "cp1/packs/", Recursive: true}) {
		if oi.Err == nil && oi.Size > 1<<20 {
			landed++
			landedBytes += oi.Size
		}
	}
	if landed == 0 || landed >= bigPacks {
		t.Fatalf("%d of the version's %d packs in the tier after the kill: the test did not stop the sync mid-way", landed, bigPacks)
	}
	var vs int
	for range w.cli.ListObjects(context.Background(), w.bucket, minio.ListObjectsOptions{Prefix: "cp1/versions/", Recursive: true}) {
		vs++
	}
	if vs != 0 {
		t.Errorf("the killed sync left %d manifests in the tier before all their packs", vs)
	}

	out, err := runCLI(t, "offsite", "sync", "--config", cfg, "--store", w.dir, "-o", "json")
	if err != nil {
		t.Fatalf("the sync after the kill: %v\n%s", err, out)
	}
	var r struct {
		VersionsUploaded            int
		BytesUploaded, BytesSkipped int64
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d of %d packs landed before the kill; the next sync: %s (store: %d bytes)", landed, bigPacks, strings.TrimSpace(out), total)
	// Sealing adds well under 1% (a header, a tag per 64 KiB chunk).
	if min := landedBytes * 99 / 100; r.VersionsUploaded != 2 || r.BytesUploaded > total-min || r.BytesSkipped < min {
		t.Errorf("the sync after the kill uploaded %d bytes and skipped %d of the store's %d, with %d packs (%d sealed bytes) landed: it sent again what landed",
			r.BytesUploaded, r.BytesSkipped, total, landed, landedBytes)
	}
	if out, err := runCLI(t, "offsite", "verify", "--config", cfg, "--identity", w.idFile, "--read-data"); err != nil {
		t.Errorf("the tier after the kill and the resumed sync: %v\n%s", err, out)
	}
	pulled := filepath.Join(t.TempDir(), "pulled")
	if out, err := runCLI(t, "offsite", "pull", "--config", cfg, "--identity", w.idFile, "--store", pulled); err != nil {
		t.Fatalf("pull: %v\n%s", err, out)
	}
	if out, err := runCLI(t, "verify", "--store", pulled, "--read-data"); err != nil {
		t.Errorf("the pulled store: %v\n%s", err, out)
	}
}
