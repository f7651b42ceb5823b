// Package backendtest is the test suite every backend.Backend passes: the
// guarantees the package documentation of backend promises, checked from
// the outside, through the interface only. A new backend's test is one
// line: backendtest.Run(t, func(t *testing.T) backend.Backend { ... }),
// where each call returns an empty backend of its own.
package backendtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/kubekeep/kubekeep/rsyncish/backend"
)

// Run runs every check of the suite, each on a fresh backend from open.
func Run(t *testing.T, open func(t *testing.T) backend.Backend) {
	for _, c := range []struct {
		name string
		fn   func(t *testing.T, b backend.Backend)
	}{
		{"SaveLoad", testSaveLoad},
		{"Immutable", testImmutable},
		{"ConcurrentSaveOneWins", testConcurrentSave},
		{"ShortReaderLeavesNothing", testShortReader},
		{"FailingReaderLeavesNothing", testFailingReader},
		{"CancelledSaveLeavesNothing", testCancelledSave},
		{"SaveRewinds", testSaveRewinds},
		{"Ranges", testRanges},
		{"Missing", testMissing},
		{"List", testList},
		{"Remove", testRemove},
		{"InvalidNames", testInvalidNames},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := open(t)
			t.Cleanup(func() { _ = b.Close() })
			c.fn(t, b)
		})
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func random(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func load(t *testing.T, b backend.Backend, h backend.Handle) []byte {
	t.Helper()
	data, err := backend.LoadAll(ctxT(t), b, h)
	if err != nil {
		t.Fatalf("load %s: %v", h, err)
	}
	return data
}

func save(t *testing.T, b backend.Backend, h backend.Handle, data []byte) {
	t.Helper()
	if err := b.Save(ctxT(t), h, backend.NewByteReader(data)); err != nil {
		t.Fatalf("save %s: %v", h, err)
	}
}

func absent(t *testing.T, b backend.Backend, h backend.Handle, why string) {
	t.Helper()
	if _, err := b.Stat(ctxT(t), h); !errors.Is(err, backend.ErrNotFound) {
		t.Errorf("%s: stat %s = %v, want ErrNotFound", why, h, err)
	}
	for _, fi := range list(t, b, h.Type) {
		if fi.Name == h.Name {
			t.Errorf("%s: %s is listed (%d bytes)", why, h, fi.Size)
		}
	}
}

func list(t *testing.T, b backend.Backend, ft backend.FileType) []backend.FileInfo {
	t.Helper()
	var out []backend.FileInfo
	if err := b.List(ctxT(t), ft, func(fi backend.FileInfo) error {
		out = append(out, fi)
		return nil
	}); err != nil {
		t.Fatalf("list %s: %v", ft, err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func testSaveLoad(t *testing.T, b backend.Backend) {
	cases := []struct {
		h    backend.Handle
		size int
	}{
		{backend.Handle{Type: backend.ConfigFile, Name: "config.json"}, 0},
		{backend.Handle{Type: backend.PackFile, Name: "0a1b2c.pack"}, 1},
		{backend.Handle{Type: backend.IndexFile, Name: "0a1b2c.idx"}, 4096},
		{backend.Handle{Type: backend.ManifestFile, Name: "20261201T000000Z-abcd.manifest"}, 70_001},
		{backend.Handle{Type: backend.JournalFile, Name: "etcd-deltas/10-20-1764547200000000000.seg"}, 1<<20 + 17},
		{backend.Handle{Type: backend.VerifiedFile, Name: "20261201T000000Z-abcd"}, 3},
	}
	for _, c := range cases {
		data := random(t, c.size)
		save(t, b, c.h, data)
		if got := load(t, b, c.h); !bytes.Equal(got, data) {
			t.Errorf("%s: loaded %d bytes that differ from the %d saved", c.h, len(got), len(data))
		}
		fi, err := b.Stat(ctxT(t), c.h)
		if err != nil || fi.Size != int64(c.size) || fi.Name != c.h.Name {
			t.Errorf("stat %s = %+v, %v; want name %q and size %d", c.h, fi, err, c.h.Name, c.size)
		}
	}
}

func testImmutable(t *testing.T, b backend.Backend) {
	h := backend.Handle{Type: backend.PackFile, Name: "same.pack"}
	first := random(t, 1000)
	save(t, b, h, first)
	err := b.Save(ctxT(t), h, backend.NewByteReader(random(t, 2000)))
	if !errors.Is(err, backend.ErrExists) {
		t.Errorf("second save of %s = %v, want ErrExists", h, err)
	}
	if got := load(t, b, h); !bytes.Equal(got, first) {
		t.Errorf("%s changed under a refused save: %d bytes", h, len(got))
	}
}

func testConcurrentSave(t *testing.T, b backend.Backend) {
	h := backend.Handle{Type: backend.IndexFile, Name: "race.idx"}
	const n = 8
	datas := make([][]byte, n)
	errs := make([]error, n)
	for i := range datas {
		datas[i] = random(t, 64<<10+i)
	}
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = b.Save(ctxT(t), h, backend.NewByteReader(datas[i]))
		}()
	}
	wg.Wait()
	won := -1
	for i, err := range errs {
		switch {
		case err == nil && won >= 0:
			t.Errorf("saves %d and %d of the same name both succeeded", won, i)
		case err == nil:
			won = i
		case !errors.Is(err, backend.ErrExists):
			t.Errorf("save %d: %v, want nil or ErrExists", i, err)
		}
	}
	if won < 0 {
		t.Fatal("no concurrent save succeeded")
	}
	if got := load(t, b, h); !bytes.Equal(got, datas[won]) {
		t.Errorf("the stored object is not the winner's bytes (%d bytes, winner had %d)", len(got), len(datas[won]))
	}
}

// lying announces more bytes than it yields.
type lying struct {
	*backend.ByteReader
	extra int64
}

func (l lying) Length() int64 { return l.ByteReader.Length() + l.extra }

func testShortReader(t *testing.T, b backend.Backend) {
	h := backend.Handle{Type: backend.PackFile, Name: "short.pack"}
	err := b.Save(ctxT(t), h, lying{backend.NewByteReader(random(t, 5000)), 100})
	if err == nil {
		t.Fatal("a reader 100 bytes short of its length was saved")
	}
	absent(t, b, h, "after a short reader")
}

// failing yields some bytes, then an error.
type failing struct {
	backend.RewindReader
	left int
}

var errInjected = errors.New("injected read error")

func (f *failing) Read(p []byte) (int, error) {
	if f.left <= 0 {
		return 0, errInjected
	}
	n, err := f.RewindReader.Read(p[:min(len(p), f.left)])
	f.left -= n
	return n, err
}

func testFailingReader(t *testing.T, b backend.Backend) {
	h := backend.Handle{Type: backend.ManifestFile, Name: "failing.manifest"}
	err := b.Save(ctxT(t), h, &failing{RewindReader: backend.NewByteReader(random(t, 200_000)), left: 100_000})
	if !errors.Is(err, errInjected) {
		t.Errorf("save with a failing reader = %v, want the reader's error", err)
	}
	absent(t, b, h, "after a failing reader")
	// The name is still free.
	data := random(t, 10)
	save(t, b, h, data)
	if !bytes.Equal(load(t, b, h), data) {
		t.Error("a save after a failed one stored other bytes")
	}
}

// blocking yields its first half, then waits for its context.
type blocking struct {
	backend.RewindReader
	ctx  context.Context
	half int
}

func (r *blocking) Read(p []byte) (int, error) {
	if r.half <= 0 {
		<-r.ctx.Done()
		return 0, r.ctx.Err()
	}
	n, err := r.RewindReader.Read(p[:min(len(p), r.half)])
	r.half -= n
	return n, err
}

func testCancelledSave(t *testing.T, b backend.Backend) {
	h := backend.Handle{Type: backend.PackFile, Name: "cancelled.pack"}
	ctx, cancel := context.WithCancel(ctxT(t))
	done := make(chan error, 1)
	go func() {
		done <- b.Save(ctx, h, &blocking{RewindReader: backend.NewByteReader(random(t, 1<<20)), ctx: ctx, half: 1 << 19})
	}()
	time.Sleep(100 * time.Millisecond)
	cancel()
	if err := <-done; err == nil {
		t.Fatal("a save cancelled half-way succeeded")
	}
	absent(t, b, h, "after a cancelled save")
}

func testSaveRewinds(t *testing.T, b backend.Backend) {
	h := backend.Handle{Type: backend.PackFile, Name: "rewound.pack"}
	data := random(t, 3000)
	r := backend.NewByteReader(data)
	if _, err := io.CopyN(io.Discard, r, 1000); err != nil {
		t.Fatal(err)
	}
	if err := b.Save(ctxT(t), h, r); err != nil {
		t.Fatal(err)
	}
	if got := load(t, b, h); !bytes.Equal(got, data) {
		t.Errorf("a save of a part-read reader stored %d bytes, want all %d from the start", len(got), len(data))
	}
}

func testRanges(t *testing.T, b backend.Backend) {
	h := backend.Handle{Type: backend.PackFile, Name: "ranges.pack"}
	data := random(t, 10_000)
	save(t, b, h, data)
	for _, r := range []struct{ off, n int }{{0, 1}, {0, 10_000}, {9_999, 1}, {1234, 4321}, {5000, 0}, {10_000, 0}} {
		var got []byte
		err := b.Load(ctxT(t), h, r.n, int64(r.off), func(rd io.Reader) error {
			var err error
			got, err = io.ReadAll(rd)
			return err
		})
		want := data[r.off:]
		if r.n > 0 {
			want = data[r.off : r.off+r.n]
		}
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("load %d+%d: %d bytes, %v; want %d bytes", r.off, r.n, len(got), err, len(want))
		}
	}
	for _, r := range []struct{ off, n int }{{9_999, 2}, {10_001, 0}, {20_000, 1}} {
		err := b.Load(ctxT(t), h, r.n, int64(r.off), func(rd io.Reader) error {
			_, err := io.ReadAll(rd)
			return err
		})
		if !errors.Is(err, backend.ErrShortRead) {
			t.Errorf("load %d+%d of 10000 bytes = %v, want ErrShortRead", r.off, r.n, err)
		}
	}
	errFn := errors.New("fn's own error")
	if err := b.Load(ctxT(t), h, 10, 0, func(io.Reader) error { return errFn }); !errors.Is(err, errFn) {
		t.Errorf("load returned %v, not the error of its fn", err)
	}
}

func testMissing(t *testing.T, b backend.Backend) {
	h := backend.Handle{Type: backend.IndexFile, Name: "missing.idx"}
	if err := b.Load(ctxT(t), h, 0, 0, func(io.Reader) error { return nil }); !errors.Is(err, backend.ErrNotFound) {
		t.Errorf("load of a missing object = %v, want ErrNotFound", err)
	}
	if _, err := b.Stat(ctxT(t), h); !errors.Is(err, backend.ErrNotFound) {
		t.Errorf("stat of a missing object = %v, want ErrNotFound", err)
	}
	if err := b.Remove(ctxT(t), h); !errors.Is(err, backend.ErrNotFound) {
		t.Errorf("remove of a missing object = %v, want ErrNotFound", err)
	}
	if got := list(t, b, backend.IndexFile); len(got) != 0 {
		t.Errorf("an empty backend lists %v", got)
	}
}

func testList(t *testing.T, b backend.Backend) {
	want := map[backend.FileType][]string{
		backend.PackFile:    {"a.pack", "b.pack", "c.pack"},
		backend.JournalFile: {"etcd-deltas/1-2-3.seg", "etcd-deltas/4-9.break", "other/5-6-7.seg"},
	}
	sizes := map[string]int64{}
	for ft, names := range want {
		for i, n := range names {
			data := random(t, 100*(i+1))
			save(t, b, backend.Handle{Type: ft, Name: n}, data)
			sizes[string(ft)+"/"+n] = int64(len(data))
		}
	}
	for ft, names := range want {
		got := list(t, b, ft)
		var gotNames []string
		for _, fi := range got {
			gotNames = append(gotNames, fi.Name)
			if fi.Size != sizes[string(ft)+"/"+fi.Name] {
				t.Errorf("list %s: %s has size %d, saved %d", ft, fi.Name, fi.Size, sizes[string(ft)+"/"+fi.Name])
			}
		}
		if !slices.Equal(gotNames, names) {
			t.Errorf("list %s = %v, want %v", ft, gotNames, names)
		}
	}
	if got := list(t, b, backend.ManifestFile); len(got) != 0 {
		t.Errorf("list of a type nothing was saved as = %v", got)
	}
	stop := errors.New("stop")
	n := 0
	if err := b.List(ctxT(t), backend.PackFile, func(backend.FileInfo) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
		t.Errorf("list stopped by fn's error: %v after %d calls, want that error after 1", err, n)
	}
}

func testRemove(t *testing.T, b backend.Backend) {
	h := backend.Handle{Type: backend.VerifiedFile, Name: "v1"}
	save(t, b, h, []byte("ok"))
	if err := b.Remove(ctxT(t), h); err != nil {
		t.Fatal(err)
	}
	absent(t, b, h, "after remove")
	data := []byte("again")
	save(t, b, h, data)
	if !bytes.Equal(load(t, b, h), data) {
		t.Error("a save after remove stored other bytes")
	}
}

func testInvalidNames(t *testing.T, b backend.Backend) {
	for _, h := range []backend.Handle{
		{Type: backend.PackFile, Name: ""},
		{Type: backend.PackFile, Name: "../escape"},
		{Type: backend.PackFile, Name: "a/../../escape"},
		{Type: backend.PackFile, Name: "/abs"},
		{Type: backend.PackFile, Name: "a//b"},
		{Type: backend.PackFile, Name: ".tmp-123"},
		{Type: backend.PackFile, Name: "sp ace"},
		{Type: backend.PackFile, Name: "nul\x00"},
		{Type: "elsewhere", Name: "x"},
	} {
		err := b.Save(ctxT(t), h, backend.NewByteReader([]byte("x")))
		if !errors.Is(err, backend.ErrInvalidName) {
			t.Errorf("save %q = %v, want ErrInvalidName", fmt.Sprint(h), err)
		}
		if _, err := b.Stat(ctxT(t), h); !errors.Is(err, backend.ErrInvalidName) {
			t.Errorf("stat %q = %v, want ErrInvalidName", fmt.Sprint(h), err)
		}
	}
}
