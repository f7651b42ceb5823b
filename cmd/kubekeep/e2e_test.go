package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubekeep/kubekeep/internal/testetcd"
)

// The object and etcd restore stories through the CLI, against a real
// TLS etcd on a kubeadm-like sandbox: back up, delete a ConfigMap, back
// up again; then get it back from the first version, see it in objects
// and diff, restore the first version's etcd data dir, and drill the
// second version so it counts as verified.
func TestCLIBackupGetDiffRestoreDrill(t *testing.T) {
	root := testetcd.SandboxT(t)
	srv := testetcd.StartT(t, root)
	ctx := context.Background()
	if _, err := srv.LoadCluster(ctx); err != nil {
		t.Fatal(err)
	}
	store := filepath.Join(t.TempDir(), "store")
	kk := func(args ...string) (string, error) {
		t.Helper()
		return runCLI(t, append([]string{"--root", root.Dir, "--store", store, "--allow-same-filesystem", "--log-level", "error"}, args...)...)
	}
	backupID := func() string {
		t.Helper()
		out, err := kk("backup", "-o", "json")
		if err != nil {
			t.Fatalf("backup: %v", err)
		}
		var res struct {
			ID     string `json:"id"`
			Status string `json:"status"`
		}
		if err := json.Unmarshal([]byte(out), &res); err != nil || res.ID == "" || res.Status != "ok" {
			t.Fatalf("backup -o json: %v %q", err, out)
		}
		return res.ID
	}

	first := backupID()
	cli := srv.ClientT(t)
	if _, err := cli.Delete(ctx, testetcd.Key("configmaps", "shop", "shop-settings")); err != nil {
		t.Fatal(err)
	}
	if _, err := testetcd.PutObject(ctx, cli, "configmaps", &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "added-later", Namespace: "shop"}, Data: map[string]string{"k": "v"}}); err != nil {
		t.Fatal(err)
	}
	second := backupID()

	out, err := kk("get", "--version", first, "configmaps/shop/shop-settings", "-o", "yaml")
	if err != nil {
		t.Fatalf("get from the first version: %v", err)
	}
	for _, want := range []string{"kind: ConfigMap", "name: shop-settings", "currency: EUR"} {
		if !strings.Contains(out, want) {
			t.Errorf("get output lacks %q:\n%s", want, out)
		}
	}
	for _, gone := range []string{"resourceVersion", "uid:", "managedFields"} {
		if strings.Contains(out, gone) {
			t.Errorf("get output keeps %q, kubectl apply would choke:\n%s", gone, out)
		}
	}
	if _, err := kk("get", "--version", second, "configmaps/shop/shop-settings"); err == nil {
		t.Error("the deleted ConfigMap must not be found in the second version")
	}

	out, err = kk("objects", "--version", first, "configmaps", "-n", "shop", "-o", "json")
	if err != nil || !strings.Contains(out, "shop-settings") || strings.Contains(out, "added-later") {
		t.Errorf("objects of the first version: %v\n%s", err, out)
	}
	out, err = kk("diff", first, second)
	if err != nil {
		t.Fatalf("diff: %v", err)
	}
	if !lineHasAll(out, "removed", "shop-settings") || !lineHasAll(out, "added", "added-later") {
		t.Errorf("diff should show shop-settings removed and added-later added:\n%s", out)
	}

	to := filepath.Join(t.TempDir(), "etcd")
	out, err = kk("restore", "etcd", "--version", first, "--to", to)
	if err != nil {
		t.Fatalf("restore etcd: %v\n%s", err, out)
	}
	if st, err := os.Stat(filepath.Join(to, "member", "snap", "db")); err != nil || st.Size() == 0 {
		t.Errorf("restored data dir has no db: %v", err)
	}
	if _, err := kk("restore", "etcd", "--version", first, "--to", to); err == nil {
		t.Error("restoring over a non-empty data dir must be refused")
	}

	if out, err = kk("drill", "--version", second); err != nil {
		t.Fatalf("drill: %v\n%s", err, out)
	}
	out, err = kk("versions", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var vs []struct {
		ID       string `json:"id"`
		Verified bool   `json:"verified"`
	}
	if err := json.Unmarshal([]byte(out), &vs); err != nil || len(vs) != 2 {
		t.Fatalf("versions: %v %s", err, out)
	}
	if vs[0].ID != first || vs[0].Verified || vs[1].ID != second || !vs[1].Verified {
		t.Errorf("only the drilled version is verified: %+v", vs)
	}
}

// lineHasAll reports whether one line of out holds all of words.
func lineHasAll(out string, words ...string) bool {
	for _, line := range strings.Split(out, "\n") {
		all := true
		for _, w := range words {
			all = all && strings.Contains(line, w)
		}
		if all {
			return true
		}
	}
	return false
}
