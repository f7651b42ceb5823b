package testetcd_test

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/kubekeep/kubekeep/internal/testetcd"
)

// TestServerServesTLSObjectsAndSurvivesRestart: the server takes only the
// sandbox's client certificate, stores objects as the apiserver does, and
// keeps them across a restart on the same data dir.
func TestServerServesTLSObjectsAndSurvivesRestart(t *testing.T) {
	r := testetcd.SandboxT(t)
	srv := testetcd.StartT(t, r)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	keys, err := srv.LoadCluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cli := srv.ClientT(t)
	resp, err := cli.Get(ctx, keys[0])
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("get %s: %v", keys[0], err)
	}
	v := resp.Kvs[0].Value
	if string(v[:4]) != "k8s\x00" {
		t.Fatalf("value lacks the k8s protobuf magic: %q", v[:min(len(v), 8)])
	}
	obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(v, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	cm, ok := obj.(*corev1.ConfigMap)
	if !ok || cm.Name != "kubeadm-config" || cm.Data["ClusterConfiguration"] == "" {
		t.Fatalf("decoded %T %+v", obj, obj)
	}

	if err := srv.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	cli = srv.ClientT(t)
	resp, err = cli.Get(ctx, keys[len(keys)-1])
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("after restart: %v %v", err, resp)
	}
	if !srv.Running() {
		t.Fatal("not running after restart")
	}
	srv.Stop()
	if srv.Running() {
		t.Fatal("running after stop")
	}
}
