package layout

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/kubekeep/kubekeep/internal/sandbox"
)

var update = flag.Bool("update", false, "rewrite testdata/*/want.json from the current output")

// buildFixture makes a root from testdata/<name>: tree.txt says what exists
// (files are sparse, of the stated size), manifests/ is copied whole,
// hidden and stray files included.
func buildFixture(t *testing.T, name string) (string, Options) {
	t.Helper()
	root := t.TempDir()
	src := filepath.Join("testdata", name)
	f, err := os.Open(filepath.Join(src, "tree.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		p := filepath.Join(root, fields[1])
		must(t, os.MkdirAll(filepath.Dir(p), 0o755))
		switch fields[0] {
		case "d":
			must(t, os.MkdirAll(p, 0o755))
		case "f":
			size, err := strconv.ParseInt(fields[2], 10, 64)
			must(t, err)
			must(t, os.WriteFile(p, nil, 0o600))
			must(t, os.Truncate(p, size))
		case "l":
			must(t, os.Symlink(fields[2], p))
		default:
			t.Fatalf("tree.txt: bad line %q", line)
		}
	}
	must(t, sc.Err())
	mdir := filepath.Join(root, ManifestsDir)
	must(t, os.MkdirAll(mdir, 0o700))
	ents, err := os.ReadDir(filepath.Join(src, "manifests"))
	must(t, err)
	for _, e := range ents {
		data, err := os.ReadFile(filepath.Join(src, "manifests", e.Name()))
		must(t, err)
		must(t, os.WriteFile(filepath.Join(mdir, e.Name()), data, 0o600))
	}
	var opts Options
	if data, err := os.ReadFile(filepath.Join(src, "options.json")); err == nil {
		var o struct{ Extra, Exclude []string }
		must(t, json.Unmarshal(data, &o))
		opts = Options{Extra: o.Extra, Exclude: o.Exclude}
	}
	return root, opts
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func roles(s *Set) map[string]Role {
	m := map[string]Role{}
	for _, p := range s.Paths {
		m[p.Path] = p.Role
	}
	return m
}

func skipped(s *Set) map[string]string {
	m := map[string]string{}
	for _, k := range s.Skipped {
		m[k.Path] = k.CoveredBy
	}
	return m
}

func hasWarning(s *Set, parts ...string) bool {
	for _, w := range s.Warnings {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(w, p)
		}
		if ok {
			return true
		}
	}
	return false
}

// kubeadmCommon are the paths every kubeadm control plane in the fixtures
// has, with their roles.
var kubeadmCommon = map[string]Role{
	"/etc/kubernetes/admin.conf":                          RoleKubeconfig,
	"/etc/kubernetes/controller-manager.conf":             RoleKubeconfig,
	"/etc/kubernetes/kubelet.conf":                        RoleKubeconfig,
	"/etc/kubernetes/scheduler.conf":                      RoleKubeconfig,
	"/etc/kubernetes/manifests":                           RoleManifests,
	"/etc/kubernetes/pki":                                 RolePKI,
	"/var/lib/kubelet/config.yaml":                        RoleKubelet,
	"/var/lib/kubelet/kubeadm-flags.env":                  RoleKubelet,
	"/var/lib/kubelet/pki":                                RoleKubelet,
	"/usr/libexec/kubernetes/kubelet-plugins/volume/exec": RolePluginDir,
}

func with(base map[string]Role, more map[string]Role, drop ...string) map[string]Role {
	out := map[string]Role{}
	for k, v := range base {
		out[k] = v
	}
	for k, v := range more {
		out[k] = v
	}
	for _, d := range drop {
		delete(out, d)
	}
	return out
}

var debianCA = map[string]Role{
	"/etc/ssl/certs": RoleCABundle, "/etc/ca-certificates": RoleCABundle,
	"/usr/share/ca-certificates": RoleCABundle, "/usr/local/share/ca-certificates": RoleCABundle,
}

// TestFixtures checks each fixture twice: the facts that matter, stated
// here by hand, and the whole JSON against want.json (rewrite with -update
// and review the diff).
func TestFixtures(t *testing.T) {
	cases := []struct {
		name    string
		roles   map[string]Role
		skipped map[string]string
		check   func(t *testing.T, s *Set)
	}{
		{
			name: "v1.25-rhel",
			roles: with(kubeadmCommon, map[string]Role{
				"/etc/ssl/certs": RoleCABundle, "/etc/pki": RoleCABundle,
				"/etc/pki-webhook": RoleExtra, "/var/lib/etcd": RoleEtcdData,
			}),
			skipped: map[string]string{"/etc/kubernetes/pki/etcd": "/etc/kubernetes/pki", "/etc/pki/tls/certs": "/etc/pki"},
			check: func(t *testing.T, s *Set) {
				// On RHEL /etc/ssl/certs is a link to ../pki/tls/certs: the
				// pods see the directory, which holds ca-bundle.crt; it is
				// backed up with /etc/pki, the link as a link.
				if p, _ := s.Lookup("/etc/ssl/certs"); p.Kind != KindSymlink || p.Target != "/etc/pki/tls/certs" || p.Size != 0 {
					t.Errorf("/etc/ssl/certs on RHEL: kind %q target %q size %d, want the link to the dir", p.Kind, p.Target, p.Size)
				}
				if p, _ := s.Lookup("/etc/pki"); p.Size != 219200*2+1302 {
					t.Errorf("/etc/pki size %d", p.Size)
				}
				if _, ok := s.Lookup("/etc/kubernetes/super-admin.conf"); ok {
					t.Error("v1.25 has no super-admin.conf")
				}
				e := s.Etcd
				if e.External || e.Image != "registry.k8s.io/etcd:3.5.4-0" || e.DataDir != "/var/lib/etcd" ||
					!slices.Equal(e.Endpoints, []string{"https://127.0.0.1:2379"}) {
					t.Errorf("etcd %+v", e)
				}
			},
		},
		{
			name: "v1.31-rhel",
			roles: with(kubeadmCommon, map[string]Role{
				"/etc/ssl/certs": RoleCABundle, "/etc/pki/ca-trust": RoleCABundle, "/etc/pki/tls/certs": RoleCABundle,
				"/etc/kubernetes/super-admin.conf": RoleKubeconfig, "/var/lib/etcd": RoleEtcdData,
			}),
			skipped: map[string]string{"/etc/kubernetes/pki/etcd": "/etc/kubernetes/pki"},
		},
		{
			name: "v1.31-extra-volumes",
			roles: with(kubeadmCommon, with(debianCA, map[string]Role{
				"/etc/kubernetes/super-admin.conf":       RoleKubeconfig,
				"/var/lib/etcd":                          RoleEtcdData,
				"/etc/kubernetes/encryption/config.yaml": RoleExtra,
				"/etc/kubernetes/audit/policy.yaml":      RoleExtra,
				"/etc/kubernetes/kubeadm-config.yaml":    RoleExtra,
			})),
			skipped: map[string]string{
				"/etc/kubernetes/pki/etcd":         "/etc/kubernetes/pki",
				"/etc/kubernetes/pki/oidc":         "/etc/kubernetes/pki",
				"/etc/kubernetes/pki/extra-ca.crt": "/etc/kubernetes/pki",
			},
			check: func(t *testing.T, s *Set) {
				want := []Excluded{{Path: "/var/log/kubernetes/audit", Exclude: "/var/log/kubernetes/audit"}}
				if !slices.Equal(s.Excluded, want) {
					t.Errorf("excluded %+v", s.Excluded)
				}
				pki, _ := s.Lookup("/etc/kubernetes/pki")
				if !slices.Equal(pki.Exclude, []string{"/etc/kubernetes/pki/old"}) {
					t.Errorf("pki exclude %v", pki.Exclude)
				}
				// The excluded old/ certs are not counted.
				if pki.Size != 1107+1679+1289+1675+1164+1679+1155+1675+1123+1679+1119+1675+1679+451+
					1094+1679+1208+1679+1208+1675+1159+1679+1180+1107 {
					t.Errorf("pki size %d", pki.Size)
				}
				if !hasWarning(s, "exclude /opt/nothing matches nothing") ||
					!hasWarning(s, "/etc/kubernetes/webhooks (extra, from configured (paths.extra)) does not exist") {
					t.Errorf("warnings %q", s.Warnings)
				}
				if len(s.Missing) != 1 || s.Missing[0].Path != "/etc/kubernetes/webhooks" {
					t.Errorf("missing %+v", s.Missing)
				}
			},
		},
		{
			name: "external-etcd",
			roles: with(kubeadmCommon, with(debianCA, map[string]Role{
				"/etc/kubernetes/super-admin.conf": RoleKubeconfig, "/etc/etcd/pki": RolePKI,
			})),
			skipped: map[string]string{},
			check: func(t *testing.T, s *Set) {
				want := Etcd{
					External:  true,
					Endpoints: []string{"https://10.0.0.21:2379", "https://10.0.0.22:2379", "https://10.0.0.23:2379"},
					CAFile:    "/etc/etcd/pki/ca.pem", CertFile: "/etc/etcd/pki/apiserver-etcd-client.pem",
					KeyFile: "/etc/etcd/pki/apiserver-etcd-client-key.pem", PeerURLs: []string{},
					Manifest: "/etc/kubernetes/manifests/kube-apiserver.yaml",
				}
				if !etcdEqual(s.Etcd, want) {
					t.Errorf("etcd\n got %+v\nwant %+v", s.Etcd, want)
				}
			},
		},
		{
			name: "custom-data-dir",
			roles: with(kubeadmCommon, with(debianCA, map[string]Role{
				"/etc/kubernetes/super-admin.conf": RoleKubeconfig, "/data": RoleExtra, "/data/etcd": RoleEtcdData,
			})),
			skipped: map[string]string{"/etc/kubernetes/pki/etcd": "/etc/kubernetes/pki"},
			check: func(t *testing.T, s *Set) {
				if s.Etcd.DataDir != "/data/etcd" {
					t.Errorf("data dir %q: --data-dir names the container path /var/lib/etcd, the host has /data/etcd", s.Etcd.DataDir)
				}
				data, _ := s.Lookup("/data")
				if !slices.Equal(data.Exclude, []string{"/data/etcd"}) || data.Size != 120 {
					t.Errorf("/data must leave the live etcd dir out: exclude %v size %d", data.Exclude, data.Size)
				}
				if !hasWarning(s, "etcd data dir /data/etcd is inside /data") {
					t.Errorf("warnings %q", s.Warnings)
				}
			},
		},
		{
			name: "ipv6",
			roles: with(kubeadmCommon, with(debianCA, map[string]Role{
				"/etc/kubernetes/super-admin.conf": RoleKubeconfig, "/var/lib/etcd": RoleEtcdData,
			})),
			skipped: map[string]string{"/etc/kubernetes/pki/etcd": "/etc/kubernetes/pki"},
			check: func(t *testing.T, s *Set) {
				want := Etcd{
					Endpoints: []string{"https://[::1]:2379"},
					CAFile:    "/etc/kubernetes/pki/etcd/ca.crt", CertFile: "/etc/kubernetes/pki/etcd/healthcheck-client.crt",
					KeyFile: "/etc/kubernetes/pki/etcd/healthcheck-client.key", DataDir: "/var/lib/etcd", Name: "master-1",
					InitialCluster: "master-1=https://[fd00:10::10]:2380", PeerURLs: []string{"https://[fd00:10::10]:2380"},
					Image: "registry.k8s.io/etcd:3.5.15-0", Manifest: "/etc/kubernetes/manifests/etcd.yaml",
				}
				if !etcdEqual(s.Etcd, want) {
					t.Errorf("etcd\n got %+v\nwant %+v", s.Etcd, want)
				}
			},
		},
		{
			name: "missing-paths",
			roles: with(kubeadmCommon, map[string]Role{
				"/etc/kubernetes/super-admin.conf": RoleKubeconfig,
				"/etc/ssl/certs":                   RoleCABundle, "/usr/share/ca-certificates": RoleCABundle,
			}, "/var/lib/kubelet/kubeadm-flags.env", "/usr/libexec/kubernetes/kubelet-plugins/volume/exec"),
			skipped: map[string]string{"/etc/kubernetes/pki/etcd": "/etc/kubernetes/pki"},
			check: func(t *testing.T, s *Set) {
				var missing []string
				for _, m := range s.Missing {
					missing = append(missing, m.Path)
				}
				want := []string{"/etc/ca-certificates", "/usr/libexec/kubernetes/kubelet-plugins/volume/exec",
					"/usr/local/share/ca-certificates", "/var/lib/etcd", "/var/lib/kubelet/kubeadm-flags.env"}
				if !slices.Equal(missing, want) {
					t.Errorf("missing\n got %v\nwant %v", missing, want)
				}
				for _, w := range [][]string{
					{"/var/lib/etcd", "does not exist"},
					{"--authorization-config=/etc/kubernetes/authz.yaml", "no hostPath volume"},
					{"kube-scheduler.yaml.bak", "the kubelet loads it too"},
				} {
					if !hasWarning(s, w...) {
						t.Errorf("no warning with %q in %q", w, s.Warnings)
					}
				}
				// The healthcheck client is gone: fall back to the
				// apiserver's etcd client cert, which etcd also accepts.
				if s.Etcd.CertFile != "/etc/kubernetes/pki/apiserver-etcd-client.crt" ||
					s.Etcd.KeyFile != "/etc/kubernetes/pki/apiserver-etcd-client.key" {
					t.Errorf("etcd client cert %s %s", s.Etcd.CertFile, s.Etcd.KeyFile)
				}
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			root, opts := buildFixture(t, tc.name)
			s, err := Discover(root, opts)
			if err != nil {
				t.Fatal(err)
			}
			if got := roles(s); !mapsEqual(got, tc.roles) {
				t.Errorf("paths and roles\n got %v\nwant %v", got, tc.roles)
			}
			if got := skipped(s); !mapsEqual(got, tc.skipped) {
				t.Errorf("skipped\n got %v\nwant %v", got, tc.skipped)
			}
			if tc.check != nil {
				tc.check(t, s)
			}
			got, err := json.MarshalIndent(s, "", "  ")
			must(t, err)
			got = append(got, '\n')
			golden := filepath.Join("testdata", tc.name, "want.json")
			if *update {
				must(t, os.WriteFile(golden, got, 0o644))
			}
			want, err := os.ReadFile(golden)
			must(t, err)
			if string(got) != string(want) {
				t.Errorf("JSON differs from %s (run with -update and review the diff):\n%s", golden, got)
			}
		})
	}
}

func mapsEqual[V comparable](a, b map[string]V) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func etcdEqual(a, b Etcd) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

// TestSandbox runs discovery on the roots internal/sandbox builds (what the
// other packages' tests and `make demo` use) and checks it finds the etcd
// those roots describe.
func TestSandbox(t *testing.T) {
	for _, o := range []sandbox.Options{
		{},
		{KubernetesVersion: "v1.25.16", EtcdClientPort: 32379, EtcdPeerPort: 32380, EtcdDataDir: "/data/etcd", AdvertiseAddress: "10.1.2.3", NodeName: "cp"},
		{KubernetesVersion: "v1.34.0"},
	} {
		r, err := sandbox.Build(t.TempDir(), o)
		must(t, err)
		s, err := Discover(r.Dir, Options{})
		must(t, err)
		want := []string{
			"/etc/ca-certificates", "/etc/kubernetes/admin.conf", "/etc/kubernetes/controller-manager.conf",
			"/etc/kubernetes/kubelet.conf", "/etc/kubernetes/manifests", "/etc/kubernetes/pki",
			"/etc/kubernetes/scheduler.conf", "/etc/kubernetes/super-admin.conf", "/etc/ssl/certs",
			"/usr/libexec/kubernetes/kubelet-plugins/volume/exec", "/usr/local/share/ca-certificates",
			"/usr/share/ca-certificates", r.EtcdDataDir, "/var/lib/kubelet/config.yaml",
			"/var/lib/kubelet/kubeadm-flags.env", "/var/lib/kubelet/pki",
		}
		switch o.KubernetesVersion {
		case "v1.25.16":
			want = slices.DeleteFunc(want, func(p string) bool { return p == "/etc/kubernetes/super-admin.conf" })
		case "v1.34.0":
			// kubeadm 1.34 keeps the CRI socket here; `kubeadm upgrade`
			// on a rebuilt node fails without it. Up to 1.33 there is no
			// such file, and its absence must not be warned about.
			want = append(want, "/var/lib/kubelet/instance-config.yaml")
		}
		slices.Sort(want)
		if got := s.HostPaths(); !slices.Equal(got, want) {
			t.Errorf("%s paths\n got %v\nwant %v", r.Opts.KubernetesVersion, got, want)
		}
		e := s.Etcd
		if e.External || !slices.Equal(e.Endpoints, []string{r.EtcdClientURL()}) || e.CAFile != r.EtcdCAFile ||
			e.CertFile != r.EtcdClientCert || e.KeyFile != r.EtcdClientKey || e.DataDir != r.EtcdDataDir ||
			e.Name != r.Opts.NodeName || !slices.Equal(e.PeerURLs, []string{r.EtcdPeerURL()}) ||
			e.InitialCluster != r.Opts.NodeName+"="+r.EtcdPeerURL() || e.Image != r.EtcdImage() {
			t.Errorf("etcd %+v", e)
		}
		if len(s.Warnings) != 0 || len(s.Missing) != 0 || len(s.Problems) != 0 {
			t.Errorf("a fresh sandbox has nothing to warn about: %q %v %q", s.Warnings, s.Missing, s.Problems)
		}
	}
}

// TestBadManifests: a manifest that cannot be trusted is skipped with a
// problem that starts "file:line:", the rest of the node is still
// discovered, and the bad file is still in the set (inside the manifests
// dir). Before, one bad file failed Discover, and with it every backup.
func TestBadManifests(t *testing.T) {
	cases := []struct {
		file string
		line int
		msg  string
	}{
		// yaml.v3 puts a tab error on the line before the tab.
		{"not-yaml.yaml", 9, "not valid YAML: found a tab character"},
		{"not-a-pod.yaml", 2, `not a Pod manifest: apiVersion "v1" kind "ConfigMap"`},
		{"list.yaml", 1, "the document is a list"},
		{"no-containers.yaml", 7, `pod "etcd" has no containers`},
		{"relative-hostpath.yaml", 22, `volume "etcd-data": host path "var/lib/etcd" is not absolute`},
		{"dotdot-hostpath.yaml", 14, `volume "escape": host path "/etc/kubernetes/../../root/.ssh" contains ..`},
		{"wrong-type.yaml", 11, "spec.containers.command: cannot hold a string"},
		{"two-docs.yaml", 8, "more than one YAML document"},
		{"empty.yaml", 1, "empty file"}, // the whole file: line 1
	}
	for _, tc := range cases {
		t.Run(tc.file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", "bad", tc.file))
			must(t, err)
			host := ManifestsDir + "/" + tc.file
			_, err = ParseManifest(host, data)
			var me *ManifestError
			if !errors.As(err, &me) {
				t.Fatalf("want a ManifestError, got %v", err)
			}
			if me.File != host || me.Line != tc.line || !strings.Contains(me.Msg, tc.msg) {
				t.Errorf("got %q (line %d), want line %d and %q", err, me.Line, tc.line, tc.msg)
			}
			prefix := host + ":" + strconv.Itoa(tc.line) + ": "
			if !strings.HasPrefix(err.Error(), prefix) {
				t.Errorf("error %q does not start with %q", err, prefix)
			}

			r, err := sandbox.Build(t.TempDir(), sandbox.Options{})
			must(t, err)
			must(t, os.WriteFile(r.Path(host), data, 0o600))
			s, err := Discover(r.Dir, Options{})
			if err != nil {
				t.Fatalf("one bad manifest must not stop discovery: %v", err)
			}
			if len(s.Problems) != 1 || !strings.HasPrefix(s.Problems[0], prefix) || !strings.Contains(s.Problems[0], tc.msg) {
				t.Errorf("problems %q, want one starting %q", s.Problems, prefix)
			}
			if !slices.Contains(s.Warnings, s.Problems[0]) {
				t.Errorf("the problem is not a warning too: %q", s.Warnings)
			}
			// The rest of the node: the four good pods' volumes and etcd.
			for _, p := range []string{ManifestsDir, "/etc/kubernetes/pki", "/etc/ssl/certs", "/var/lib/etcd", "/etc/kubernetes/scheduler.conf"} {
				if _, ok := s.Lookup(p); !ok {
					t.Errorf("%s left out of the set: %v", p, s.HostPaths())
				}
			}
			if s.Etcd.External || s.Etcd.Name != r.Opts.NodeName || s.Etcd.CertFile != r.EtcdClientCert {
				t.Errorf("etcd %+v", s.Etcd)
			}
			// The bad file is counted with the manifests dir it is in.
			st, err := os.Stat(r.Path(host))
			must(t, err)
			var good int64
			for _, n := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"} {
				fi, err := os.Stat(r.Path(ManifestsDir + "/" + n + ".yaml"))
				must(t, err)
				good += fi.Size()
			}
			if m, _ := s.Lookup(ManifestsDir); m.Size != good+st.Size() {
				t.Errorf("manifests dir size %d, want %d (four good manifests and the bad one)", m.Size, good+st.Size())
			}
		})
	}
}

func TestNoManifestsDir(t *testing.T) {
	root := t.TempDir()
	_, err := Discover(root, Options{})
	if err == nil || !strings.Contains(err.Error(), filepath.Join(root, ManifestsDir)) || !strings.Contains(err.Error(), "no static pod manifests dir") {
		t.Fatalf("got %v", err)
	}
	must(t, os.MkdirAll(filepath.Join(root, "/etc/kubernetes"), 0o755))
	must(t, os.WriteFile(filepath.Join(root, ManifestsDir), nil, 0o600))
	if _, err := Discover(root, Options{}); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Fatalf("manifests dir is a file: got %v", err)
	}
}

func TestEmptyManifestsDir(t *testing.T) {
	root := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(root, ManifestsDir), 0o700))
	s, err := Discover(root, Options{})
	must(t, err)
	if !hasWarning(s, "holds no static pod manifests") || !hasWarning(s, "no etcd or kube-apiserver manifest") {
		t.Errorf("warnings %q", s.Warnings)
	}
	if !slices.Equal(s.HostPaths(), []string{ManifestsDir}) {
		t.Errorf("paths %v", s.HostPaths())
	}
	b, err := json.Marshal(s)
	must(t, err)
	// Scripts index these without nil checks.
	for _, k := range []string{`"paths":[`, `"skipped":[]`, `"endpoints":[]`, `"peerURLs":[]`, `"warnings":[`} {
		if !strings.Contains(string(b), k) {
			t.Errorf("JSON lacks %s: %s", k, b)
		}
	}
}

func TestBadOptions(t *testing.T) {
	root := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(root, ManifestsDir), 0o700))
	for _, o := range []Options{{Extra: []string{"etc/x"}}, {Extra: []string{"/etc/../root"}}, {Exclude: []string{"relative"}}} {
		if _, err := Discover(root, o); err == nil {
			t.Errorf("%+v: want error", o)
		}
	}
}

func TestJoin(t *testing.T) {
	for _, tc := range []struct{ root, host, want string }{
		{"/", "/etc/kubernetes", "/etc/kubernetes"},
		{"/sb", "/etc/kubernetes/pki/", "/sb/etc/kubernetes/pki"},
		{"/sb", "/", "/sb"},
		{"/sb", "/a/./b//c", "/sb/a/b/c"},
		{"/sb", "/a/..b", "/sb/a/..b"},
	} {
		got, err := Join(tc.root, tc.host)
		if err != nil || got != tc.want {
			t.Errorf("Join(%q, %q) = %q, %v; want %q", tc.root, tc.host, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "etc", "./etc", "/etc/..", "/../etc", "/a/../../b", "/a\x00b"} {
		if got, err := Join("/sb", bad); err == nil {
			t.Errorf("Join(%q) = %q, want error", bad, got)
		}
	}
}

func TestWithin(t *testing.T) {
	for _, tc := range []struct {
		p, base string
		want    bool
	}{
		{"/etc/pki", "/etc/pki", true},
		{"/etc/pki/tls", "/etc/pki", true},
		{"/etc/pki-foo", "/etc/pki", false},
		{"/etc/kubernetes/pki-extra", "/etc/kubernetes/pki", false},
		{"/etc", "/etc/pki", false},
		{"/anything", "/", true},
	} {
		if got := within(tc.p, tc.base); got != tc.want {
			t.Errorf("within(%q, %q) = %v", tc.p, tc.base, got)
		}
	}
}

func TestClientEndpoints(t *testing.T) {
	for _, tc := range []struct {
		flags map[string]string
		want  []string
	}{
		{map[string]string{"listen-client-urls": "https://127.0.0.1:2379,https://10.0.0.1:2379"}, []string{"https://127.0.0.1:2379"}},
		{map[string]string{"listen-client-urls": "https://10.0.0.1:2379,https://localhost:2379"}, []string{"https://localhost:2379"}},
		{map[string]string{"listen-client-urls": "https://0.0.0.0:2379"}, []string{"https://127.0.0.1:2379"}},
		{map[string]string{"listen-client-urls": "https://[::]:2379"}, []string{"https://[::1]:2379"}},
		{map[string]string{"listen-client-urls": "https://10.0.0.1:2379", "advertise-client-urls": "https://10.0.0.1:2379"}, []string{"https://10.0.0.1:2379"}},
		{map[string]string{}, []string{}},
	} {
		if got := clientEndpoints(tc.flags); !slices.Equal(got, tc.want) {
			t.Errorf("%v: got %v want %v", tc.flags, got, tc.want)
		}
	}
}
