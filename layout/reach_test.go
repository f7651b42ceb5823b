package layout

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kubekeep/kubekeep/internal/testetcd"
)

// TestDiscoveredEtcdIsReachable starts a real etcd on a sandbox root, as
// the root's etcd.yaml describes it, and talks to it with nothing but what
// Discover returned: endpoints, CA and client cert as host paths joined
// under the root.
func TestDiscoveredEtcdIsReachable(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real etcd")
	}
	r := testetcd.SandboxT(t)
	testetcd.StartT(t, r)

	s, err := Discover(r.Dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	file := func(host string) string {
		p, err := Join(r.Dir, host)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	pair, err := tls.LoadX509KeyPair(file(s.Etcd.CertFile), file(s.Etcd.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(file(s.Etcd.CAFile))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("no CA in", s.Etcd.CAFile)
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   s.Etcd.Endpoints,
		DialTimeout: 10 * time.Second,
		TLS:         &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: pool, MinVersion: tls.VersionTLS12},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, "/registry/kubekeep/probe", "ok"); err != nil {
		t.Fatalf("put via discovered endpoints %v: %v", s.Etcd.Endpoints, err)
	}
	st, err := cli.Status(ctx, s.Etcd.Endpoints[0])
	if err != nil {
		t.Fatal(err)
	}
	members, err := cli.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(members.Members) != 1 || members.Members[0].Name != s.Etcd.Name ||
		len(members.Members[0].PeerURLs) != 1 || members.Members[0].PeerURLs[0] != s.Etcd.PeerURLs[0] {
		t.Errorf("member %+v, discovered name %q peers %v", members.Members, s.Etcd.Name, s.Etcd.PeerURLs)
	}
	if st.Header.MemberId != members.Members[0].ID {
		t.Errorf("status from member %x", st.Header.MemberId)
	}
	// The data dir discovery names is the one etcd writes.
	if _, err := os.Stat(file(s.Etcd.DataDir + "/member/snap")); err != nil {
		t.Errorf("discovered data dir %s is not etcd's: %v", s.Etcd.DataDir, err)
	}
}
