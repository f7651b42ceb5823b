// Package layout works out what to back up on a kubeadm control-plane node
// from its static-pod manifests: every hostPath the control plane mounts,
// the files a rebuild needs that no manifest names, and how to reach etcd.
// It only reads below a root directory, so it runs the same on a host
// (root "/") and on a sandbox tree.
package layout

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// Role says what a path is for; restore and the store treat roles
// differently (etcd-data is snapshotted, never copied live).
type Role string

const (
	RoleEtcdData   Role = "etcd-data"
	RolePKI        Role = "pki"
	RoleKubeconfig Role = "kubeconfig"
	RoleCABundle   Role = "ca-bundle"
	RolePluginDir  Role = "plugin-dir"
	RoleExtra      Role = "extra"
	RoleManifests  Role = "manifests"
	RoleKubelet    Role = "kubelet"
)

// Kinds of path, from lstat under the root.
const (
	KindFile    = "file"
	KindDir     = "dir"
	KindSymlink = "symlink"
	KindOther   = "other"
)

// Where a path came from (Source.From).
const (
	FromVolume  = "volume"  // a hostPath volume of a static pod
	FromKubeadm = "kubeadm" // not in any manifest, but a rebuild needs it
	FromExtra   = "extra"   // configured paths.extra
)

// Options adjusts discovery. Extra and Exclude are host paths.
type Options struct {
	Extra   []string
	Exclude []string
}

// Set is the backup set of one node. Its JSON form is the stable contract
// `kubekeep plan -o json` prints; fields may be added, never renamed.
type Set struct {
	Paths    []Path     `json:"paths"`
	Skipped  []Skipped  `json:"skipped"`
	Excluded []Excluded `json:"excluded"`
	// Missing are paths discovery found but the root does not hold; each
	// also has a warning.
	Missing  []Path   `json:"missing"`
	Etcd     Etcd     `json:"etcd"`
	Warnings []string `json:"warnings"`
}

// Path is one path to back up, as a host path.
type Path struct {
	Path    string   `json:"path"`
	Kind    string   `json:"kind"`
	Role    Role     `json:"role"`
	Sources []Source `json:"sources"`
	// Size is the byte count of the file, or of the regular files below a
	// directory (symlinks not followed, Exclude subtrees left out).
	Size int64 `json:"size"`
	// Exclude lists paths below this one that a walk must leave out.
	Exclude []string `json:"exclude,omitempty"`
}

// Source is one reason a path is in the set.
type Source struct {
	From   string `json:"from"`
	Pod    string `json:"pod,omitempty"`
	Volume string `json:"volume,omitempty"`
	Type   string `json:"type,omitempty"` // the hostPath type, when set
	Note   string `json:"note,omitempty"`
}

// Skipped is a path left out because a path in the set contains it.
type Skipped struct {
	Path      string   `json:"path"`
	CoveredBy string   `json:"coveredBy"`
	Sources   []Source `json:"sources"`
}

// Excluded is a path left out by Options.Exclude.
type Excluded struct {
	Path    string `json:"path"`
	Exclude string `json:"exclude"`
}

// Etcd says how to reach etcd and rebuild its member, with host paths.
type Etcd struct {
	// External is true when no etcd static pod runs on this node; the rest
	// then comes from the apiserver's --etcd-* flags.
	External bool `json:"external"`
	// Endpoints are client URLs, a loopback one first when etcd listens there.
	Endpoints      []string `json:"endpoints"`
	CAFile         string   `json:"caFile"`
	CertFile       string   `json:"certFile"`
	KeyFile        string   `json:"keyFile"`
	DataDir        string   `json:"dataDir"`
	Name           string   `json:"name"`
	InitialCluster string   `json:"initialCluster"`
	PeerURLs       []string `json:"peerURLs"`
	// Image is the etcd image of the static pod: a restored data dir must
	// start under the same etcd server line.
	Image string `json:"image,omitempty"`
	// Manifest is the host path of the static pod manifest etcd came from.
	Manifest string `json:"manifest,omitempty"`
}

// ManifestsDir is where kubeadm writes static pod manifests.
const ManifestsDir = "/etc/kubernetes/manifests"

// HostPaths returns the host path of every entry in Paths, in order.
func (s *Set) HostPaths() []string {
	out := make([]string, len(s.Paths))
	for i, p := range s.Paths {
		out[i] = p.Path
	}
	return out
}

// Lookup returns the entry in Paths for hostPath, if any.
func (s *Set) Lookup(hostPath string) (Path, bool) {
	for _, p := range s.Paths {
		if p.Path == hostPath {
			return p, true
		}
	}
	return Path{}, false
}

// Join returns where hostPath lives under root. It refuses relative host
// paths and any with a ".." segment, so nothing named by a manifest or a
// config can reach outside the root.
func Join(root, hostPath string) (string, error) {
	if err := checkHostPath(hostPath); err != nil {
		return "", err
	}
	return filepath.Join(root, filepath.FromSlash(hostPath)), nil
}

func checkHostPath(p string) error {
	if !strings.HasPrefix(p, "/") {
		return fmt.Errorf("host path %q is not absolute", p)
	}
	for _, seg := range strings.Split(p, "/") {
		if seg == ".." {
			return fmt.Errorf("host path %q contains ..", p)
		}
	}
	if strings.ContainsRune(p, 0) {
		return fmt.Errorf("host path %q contains a NUL byte", p)
	}
	return nil
}

// within reports whether p is base or below it, by whole path segments:
// /etc/pki-foo is not within /etc/pki.
func within(p, base string) bool {
	if base == "/" {
		return true
	}
	return p == base || strings.HasPrefix(p, base+"/")
}

// cleanHostPath validates and normalises a host path (no trailing slash,
// no doubled or "." segments).
func cleanHostPath(p string) (string, error) {
	if err := checkHostPath(p); err != nil {
		return "", err
	}
	return path.Clean(p), nil
}

// Discover reads root's static-pod manifests and returns the backup set.
// A missing manifests dir or a manifest that cannot be trusted is an error;
// paths that do not exist under root are warnings.
func Discover(root string, opts Options) (*Set, error) {
	d := &discovery{root: root, entries: map[string]*entry{}}
	dir, err := Join(root, ManifestsDir)
	if err != nil {
		return nil, err
	}
	st, err := os.Stat(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("layout: no static pod manifests dir %s: is root %q a kubeadm control-plane node?", dir, root)
		}
		return nil, fmt.Errorf("layout: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("layout: %s is not a directory", dir)
	}
	pods, err := d.readManifests(dir)
	if err != nil {
		return nil, err
	}
	d.addPods(pods)
	d.addRebuildPaths()
	if err := d.addExtra(opts.Extra); err != nil {
		return nil, err
	}
	excludes, err := cleanAll(opts.Exclude, "exclude")
	if err != nil {
		return nil, err
	}
	d.etcd = d.findEtcd(pods)
	return d.finish(excludes)
}

func cleanAll(ps []string, what string) ([]string, error) {
	out := make([]string, 0, len(ps))
	for _, p := range ps {
		c, err := cleanHostPath(p)
		if err != nil {
			return nil, fmt.Errorf("layout: %s path: %w", what, err)
		}
		out = append(out, c)
	}
	return out, nil
}

type entry struct {
	path     string
	role     Role
	rank     int // role precedence; lower wins when sources disagree
	sources  []Source
	fileType bool // the volume type says file; used when the path is missing
}

type discovery struct {
	root     string
	entries  map[string]*entry
	etcd     Etcd
	warnings []string
}

func (d *discovery) warnf(format string, args ...any) {
	d.warnings = append(d.warnings, fmt.Sprintf(format, args...))
}

func (d *discovery) add(p string, role Role, src Source, fileType bool) {
	e, ok := d.entries[p]
	if !ok {
		e = &entry{path: p, role: role, rank: roleRank[role], fileType: fileType}
		d.entries[p] = e
	}
	if r := roleRank[role]; r < e.rank {
		e.role, e.rank = role, r
	}
	for _, s := range e.sources {
		if s == src {
			return
		}
	}
	e.sources = append(e.sources, src)
}

// roleRank orders roles when one path has several: what decides how a path
// is backed up (etcd-data) outranks what only describes it.
var roleRank = map[Role]int{
	RoleEtcdData: 0, RoleManifests: 1, RoleCABundle: 2, RolePluginDir: 3,
	RolePKI: 4, RoleKubeconfig: 5, RoleKubelet: 6, RoleExtra: 7,
}

// rebuildPaths are what a `kubeadm init` rebuild needs that no manifest
// mounts. Kubeconfigs count only when present: super-admin.conf exists from
// kubeadm 1.29 on.
var rebuildPaths = []struct {
	path     string
	role     Role
	optional bool
	file     bool
	note     string
}{
	{"/etc/kubernetes/pki", RolePKI, false, false, "cluster CAs and service-account keys"},
	{"/etc/kubernetes/admin.conf", RoleKubeconfig, true, true, "admin kubeconfig"},
	{"/etc/kubernetes/super-admin.conf", RoleKubeconfig, true, true, "break-glass kubeconfig (kubeadm 1.29+)"},
	{"/etc/kubernetes/kubelet.conf", RoleKubeconfig, true, true, "kubelet kubeconfig; `kubeadm certs renew` does not renew it"},
	{"/etc/kubernetes/controller-manager.conf", RoleKubeconfig, true, true, "controller-manager kubeconfig"},
	{"/etc/kubernetes/scheduler.conf", RoleKubeconfig, true, true, "scheduler kubeconfig"},
	{ManifestsDir, RoleManifests, false, false, "static pod manifests, restored last"},
	{"/var/lib/kubelet/config.yaml", RoleKubelet, false, true, "kubelet configuration"},
	{"/var/lib/kubelet/kubeadm-flags.env", RoleKubelet, false, true, "kubelet flags kubeadm wrote"},
	{"/var/lib/kubelet/pki", RoleKubelet, false, false, "kubelet client and serving certs"},
}

func (d *discovery) addRebuildPaths() {
	for _, rp := range rebuildPaths {
		if rp.optional {
			if _, err := os.Lstat(filepath.Join(d.root, rp.path)); err != nil {
				continue
			}
		}
		d.add(rp.path, rp.role, Source{From: FromKubeadm, Note: rp.note}, rp.file)
	}
}

func (d *discovery) addExtra(extra []string) error {
	ps, err := cleanAll(extra, "extra")
	if err != nil {
		return err
	}
	for _, p := range ps {
		d.add(p, RoleExtra, Source{From: FromExtra, Note: "paths.extra"}, false)
	}
	return nil
}

// finish stats every path, applies excludes, removes nested paths and
// returns the set in path order.
func (d *discovery) finish(excludes []string) (*Set, error) {
	s := &Set{Paths: []Path{}, Skipped: []Skipped{}, Excluded: []Excluded{}, Missing: []Path{}, Etcd: d.etcd}
	keys := make([]string, 0, len(d.entries))
	for k := range d.entries {
		keys = append(keys, k)
	}
	sort.Strings(keys)

	used := map[string]bool{}
	var live []*entry
	for _, k := range keys {
		e := d.entries[k]
		if ex := matchExclude(k, excludes); ex != "" {
			used[ex] = true
			s.Excluded = append(s.Excluded, Excluded{Path: k, Exclude: ex})
			continue
		}
		live = append(live, e)
	}

	kinds := map[string]string{}
	var present []*entry
	for _, e := range live {
		kind, err := d.kind(e.path)
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("layout: %w", err)
			}
			k := KindDir
			if e.fileType {
				k = KindFile
			}
			s.Missing = append(s.Missing, Path{Path: e.path, Kind: k, Role: e.role, Sources: e.sources})
			d.warnf("%s (%s, from %s) does not exist under the root; nothing to back up there", e.path, e.role, describeSources(e.sources))
			continue
		}
		kinds[e.path] = kind
		present = append(present, e)
	}

	// Sorted order puts every ancestor before its descendants, so the
	// first kept ancestor found is the outermost one.
	var kept []*entry
	for _, e := range present {
		var cover *entry
		for _, k := range kept {
			if k.path != e.path && within(e.path, k.path) && kinds[k.path] == KindDir {
				cover = k
				break
			}
		}
		// etcd's data dir is snapshotted, not copied: it stays its own
		// entry so nothing copies the live bbolt file as part of a parent.
		if cover != nil && e.role != RoleEtcdData {
			s.Skipped = append(s.Skipped, Skipped{Path: e.path, CoveredBy: cover.path, Sources: e.sources})
			continue
		}
		if cover != nil {
			d.warnf("etcd data dir %s is inside %s (%s): a walk of %s must leave it out; etcd is backed up by snapshot",
				e.path, cover.path, cover.role, cover.path)
		}
		kept = append(kept, e)
	}

	for _, e := range kept {
		p := Path{Path: e.path, Kind: kinds[e.path], Role: e.role, Sources: e.sources}
		for _, ex := range excludes {
			if ex != e.path && within(ex, e.path) {
				used[ex] = true
				p.Exclude = append(p.Exclude, ex)
			}
		}
		for _, o := range kept {
			if o != e && o.role == RoleEtcdData && within(o.path, e.path) {
				p.Exclude = append(p.Exclude, o.path)
			}
		}
		size, err := d.size(p)
		if err != nil {
			return nil, fmt.Errorf("layout: %w", err)
		}
		p.Size = size
		s.Paths = append(s.Paths, p)
	}
	for _, ex := range excludes {
		if !used[ex] {
			d.warnf("exclude %s matches nothing in the backup set", ex)
		}
	}
	s.Warnings = append([]string{}, d.warnings...)
	return s, nil
}

func matchExclude(p string, excludes []string) string {
	for _, ex := range excludes {
		if within(p, ex) {
			return ex
		}
	}
	return ""
}

func (d *discovery) kind(hostPath string) (string, error) {
	st, err := os.Lstat(filepath.Join(d.root, hostPath))
	if err != nil {
		return "", err
	}
	switch m := st.Mode(); {
	case m.IsDir():
		return KindDir, nil
	case m.IsRegular():
		return KindFile, nil
	case m&fs.ModeSymlink != 0:
		return KindSymlink, nil
	}
	return KindOther, nil
}

// size adds up regular files without following symlinks, so a link out of
// a directory is neither counted nor walked.
func (d *discovery) size(p Path) (int64, error) {
	full := filepath.Join(d.root, p.Path)
	if p.Kind != KindDir {
		if p.Kind != KindFile {
			return 0, nil
		}
		st, err := os.Lstat(full)
		if err != nil {
			return 0, err
		}
		return st.Size(), nil
	}
	var total int64
	err := filepath.WalkDir(full, func(fp string, de fs.DirEntry, err error) error {
		if err != nil {
			// An unreadable subdir is the backup's problem to report;
			// the size is an estimate.
			if de != nil && de.IsDir() && fp != full {
				return fs.SkipDir
			}
			return err
		}
		rel, _ := filepath.Rel(d.root, fp)
		host := "/" + filepath.ToSlash(rel)
		for _, ex := range p.Exclude {
			if within(host, ex) {
				if de.IsDir() {
					return fs.SkipDir
				}
				return nil
			}
		}
		if de.Type().IsRegular() {
			info, err := de.Info()
			if err != nil {
				return nil
			}
			total += info.Size()
		}
		return nil
	})
	return total, err
}

func describeSources(srcs []Source) string {
	var parts []string
	for _, s := range srcs {
		parts = append(parts, s.String())
	}
	return strings.Join(parts, "; ")
}

// String is the "why included" text people read in `kubekeep plan`.
func (s Source) String() string {
	switch s.From {
	case FromVolume:
		return fmt.Sprintf("%s volume %s", s.Pod, s.Volume)
	case FromKubeadm:
		return "rebuild: " + s.Note
	case FromExtra:
		return "configured (" + s.Note + ")"
	}
	return s.From
}
