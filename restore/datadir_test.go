package restore

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kubekeep/kubekeep/etcdsnap"
	"github.com/kubekeep/kubekeep/etcdsnap/snapread"
	"github.com/kubekeep/kubekeep/internal/testetcd"
)

// The usual disaster: /var/lib/etcd wiped. No member/snap/db means no etcd
// holds the dir, so the etcd phase proceeds (it used to fail asking the
// missing db for its lock): an empty dir is replaced, a dir holding only
// what survived (a WAL) is moved aside with it.
func TestEtcdPhaseOnWipedDataDir(t *testing.T) {
	f := getFixture(t)
	ctx := ctxT(t)
	stamp := time.Date(2026, 11, 23, 10, 4, 0, 0, time.UTC)
	for name, leftover := range map[string]string{"empty": "", "db-gone": "member/wal/0000000000000000-0000000000000000.wal"} {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "node")
			dd := filepath.Join(dir, "var/lib/etcd")
			if err := os.MkdirAll(dd, 0o700); err != nil {
				t.Fatal(err)
			}
			if leftover != "" {
				p := filepath.Join(dd, leftover)
				if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte("what survived"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			var out bytes.Buffer
			o := f.opts(dir, PhaseEtcd)
			o.Now, o.Out = func() time.Time { return stamp }, &out
			if _, err := Run(ctx, o); err != nil {
				t.Fatalf("etcd phase on a wiped data dir: %v\n%s", err, out.String())
			}
			st, err := snapread.CheckDB(etcdsnap.DBPath(dd))
			if err != nil || st.Revision != f.info.Etcd.Revision+etcdsnap.RevisionBump {
				t.Errorf("restored db: %+v %v", st, err)
			}
			old := filepath.Join(dir, "var/lib/etcd.kubekeep-old-20261123T100400Z")
			if leftover == "" {
				if _, err := os.Lstat(old); err == nil {
					t.Error("an empty data dir was 'kept' aside: nothing in it to keep")
				}
				return
			}
			if b, err := os.ReadFile(filepath.Join(old, leftover)); err != nil || string(b) != "what survived" {
				t.Errorf("what was left of the old data dir not kept: %q %v", b, err)
			}
		})
	}
}

// A data dir that is a mount point (a dedicated etcd disk) cannot be
// renamed (EBUSY), so the old data is kept inside the mount: its contents
// move into <data dir>/.kubekeep-old-STAMP, the snapshot is restored into
// <data dir>/.kubekeep-restore-STAMP on the same disk and its member/
// moved up. The dry run lists exactly the actions the real run then does;
// a real etcd starts on the result (the kept dir does not confuse it); a
// second restore keeps the first one's data and leaves the first kept dir
// where it is. Needs root for a loop-mounted ext4.
func TestEtcdPhaseOnMountedDataDir(t *testing.T) {
	f := getFixture(t)
	ctx := ctxT(t)
	dir := filepath.Join(t.TempDir(), "node")
	dd := filepath.Join(dir, "var/lib/etcd")
	if err := os.MkdirAll(dd, 0o700); err != nil {
		t.Fatal(err)
	}
	loopMount(t, dd, 256<<20)
	// The PKI etcd needs to start, further down.
	if _, err := Run(ctx, f.opts(dir, PhaseFiles)); err != nil {
		t.Fatal(err)
	}
	// The old, broken data on the etcd disk.
	for p, data := range map[string]string{"member/snap/db": "the broken old db", "member/wal/0.wal": "old wal"} {
		full := filepath.Join(dd, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	stamp := time.Date(2026, 11, 23, 10, 4, 0, 0, time.UTC)
	run := func(dry bool) (*Result, string) {
		t.Helper()
		var out bytes.Buffer
		o := f.opts(dir, PhaseEtcd)
		o.Now, o.Out, o.DryRun = func() time.Time { return stamp }, &out, dry
		res, err := Run(ctx, o)
		if err != nil {
			t.Fatalf("etcd phase (dry run %v) on a mounted data dir: %v\n%s", dry, err, out.String())
		}
		return res, out.String()
	}
	dryRes, dryText := run(true)
	if b, _ := os.ReadFile(filepath.Join(dd, "member/snap/db")); string(b) != "the broken old db" {
		t.Fatal("the dry run changed the data dir")
	}
	res, text := run(false)
	if got, want := res.Phases[0].Actions, dryRes.Phases[0].Actions; !slices.Equal(got, want) {
		t.Errorf("the dry run said:\n  %s\nthe run did:\n  %s", strings.Join(want, "\n  "), strings.Join(got, "\n  "))
	}
	if !strings.Contains(dryText, "is a mount point") || !strings.Contains(text, "/var/lib/etcd/.kubekeep-old-20261123T100400Z") {
		t.Errorf("the output does not say the data dir is a mount point and where the old data went:\n%s", text)
	}

	kept := filepath.Join(dd, ".kubekeep-old-20261123T100400Z")
	for p, want := range map[string]string{"member/snap/db": "the broken old db", "member/wal/0.wal": "old wal"} {
		if b, err := os.ReadFile(filepath.Join(kept, p)); err != nil || string(b) != want {
			t.Errorf("old %s not kept inside the mount: %q %v", p, b, err)
		}
	}
	if _, err := os.Lstat(filepath.Join(dd, "lost+found")); err != nil {
		t.Errorf("lost+found was moved: %v", err)
	}
	ents, _ := os.ReadDir(dd)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if want := []string{".kubekeep-old-20261123T100400Z", "lost+found", "member"}; !slices.Equal(names, want) {
		t.Errorf("data dir holds %v, want %v (no staging left)", names, want)
	}
	st, err := snapread.CheckDB(etcdsnap.DBPath(dd))
	if err != nil || st.Revision != f.info.Etcd.Revision+etcdsnap.RevisionBump || st.Keys != f.info.Etcd.Keys {
		t.Fatalf("restored db: %+v %v", st, err)
	}
	// Still the mount, and the restored db lives on the etcd disk.
	if m, err := isMountPoint(dd); err != nil || !m {
		t.Errorf("data dir no longer a mount point: %v %v", m, err)
	}
	var mst, dbst unix.Stat_t
	if unix.Stat(dd, &mst) != nil || unix.Stat(etcdsnap.DBPath(dd), &dbst) != nil || mst.Dev != dbst.Dev {
		t.Error("the restored db is not on the mounted etcd disk")
	}
	if fi, err := os.Stat(dd); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("data dir mode %v %v", fi.Mode(), err)
	}

	// etcd reads only member/: it serves the restored data.
	srv, err := testetcd.Start(ctx, f.rootFor(dir))
	if err != nil {
		t.Fatalf("etcd on the restored mounted data dir: %v", err)
	}
	kv, rev := readAll(t, srv.ClientT(t))
	srv.Stop()
	if rev != f.info.Etcd.Revision+etcdsnap.RevisionBump || len(kv) != len(f.kv) {
		t.Errorf("etcd serves revision %d with %d keys, want %d with %d", rev, len(kv), f.info.Etcd.Revision+etcdsnap.RevisionBump, len(f.kv))
	}

	// Again, later: the first restore's data is kept in turn, the first
	// kept dir stays where it is.
	stamp = stamp.Add(time.Hour)
	run(false)
	kept2 := filepath.Join(dd, ".kubekeep-old-20261123T110400Z")
	if _, err := os.Stat(etcdsnap.DBPath(kept2)); err != nil {
		t.Errorf("the first restore's data not kept by the second: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(kept, "member/snap/db")); err != nil || string(b) != "the broken old db" {
		t.Errorf("the first kept dir was disturbed: %q %v", b, err)
	}
	if _, err := os.Lstat(filepath.Join(kept2, ".kubekeep-old-20261123T100400Z")); err == nil {
		t.Error("the first kept dir was moved into the second")
	}
}

// loopMount mounts a fresh ext4 image of size bytes on dir, unmounted at
// cleanup; it skips the test when not root or when loop devices are
// unavailable.
func loopMount(t *testing.T, dir string, size int64) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to loop-mount an ext4 image (CI runs as root); skipping the mounted data dir test")
	}
	for _, tool := range []string{"mkfs.ext4", "mount", "umount"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed: %v", tool, err)
		}
	}
	img := filepath.Join(t.TempDir(), "etcd-disk.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-m", "0", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v %s", err, out)
	}
	if out, err := exec.Command("mount", "-o", "loop", img, dir).CombinedOutput(); err != nil {
		t.Skipf("cannot loop-mount here (%v: %s); skipping the mounted data dir test", err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", dir, err, out)
		}
	})
}

func TestMountinfoHas(t *testing.T) {
	mi := "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n" +
		"37 35 98:0 / /var/lib/etcd rw - ext4 /dev/vdb rw\n"
	for p, want := range map[string]bool{"/mnt/with space": true, "/var/lib/etcd": true, "/var/lib": false, "/mnt/with\\040space": false} {
		if got := mountinfoHas(mi, p); got != want {
			t.Errorf("mountinfoHas(%q) = %v", p, got)
		}
	}
}
