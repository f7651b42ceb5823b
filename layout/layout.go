package layout

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
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

// Kinds of path: what lstat says of it (a symlink is "symlink", whatever
// it leads to).
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
	// FromSymlink: the path is where another one leads (Note says which
	// and through what), or a symlink on the way to one.
	FromSymlink = "symlink"
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
	Missing []Path `json:"missing"`
	Etcd    Etcd   `json:"etcd"`
	// Warnings are everything an operator should read, Problems included.
	Warnings []string `json:"warnings"`
	// Problems are what makes a backup of this set degraded: something
	// could not be discovered (a manifest that does not parse, is too big
	// or cannot be read) or was left out (hostPath /, a kernel filesystem,
	// a path that cannot be looked up). Each is a sentence for people and
	// is also in Warnings. Empty, never null, when the set is whole.
	Problems []string `json:"problems"`
}

// Path is one path to back up, as a host path. No Path lies below a
// symlink: a walk of each stores what the set means, links as links.
//
// Kind "symlink" with a Target is a link that resolves, inside the root
// (see Resolve), to Target, which has no symlink in it. The kubelet
// follows links when it mounts a hostPath, so when a path discovery names
// is such a link, what it resolves to is in the set too, as a Path of its
// own with the same role (a Source of From "symlink" says whose target it
// is) or inside one (Skipped). A path with a symlink in a parent directory
// is replaced by where it really is (it is then listed in Skipped, covered
// by the Path that holds its content), and every symlink on the way is a
// Path of Kind "symlink" unless a directory in the set holds it; only what
// the set names below such a link's Target is backed up. A link that
// leads nowhere (dangling, a loop) has Kind "symlink" and no Target: only
// the link is there to keep.
type Path struct {
	Path    string   `json:"path"`
	Kind    string   `json:"kind"`
	Role    Role     `json:"role"`
	Sources []Source `json:"sources"`
	Target  string   `json:"target,omitempty"`
	// Size is the byte count of the file, or of the regular files below a
	// directory (symlinks not followed, Exclude subtrees left out); 0 for
	// a symlink (its target counts where it is listed).
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

// Skipped is a path left out because a path in the set holds it: it is
// inside CoveredBy, or it goes through a symlink in a parent directory and
// where it really is is CoveredBy or inside it.
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
// A missing manifests dir is an error; a manifest that cannot be read or
// trusted, and paths left out, are Problems; paths that do not exist under
// root are warnings.
func Discover(root string, opts Options) (*Set, error) {
	d := &discovery{root: root, entries: map[string]*entry{}}
	dir, err := Join(root, ManifestsDir)
	if err != nil {
		return nil, err
	}
	dirTarget, err := Resolve(root, ManifestsDir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("layout: no static pod manifests dir %s: is root %q a kubeadm control-plane node?", dir, root)
		}
		return nil, fmt.Errorf("layout: %s: %w", dir, err)
	}
	st, err := os.Stat(filepath.Join(root, filepath.FromSlash(dirTarget)))
	if err != nil {
		return nil, fmt.Errorf("layout: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("layout: %s is not a directory", dir)
	}
	pods, err := d.readManifests(dirTarget)
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

// Place returns the set of opts.Extra alone, read from no manifest: each
// path placed where it is on this node, checked and folded as Discover
// does (symlinks followed as in the package doc, kernel and runtime
// filesystems left out, nested paths removed, opts.Exclude applied). It is
// for a backup that does not read the manifests (a restore's safety backup
// of a node without them, `kubekeep backup --no-discover`); Etcd is empty.
func Place(root string, opts Options) (*Set, error) {
	d := &discovery{root: root, entries: map[string]*entry{}}
	if err := d.addExtra(opts.Extra); err != nil {
		return nil, err
	}
	excludes, err := cleanAll(opts.Exclude, "exclude")
	if err != nil {
		return nil, err
	}
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
	// moved: placed only for paths that go through a symlink in a
	// parent (finish); they are what Skipped lists.
	moved bool
}

type discovery struct {
	root     string
	entries  map[string]*entry
	etcd     Etcd
	warnings []string
	problems []string
	unparsed []string // manifests skipped as unreadable or invalid
}

func (d *discovery) warnf(format string, args ...any) {
	d.warnings = append(d.warnings, fmt.Sprintf(format, args...))
}

// problemf records a problem: the backup of this set is degraded. It is a
// warning too.
func (d *discovery) problemf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	d.problems = append(d.problems, msg)
	d.warnings = append(d.warnings, msg)
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
	case FromSymlink:
		return s.Note
	}
	return s.From
}
