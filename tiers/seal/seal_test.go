package seal_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"

	"github.com/kubekeep/kubekeep/rsyncish/backend"
	"github.com/kubekeep/kubekeep/rsyncish/backend/backendtest"
	"github.com/kubekeep/kubekeep/tiers/seal"
)

type tier struct {
	dir      string
	inner    *backend.Local
	id       *age.X25519Identity
	nameKey  []byte
	restorer *seal.Sealed // holds the identity
	master   *seal.Sealed // holds only the recipient
}

func newTier(t *testing.T) *tier {
	t.Helper()
	dir := t.TempDir()
	inner, err := backend.OpenLocal(filepath.Join(dir, "bucket"))
	if err != nil {
		t.Fatal(err)
	}
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	nk, err := seal.NewNameKey()
	if err != nil {
		t.Fatal(err)
	}
	scratch := filepath.Join(dir, "scratch")
	if err := os.Mkdir(scratch, 0o700); err != nil {
		t.Fatal(err)
	}
	tr := &tier{dir: dir, inner: inner, id: id, nameKey: nk}
	if tr.master, err = seal.New(inner, seal.Config{Recipients: []age.Recipient{id.Recipient()}, NameKey: nk, Scratch: scratch}); err != nil {
		t.Fatal(err)
	}
	if tr.restorer, err = seal.New(inner, seal.Config{Recipients: []age.Recipient{id.Recipient()}, Identities: []age.Identity{id}, NameKey: nk, Scratch: scratch}); err != nil {
		t.Fatal(err)
	}
	return tr
}

// With an identity, a sealed tier keeps every guarantee of a backend.
func TestSealedSuite(t *testing.T) {
	backendtest.Run(t, func(t *testing.T) backend.Backend { return newTier(t).restorer })
}

// What the master uploads it cannot read back, and the bucket holds
// neither the bytes nor the names in the clear.
func TestMasterCannotReadAndBucketLearnsNoNames(t *testing.T) {
	tr := newTier(t)
	ctx := context.Background()
	secret := []byte("-----BEGIN RSA PRIVATE KEY----- ca.key of the cluster")
	packID := "8f14e45fceea167a5a36dedd4bea2543f2a6c4e1c2b3d4e5f60718293a4b5c6d"
	handles := []backend.Handle{
		{Type: backend.PackFile, Name: packID + ".pack"},
		{Type: backend.ManifestFile, Name: "20261201T101500Z-60af600f.manifest"},
		{Type: backend.JournalFile, Name: "etcd-deltas/1000-1042-1764584100000000000.seg"},
	}
	for _, h := range handles {
		if err := tr.master.Save(ctx, h, backend.NewByteReader(secret)); err != nil {
			t.Fatal(err)
		}
	}
	err := tr.master.Load(ctx, handles[0], 0, 0, func(r io.Reader) error { return nil })
	if !errors.Is(err, seal.ErrNoIdentity) {
		t.Errorf("the master's load = %v, want ErrNoIdentity", err)
	}
	// Everything in the bucket, as a bucket reader sees it.
	err = filepath.Walk(filepath.Join(tr.dir, "bucket"), func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if bytes.Contains(data, []byte("PRIVATE KEY")) || bytes.Contains(data, []byte("ca.key")) {
			t.Errorf("%s holds the plaintext", p)
		}
		for _, leak := range []string{packID[:16], "60af600f", "20261201", "1000-1042", "etcd-deltas"} {
			if strings.Contains(p, leak) {
				t.Errorf("remote path %s shows %q of a name", p, leak)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The master still lists its uploads by their real names (sealed sizes).
	var names []string
	if err := tr.master.List(ctx, backend.JournalFile, func(fi backend.FileInfo) error {
		names = append(names, fi.Name)
		if fi.Size <= int64(len(secret)) {
			t.Errorf("the master's list shows %d bytes for %s: want the sealed size, above the %d plaintext bytes", fi.Size, fi.Name, len(secret))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(names) != 1 || names[0] != handles[2].Name {
		t.Errorf("master list = %v, want [%s]", names, handles[2].Name)
	}
	// And the identity opens every one.
	for _, h := range handles {
		got, err := backend.LoadAll(ctx, tr.restorer, h)
		if err != nil || !bytes.Equal(got, secret) {
			t.Errorf("restorer load %s: %q %v", h, got, err)
		}
	}
}

// A changed byte anywhere in a sealed object is an error, never other
// plaintext.
func TestTamperedObjectFails(t *testing.T) {
	tr := newTier(t)
	ctx := context.Background()
	h := backend.Handle{Type: backend.PackFile, Name: "p.pack"}
	data := bytes.Repeat([]byte("kubekeep"), 40_000) // five age chunks
	if err := tr.master.Save(ctx, h, backend.NewByteReader(data)); err != nil {
		t.Fatal(err)
	}
	remote, err := tr.master.RemoteName(h)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(tr.dir, "bucket", "packs", remote)
	sealed, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, at := range []int{len(sealed) / 2, len(sealed) - 1} {
		bad := bytes.Clone(sealed)
		bad[at] ^= 1
		if err := os.WriteFile(p, bad, 0o600); err != nil {
			t.Fatal(err)
		}
		// A read of the damaged chunk only, and of the whole object.
		err := tr.restorer.Load(ctx, h, 100, int64(at/65536*65536), func(r io.Reader) error { _, err := io.ReadAll(r); return err })
		if _, err2 := backend.LoadAll(ctx, tr.restorer, h); err == nil && err2 == nil {
			t.Errorf("a flipped byte at %d of %d read without an error", at, len(sealed))
		}
	}
}

// The name key travels in the tier, sealed: an identity recovers it, a
// wrong identity gets a clear error, and a name made with another key is
// neither listed nor opened.
func TestNameKeyInTheTier(t *testing.T) {
	tr := newTier(t)
	ctx := context.Background()
	if err := seal.SaveNameKey(ctx, tr.inner, tr.nameKey, []age.Recipient{tr.id.Recipient()}); err != nil {
		t.Fatal(err)
	}
	got, err := seal.LoadNameKey(ctx, tr.inner, []age.Identity{tr.id})
	if err != nil || !bytes.Equal(got, tr.nameKey) {
		t.Fatalf("name key back: %v (equal %v)", err, bytes.Equal(got, tr.nameKey))
	}
	other, _ := age.GenerateX25519Identity()
	if _, err := seal.LoadNameKey(ctx, tr.inner, []age.Identity{other}); err == nil || !strings.Contains(err.Error(), "identity") {
		t.Errorf("a wrong identity: %v", err)
	}
	if _, err := seal.LoadNameKey(ctx, tr.inner, nil); !errors.Is(err, seal.ErrNoIdentity) {
		t.Errorf("no identity: %v", err)
	}

	otherKey, _ := seal.NewNameKey()
	stranger, err := seal.New(tr.inner, seal.Config{Recipients: []age.Recipient{tr.id.Recipient()}, NameKey: otherKey, Scratch: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if err := stranger.Save(ctx, backend.Handle{Type: backend.PackFile, Name: "theirs.pack"}, backend.NewByteReader([]byte("x"))); err != nil {
		t.Fatal(err)
	}
	if err := tr.restorer.Save(ctx, backend.Handle{Type: backend.PackFile, Name: "ours.pack"}, backend.NewByteReader([]byte("y"))); err != nil {
		t.Fatal(err)
	}
	var names []string
	if err := tr.restorer.List(ctx, backend.PackFile, func(fi backend.FileInfo) error {
		names = append(names, fi.Name)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(names) != 1 || names[0] != "ours.pack" {
		t.Errorf("list = %v, want only ours.pack (not the other key's object)", names)
	}
}
