package restore

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/kubekeep/kubekeep/rsyncish"
)

// A second disk with 44 MiB free (above a 20 MiB minFree, so backups go
// on) cannot hold a drill's scratch data dir: the drill says so before it
// writes anything, with how much it needs, as ErrDrillSpace; before, etcd
// failed half-way with "create WAL: no space left on device". With what
// it asks for free, the drill passes: the estimate is enough.
func TestDrillSpaceCheckedUpFront(t *testing.T) {
	f := getFixture(t)
	ctx := ctxT(t)
	mnt := t.TempDir()
	loopMount(t, mnt, 256<<20)
	if out, err := exec.Command("cp", "-a", f.store.Dir(), filepath.Join(mnt, "store")).CombinedOutput(); err != nil {
		t.Fatalf("copy the store onto the small disk: %v %s", err, out)
	}
	s, err := rsyncish.Open(filepath.Join(mnt, "store"), rsyncish.Options{AllowSameFilesystem: true})
	if err != nil {
		t.Fatal(err)
	}
	src, err := loadSource(s, f.id)
	if err != nil {
		t.Fatal(err)
	}
	need, _ := DrillSpace(src.snapshotSize, !streamsImage(src, nil))
	filler := filepath.Join(mnt, "filler")
	leave := func(free int64) {
		t.Helper()
		os.Remove(filler)
		have, err := freeAt(mnt)
		if err != nil {
			t.Fatal(err)
		}
		if have < free {
			t.Fatalf("only %d bytes free on the test disk, %d wanted", have, free)
		}
		fd, err := os.OpenFile(filler, os.O_CREATE|os.O_WRONLY, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		defer fd.Close()
		if err := unix.Fallocate(int(fd.Fd()), 0, 0, have-free); err != nil {
			t.Fatal(err)
		}
		if got, _ := freeAt(mnt); got < free-(1<<20) || got > free+(1<<20) {
			t.Fatalf("%d bytes free after filling, want about %d", got, free)
		}
	}
	tmpEntries := func() []string {
		ents, _ := os.ReadDir(filepath.Join(s.Dir(), "tmp"))
		var out []string
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), "drill-") {
				out = append(out, e.Name())
			}
		}
		return out
	}

	leave(44 << 20)
	res, err := Drill(ctx, s, f.id, nil)
	var se *DrillSpaceError
	if !errors.Is(err, ErrDrillSpace) || !errors.As(err, &se) {
		t.Fatalf("drill with 44 MiB free: %v", err)
	}
	if se.Need != need || se.Free > 45<<20 || se.Dir != s.Dir() || res.NeedBytes != need || res.FreeBytes != se.Free || res.Verified {
		t.Errorf("space error %+v, result %+v; want need %d", se, res, need)
	}
	for _, want := range []string{"needs " + mib(need) + " free on the filesystem of " + s.Dir(), "2 WAL segments", "no version is verified"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not say %q: %v", want, err)
		}
	}
	if left := tmpEntries(); len(left) > 0 {
		t.Errorf("a refused drill left %v in the store", left)
	}

	leave(need + 2<<20)
	if res, err := Drill(ctx, s, f.id, nil); err != nil || !res.Verified {
		t.Fatalf("drill with the %s it asks for (and 2 MiB) free: %v", mib(need), err)
	}
	if left := tmpEntries(); len(left) > 0 {
		t.Errorf("drill left %v in the store", left)
	}
}
