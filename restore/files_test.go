package restore

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kubekeep/kubekeep/rsyncish"
	"github.com/kubekeep/kubekeep/rsyncish/format"
)

// The files phase run alone over a live node whose ca.key and admin.conf
// differ from the version's (and where a dir stands in a file's way, and
// a symlink points elsewhere): the version's files are restored and
// everything they replaced is kept, with its bytes and mode, under the
// run's kubekeep-replaced dir, which the output names. What already
// matched is not copied; a second run replaces nothing.
func TestFilesPhaseKeepsReplacedFiles(t *testing.T) {
	f := getFixture(t)
	ctx := ctxT(t)
	dir := filepath.Join(t.TempDir(), "node")
	if _, err := Run(ctx, f.opts(dir, PhaseFiles)); err != nil {
		t.Fatal(err)
	}
	live := map[string]string{
		"/etc/kubernetes/pki/ca.key":  "the live CA key\n",
		"/etc/kubernetes/admin.conf":  "the live admin.conf\n",
		"/etc/kubernetes/pki/sa.pub/": "", // a dir in the way of the file
	}
	for p, data := range live {
		full := filepath.Join(dir, p)
		if strings.HasSuffix(p, "/") {
			if err := os.Remove(full); err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(full, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(full, "inside"), []byte("in the dir in the way"), 0o600); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(full, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	link := filepath.Join(dir, kubeletClientCert)
	if _, err := os.Lstat(link); err != nil {
		t.Fatalf("the fixture has no %s: %v", kubeletClientCert, err)
	}
	os.Remove(link)
	if err := os.Symlink("kubelet-client-elsewhere.pem", link); err != nil {
		t.Fatal(err)
	}

	var out bytes.Buffer
	o := f.opts(dir, PhaseFiles)
	o.Out = &out
	o.Now = func() time.Time { return time.Date(2026, 11, 23, 10, 4, 0, 0, time.UTC) }
	if _, err := Run(ctx, o); err != nil {
		t.Fatalf("files phase: %v\n%s", err, out.String())
	}
	got, err := hashTree(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/etc/kubernetes/pki/ca.key", "/etc/kubernetes/admin.conf", "/etc/kubernetes/pki/sa.pub", kubeletClientCert} {
		if got[p] != f.tree[p] {
			t.Errorf("%s not restored: %q, want %q", p, got[p], f.tree[p])
		}
	}
	kept := filepath.Join(dir, "etc/kubernetes/kubekeep-replaced-20261123T100400Z")
	for p, data := range map[string]string{
		"/etc/kubernetes/pki/ca.key":        "the live CA key\n",
		"/etc/kubernetes/admin.conf":        "the live admin.conf\n",
		"/etc/kubernetes/pki/sa.pub/inside": "in the dir in the way",
	} {
		fp := filepath.Join(kept, p)
		b, err := os.ReadFile(fp)
		if err != nil || string(b) != data {
			t.Errorf("the replaced %s is not kept at %s: %q %v", p, fp, b, err)
			continue
		}
		if fi, _ := os.Stat(fp); fi.Mode().Perm() != 0o600 {
			t.Errorf("kept %s has mode %v, the old file 0600", p, fi.Mode())
		}
	}
	if tgt, err := os.Readlink(filepath.Join(kept, kubeletClientCert)); err != nil || tgt != "kubelet-client-elsewhere.pem" {
		t.Errorf("the replaced symlink is not kept: %q %v", tgt, err)
	}
	if _, err := os.Lstat(filepath.Join(kept, "etc/kubernetes/pki/ca.crt")); err == nil {
		t.Error("ca.crt matched the version and was kept anyway")
	}
	text := out.String()
	for _, want := range []string{"keep the 4 paths this restore replaces", kept + "/", "/etc/kubernetes/pki/ca.key", "/etc/kubernetes/admin.conf"} {
		if !strings.Contains(text, want) {
			t.Errorf("the output does not say %q:\n%s", want, text)
		}
	}
	if fi, err := os.Stat(kept); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("kept dir mode: %v %v", fi, err)
	}

	out.Reset()
	o.Now = func() time.Time { return time.Date(2026, 11, 23, 11, 4, 0, 0, time.UTC) }
	if _, err := Run(ctx, o); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "keep the") {
		t.Errorf("a re-run over restored files kept something:\n%s", out.String())
	}
	// A run in the same second as an earlier one does not mix their kept
	// files: it takes the next free name.
	if err := os.WriteFile(filepath.Join(dir, "etc/kubernetes/admin.conf"), []byte("edited again\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	o.Now = func() time.Time { return time.Date(2026, 11, 23, 10, 4, 0, 0, time.UTC) }
	if _, err := Run(ctx, o); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(kept+"-2", "etc/kubernetes/admin.conf")); err != nil || string(b) != "edited again\n" {
		t.Errorf("a second run in the same second: %q %v", b, err)
	}
	if b, _ := os.ReadFile(filepath.Join(kept, "etc/kubernetes/admin.conf")); string(b) != "the live admin.conf\n" {
		t.Errorf("the first run's kept admin.conf was overwritten: %q", b)
	}
}

// A symlink in the target that leads out of the root is refused before
// anything is written: the files under /etc (restored first, in path
// order) used to be in place by the time /var failed.
func TestFilesRefuseEscapingLinkBeforeWriting(t *testing.T) {
	f := getFixture(t)
	ctx := ctxT(t)
	parent := t.TempDir()
	dir, outside := filepath.Join(parent, "node"), filepath.Join(parent, "outside")
	for _, d := range []string{dir, outside} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(outside, filepath.Join(dir, "var")); err != nil {
		t.Fatal(err)
	}
	check := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, rsyncish.ErrUnsafePath) || !strings.Contains(err.Error(), "/var under "+dir+" is a symlink to "+outside) {
			t.Errorf("%s: want a refusal naming /var, got %v", what, err)
		}
		ents, _ := os.ReadDir(dir)
		if len(ents) != 1 {
			t.Errorf("%s: written before refusing: %v", what, ents)
		}
		if ents, _ := os.ReadDir(outside); len(ents) != 0 {
			t.Errorf("%s: written outside the root: %v", what, ents)
		}
	}
	_, err := Run(ctx, f.opts(dir, PhaseFiles))
	check("files phase", err)
	_, err = RestoreFiles(ctx, FilesOptions{Store: f.store, Version: f.id, To: dir})
	check("RestoreFiles", err)
}

// RestoreFiles with paths: only what is at or below them; a path the
// version holds nothing under (a typo) is an error naming it, with
// nothing written, and so is a relative one.
func TestRestoreFilesPaths(t *testing.T) {
	f := getFixture(t)
	ctx := ctxT(t)
	dir := filepath.Join(t.TempDir(), "r")
	for _, bad := range []string{"/etc/kubernets/pki", "etc/kubernetes/pki"} {
		_, err := RestoreFiles(ctx, FilesOptions{Store: f.store, Version: f.id, To: dir, Paths: []string{"/etc/kubernetes/pki", bad}})
		if err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("path %s: %v", bad, err)
		}
		if _, err := os.Lstat(dir); err == nil {
			t.Errorf("path %s: %s written", bad, dir)
		}
	}
	res, err := RestoreFiles(ctx, FilesOptions{Store: f.store, Version: f.id, To: dir, Paths: []string{"/etc/kubernetes/pki/"}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := hashTree(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for p := range got {
		switch {
		case within(p, "/etc/kubernetes/pki"):
			n++
			if got[p] != f.tree[p] && !strings.HasPrefix(got[p], "dir") {
				t.Errorf("%s: %q, want %q", p, got[p], f.tree[p])
			}
		case p == "/" || p == "/etc" || p == "/etc/kubernetes":
		default:
			t.Errorf("%s restored, not below the path asked for", p)
		}
	}
	if n != res.Entries || n < 10 {
		t.Errorf("restored %d entries below the path, result says %d", n, res.Entries)
	}
}

// rotFile flips a byte of the first block of hostPath as version id
// stores it, in its pack on disk: bit rot on the second disk.
func rotFile(t *testing.T, s *rsyncish.Store, id, hostPath string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(s.Dir(), "versions", id+".manifest"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := format.DecodeManifest(data)
	if err != nil {
		t.Fatal(err)
	}
	var blob format.ID
	for _, e := range m.Entries {
		if e.Path == hostPath && len(e.Extents) > 0 {
			blob = e.Extents[0].ID
		}
	}
	if blob.IsZero() {
		t.Fatalf("version %s stores no block of %s", id, hostPath)
	}
	idx, _ := filepath.Glob(filepath.Join(s.Dir(), "index", "*.idx"))
	for _, ip := range idx {
		raw, err := os.ReadFile(ip)
		if err != nil {
			t.Fatal(err)
		}
		entries, _, err := format.DecodeIndex(raw)
		if err != nil {
			t.Fatal(err)
		}
		for _, ie := range entries {
			if ie.ID != blob {
				continue
			}
			pack := filepath.Join(s.Dir(), "packs", strings.TrimSuffix(filepath.Base(ip), ".idx")+".pack")
			f, err := os.OpenFile(pack, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			b := make([]byte, 1)
			if _, err := f.ReadAt(b, int64(ie.Off)); err != nil {
				t.Fatal(err)
			}
			b[0] ^= 0xff
			if _, err := f.WriteAt(b, int64(ie.Off)); err != nil {
				t.Fatal(err)
			}
			return
		}
	}
	t.Fatalf("no pack holds the block of %s", hostPath)
}

// One rotten block in one file no longer stops a files restore: every
// intact file is restored, each damaged one is named with the newest
// other version holding an intact copy (and the command that restores it),
// or none, and the error is ErrDamagedFiles. A damaged file whose target
// has the same size is left as it is, not taken for a failure of the plan.
// Before, the restore stopped at the first damaged file with a blob error.
func TestRestoreFilesSkipsDamagedFiles(t *testing.T) {
	ctx := ctxT(t)
	src := t.TempDir()
	s, err := rsyncish.Open(filepath.Join(t.TempDir(), "store"), rsyncish.Options{AllowSameFilesystem: true})
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"/etc/kubernetes/pki/ca.crt":   "the old CA certificate\n",
		"/etc/kubernetes/pki/ca.key":   "the CA key\n",
		"/etc/kubernetes/admin.conf":   "the admin kubeconfig\n",
		"/var/lib/kubelet/config.yaml": "kind: KubeletConfiguration\n",
	}
	var ids []string
	for i := range 2 {
		if i == 1 {
			files["/etc/kubernetes/pki/ca.crt"] = "the renewed CA certificate\n"
		}
		for p, c := range files {
			if err := os.MkdirAll(filepath.Dir(filepath.Join(src, p)), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(src, p), []byte(c), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		unlock, err := s.Lock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		w, err := s.NewVersion(ctx, rsyncish.WriteOptions{Time: time.Now().Add(time.Duration(i-2) * time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		if err := w.AddTree(src, []string{"/etc/kubernetes", "/var/lib/kubelet"}, nil); err != nil {
			t.Fatal(err)
		}
		vi, err := w.Commit()
		if err != nil {
			t.Fatal(err)
		}
		unlock()
		ids = append(ids, vi.ID)
	}
	// The renewed ca.crt is only in the second version; admin.conf is one
	// block both versions share.
	rotFile(t, s, ids[1], "/etc/kubernetes/pki/ca.crt")
	rotFile(t, s, ids[1], "/etc/kubernetes/admin.conf")

	to := filepath.Join(t.TempDir(), "r")
	res, err := RestoreFiles(ctx, FilesOptions{Store: s, Version: ids[1], To: to})
	var de *DamagedFilesError
	if !errors.Is(err, ErrDamagedFiles) || !errors.As(err, &de) {
		t.Fatalf("restore of a version with two rotten files: %v", err)
	}
	for p, c := range files {
		got, rerr := os.ReadFile(filepath.Join(to, p))
		switch p {
		case "/etc/kubernetes/pki/ca.crt", "/etc/kubernetes/admin.conf":
			if rerr == nil {
				t.Errorf("damaged %s restored as %q", p, got)
			}
		default:
			if string(got) != c {
				t.Errorf("intact %s not restored: %q %v", p, got, rerr)
			}
		}
	}
	if len(res.Damaged) != 2 || res.Damaged[0].Path != "/etc/kubernetes/admin.conf" || res.Damaged[1].Path != "/etc/kubernetes/pki/ca.crt" {
		t.Fatalf("damaged: %+v", res.Damaged)
	}
	if d := res.Damaged[0]; d.GoodCopy != "" || !strings.Contains(d.Error, "does not match its hash") {
		t.Errorf("admin.conf (the same block in both versions): %+v", d)
	}
	if d := res.Damaged[1]; d.GoodCopy != ids[0] || d.SameContent {
		t.Errorf("ca.crt: %+v, want the first version's copy", d)
	}
	for _, want := range []string{
		"2 file(s) damaged in the store, not restored; everything else was",
		"/etc/kubernetes/admin.conf: ", "no version in the store holds an intact copy",
		"kubekeep restore files --version " + ids[0] + " --path /etc/kubernetes/pki/ca.crt --to " + to,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not say %q:\n%v", want, err)
		}
	}
	entries, _ := s.List(ids[1])
	if res.Entries != len(entries)-2 || de.Restored != res.Entries {
		t.Errorf("entries restored %d (error says %d), the version has %d", res.Entries, de.Restored, len(entries))
	}

	// The way out the error names works.
	if _, err := RestoreFiles(ctx, FilesOptions{Store: s, Version: ids[0], To: to, Paths: []string{"/etc/kubernetes/pki/ca.crt"}}); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(to, "etc/kubernetes/pki/ca.crt")); string(got) != "the old CA certificate\n" {
		t.Errorf("ca.crt from the good copy: %q", got)
	}
	// A second run over a target whose admin.conf has the damaged one's
	// size: the plan reads the damaged copy to compare, and leaves the
	// target's file alone.
	same := strings.Repeat("x", len(files["/etc/kubernetes/admin.conf"]))
	if err := os.WriteFile(filepath.Join(to, "etc/kubernetes/admin.conf"), []byte(same), 0o600); err != nil {
		t.Fatal(err)
	}
	res, err = RestoreFiles(ctx, FilesOptions{Store: s, Version: ids[1], To: to, Paths: []string{"/etc/kubernetes"}})
	if !errors.As(err, &de) || len(res.Damaged) != 2 {
		t.Fatalf("second run: %v %+v", err, res.Damaged)
	}
	if got, _ := os.ReadFile(filepath.Join(to, "etc/kubernetes/admin.conf")); string(got) != same {
		t.Errorf("the target's admin.conf was replaced: %q", got)
	}
	if len(res.Kept) != 0 {
		t.Errorf("kept %v: nothing the restore wrote replaced them", res.Kept)
	}
	if kept, _ := filepath.Glob(filepath.Join(to, "etc/kubernetes/kubekeep-replaced-*")); len(kept) != 0 {
		t.Errorf("kept dirs left for what was not replaced: %v", kept)
	}
}
