package objects

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/nacl/secretbox"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

var (
	cbcKey = bytes.Repeat([]byte{0x11}, 32)
	gcmKey = bytes.Repeat([]byte{0x22}, 32)
	boxKey = bytes.Repeat([]byte{0x33}, 32)
	// oldKey exists to prove the name, not the order, picks the key.
	oldKey = bytes.Repeat([]byte{0x44}, 32)
)

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

var encryptionConfigYAML = `apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [secrets]
    providers:
      - aescbc:
          keys:
            - name: key1
              secret: ` + b64(cbcKey) + `
            - name: old
              secret: ` + b64(oldKey) + `
      - aesgcm:
          keys:
            - name: gcm1
              secret: ` + b64(gcmKey) + `
      - secretbox:
          keys:
            - name: box1
              secret: ` + b64(boxKey) + `
      - identity: {}
  - resources: [configmaps]
    providers:
      - identity: {}
`

// TestEncryptedSnapshot stores secrets encrypted by each provider in a real
// etcd, one of them built by hand with crypto/aes (not by this package),
// and reads them back through a snapshot.
func TestEncryptedSnapshot(t *testing.T) {
	e := startEtcd(t)
	c := e.Client
	plain := func(name string) []byte {
		s := &corev1.Secret{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"}, ObjectMeta: storedMeta("enc", name),
			Data: map[string][]byte{"token": []byte("t-" + name)}}
		return protoValue(t, s)
	}
	keys := map[string]string{}
	for _, p := range []struct{ provider, key, name string }{
		{ProviderAESCBC, "key1", "s-cbc"},
		{ProviderAESCBC, "old", "s-cbc-old"},
		{ProviderAESGCM, "gcm1", "s-gcm"},
		{ProviderSecretbox, "box1", "s-box"},
	} {
		secret := map[string][]byte{"key1": cbcKey, "old": oldKey, "gcm1": gcmKey, "box1": boxKey}[p.key]
		etcdKey := "/registry/secrets/enc/" + p.name
		v, err := encrypt(p.provider, p.key, secret, etcdKey, plain(p.name))
		if err != nil {
			t.Fatal(err)
		}
		put(t, c, etcdKey, v)
		keys[p.name] = etcdKey
	}
	// Independent aescbc: the documented format assembled by hand.
	handKey := "/registry/secrets/enc/s-hand"
	put(t, c, handKey, handCBC(t, "key1", cbcKey, plain("s-hand")))
	// Independent aesgcm, with the etcd key as additional data.
	gcmHandKey := "/registry/secrets/enc/s-gcm-hand"
	put(t, c, gcmHandKey, handGCM(t, "gcm1", gcmKey, gcmHandKey, plain("s-gcm-hand")))
	// A GCM value moved under another key must not decrypt.
	put(t, c, "/registry/secrets/enc/moved", handGCM(t, "gcm1", gcmKey, gcmHandKey, plain("moved")))
	kmsVal := append([]byte("k8s:enc:kms:v2:vault:"), []byte("opaque")...)
	put(t, c, "/registry/secrets/enc/s-kms", kmsVal)
	unknownKey := "/registry/secrets/enc/s-rotated-away"
	v, err := encrypt(ProviderAESCBC, "key0", cbcKey, unknownKey, plain("x"))
	if err != nil {
		t.Fatal(err)
	}
	put(t, c, unknownKey, v)

	snap, err := Open(snapshotFile(t, e, "enc.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()

	// Without keys: a clear error that names the provider and key.
	_, err = snap.Get(Ref{Resource: "secrets", Namespace: "enc", Name: "s-cbc"})
	var ee *EncryptedError
	if !errors.As(err, &ee) || ee.Provider != "aescbc" || ee.KeyName != "key1" ||
		!strings.Contains(err.Error(), `aescbc key "key1"`) || !strings.Contains(err.Error(), "EncryptionConfiguration") {
		t.Fatalf("no keyring: %v", err)
	}
	raw, err := snap.RawValue("/registry/secrets/enc/s-cbc")
	if err != nil || !bytes.HasPrefix(raw, []byte("k8s:enc:aescbc:v1:key1:")) {
		t.Fatalf("raw value %q %v", raw[:min(len(raw), 30)], err)
	}

	cfgPath := filepath.Join(t.TempDir(), "enc.yaml")
	if err := os.WriteFile(cfgPath, []byte(encryptionConfigYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	kr, err := LoadEncryptionConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	snap.UseEncryption(kr)
	for name, provider := range map[string]string{"s-cbc": "aescbc", "s-cbc-old": "aescbc", "s-gcm": "aesgcm",
		"s-box": "secretbox", "s-hand": "aescbc", "s-gcm-hand": "aesgcm"} {
		o, err := snap.Get(Ref{Resource: "secrets", Namespace: "enc", Name: name})
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if o.EncryptedBy == nil || o.EncryptedBy.Provider != provider {
			t.Errorf("%s: EncryptedBy = %v, want %s", name, o.EncryptedBy, provider)
		}
		want := b64([]byte("t-" + name))
		if got := o.Content()["data"].(map[string]any)["token"]; got != want {
			t.Errorf("%s: token %v, want %v", name, got, want)
		}
	}
	if _, err := snap.Get(Ref{Resource: "secrets", Namespace: "enc", Name: "moved"}); err == nil || !strings.Contains(err.Error(), "authentication failed") {
		t.Errorf("GCM value under a foreign key: %v", err)
	}
	if _, err := snap.Get(Ref{Resource: "secrets", Namespace: "enc", Name: "s-kms"}); !errors.As(err, &ee) || ee.Provider != "kms" || ee.KeyName != "vault" {
		t.Errorf("kms: %v", err)
	}
	_, err = snap.Get(Ref{Resource: "secrets", Namespace: "enc", Name: "s-rotated-away"})
	if err == nil || !strings.Contains(err.Error(), `aescbc key "key0"`) || !strings.Contains(err.Error(), `aescbc key "key1"`) {
		t.Errorf("missing key: %v", err)
	}
	for _, k := range [][]byte{cbcKey, gcmKey, boxKey} {
		if err != nil && (strings.Contains(err.Error(), b64(k)) || strings.Contains(err.Error(), hex.EncodeToString(k))) {
			t.Error("error message prints key material")
		}
	}
}

// handCBC builds an aescbc value from the format alone: prefix, 16-byte
// IV, AES-CBC with PKCS#7 padding.
func handCBC(t *testing.T, name string, key, plain []byte) []byte {
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	iv := []byte("0123456789abcdef")
	pad := 16 - len(plain)%16
	buf := append(append([]byte{}, plain...), bytes.Repeat([]byte{byte(pad)}, pad)...)
	prev := iv
	out := append([]byte("k8s:enc:aescbc:v1:"+name+":"), iv...)
	for i := 0; i < len(buf); i += 16 {
		x := make([]byte, 16)
		for j := range x {
			x[j] = buf[i+j] ^ prev[j]
		}
		block.Encrypt(x, x)
		out = append(out, x...)
		prev = x
	}
	return out
}

func handGCM(t *testing.T, name string, key []byte, etcdKey string, plain []byte) []byte {
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	nonce := []byte("nonce-12byte")
	return aead.Seal(append([]byte("k8s:enc:aesgcm:v1:"+name+":"), nonce...), nonce, plain, []byte(etcdKey))
}

// TestCBCKnownVector checks decryption against NIST SP 800-38A F.2.1
// (CBC-AES128): the first ciphertext block is the published one, the
// second is the PKCS#7 padding block chained on it.
func TestCBCKnownVector(t *testing.T) {
	key, _ := hex.DecodeString("2b7e151628aed2a6abf7158809cf4f3c")
	iv, _ := hex.DecodeString("000102030405060708090a0b0c0d0e0f")
	pt, _ := hex.DecodeString("6bc1bee22e409f96e93d7e117393172a")
	c1, _ := hex.DecodeString("7649abac8119b246cee98e9b12e9197d")
	block, _ := aes.NewCipher(key)
	c2 := make([]byte, 16)
	for i := range c2 {
		c2[i] = 16 ^ c1[i]
	}
	block.Encrypt(c2, c2)
	body := append(append(append([]byte{}, iv...), c1...), c2...)
	got, err := decryptBody(namedKey{provider: ProviderAESCBC, name: "k", secret: key}, "v1", "/registry/secrets/a/b", body)
	if err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("NIST vector: %x %v, want %x", got, err, pt)
	}
	// And our encryptor's output opens with the hand-made decryption path
	// of crypto/cipher directly.
	v, err := encrypt(ProviderAESCBC, "k", key, "", pt)
	if err != nil {
		t.Fatal(err)
	}
	body = v[len("k8s:enc:aescbc:v1:k:"):]
	out := make([]byte, len(body)-16)
	cipher.NewCBCDecrypter(block, body[:16]).CryptBlocks(out, body[16:])
	if !bytes.Equal(out[:16], pt) || !bytes.Equal(out[16:], bytes.Repeat([]byte{16}, 16)) {
		t.Errorf("encrypt output decrypts to %x", out)
	}
}

func TestSecretboxIndependent(t *testing.T) {
	var nonce [24]byte
	copy(nonce[:], "twenty-four-byte-nonce!!")
	var k [32]byte
	copy(k[:], boxKey)
	val := secretbox.Seal(append([]byte("k8s:enc:secretbox:v1:box1:"), nonce[:]...), []byte("hello"), &nonce, &k)
	kr, err := ParseEncryptionConfig([]byte(encryptionConfigYAML))
	if err != nil {
		t.Fatal(err)
	}
	got, err := kr.Decrypt("/registry/secrets/a/b", val)
	if err != nil || string(got) != "hello" {
		t.Fatalf("%q %v", got, err)
	}
	val[len(val)-1] ^= 1
	if _, err := kr.Decrypt("/registry/secrets/a/b", val); err == nil {
		t.Error("tampered secretbox value decrypted")
	}
}

func TestParseEncryptionConfigErrors(t *testing.T) {
	for name, tc := range map[string]struct{ yaml, want string }{
		"kind":      {"kind: Foo\n", "want EncryptionConfiguration"},
		"base64":    {"kind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - aescbc:\n      keys:\n      - name: k\n        secret: '!!notbase64SECRETVALUE'\n", "not valid base64"},
		"size":      {"kind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - secretbox:\n      keys:\n      - name: k\n        secret: " + b64([]byte("short")) + "\n", "32 bytes"},
		"not yaml":  {"{{{", ""},
		"aes bytes": {"kind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - aesgcm:\n      keys:\n      - name: k\n        secret: " + b64(make([]byte, 20)) + "\n", "16, 24 or 32"},
	} {
		_, err := ParseEncryptionConfig([]byte(tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", name, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "SECRETVALUE") {
			t.Errorf("%s: error quotes the secret: %v", name, err)
		}
	}
}

// TestDecryptKeyNamesWithColons: the apiserver takes any non-empty key name
// for aescbc, aesgcm and secretbox and marks each value with the whole name
// ("k8s:enc:aescbc:v1:team:2024:"). Splitting the value at its colons read
// that as key "team": the wrong key, or none (and a name over 256 bytes as
// a malformed prefix). FuzzParseEncryptionConfig checks the round trip for
// every key a config it accepts holds.
func TestDecryptKeyNamesWithColons(t *testing.T) {
	teamKey := bytes.Repeat([]byte{0x55}, 32)
	long := strings.Repeat("k", 300)
	kr, err := ParseEncryptionConfig([]byte(`kind: EncryptionConfiguration
resources:
- resources: [secrets]
  providers:
  - aescbc:
      keys:
      - {name: "team", secret: "` + b64(cbcKey) + `"}
      - {name: "team:2024", secret: "` + b64(teamKey) + `"}
      - {name: "` + long + `", secret: "` + b64(oldKey) + `"}
  - aesgcm:
      keys:
      - {name: "gcm:a:b", secret: "` + b64(gcmKey) + `"}
`))
	if err != nil {
		t.Fatal(err)
	}
	const etcdKey = "/registry/secrets/default/w1"
	plain := []byte(widgetJSON)
	for name, v := range map[string][]byte{
		"team":      handCBC(t, "team", cbcKey, plain),
		"team:2024": handCBC(t, "team:2024", teamKey, plain),
		long:        handCBC(t, long, oldKey, plain),
		"gcm:a:b":   handGCM(t, "gcm:a:b", gcmKey, etcdKey, plain),
	} {
		got, err := kr.Decrypt(etcdKey, v)
		if err != nil || !bytes.Equal(got, plain) {
			t.Errorf("key %.20q: %q %v", name, got, err)
			continue
		}
		o := &Object{Key: etcdKey, ModRevision: 1}
		if err := o.decode(v, kr); err != nil {
			t.Errorf("key %.20q: decode: %v", name, err)
		} else if o.EncryptedBy == nil || o.EncryptedBy.KeyName != name {
			t.Errorf("key %.20q: EncryptedBy %+v", name, o.EncryptedBy)
		}
	}
}

// A deferred keyring is loaded by the first encrypted value and never by
// an unencrypted one: a get of a ConfigMap neither pays for nor fails on
// the version's EncryptionConfiguration. A load that fails fails the
// encrypted values, naming why; one that knows no keys leaves them as
// without a keyring (the error names provider and key).
func TestDeferredKeyring(t *testing.T) {
	e := startEtcd(t)
	secretKey := "/registry/secrets/enc/s-cbc"
	sec := &corev1.Secret{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"}, ObjectMeta: storedMeta("enc", "s-cbc"),
		Data: map[string][]byte{"token": []byte("t-s-cbc")}}
	v, err := encrypt(ProviderAESCBC, "key1", cbcKey, secretKey, protoValue(t, sec))
	if err != nil {
		t.Fatal(err)
	}
	put(t, e.Client, secretKey, v)
	cm := &corev1.ConfigMap{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"}, ObjectMeta: storedMeta("enc", "plain"),
		Data: map[string]string{"k": "v"}}
	put(t, e.Client, "/registry/configmaps/enc/plain", protoValue(t, cm))
	snap, err := Open(snapshotFile(t, e, "deferred.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	cfgPath := filepath.Join(t.TempDir(), "enc.yaml")
	if err := os.WriteFile(cfgPath, []byte(encryptionConfigYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	secretRef := Ref{Resource: "secrets", Namespace: "enc", Name: "s-cbc"}
	plainRef := Ref{Resource: "configmaps", Namespace: "enc", Name: "plain"}

	loads := 0
	snap.UseEncryption(DeferKeyring(func() (*Keyring, error) { loads++; return LoadEncryptionConfig(cfgPath) }))
	if o, err := snap.Get(plainRef); err != nil || o.Content()["data"].(map[string]any)["k"] != "v" || loads != 0 {
		t.Fatalf("unencrypted get: %v, %d loads of the keyring", err, loads)
	}
	for range 2 {
		o, err := snap.Get(secretRef)
		if err != nil || o.EncryptedBy == nil || o.Content()["data"].(map[string]any)["token"] != b64([]byte("t-s-cbc")) {
			t.Fatalf("encrypted get: %v", err)
		}
	}
	if loads != 1 {
		t.Errorf("keyring loaded %d times, want once", loads)
	}

	snap.UseEncryption(DeferKeyring(func() (*Keyring, error) { return nil, errors.New("enc.yaml:3: bad key") }))
	if _, err := snap.Get(plainRef); err != nil {
		t.Errorf("unencrypted get with a broken config: %v", err)
	}
	if _, err := snap.Get(secretRef); err == nil || !strings.Contains(err.Error(), "enc.yaml:3: bad key") || !strings.Contains(err.Error(), secretKey) {
		t.Errorf("encrypted get with a broken config: %v", err)
	}

	snap.UseEncryption(DeferKeyring(func() (*Keyring, error) { return nil, nil }))
	var ee *EncryptedError
	if _, err := snap.Get(secretRef); !errors.As(err, &ee) || ee.Provider != "aescbc" || ee.KeyName != "key1" {
		t.Errorf("no keys known: %v", err)
	}
}
