package kubenode_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kubekeep/kubekeep/internal/kubenode"
)

func podYAML(name, script string, extra string) string {
	return `apiVersion: v1
kind: Pod
metadata:
  name: ` + name + `
  namespace: kube-system
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 5
  containers:
  - name: ` + name + `
    image: registry.k8s.io/` + name + `:1.0
    command:
    - sh
    - -c
    - '` + script + `'
` + extra
}

func writeManifest(t *testing.T, dir, file, content string) {
	t.Helper()
	// As kubeadm does: write beside, then rename, so a scan never sees
	// half a file.
	tmp := filepath.Join(dir, "."+file+".tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, file)); err != nil {
		t.Fatal(err)
	}
}

func waitLog(t *testing.T, k *kubenode.Kubelet, pod, want string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(k.Log(pod), want) {
		if time.Now().After(deadline) {
			t.Fatalf("pod %s never logged %q; log:\n%s", pod, want, k.Log(pod))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The stand-in kubelet on plain processes (sh): no root, no Kubernetes
// binaries needed.
func TestKubeletStaticPods(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	dir := t.TempDir()
	host := t.TempDir()
	data := filepath.Join(host, "data")
	conf := filepath.Join(host, "conf", "x.conf")
	vols := `    volumeMounts:
    - name: data
      mountPath: ` + data + `
    - name: conf
      mountPath: ` + conf + `
  volumes:
  - name: data
    hostPath:
      path: ` + data + `
      type: DirectoryOrCreate
  - name: conf
    hostPath:
      path: ` + conf + `
      type: FileOrCreate
`
	writeManifest(t, dir, "a.yaml", podYAML("a", `echo start $X in $PWD; exec sleep 300`, `    env:
    - name: X
      value: one
`+vols))
	writeManifest(t, dir, "crash.yaml", podYAML("crash", `echo crashing; exit 3`, ""))
	writeManifest(t, dir, "other.yaml", strings.Replace(podYAML("other", "true", ""), "    - sh\n", "    - kube-scheduler\n", 1))
	writeManifest(t, dir, "moved.yaml", podYAML("moved", "true", `    volumeMounts:
    - name: v
      mountPath: /elsewhere
  volumes:
  - name: v
    hostPath:
      path: `+data+`
`))
	if err := os.WriteFile(filepath.Join(dir, ".hidden.yaml"), []byte("not: a pod"), 0o600); err != nil {
		t.Fatal(err)
	}

	k, err := kubenode.StartKubelet(kubenode.KubeletConfig{
		ManifestsDir: dir, NodeName: "cp1", Commands: map[string]string{"sh": sh}, Logf: t.Logf, Poll: 50 * time.Millisecond, MaxBackoff: 2 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer k.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	a, err := k.WaitRunning(ctx, "a-cp1")
	if err != nil {
		t.Fatal(err)
	}
	waitLog(t, k, "a", "start one in "+os.TempDir()+"/kubenode-kubelet-")
	if fi, err := os.Stat(data); err != nil || !fi.IsDir() {
		t.Errorf("DirectoryOrCreate did not make %s: %v", data, err)
	}
	if fi, err := os.Stat(conf); err != nil || !fi.Mode().IsRegular() || fi.Size() != 0 {
		t.Errorf("FileOrCreate did not make an empty %s: %v", conf, err)
	}
	if got := strings.Join(a.Args, " "); got != "-c echo start $X in $PWD; exec sleep 300" {
		t.Errorf("args %q", got)
	}
	for _, p := range []string{"other", "moved"} {
		s, ok := k.Pod(p)
		if !ok || s.Running || s.Error == "" {
			t.Errorf("pod %s should be refused: %+v", p, s)
		}
	}
	if s, _ := k.Pod("other"); !strings.Contains(s.Error, `"kube-scheduler"`) {
		t.Errorf("refusal should name the command: %q", s.Error)
	}
	if len(k.Pods()) != 4 {
		t.Errorf("pods %+v: want 4 (the dotfile ignored)", k.Pods())
	}

	// A crashing container is restarted with backoff.
	deadline := time.Now().Add(20 * time.Second)
	for {
		s, _ := k.Pod("crash")
		if s.Restarts >= 2 {
			if !strings.Contains(s.LastExit, "exit status 3") {
				t.Errorf("last exit %q", s.LastExit)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("crash not restarted twice: %+v", s)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// A changed manifest: the old process stops, the new one starts.
	writeManifest(t, dir, "a.yaml", podYAML("a", `echo start $X in $PWD; exec sleep 300`, `    env:
    - name: X
      value: two
`+vols))
	waitLog(t, k, "a", "start two")
	b, err := k.WaitRunning(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if b.PID == a.PID {
		t.Errorf("same pid %d after the manifest changed", b.PID)
	}
	if err := syscall.Kill(a.PID, 0); err == nil {
		t.Errorf("old process %d still alive", a.PID)
	}

	// A removed manifest stops the pod.
	if err := os.Remove(filepath.Join(dir, "a.yaml")); err != nil {
		t.Fatal(err)
	}
	k.Sync()
	if s, ok := k.Pod("a"); ok {
		t.Errorf("pod a still known after its manifest went: %+v", s)
	}
	if err := syscall.Kill(b.PID, 0); err == nil {
		t.Errorf("process %d still alive after its manifest went", b.PID)
	}
}
