package objects

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"

	"golang.org/x/crypto/nacl/secretbox"
	"sigs.k8s.io/yaml"
)

// The apiserver's prefix transformers (apiserver/pkg/server/options/
// encryptionconfig) mark each encrypted value with
// "k8s:enc:<provider>:<version>:<key or plugin name>:" before the ciphertext.
const encPrefix = "k8s:enc:"

// Providers kubekeep decrypts; kms needs the KMS plugin and cannot be.
const (
	ProviderAESCBC    = "aescbc"
	ProviderAESGCM    = "aesgcm"
	ProviderSecretbox = "secretbox"
	ProviderKMS       = "kms"
)

// Encryption names how a value was encrypted at rest. It holds names only,
// never key material.
type Encryption struct {
	Provider string // aescbc, aesgcm, secretbox, kms
	Version  string // "v1" (kms also "v2")
	KeyName  string // the key's name in the EncryptionConfiguration (kms: the plugin name)
}

func (e Encryption) String() string {
	if e.Provider == ProviderKMS {
		return fmt.Sprintf("kms %s plugin %q", e.Version, e.KeyName)
	}
	return fmt.Sprintf("%s key %q", e.Provider, e.KeyName)
}

// EncryptedError is returned for a value encrypted at rest when no
// EncryptionConfiguration was given.
type EncryptedError struct {
	Key string
	Encryption
}

func (e *EncryptedError) Error() string {
	if e.Provider == ProviderKMS {
		return fmt.Sprintf("%s is encrypted at rest by %s: kubekeep cannot decrypt KMS-encrypted values (the key stays in the KMS)", e.Key, e.Encryption)
	}
	return fmt.Sprintf("%s is encrypted at rest with %s: pass the apiserver's EncryptionConfiguration to decrypt it", e.Key, e.Encryption)
}

// ParseEncryption reads the provider and key name off an encrypted value.
func ParseEncryption(raw []byte) (*Encryption, error) {
	rest, ok := bytes.CutPrefix(raw, []byte(encPrefix))
	if !ok {
		return nil, errors.New("value is not encrypted at rest")
	}
	var fields [3]string
	for i := range fields {
		j := bytes.IndexByte(rest, ':')
		if j <= 0 || j > 256 {
			return nil, fmt.Errorf("encrypted value has a malformed %q prefix", encPrefix)
		}
		fields[i], rest = string(rest[:j]), rest[j+1:]
	}
	return &Encryption{Provider: fields[0], Version: fields[1], KeyName: fields[2]}, nil
}

// Keyring holds the keys of an EncryptionConfiguration.
type Keyring struct {
	groups []providerGroup

	// A deferred keyring (DeferKeyring) is load's, read at the first
	// encrypted value.
	load    func() (*Keyring, error)
	once    sync.Once
	loaded  *Keyring
	loadErr error
}

// DeferKeyring is a keyring that load reads when the first encrypted value
// needs it, and never when none does: a `get` of an unencrypted object
// costs no EncryptionConfiguration read, and a broken one fails only the
// values it would decrypt. load returning nil (no keys known) makes every
// encrypted value fail as it does without a keyring, naming its provider
// and key.
func DeferKeyring(load func() (*Keyring, error)) *Keyring {
	return &Keyring{load: load}
}

// resolve is the keyring that decrypts: k itself, or what a deferred k
// loads (nil: none).
func (k *Keyring) resolve() (*Keyring, error) {
	if k == nil || k.load == nil {
		return k, nil
	}
	k.once.Do(func() {
		k.loaded, k.loadErr = k.load()
		if k.loaded != nil && k.loaded.load != nil {
			k.loaded, k.loadErr = nil, errors.New("a deferred keyring loaded another deferred keyring")
		}
	})
	return k.loaded, k.loadErr
}

// providerGroup is one resources[] entry: the resources it covers and its
// keys in order.
type providerGroup struct {
	resources []string
	keys      []namedKey
}

type namedKey struct {
	provider string
	name     string
	secret   []byte
}

// encryptionConfig is apiserver.config.k8s.io/v1 EncryptionConfiguration,
// limited to what decryption needs.
type encryptionConfig struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Resources  []struct {
		Resources []string `json:"resources"`
		Providers []struct {
			AESCBC    *keysConfig `json:"aescbc,omitempty"`
			AESGCM    *keysConfig `json:"aesgcm,omitempty"`
			Secretbox *keysConfig `json:"secretbox,omitempty"`
			Identity  *struct{}   `json:"identity,omitempty"`
			KMS       *struct {
				Name string `json:"name"`
			} `json:"kms,omitempty"`
		} `json:"providers"`
	} `json:"resources"`
}

type keysConfig struct {
	Keys []struct {
		Name   string `json:"name"`
		Secret string `json:"secret"`
	} `json:"keys"`
}

// LoadEncryptionConfig reads an EncryptionConfiguration file.
func LoadEncryptionConfig(path string) (*Keyring, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("encryption config: %w", err)
	}
	k, err := ParseEncryptionConfig(data)
	if err != nil {
		return nil, fmt.Errorf("encryption config %s: %w", path, err)
	}
	return k, nil
}

// ParseEncryptionConfig reads an EncryptionConfiguration (YAML or JSON).
func ParseEncryptionConfig(data []byte) (*Keyring, error) {
	var c encryptionConfig
	if err := yaml.Unmarshal(data, &c); err != nil {
		return nil, err
	}
	// "EncryptionConfig" in apiVersion v1 is the pre-1.13 spelling; the
	// apiserver still reads it.
	if c.Kind != "EncryptionConfiguration" && c.Kind != "EncryptionConfig" {
		return nil, fmt.Errorf("kind %q: want EncryptionConfiguration", c.Kind)
	}
	k := &Keyring{}
	for i, r := range c.Resources {
		g := providerGroup{resources: r.Resources}
		for j, p := range r.Providers {
			for _, pk := range []struct {
				name string
				cfg  *keysConfig
			}{{ProviderAESCBC, p.AESCBC}, {ProviderAESGCM, p.AESGCM}, {ProviderSecretbox, p.Secretbox}} {
				if pk.cfg == nil {
					continue
				}
				for _, key := range pk.cfg.Keys {
					secret, err := base64.StdEncoding.DecodeString(key.Secret)
					if err != nil {
						// The error would quote the secret: say where, not what.
						return nil, fmt.Errorf("resources[%d].providers[%d].%s key %q: secret is not valid base64", i, j, pk.name, key.Name)
					}
					if err := checkKeySize(pk.name, len(secret)); err != nil {
						return nil, fmt.Errorf("resources[%d].providers[%d].%s key %q: %w", i, j, pk.name, key.Name, err)
					}
					g.keys = append(g.keys, namedKey{provider: pk.name, name: key.Name, secret: secret})
				}
			}
		}
		k.groups = append(k.groups, g)
	}
	return k, nil
}

func checkKeySize(provider string, n int) error {
	switch provider {
	case ProviderSecretbox:
		if n != 32 {
			return fmt.Errorf("secretbox keys are 32 bytes, this one is %d", n)
		}
	default:
		if n != 16 && n != 24 && n != 32 {
			return fmt.Errorf("AES keys are 16, 24 or 32 bytes, this one is %d", n)
		}
	}
	return nil
}

// Decrypt returns the plaintext of a value stored at etcdKey.
func (k *Keyring) Decrypt(etcdKey string, raw []byte) ([]byte, error) {
	kr, err := k.resolve()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", etcdKey, err)
	}
	if kr == nil {
		return nil, fmt.Errorf("%s: no encryption keys known", etcdKey)
	}
	p, _, err := kr.decrypt(etcdKey, raw)
	return p, err
}

// decrypt is Decrypt that also says which key opened the value. Keys are
// picked as the apiserver's prefix transformers pick them: by the whole
// "k8s:enc:<provider>:v1:<name>:" prefix, not by splitting the value at
// colons, since a key's name may hold colons of its own (the apiserver
// allows any non-empty name for aescbc, aesgcm and secretbox keys).
func (k *Keyring) decrypt(etcdKey string, raw []byte) ([]byte, *Encryption, error) {
	var tried int
	var lastErr error
	var used *Encryption
	for _, key := range k.candidates(etcdKey) {
		// Only v1 exists for these providers; decryptBody refuses others.
		prefix := encPrefix + key.provider + ":v1:" + key.name + ":"
		if !bytes.HasPrefix(raw, []byte(prefix)) {
			continue
		}
		tried++
		used = &Encryption{Provider: key.provider, Version: "v1", KeyName: key.name}
		p, err := decryptBody(key, "v1", etcdKey, raw[len(prefix):])
		if err == nil {
			return p, used, nil
		}
		lastErr = err
	}
	if tried > 0 {
		return nil, used, fmt.Errorf("%s: decrypt with %s: %w", etcdKey, used, lastErr)
	}
	enc, err := ParseEncryption(raw)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", etcdKey, err)
	}
	if enc.Provider == ProviderKMS {
		return nil, enc, &EncryptedError{Key: etcdKey, Encryption: *enc}
	}
	if enc.Version != "v1" && (enc.Provider == ProviderAESCBC || enc.Provider == ProviderAESGCM || enc.Provider == ProviderSecretbox) {
		return nil, enc, fmt.Errorf("%s: unknown %s format version %q", etcdKey, enc.Provider, enc.Version)
	}
	return nil, enc, fmt.Errorf("%s is encrypted with %s, which the EncryptionConfiguration does not have (it has %s)",
		etcdKey, enc, k.describe())
}

// candidates lists keys from the resources[] entries that cover the key's
// resource first: two entries may reuse a key name with different secrets.
func (k *Keyring) candidates(etcdKey string) []namedKey {
	ref, _ := RefFromKey(etcdKey)
	var first, rest []namedKey
	for _, g := range k.groups {
		if g.covers(ref) {
			first = append(first, g.keys...)
		} else {
			rest = append(rest, g.keys...)
		}
	}
	return append(first, rest...)
}

func (g providerGroup) covers(ref Ref) bool {
	for _, r := range g.resources {
		res, grp, _ := strings.Cut(r, ".")
		switch {
		case r == "*.*",
			res == ref.Resource && grp == ref.Group,
			res == "*" && grp == ref.Group:
			return true
		}
	}
	return false
}

func (k *Keyring) describe() string {
	seen := map[string]bool{}
	var names []string
	for _, g := range k.groups {
		for _, key := range g.keys {
			n := fmt.Sprintf("%s key %q", key.provider, key.name)
			if !seen[n] {
				seen[n] = true
				names = append(names, n)
			}
		}
	}
	if len(names) == 0 {
		return "no keys"
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

const (
	gcmNonceSize       = 12
	secretboxNonceSize = 24
)

var errShort = errors.New("ciphertext shorter than its nonce and tag")

// decryptBody undoes one provider's transformer (apiserver/pkg/storage/
// value/encrypt/{aes,secretbox}):
//   - aescbc: 16-byte IV, then AES-CBC of the data with PKCS#7 padding.
//   - aesgcm: 12-byte nonce, then AES-GCM sealed data; the additional data
//     is the etcd key, so a value copied under another key fails.
//   - secretbox: 24-byte nonce, then NaCl secretbox.
func decryptBody(key namedKey, version, etcdKey string, body []byte) ([]byte, error) {
	if version != "v1" {
		return nil, fmt.Errorf("unknown %s format version %q", key.provider, version)
	}
	switch key.provider {
	case ProviderAESCBC:
		block, err := aes.NewCipher(key.secret)
		if err != nil {
			return nil, err
		}
		if len(body) < 2*aes.BlockSize || len(body)%aes.BlockSize != 0 {
			return nil, errors.New("ciphertext is not a whole number of AES blocks after the IV")
		}
		out := make([]byte, len(body)-aes.BlockSize)
		cipher.NewCBCDecrypter(block, body[:aes.BlockSize]).CryptBlocks(out, body[aes.BlockSize:])
		// The apiserver checks the padding bytes and that the pad fits, not
		// that it is at most one block; accept exactly what it accepts.
		pad := int(out[len(out)-1])
		if pad == 0 || pad > len(out) {
			return nil, errors.New("bad PKCS#7 padding (wrong key?)")
		}
		for _, b := range out[len(out)-pad:] {
			if int(b) != pad {
				return nil, errors.New("bad PKCS#7 padding (wrong key?)")
			}
		}
		return out[:len(out)-pad], nil
	case ProviderAESGCM:
		block, err := aes.NewCipher(key.secret)
		if err != nil {
			return nil, err
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, err
		}
		if len(body) < gcmNonceSize+aead.Overhead() {
			return nil, errShort
		}
		p, err := aead.Open(nil, body[:gcmNonceSize], body[gcmNonceSize:], []byte(etcdKey))
		if err != nil {
			return nil, fmt.Errorf("AES-GCM authentication failed (wrong key, or value moved from another key): %w", err)
		}
		return p, nil
	case ProviderSecretbox:
		if len(body) < secretboxNonceSize+secretbox.Overhead {
			return nil, errShort
		}
		var nonce [secretboxNonceSize]byte
		var k [32]byte
		copy(nonce[:], body)
		copy(k[:], key.secret)
		p, ok := secretbox.Open(nil, body[secretboxNonceSize:], &nonce, &k)
		if !ok {
			return nil, errors.New("secretbox authentication failed (wrong key?)")
		}
		return p, nil
	}
	return nil, fmt.Errorf("unknown provider %q", key.provider)
}

// encrypt is the inverse of decryptBody with a fresh random nonce, plus the
// prefix. kubekeep never writes to etcd; tests use it to build encrypted
// snapshots the way an apiserver would.
func encrypt(provider, keyName string, secret []byte, etcdKey string, plain []byte) ([]byte, error) {
	if err := checkKeySize(provider, len(secret)); err != nil {
		return nil, err
	}
	out := []byte(encPrefix + provider + ":v1:" + keyName + ":")
	switch provider {
	case ProviderAESCBC:
		block, err := aes.NewCipher(secret)
		if err != nil {
			return nil, err
		}
		pad := aes.BlockSize - len(plain)%aes.BlockSize
		buf := make([]byte, aes.BlockSize+len(plain)+pad)
		if _, err := rand.Read(buf[:aes.BlockSize]); err != nil {
			return nil, err
		}
		copy(buf[aes.BlockSize:], plain)
		for i := len(buf) - pad; i < len(buf); i++ {
			buf[i] = byte(pad)
		}
		cipher.NewCBCEncrypter(block, buf[:aes.BlockSize]).CryptBlocks(buf[aes.BlockSize:], buf[aes.BlockSize:])
		return append(out, buf...), nil
	case ProviderAESGCM:
		block, err := aes.NewCipher(secret)
		if err != nil {
			return nil, err
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, err
		}
		nonce := make([]byte, gcmNonceSize)
		if _, err := rand.Read(nonce); err != nil {
			return nil, err
		}
		return aead.Seal(append(out, nonce...), nonce, plain, []byte(etcdKey)), nil
	case ProviderSecretbox:
		var nonce [secretboxNonceSize]byte
		var k [32]byte
		if _, err := rand.Read(nonce[:]); err != nil {
			return nil, err
		}
		copy(k[:], secret)
		return secretbox.Seal(append(out, nonce[:]...), plain, &nonce, &k), nil
	}
	return nil, fmt.Errorf("unknown provider %q", provider)
}
