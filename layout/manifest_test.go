package layout

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestContainerFlags(t *testing.T) {
	c := corev1.Container{
		Command: []string{"/usr/local/bin/etcd", "--name=a", "--data-dir", "/var/lib/etcd", "--x=1=2", "--bool"},
		Args:    []string{"--name=b", "positional", "--empty="},
	}
	got := ContainerFlags(c)
	want := map[string]string{"name": "b", "data-dir": "/var/lib/etcd", "x": "1=2", "bool": "", "empty": ""}
	if !mapsEqual(got, want) {
		t.Errorf("got %v want %v", got, want)
	}
}

func TestHostPathOf(t *testing.T) {
	dirType := corev1.HostPathDirectoryOrCreate
	vol := func(name, p string) corev1.Volume {
		return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: p, Type: &dirType}}}
	}
	pod := &corev1.Pod{Spec: corev1.PodSpec{Volumes: []corev1.Volume{
		vol("pki", "/etc/kubernetes/pki"),
		vol("etcd-pki", "/srv/etcd-certs"),
		vol("data", "/data"),
		{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
	}}}
	c := corev1.Container{VolumeMounts: []corev1.VolumeMount{
		{Name: "pki", MountPath: "/etc/kubernetes/pki"},
		{Name: "etcd-pki", MountPath: "/etc/kubernetes/pki/etcd/"},
		{Name: "data", MountPath: "/var/lib/etcd", SubPath: "etcd"},
		{Name: "tmp", MountPath: "/tmp"},
	}}
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"/etc/kubernetes/pki/ca.crt", "/etc/kubernetes/pki/ca.crt", true},
		{"/etc/kubernetes/pki/etcd/ca.crt", "/srv/etcd-certs/ca.crt", true}, // deepest mount wins
		{"/etc/kubernetes/pki/etcd", "/srv/etcd-certs", true},
		{"/etc/kubernetes/pki-other/x", "", false},
		{"/var/lib/etcd", "/data/etcd", true},
		{"/var/lib/etcd/member", "/data/etcd/member", true},
		{"/tmp/x", "", false}, // not a hostPath
		{"/usr/bin/etcd", "", false},
	} {
		got, ok := HostPathOf(pod, c, tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("HostPathOf(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestParseManifestJSONAndAnchors(t *testing.T) {
	jsonPod := `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c","command":["etcd"]}],
	"volumes":[{"name":"d","hostPath":{"path":"/var/lib/etcd"}}]}}`
	pod, err := ParseManifest("p.json", []byte(jsonPod))
	if err != nil || pod.Spec.Volumes[0].HostPath.Path != "/var/lib/etcd" {
		t.Fatalf("json manifest: %v", err)
	}
	anchors := `apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  containers:
  - name: c
    volumeMounts: &m
    - {name: v, mountPath: /x}
  - name: d
    volumeMounts: *m
  volumes:
  - name: v
    hostPath: {path: /x}
`
	pod, err = ParseManifest("a.yaml", []byte(anchors))
	if err != nil || len(pod.Spec.Containers[1].VolumeMounts) != 1 {
		t.Fatalf("anchors: %v", err)
	}
	bomb := "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
	for i := 'b'; i <= 'k'; i++ {
		bomb += string(i) + ": &" + string(i) + " [*" + string(i-1) + ", *" + string(i-1) + ", *" + string(i-1) + ", *" + string(i-1) + ", *" + string(i-1) + ", *" + string(i-1) + ", *" + string(i-1) + ", *" + string(i-1) + ", *" + string(i-1) + ", *" + string(i-1) + "]\n"
	}
	if _, err := ParseManifest("bomb.yaml", []byte(bomb)); err == nil {
		t.Fatal("alias bomb accepted")
	}
}

// FuzzParseManifest: whatever the input, the parser returns either a Pod
// with containers whose every hostPath is safe to put under a root, or a
// ManifestError naming the file.
func FuzzParseManifest(f *testing.F) {
	for _, glob := range []string{"testdata/*/manifests/*", "testdata/bad/*"} {
		files, _ := filepath.Glob(glob)
		for _, p := range files {
			data, err := os.ReadFile(p)
			if err == nil {
				f.Add(data)
			}
		}
	}
	f.Add([]byte("apiVersion: v1\nkind: Pod\nspec:\n  containers: [{name: a}]\n  volumes: [{name: v, hostPath: {path: /a/../b}}]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		pod, err := ParseManifest("fuzz.yaml", data)
		if err != nil {
			var me *ManifestError
			if !errors.As(err, &me) || me.File != "fuzz.yaml" || !strings.HasPrefix(err.Error(), "fuzz.yaml") {
				t.Fatalf("error does not name the file: %#v", err)
			}
			return
		}
		if len(pod.Spec.Containers) == 0 {
			t.Fatal("accepted a pod without containers")
		}
		for _, v := range pod.Spec.Volumes {
			if v.HostPath == nil {
				continue
			}
			j, err := Join("/root", v.HostPath.Path)
			if err != nil || !within(j, "/root") {
				t.Fatalf("accepted host path %q (joined %q, %v)", v.HostPath.Path, j, err)
			}
		}
		for _, c := range pod.Spec.Containers {
			for k := range ContainerFlags(c) {
				if v := ContainerFlags(c)[k]; strings.HasPrefix(v, "/") {
					if h, ok := HostPathOf(pod, c, v); ok && checkHostPath(h) != nil {
						t.Fatalf("HostPathOf(%q) = %q escapes", v, h)
					}
				}
			}
		}
	})
}

// FuzzJoin: a joined path is the root or below it, or an error.
func FuzzJoin(f *testing.F) {
	for _, s := range []string{"/etc/kubernetes", "/", "/a/../b", "a", "/a/..", "//x", "/a/./../.."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, host string) {
		got, err := Join("/sandbox", host)
		if err != nil {
			return
		}
		if got != "/sandbox" && !strings.HasPrefix(got, "/sandbox/") {
			t.Fatalf("Join(%q) = %q escapes the root", host, got)
		}
	})
}
