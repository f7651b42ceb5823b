package backup

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/kubekeep/kubekeep/rsyncish"
)

// TestCheckCopy: whatever the scratch file held (nothing, the previous
// image, a longer one, garbage), after a pass it holds exactly the new
// bytes, and only chunks that differed were written.
func TestCheckCopy(t *testing.T) {
	store, err := rsyncish.Open(filepath.Join(t.TempDir(), "store"), rsyncish.Options{AllowSameFilesystem: true})
	if err != nil {
		t.Fatal(err)
	}
	unlock, err := store.Lock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	rng := rand.New(rand.NewPCG(1, 2))
	image := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	var name string
	pass := func(data []byte, chunk int) int64 {
		t.Helper()
		cc, err := openCheckCopy(store)
		if err != nil {
			t.Fatal(err)
		}
		for p := data; len(p) > 0; {
			n := min(chunk, len(p))
			if _, err := cc.Write(p[:n]); err != nil {
				t.Fatal(err)
			}
			p = p[n:]
		}
		if err := cc.finish(); err != nil {
			t.Fatal(err)
		}
		if err := cc.Close(); err != nil {
			t.Fatal(err)
		}
		name = cc.Name()
		got, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("check copy differs from the image (%d vs %d bytes)", len(got), len(data))
		}
		return cc.written
	}

	first := image(3<<20 + 123)
	if w := pass(first, 32<<10); w != int64(len(first)) {
		t.Errorf("first pass wrote %d bytes, want all %d", w, len(first))
	}
	if w := pass(first, 7000); w != 0 {
		t.Errorf("same image wrote %d bytes, want 0", w)
	}
	second := bytes.Clone(first)
	copy(second[1<<20:], image(4096))
	if w := pass(second, 32<<10); w == 0 || w > 64<<10 {
		t.Errorf("one changed page wrote %d bytes, want one chunk", w)
	}
	shorter := second[:1<<20]
	if w := pass(shorter, 32<<10); w != 0 {
		t.Errorf("a shorter image wrote %d bytes, want 0 (truncate only)", w)
	}
	longer := append(bytes.Clone(shorter), image(2<<20)...)
	if w := pass(longer, 32<<10); w != 2<<20 {
		t.Errorf("appended 2 MiB wrote %d bytes", w)
	}
	if err := os.WriteFile(name, image(len(longer)), 0o600); err != nil {
		t.Fatal(err)
	}
	if w := pass(longer, 32<<10); w != int64(len(longer)) {
		t.Errorf("over garbage wrote %d bytes, want all %d", w, len(longer))
	}
}
