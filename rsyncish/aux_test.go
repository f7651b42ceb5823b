package rsyncish

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kubekeep/kubekeep/rsyncish/format"
)

// TestAuxHash: the rescue kit's binary is recorded when written, so one
// flipped byte in the store's copy is damage verify reports (it went
// unnoticed before), and the writer is told to write it again.
func TestAuxHash(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, 0)
	unlock := lockTest(t, s)
	defer unlock()
	bin := randBytes(1 << 20)
	if err := s.WriteAux("kubekeep", bin, 0o700); err != nil {
		t.Fatal(err)
	}
	if s.AuxNeedsWrite("kubekeep") {
		t.Error("a freshly written aux file needs writing")
	}
	verify := func() *Report {
		t.Helper()
		rep, err := s.Verify(context.Background(), false)
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	if rep := verify(); !rep.Clean() || len(rep.Warnings) != 0 {
		t.Fatalf("clean kit: %+v", rep)
	}
	p := filepath.Join(dir, "kubekeep")
	data, _ := os.ReadFile(p)
	data[len(data)/2] ^= 0x10
	os.WriteFile(p, data, 0o700)
	rep := verify()
	if len(rep.Problems) != 1 || rep.Problems[0].Kind != "aux" || rep.Problems[0].Object != "kubekeep" {
		t.Fatalf("a flipped byte in the binary: %v", rep.Problems)
	}
	if !s.AuxNeedsWrite("kubekeep") {
		t.Error("a damaged aux file does not need writing")
	}
	if err := s.WriteAux("kubekeep", bin, 0o700); err != nil {
		t.Fatal(err)
	}
	if rep := verify(); !rep.Clean() || s.AuxNeedsWrite("kubekeep") {
		t.Fatalf("after writing it again: %+v %v", rep.Problems, s.AuxNeedsWrite("kubekeep"))
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o700 {
		t.Errorf("mode %v", st.Mode())
	}

	// A crash in the middle of replacing it leaves the old or the new copy
	// and a record naming both: no false alarm.
	rec, _ := s.readAux()
	e := rec.Files["kubekeep"]
	e.Prev, e.Blake3 = e.Blake3, format.Sum([]byte("the next build")).String()
	rec.Files["kubekeep"] = e
	if err := s.writeAux(rec); err != nil {
		t.Fatal(err)
	}
	if rep := verify(); !rep.Clean() || !s.AuxNeedsWrite("kubekeep") {
		t.Fatalf("interrupted replacement: %+v", rep.Problems)
	}

	// A kit an older kubekeep wrote has no record: a warning, and it needs
	// writing so that it gets one.
	os.WriteFile(filepath.Join(dir, "RESTORE.md"), []byte("old guide"), 0o600)
	rep = verify()
	if !rep.Clean() || len(rep.Warnings) != 1 || !strings.Contains(rep.Warnings[0], "RESTORE.md") || !s.AuxNeedsWrite("RESTORE.md") {
		t.Fatalf("unrecorded aux file: %+v", rep)
	}
	for _, bad := range []string{auxFile, damageFile, readLockFile, "packs", "../x"} {
		if err := s.WriteAux(bad, []byte("x"), 0o600); err == nil {
			t.Errorf("WriteAux(%q) succeeded", bad)
		}
	}
}
