package backup

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"testing"
	"time"

	"github.com/kubekeep/kubekeep/config"
	"github.com/kubekeep/kubekeep/etcdsnap"
	"github.com/kubekeep/kubekeep/internal/testetcd"
)

// The values a journal version reads back from etcd may be larger than
// one gRPC message (80 values of a MiB here, the client's limit is 64
// MiB): the digest is still read, in smaller transactions, and equals the
// fold of the values as put. Before, the one transaction failed, the
// journal version fell back to a full snapshot, and on a busy 8 GiB etcd
// every version after it did too (bench-agent).
func TestValuesDigestOfLargeValues(t *testing.T) {
	root := testetcd.SandboxT(t)
	srv := testetcd.StartT(t, root)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	store := openStore(t)
	etcdCfg := config.Default().Etcd
	res := mustRun(t, Options{Root: root.Dir, Store: store, Etcd: etcdCfg})
	cc, ok := ClientConfig(root.Dir, res.Set, etcdCfg)
	if !ok {
		t.Fatal("no etcd client config")
	}
	cli, _, _, err := etcdsnap.ConnectAny(ctx, cc)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	put := srv.ClientT(t)
	var keys []string
	values := map[string][]byte{}
	for i := range 80 {
		k := fmt.Sprintf("/registry/configmaps/big/v%03d", i)
		v := make([]byte, 1<<20)
		for j := range v {
			v[j] = byte(i + j)
		}
		if _, err := put.Put(ctx, k, string(v)); err != nil {
			t.Fatal(err)
		}
		keys, values[k] = append(keys, k), v
	}
	keys = append(keys, "/registry/configmaps/big/absent")
	rev := int64(0)
	if r, err := put.Get(ctx, "x"); err == nil {
		rev = r.Header.Revision
	}
	got, err := ValuesDigest(ctx, cli, keys, rev)
	if err != nil {
		t.Fatalf("values digest of 80 MiB of values: %v", err)
	}
	h := sha256.New()
	var n [8]byte
	for _, k := range keys {
		binary.BigEndian.PutUint64(n[:], uint64(len(k)))
		h.Write(n[:])
		h.Write([]byte(k))
		v, ok := values[k]
		if !ok {
			h.Write([]byte{0})
			continue
		}
		h.Write([]byte{1})
		sum := sha256.Sum256(v)
		h.Write(sum[:])
	}
	want := hex.EncodeToString(h.Sum(nil))
	if got != want {
		t.Errorf("digest %s, want %s (the fold of the values put)", got, want)
	}
	// Read in transactions cut by the values' sizes (4 MiB each here):
	// the same digest.
	sized, err := ValuesDigestSized(ctx, cli, keys, rev, func(k string) int { return len(values[k]) })
	if err != nil || sized != want {
		t.Errorf("digest read by size: %s %v, want %s", sized, err, want)
	}
}
