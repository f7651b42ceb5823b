package tiers

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"filippo.io/age"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/kubekeep/kubekeep/config"
	"github.com/kubekeep/kubekeep/rsyncish"
	"github.com/kubekeep/kubekeep/rsyncish/backend"
	"github.com/kubekeep/kubekeep/rsyncish/format"
	"github.com/kubekeep/kubekeep/tiers/oss"
	"github.com/kubekeep/kubekeep/tiers/s3"
	"github.com/kubekeep/kubekeep/tiers/seal"
)

// StateDir is where a store keeps its tiers' local state (name keys and
// catalogues), inside the store directory: 0700, files 0600.
func StateDir(storeDir string) string { return filepath.Join(storeDir, "offsite") }

// Tier is an opened off-site tier.
type Tier struct {
	Name string
	// Remote is the tier's bucket as it is (sealed objects).
	Remote backend.Backend
	// Sealed is Remote behind the seal: what Sync and Pull use.
	Sealed *seal.Sealed
	// Catalogue is the master's record of what the tier holds (nil when
	// opened for a pull, on a machine without the store).
	Catalogue *Catalogue
	cfg       config.Offsite
	nameKey   []byte
}

// OpenOptions say how to reach a tier.
type OpenOptions struct {
	// StoreDir is the local store the tier copies (its state lives in
	// StateDir); empty for a pull onto a new machine.
	StoreDir string
	// Identities, for reading the tier back (pull, verify --read-data).
	Identities []age.Identity
	// Scratch is where objects are sealed before upload.
	Scratch string
	// Getenv reads credentials (nil: os.Getenv); never logged.
	Getenv func(string) string
	// MetadataURL is the ECS instance metadata service (RAM role
	// credentials for oss://; empty: the real one).
	MetadataURL string
}

// Open connects to the tier cfg describes. On the master (StoreDir set)
// the tier's name key is read from the local state, or made on first use
// and stored in the tier sealed for the recipients; with identities it is
// read from the tier.
func Open(ctx context.Context, cfg config.Offsite, o OpenOptions) (*Tier, error) {
	getenv := o.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	bucket, prefix := cfg.BucketPrefix()
	var remote backend.Backend
	switch cfg.Scheme() {
	case "s3":
		e, err := url.Parse(cfg.Endpoint)
		if err != nil || e.Host == "" {
			return nil, fmt.Errorf("tier %s: endpoint %q: want https://HOST:PORT", cfg.Name, cfg.Endpoint)
		}
		id, secret := getenv("AWS_ACCESS_KEY_ID"), getenv("AWS_SECRET_ACCESS_KEY")
		if id == "" || secret == "" {
			return nil, fmt.Errorf("tier %s: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment (credentials are never read from the config file)", cfg.Name)
		}
		var lock *s3.Lock
		if cfg.LockDays > 0 {
			lock = &s3.Lock{Mode: s3.Compliance, Days: cfg.LockDays}
		}
		b, err := s3.Open(ctx, s3.Config{Endpoint: e.Host, Secure: e.Scheme == "https", Region: cfg.Region, Bucket: bucket, Prefix: prefix,
			Creds: credentials.NewStaticV4(id, secret, getenv("AWS_SESSION_TOKEN")), Lock: lock})
		if err != nil {
			return nil, fmt.Errorf("tier %s: %w", cfg.Name, err)
		}
		remote = b
	case "oss":
		creds := oss.DefaultCredentials(o.MetadataURL)
		if id, secret := getenv("ALIBABA_CLOUD_ACCESS_KEY_ID"), getenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET"); id != "" && secret != "" {
			creds = oss.StaticCredentials(id, secret, getenv("ALIBABA_CLOUD_SECURITY_TOKEN"))
		}
		b, err := oss.Open(ctx, oss.Config{Endpoint: cfg.Endpoint, Region: cfg.Region, Bucket: bucket, Prefix: prefix, Creds: creds, LockDays: cfg.LockDays})
		if err != nil {
			return nil, fmt.Errorf("tier %s: %w", cfg.Name, err)
		}
		remote = b
	default:
		return nil, fmt.Errorf("tier %s: url %q: want s3:// or oss://", cfg.Name, cfg.URL)
	}
	recipients, err := seal.ParseRecipients(cfg.Recipients)
	if err != nil {
		return nil, fmt.Errorf("tier %s: %w", cfg.Name, err)
	}
	t := &Tier{Name: cfg.Name, Remote: remote, cfg: cfg}
	var nameKey []byte
	switch {
	case len(o.Identities) > 0:
		if nameKey, err = seal.LoadNameKey(ctx, remote, o.Identities); err != nil {
			return nil, fmt.Errorf("tier %s: %w", cfg.Name, err)
		}
	case o.StoreDir != "":
		if nameKey, err = localNameKey(ctx, remote, o.StoreDir, cfg.Name, recipients); err != nil {
			return nil, fmt.Errorf("tier %s: %w", cfg.Name, err)
		}
	default:
		return nil, fmt.Errorf("tier %s: %w", cfg.Name, seal.ErrNoIdentity)
	}
	t.nameKey = nameKey
	scratch := o.Scratch
	if scratch == "" {
		scratch = os.TempDir()
	}
	if t.Sealed, err = seal.New(remote, seal.Config{Recipients: recipients, Identities: o.Identities, NameKey: nameKey, Scratch: scratch}); err != nil {
		return nil, err
	}
	if o.StoreDir != "" && len(o.Identities) == 0 {
		if err := checkOwner(ctx, remote, t.Sealed, o.StoreDir); err != nil {
			return nil, fmt.Errorf("tier %s: %w", cfg.Name, err)
		}
	}
	if o.StoreDir != "" {
		if t.Catalogue, err = OpenCatalogue(filepath.Join(StateDir(o.StoreDir), cfg.Name+".catalogue")); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// localNameKey reads the tier's name key from the store's state, or makes
// one. The local copy is written first and the tier's sealed copy after
// (and again on any later open that finds it missing), so a crash between
// the two never strands a tier with a key nobody kept. A tier that holds
// a key while this store has none belongs to another store (or this
// store lost its state): that is refused rather than mixed.
func localNameKey(ctx context.Context, remote backend.Backend, storeDir, tier string, recipients []age.Recipient) ([]byte, error) {
	dir := StateDir(storeDir)
	p := filepath.Join(dir, tier+".namekey")
	k, err := os.ReadFile(p)
	switch {
	case err == nil && len(k) != seal.NameKeySize:
		return nil, fmt.Errorf("%s: %d bytes, want %d", p, len(k), seal.NameKeySize)
	case errors.Is(err, fs.ErrNotExist):
		if _, err := remote.Stat(ctx, seal.KeyHandle); err == nil {
			return nil, fmt.Errorf("%s already holds a tier key, but this store has none (%s): the tier belongs to another store, or this store's offsite state was lost; use another prefix, or pull with an identity to recover", remote.Location(), p)
		}
		k = make([]byte, seal.NameKeySize)
		if _, err := rand.Read(k); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		tmp := p + ".tmp"
		if err := os.WriteFile(tmp, k, 0o600); err != nil {
			return nil, err
		}
		if err := os.Rename(tmp, p); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, err
	}
	if _, err := remote.Stat(ctx, seal.KeyHandle); errors.Is(err, backend.ErrNotFound) {
		if err := seal.SaveNameKey(ctx, remote, k, recipients); err != nil && !errors.Is(err, backend.ErrExists) {
			return nil, fmt.Errorf("store the tier key: %w", err)
		}
	} else if err != nil {
		return nil, err
	}
	// The tier key in the tier must be the one this store sealed: its
	// fingerprint is kept beside the name key (taken on first use).
	sealed, err := backend.LoadAll(ctx, remote, seal.KeyHandle)
	if err != nil {
		return nil, fmt.Errorf("read the tier key: %w", err)
	}
	sum := sha256.Sum256(sealed)
	fp := hex.EncodeToString(sum[:])
	fpPath := filepath.Join(dir, tier+".keyid")
	switch had, err := os.ReadFile(fpPath); {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.WriteFile(fpPath, []byte(fp+"\n"), 0o600); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, err
	case strings.TrimSpace(string(had)) != fp:
		return nil, fmt.Errorf("%s/%s is not the tier key this store made for the tier (%s records another): the tier belongs to another store, or its key was replaced; use another prefix", remote.Location(), seal.KeyHandle, fpPath)
	}
	return k, nil
}

// ownerPrefix names the tier's owner marker, config/store-<store id>
// (sealed like every name): which store the tier holds.
const ownerPrefix = "store-"

// checkOwner refuses a tier that holds another store's objects: config
// objects whose names this store's name key did not make, or another
// store id's marker; a tier without this store's marker gets it.
func checkOwner(ctx context.Context, remote backend.Backend, sealed *seal.Sealed, storeDir string) error {
	data, err := os.ReadFile(filepath.Join(storeDir, "config.json"))
	if err != nil {
		return fmt.Errorf("read the store's id: %w", err)
	}
	var sc format.Config
	if err := format.UnsealJSON(data, &sc); err != nil || sc.StoreID == "" || backend.ValidName(ownerPrefix+sc.StoreID) != nil {
		return fmt.Errorf("read the store's id from %s: %v", filepath.Join(storeDir, "config.json"), err)
	}
	mine := false
	err = remote.List(ctx, backend.ConfigFile, func(fi backend.FileInfo) error {
		if fi.Name == seal.KeyHandle.Name {
			return nil
		}
		name, ok := sealed.Opens(backend.ConfigFile, fi.Name)
		if !ok {
			return fmt.Errorf("%s holds config objects this store's tier key did not name (%s/%s): it holds another store; use another prefix",
				remote.Location(), backend.ConfigFile, fi.Name)
		}
		if id, ok := strings.CutPrefix(name, ownerPrefix); ok {
			if id != sc.StoreID {
				return fmt.Errorf("%s holds store %s; this is store %s (%s): use another prefix for this store's tier", remote.Location(), id, sc.StoreID, storeDir)
			}
			mine = true
		}
		return nil
	})
	if err != nil || mine {
		return err
	}
	err = sealed.Save(ctx, backend.Handle{Type: backend.ConfigFile, Name: ownerPrefix + sc.StoreID}, backend.NewByteReader(nil))
	if err != nil && !errors.Is(err, backend.ErrExists) {
		return fmt.Errorf("mark the tier as store %s's: %w", sc.StoreID, err)
	}
	return nil
}

// OpenForStore opens the tier cfg describes for the local store at its
// master: objects are sealed in a temp dir of the store's own
// (rsyncish.Store.MkdirTemp, cleaned after a kill). close removes it and
// closes the tier.
func OpenForStore(ctx context.Context, cfg config.Offsite, store *rsyncish.Store) (t *Tier, close func(), err error) {
	scratch, err := store.MkdirTemp("offsite-")
	if err != nil {
		return nil, nil, fmt.Errorf("tier %s: %w", cfg.Name, err)
	}
	t, err = Open(ctx, cfg, OpenOptions{StoreDir: store.Dir(), Scratch: scratch})
	if err != nil {
		os.RemoveAll(scratch)
		return nil, nil, err
	}
	return t, func() {
		t.Sealed.Close()
		os.RemoveAll(scratch)
	}, nil
}

// Reader is the tier opened for reading with identities, beside the
// master's view (Sealed): the name key is read from the tier, and must be
// the one this machine uses, if it has one.
func (t *Tier) Reader(ctx context.Context, identities []age.Identity) (*seal.Sealed, error) {
	nk, err := seal.LoadNameKey(ctx, t.Remote, identities)
	if err != nil {
		return nil, fmt.Errorf("tier %s: %w", t.Name, err)
	}
	if t.nameKey != nil && !bytes.Equal(nk, t.nameKey) {
		return nil, fmt.Errorf("tier %s: the identity opens a tier key that is not the one this store uses for the tier", t.Name)
	}
	return seal.New(t.Remote, seal.Config{Identities: identities, NameKey: nk, Scratch: os.TempDir()})
}
