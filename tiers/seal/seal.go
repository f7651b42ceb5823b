// Package seal makes any backend.Backend a tier that neither the bucket's
// readers nor the master itself can read back: every object is encrypted
// on the client for age X25519 recipients (filippo.io/age: a fresh file
// key per object, wrapped for each recipient; ChaCha20-Poly1305 in 64 KiB
// chunks, each authenticated), and every name is encrypted too.
//
// The master holds only recipients (public keys) and the tier's name key.
// It can seal and upload, compute the remote name of any object and list
// what the tier holds, but it cannot decrypt one byte of what it
// uploaded: Load needs an identity (private key), which is kept away from
// the master (kubekeep offsite keygen writes one; a restore on a new VM
// brings it).
//
// # Names
//
// A remote name is base32(nonce || AES-256-GCM(name)) with the nonce an
// HMAC-SHA256 of the name under a second key (a synthetic-IV
// construction): the same handle always gets the same remote name, so
// uploads are idempotent and the master finds an object by its handle
// without a lookup table; without the name key a name reveals nothing of
// the handle (not the blake3 ID of a pack, not a version's time or a
// journal's revisions), and a name that was not made with the key fails
// to open. The name key is itself stored in the tier, sealed for the
// recipients (KeyHandle), so whoever holds an identity recovers it.
//
// # What a bucket reader (or the cloud provider) learns
//
// The object kinds (each type keeps its prefix: packs, index, versions,
// journals, verified, config), how many there are of each, their sealed
// sizes (each within 16 bytes per 64 KiB plus ~200 bytes per recipient
// of the plaintext's) and their upload times. Not: names, contents,
// hashes of contents, which objects belong to which version, nor any key.
//
// # Sizes
//
// With an identity, Stat and List report plaintext sizes (List reads each
// object's header for it: use it for pulls and verification). Without
// one (the master), they report the sealed size stored in the tier.
package seal

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"filippo.io/age"

	"github.com/kubekeep/kubekeep/rsyncish/backend"
)

// KeyHandle is where the sealed name key lives in the tier.
var KeyHandle = backend.Handle{Type: backend.ConfigFile, Name: "tier-key"}

// NameKeySize is the size of a tier's name key.
const NameKeySize = 64 // 32 for the synthetic nonce, 32 for AES-256-GCM

// ErrNoIdentity: a read of sealed data was asked for without an identity.
var ErrNoIdentity = errors.New("no identity to decrypt with: the master holds only the recipients; pass an identity file kept elsewhere")

// ErrNotSealed: a remote name or object was not made with this tier's keys.
var ErrNotSealed = errors.New("not sealed with this tier's keys")

// Config are a sealed tier's keys.
type Config struct {
	// Recipients seal what Save stores (required for Save).
	Recipients []age.Recipient
	// Identities open what Load reads (absent on the master).
	Identities []age.Identity
	// NameKey (NameKeySize bytes) encrypts names: the master keeps it
	// locally; NewNameKey makes one, LoadNameKey recovers it from the
	// tier with an identity.
	NameKey []byte
	// Scratch is the directory objects are sealed in before upload (the
	// store's own temp dir: same disk, 0700).
	Scratch string
}

// Sealed is a backend.Backend over inner that seals every object.
type Sealed struct {
	inner backend.Backend
	cfg   Config
	aead  cipher.AEAD
}

var _ backend.Backend = (*Sealed)(nil)

// New wraps inner.
func New(inner backend.Backend, cfg Config) (*Sealed, error) {
	if len(cfg.NameKey) != NameKeySize {
		return nil, fmt.Errorf("seal: the name key must be %d bytes, not %d", NameKeySize, len(cfg.NameKey))
	}
	block, err := aes.NewCipher(cfg.NameKey[32:])
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &Sealed{inner: inner, cfg: cfg, aead: aead}, nil
}

// NewNameKey returns a fresh random name key.
func NewNameKey() ([]byte, error) {
	k := make([]byte, NameKeySize)
	_, err := rand.Read(k)
	return k, err
}

// SaveNameKey stores the name key in the tier, sealed for the recipients
// (once: the tier's objects are immutable; an existing key is left alone
// and reported by ErrExists).
func SaveNameKey(ctx context.Context, inner backend.Backend, nameKey []byte, recipients []age.Recipient) error {
	var buf bytes.Buffer
	w, err := age.Encrypt(&buf, recipients...)
	if err != nil {
		return fmt.Errorf("seal name key: %w", err)
	}
	if _, err := w.Write(nameKey); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return inner.Save(ctx, KeyHandle, backend.NewByteReader(buf.Bytes()))
}

// LoadNameKey reads the tier's name key with an identity.
func LoadNameKey(ctx context.Context, inner backend.Backend, identities []age.Identity) ([]byte, error) {
	if len(identities) == 0 {
		return nil, ErrNoIdentity
	}
	sealed, err := backend.LoadAll(ctx, inner, KeyHandle)
	if err != nil {
		return nil, fmt.Errorf("the tier's name key: %w", err)
	}
	r, err := age.Decrypt(bytes.NewReader(sealed), identities...)
	if err != nil {
		return nil, fmt.Errorf("the tier's name key at %s/%s: %w (is this the identity this tier was set up for?)", inner.Location(), KeyHandle, err)
	}
	k, err := io.ReadAll(io.LimitReader(r, NameKeySize+1))
	if err != nil {
		return nil, err
	}
	if len(k) != NameKeySize {
		return nil, fmt.Errorf("the tier's name key is %d bytes, want %d", len(k), NameKeySize)
	}
	return k, nil
}

var nameEnc = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// remote maps a handle to its remote handle.
func (s *Sealed) remote(h backend.Handle) (backend.Handle, error) {
	if err := h.Valid(); err != nil {
		return backend.Handle{}, err
	}
	mac := hmac.New(sha256.New, s.cfg.NameKey[:32])
	mac.Write([]byte(h.Type))
	mac.Write([]byte{0})
	mac.Write([]byte(h.Name))
	nonce := mac.Sum(nil)[:s.aead.NonceSize()]
	ct := s.aead.Seal(nil, nonce, []byte(h.Name), []byte(h.Type))
	return backend.Handle{Type: h.Type, Name: nameEnc.EncodeToString(append(nonce, ct...))}, nil
}

// local maps a remote name of type t back to the handle's name.
func (s *Sealed) local(t backend.FileType, remote string) (string, error) {
	raw, err := nameEnc.DecodeString(remote)
	ns := s.aead.NonceSize()
	if err != nil || len(raw) < ns+s.aead.Overhead() {
		return "", ErrNotSealed
	}
	name, err := s.aead.Open(nil, raw[:ns], raw[ns:], []byte(t))
	if err != nil {
		return "", ErrNotSealed
	}
	if want, err := s.remote(backend.Handle{Type: t, Name: string(name)}); err != nil || want.Name != remote {
		return "", ErrNotSealed
	}
	return string(name), nil
}

// Opens says whether remote, a name of type t in the tier, was made with
// this tier's name key, and returns the handle's name if so.
func (s *Sealed) Opens(t backend.FileType, remote string) (string, bool) {
	name, err := s.local(t, remote)
	return name, err == nil
}

// RemoteName is the name handle h has in the tier (for catalogues and
// error messages; it reveals nothing without the name key).
func (s *Sealed) RemoteName(h backend.Handle) (string, error) {
	r, err := s.remote(h)
	return r.Name, err
}

// Location implements backend.Backend.
func (s *Sealed) Location() string { return s.inner.Location() + " (sealed)" }

// Close implements backend.Backend.
func (s *Sealed) Close() error { return s.inner.Close() }

// Save implements backend.Backend: the object is sealed into a scratch
// file (its sealed length must be known before the upload starts), then
// saved under its remote name. It returns the error of the inner backend
// (ErrExists when the tier holds it already).
func (s *Sealed) Save(ctx context.Context, h backend.Handle, rd backend.RewindReader) error {
	if len(s.cfg.Recipients) == 0 {
		return errors.New("seal: no recipients to seal for")
	}
	rh, err := s.remote(h)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(s.cfg.Scratch, "seal-*.age")
	if err != nil {
		return fmt.Errorf("seal %s: %w", h, err)
	}
	defer func() {
		tmp.Close()
		os.Remove(tmp.Name())
	}()
	if err := rd.Rewind(); err != nil {
		return fmt.Errorf("seal %s: %w", h, err)
	}
	w, err := age.Encrypt(tmp, s.cfg.Recipients...)
	if err != nil {
		return fmt.Errorf("seal %s: %w", h, err)
	}
	n, err := io.Copy(w, rd)
	if err != nil {
		return fmt.Errorf("seal %s: %w", h, err)
	}
	if n != rd.Length() {
		return fmt.Errorf("seal %s: the reader gave %d bytes, %d announced", h, n, rd.Length())
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("seal %s: %w", h, err)
	}
	fr, err := backend.NewFileReader(tmp)
	if err != nil {
		return err
	}
	if err := s.inner.Save(ctx, rh, fr); err != nil {
		return fmt.Errorf("%s: %w", h, err)
	}
	return nil
}

// open returns a plaintext ReaderAt over the sealed object rh and its size.
func (s *Sealed) open(ctx context.Context, h, rh backend.Handle) (io.ReaderAt, int64, error) {
	if len(s.cfg.Identities) == 0 {
		return nil, 0, fmt.Errorf("read %s: %w", h, ErrNoIdentity)
	}
	fi, err := s.inner.Stat(ctx, rh)
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", h, err)
	}
	ra, size, err := age.DecryptReaderAt(&readerAt{ctx: ctx, b: s.inner, h: rh}, fi.Size, s.cfg.Identities...)
	if err != nil {
		return nil, 0, fmt.Errorf("open %s (%s in the tier): %w", h, rh.Name, err)
	}
	return ra, size, nil
}

// Load implements backend.Backend (an identity is needed). Every chunk
// read is authenticated: a changed byte in the tier is an error.
func (s *Sealed) Load(ctx context.Context, h backend.Handle, length int, offset int64, fn func(io.Reader) error) error {
	rh, err := s.remote(h)
	if err != nil {
		return err
	}
	if length < 0 || offset < 0 {
		return fmt.Errorf("load %s: negative range %d+%d", h, offset, length)
	}
	ra, size, err := s.open(ctx, h, rh)
	if err != nil {
		return err
	}
	if offset > size || length > 0 && offset+int64(length) > size {
		return fmt.Errorf("load %s: range %d+%d of %d bytes: %w", h, offset, length, size, backend.ErrShortRead)
	}
	n := size - offset
	if length > 0 {
		n = int64(length)
	}
	return fn(io.NewSectionReader(ra, offset, n))
}

// Stat implements backend.Backend (see Sizes in the package doc).
func (s *Sealed) Stat(ctx context.Context, h backend.Handle) (backend.FileInfo, error) {
	rh, err := s.remote(h)
	if err != nil {
		return backend.FileInfo{}, err
	}
	fi, err := s.inner.Stat(ctx, rh)
	if err != nil {
		return backend.FileInfo{}, fmt.Errorf("%s: %w", h, err)
	}
	fi.Name = h.Name
	if len(s.cfg.Identities) > 0 {
		if _, fi.Size, err = s.open(ctx, h, rh); err != nil {
			return backend.FileInfo{}, err
		}
	}
	return fi, nil
}

// List implements backend.Backend: names are opened with the name key;
// an object whose name does not open (not this tier's, or the tier key
// itself) is left out.
func (s *Sealed) List(ctx context.Context, t backend.FileType, fn func(backend.FileInfo) error) error {
	return s.inner.List(ctx, t, func(fi backend.FileInfo) error {
		name, err := s.local(t, fi.Name)
		if err != nil {
			return nil
		}
		h, remote := backend.Handle{Type: t, Name: name}, fi.Name
		fi.Name = name
		if len(s.cfg.Identities) > 0 {
			_, size, err := s.open(ctx, h, backend.Handle{Type: t, Name: remote})
			if err != nil {
				return err
			}
			fi.Size = size
		}
		return fn(fi)
	})
}

// Remove implements backend.Backend.
func (s *Sealed) Remove(ctx context.Context, h backend.Handle) error {
	rh, err := s.remote(h)
	if err != nil {
		return err
	}
	if err := s.inner.Remove(ctx, rh); err != nil {
		return fmt.Errorf("%s: %w", h, err)
	}
	return nil
}

// readerAt reads a tier object by ranged loads.
type readerAt struct {
	ctx context.Context
	b   backend.Backend
	h   backend.Handle
}

func (r *readerAt) ReadAt(p []byte, off int64) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n := 0
	err := r.b.Load(r.ctx, r.h, len(p), off, func(rd io.Reader) error {
		var err error
		n, err = io.ReadFull(rd, p)
		return err
	})
	if errors.Is(err, backend.ErrShortRead) {
		// Past the end: io.ReaderAt wants what there is and io.EOF.
		return r.readTail(p, off)
	}
	return n, err
}

func (r *readerAt) readTail(p []byte, off int64) (int, error) {
	fi, err := r.b.Stat(r.ctx, r.h)
	if err != nil {
		return 0, err
	}
	if off >= fi.Size {
		return 0, io.EOF
	}
	n, err := r.ReadAt(p[:fi.Size-off], off)
	if err == nil {
		err = io.EOF
	}
	return n, err
}

// ParseRecipients reads age recipients ("age1...").
func ParseRecipients(ss []string) ([]age.Recipient, error) {
	var out []age.Recipient
	for _, s := range ss {
		r, err := age.ParseX25519Recipient(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("recipient %q: %w", s, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// ParseIdentities reads an age identity file (lines "AGE-SECRET-KEY-1...",
// comments with '#').
func ParseIdentities(r io.Reader) ([]age.Identity, error) {
	ids, err := age.ParseIdentities(r)
	if err != nil {
		return nil, fmt.Errorf("identity file: %w", err)
	}
	return ids, nil
}
