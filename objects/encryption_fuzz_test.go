package objects

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// FuzzParseEncryptionConfig feeds arbitrary bytes to the reader of the
// stored EncryptionConfiguration (kept with each version, read back by get
// and diff). Whatever it accepts must be usable: every key it keeps has a
// size its cipher takes, and a value encrypted with that key, the way the
// apiserver marks it, decrypts back to the plaintext. Whatever it refuses,
// it refuses with an error that quotes no secret.
func FuzzParseEncryptionConfig(f *testing.F) {
	f.Add([]byte(encryptionConfigYAML))
	f.Add([]byte(`{"kind":"EncryptionConfiguration","apiVersion":"apiserver.config.k8s.io/v1","resources":[{"resources":["secrets","*.apps"],` +
		`"providers":[{"aesgcm":{"keys":[{"name":"g","secret":"` + b64(gcmKey[:16]) + `"}]}},{"identity":{}}]}]}`))
	f.Add([]byte("apiVersion: v1\nkind: EncryptionConfig\nresources:\n- resources: ['*.*']\n  providers:\n  - kms:\n      name: vault\n  - secretbox:\n      keys:\n      - name: a:b\n        secret: " + b64(boxKey) + "\n"))
	f.Add([]byte("kind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - aescbc:\n      keys:\n      - name: k\n        secret: '!!notbase64SECRETVALUE'\n"))
	f.Add([]byte("kind: EncryptionConfiguration\nresources:\n- providers:\n  - aescbc:\n      keys:\n      - name: ''\n        secret: " + b64(make([]byte, 24)) + "\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 64<<10 {
			return // the file is a few hundred bytes; bound the YAML work
		}
		kr, err := ParseEncryptionConfig(data)
		if err != nil {
			for _, s := range secretsIn(data) {
				if strings.Contains(err.Error(), s) {
					t.Fatalf("error quotes secret %q: %v", s, err)
				}
			}
			return
		}
		const etcdKey = "/registry/secrets/ns/s"
		plain := []byte("k8s\x00plain")
		for _, g := range kr.groups {
			for _, key := range g.keys {
				if err := checkKeySize(key.provider, len(key.secret)); err != nil {
					t.Fatalf("kept %s key %q: %v", key.provider, key.name, err)
				}
				v, err := encrypt(key.provider, key.name, key.secret, etcdKey, plain)
				if err != nil {
					t.Fatal(err)
				}
				got, err := kr.Decrypt(etcdKey, v)
				if err != nil || !bytes.Equal(got, plain) {
					t.Fatalf("%s key %q: a value it encrypted decrypts to %q, %v", key.provider, key.name, got, err)
				}
				if err == nil && strings.Contains(kr.describe(), base64.StdEncoding.EncodeToString(key.secret)) {
					t.Fatalf("describe quotes a secret: %s", kr.describe())
				}
			}
		}
	})
}

// secretsIn digs every key secret out of an EncryptionConfiguration the
// way ParseEncryptionConfig reads it, for checking that errors do not
// quote them. Short ones are left out: they match by chance.
func secretsIn(data []byte) []string {
	var c encryptionConfig
	if yaml.Unmarshal(data, &c) != nil {
		return nil
	}
	var out []string
	for _, r := range c.Resources {
		for _, p := range r.Providers {
			for _, kc := range []*keysConfig{p.AESCBC, p.AESGCM, p.Secretbox} {
				if kc == nil {
					continue
				}
				for _, k := range kc.Keys {
					if len(k.Secret) >= 8 {
						out = append(out, k.Secret)
					}
				}
			}
		}
	}
	return out
}
