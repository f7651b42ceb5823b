package restore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/kubekeep/kubekeep/backup"
	"github.com/kubekeep/kubekeep/backup/versionread"
	"github.com/kubekeep/kubekeep/layout"
	"github.com/kubekeep/kubekeep/rsyncish"
)

// rel turns a host path into a path relative to the root for os.Root,
// refusing anything that is not a clean absolute path.
func rel(hostPath string) (string, error) {
	if !rsyncish.SafePath(hostPath) {
		return "", fmt.Errorf("%w: %q", rsyncish.ErrUnsafePath, hostPath)
	}
	return strings.TrimPrefix(hostPath, "/"), nil
}

// insideRoot checks that the real location of hostPath (symlinks of its
// existing ancestors resolved) is below the root. Used before a path is
// handed to code that does not write through an os.Root (etcdutl, kubeadm).
func (r *runner) insideRoot(hostPath string) (string, error) {
	p, err := layout.Join(r.opts.Root, hostPath)
	if err != nil {
		return "", err
	}
	rootReal, err := filepath.EvalSymlinks(r.opts.Root)
	if err != nil {
		return "", fmt.Errorf("resolve root %s: %w", r.opts.Root, err)
	}
	probe, rest := p, ""
	for {
		real, err := filepath.EvalSymlinks(probe)
		if err == nil {
			full := filepath.Join(real, rest)
			// By whole segments, and "/" holds everything: comparing
			// with rootReal+"/" would test for "//" on a real node.
			if !within(full, rootReal) {
				return "", fmt.Errorf("%w: %s resolves to %s, outside the root %s", rsyncish.ErrUnsafePath, hostPath, full, rootReal)
			}
			return p, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("resolve %s: %w", p, err)
		}
		rest = filepath.Join(filepath.Base(probe), rest)
		parent := filepath.Dir(probe)
		if parent == probe {
			return "", fmt.Errorf("resolve %s: %w", p, err)
		}
		probe = parent
	}
}

// moveAside renames hostPath to dstHostPath inside the root, creating the
// destination's parents.
func (r *runner) moveAside(hostPath, dstHostPath string) error {
	root, err := r.root()
	if err != nil {
		return err
	}
	from, err := rel(hostPath)
	if err != nil {
		return err
	}
	to, err := rel(dstHostPath)
	if err != nil {
		return err
	}
	if err := root.MkdirAll(path.Dir(to), 0o700); err != nil {
		return err
	}
	if _, err := root.Lstat(to); err == nil {
		return fmt.Errorf("%s already exists; not overwriting it", dstHostPath)
	}
	return root.Rename(from, to)
}

func (r *runner) exists(hostPath string) bool {
	p, err := layout.Join(r.opts.Root, hostPath)
	if err != nil {
		return false
	}
	_, err = os.Lstat(p)
	return err == nil
}

// asideDir is where this run keeps what it moved out of the way.
func (r *runner) asideDir(what string) string {
	return asideDirAt(what, r.stamp)
}

// stampFormat names what a run keeps aside: its start, UTC, to the second.
const stampFormat = "20060102T150405Z"

// asideDirAt is the dir a run stamped stamp keeps its what in (the host
// path, under the root).
func asideDirAt(what, stamp string) string {
	return "/etc/kubernetes/kubekeep-" + what + "-" + stamp
}

// safety takes a new version of whatever the node holds now, so nothing a
// restore overwrites is lost; the old etcd data dir is kept too (moved
// aside by the etcd phase), this version is the copy on the second disk.
func (r *runner) safety(ctx context.Context) error {
	// Origin: a safety version is never what "latest" means, so a re-run
	// of a phase with --version latest lands on the version restored from.
	// A full snapshot: the safety version must stand on its own, whatever
	// the restore does next to the journal's etcd.
	opts := backup.Options{Root: r.opts.Root, Store: r.opts.Store, Etcd: r.opts.Etcd, Logger: r.opts.Logger, Origin: versionread.OriginSafety,
		ForceFull: true}
	what := "a backup of the node's current state (discovered from its manifests)"
	if _, err := layout.Discover(r.opts.Root, layout.Options{}); err != nil {
		// No usable manifests (a fresh VM, or the stop phase already
		// moved them): keep all of /etc/kubernetes and what else a rebuild
		// needs (layout's list: the kubelet's files, env files, drop-ins).
		paths := safetyPaths(r.exists)
		if len(paths) == 0 {
			r.skip("nothing on this node to save yet (no manifests, no /etc/kubernetes)")
			return nil
		}
		opts.NoDiscover, opts.Paths = true, paths
		what = "a backup of " + strings.Join(paths, ", ") + " (no usable manifests: " + err.Error() + ")"
	}
	return r.do("store "+what+" as a new version before anything is overwritten", func() error {
		res, err := backup.Run(ctx, opts)
		if err != nil {
			return fmt.Errorf("safety backup: %w (nothing was changed; fix the store or etcd access and re-run)", err)
		}
		r.note("safety version %s: %d files, etcd %s", res.ID, res.Files, res.Status)
		for _, w := range res.Warnings {
			r.warn("safety backup: %s", w)
		}
		return nil
	})
}

// safetyPaths are the paths a safety backup keeps when discovery cannot
// run: /etc/kubernetes whole, and every path of layout.RebuildPaths
// outside it that exists.
func safetyPaths(exists func(string) bool) []string {
	var out []string
	for _, p := range append([]string{"/etc/kubernetes"}, layout.RebuildPaths()...) {
		if (p == "/etc/kubernetes" || !within(p, "/etc/kubernetes")) && exists(p) {
			out = append(out, p)
		}
	}
	return out
}

// stop moves the static pod manifests aside, so the kubelet stops the
// control plane, and waits until it is down.
func (r *runner) stop(ctx context.Context) error {
	manifests := r.currentManifests()
	targets := r.stopTargets(r.nodeLayout())
	if len(manifests) == 0 {
		r.note("no static pod manifests under %s: the kubelet runs no control plane from them", layout.ManifestsDir)
	}
	if err := r.moveManifestsAside(manifests, ""); err != nil {
		return err
	}
	if len(targets) == 0 {
		return nil
	}
	return r.waitDown(ctx, targets)
}

// moveManifestsAside moves the static pod manifests into the run's
// kubekeep-manifests dir (the stop and kubeadm phases); why ends each
// action line.
func (r *runner) moveManifestsAside(manifests []string, why string) error {
	aside := r.asideDir("manifests")
	for _, m := range manifests {
		r.replaces("static pod manifest %s: moved aside to %s/ (its pod stops)", m, aside)
		if err := r.do(fmt.Sprintf("move %s aside to %s/%s", m, aside, why), func() error {
			return r.moveAside(m, aside+"/"+path.Base(m))
		}); err != nil {
			return err
		}
	}
	return nil
}

// waitDown waits, up to StopTimeout, until nothing answers on targets
// (host:port): the kubelet has stopped the pods whose manifests were moved.
func (r *runner) waitDown(ctx context.Context, targets []string) error {
	timeout := r.opts.StopTimeout
	if timeout <= 0 {
		timeout = DefaultStopTimeout
	}
	wait := r.opts.WaitStopped
	if wait == nil {
		wait = WaitPortsClosed(DefaultPollInterval)
	}
	return r.do(fmt.Sprintf("wait up to %s until the control plane stops answering on %s", timeout, strings.Join(targets, ", ")), func() error {
		wctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		if err := wait(wctx, targets); err != nil {
			return fmt.Errorf("control plane still running: %w (is the kubelet watching %s? stop the containers by hand: crictl ps; crictl stop ID)", err, layout.ManifestsDir)
		}
		return nil
	})
}

// initTargets are what kubeadm init's preflight finds in use while the old
// control plane runs (its Port-6443, Port-2379 and Port-2380 checks): the
// stop phase's etcd client endpoints, etcd's peer endpoints and the
// apiserver's secure port on this host. Read before the manifests move.
func (r *runner) initTargets() []string {
	now := r.nodeLayout()
	out := r.stopTargets(now)
	add := func(hp string) {
		if hp == "" {
			return
		}
		for _, o := range out {
			if o == hp {
				return
			}
		}
		out = append(out, hp)
	}
	set := now
	if set == nil || set.Etcd.External {
		set = r.src.set
	}
	if set != nil && !set.Etcd.External {
		for _, u := range set.Etcd.PeerURLs {
			add(hostPort(u))
		}
	}
	// The port on this host: a controlPlaneEndpoint may be a load balancer
	// that keeps answering.
	port := "6443"
	if _, p, err := net.SplitHostPort(r.apiServerAddr()); err == nil {
		port = p
	}
	add(net.JoinHostPort("127.0.0.1", port))
	return out
}

// nodeLayout is the layout the node's manifests give now; nil when they
// cannot be discovered (gone, or moved by the stop phase).
func (r *runner) nodeLayout() *layout.Set {
	set, err := layout.Discover(r.opts.Root, layout.Options{})
	if err != nil {
		return nil
	}
	return set
}

// stopTargets are the endpoints that answer while the control plane runs:
// etcd's client URLs from the version and the apiserver's secure port.
// now is the layout the node's manifests give at this moment (nil when
// discovery fails).
func (r *runner) stopTargets(now *layout.Set) []string {
	var out []string
	add := func(hp string) {
		for _, o := range out {
			if o == hp {
				return
			}
		}
		if hp != "" {
			out = append(out, hp)
		}
	}
	// The node's own manifests say where its etcd listens now; the
	// version's layout only when they are gone (a re-run after the
	// manifests were moved).
	if now != nil && !now.Etcd.External && len(now.Etcd.Endpoints) > 0 {
		for _, ep := range now.Etcd.Endpoints {
			add(hostPort(ep))
		}
	} else if r.src.set != nil && !r.src.set.Etcd.External {
		for _, ep := range r.src.set.Etcd.Endpoints {
			add(hostPort(ep))
		}
	}
	return out
}

// files restores everything but the manifests (put back last, by the
// kubeadm phase: the kubelet would otherwise start pods on half-restored
// files, and DirectoryOrCreate would create an empty etcd) and the etcd
// data dir (the etcd phase), then moves stale leaf certificates aside.
func (r *runner) files(ctx context.Context) error {
	if err := r.src.unsafeError(); err != nil {
		return err
	}
	a, err := r.analyze()
	if err != nil {
		return err
	}
	dataDir := ""
	if r.src.set != nil {
		dataDir = r.src.set.Etcd.DataDir
	}
	keep := func(p string) bool {
		return !within(p, layout.ManifestsDir) && (dataDir == "" || !within(p, dataDir))
	}
	n := 0
	for _, e := range r.src.entries {
		if e.Type != "stream" && keep(e.Path) {
			n++
		}
	}
	for _, p := range r.src.info.Paths {
		if !keep(p) {
			r.note("%s: left for a later phase", p)
		}
	}
	if err := r.restoreEntries(ctx, keep, fmt.Sprintf("restore %d files, dirs and symlinks of %s under %s with modes, owners and mtimes (manifests and etcd data excluded)",
		n, strings.Join(filterPaths(r.src.info.Paths, keep), ", "), r.opts.Root)); err != nil {
		return err
	}
	aside := r.asideDir("removed-certs")
	for _, c := range a.certs {
		if c.Fix != "" && !c.Remove {
			r.note("%s %s: %s", c.Path, c.Reason, c.Fix)
		}
	}
	for _, p := range a.removals() {
		if !r.opts.DryRun && !r.exists(p) {
			continue
		}
		why := ""
		for _, c := range a.certs {
			if strings.TrimSuffix(c.Path, ".crt") == strings.TrimSuffix(strings.TrimSuffix(p, ".key"), ".crt") {
				why = c.Reason
			}
		}
		if r.exists(p) {
			r.replaces("%s: moved aside to %s/ (%s)", p, aside, why)
		}
		if err := r.do(fmt.Sprintf("move %s aside to %s/ (%s) so kubeadm re-signs it with the old CA", p, aside, why), func() error {
			return r.moveAside(p, aside+p)
		}); err != nil {
			return err
		}
	}
	return nil
}

// restoreEntries restores the version's entries keep selects, after
// checking the whole job against the root (nothing is written when a
// parent dir leads out of it) and keeping, under the run's
// kubekeep-replaced dir, everything the restore replaces.
func (r *runner) restoreEntries(ctx context.Context, keep func(string) bool, desc string) error {
	if r.replacedDir == "" {
		// Once per run (the files and kubeadm phases share it), and
		// never one an earlier run in the same second filled.
		r.replacedDir = freeAsideDir(r.rootFS, r.asideDir("replaced"))
	}
	job, err := planFiles(ctx, r.opts.Store, r.src, r.rootFS, r.opts.Root, keep, r.replacedDir)
	if err != nil {
		return err
	}
	if len(job.replaced) > 0 {
		ps := job.replacedPaths()
		sort.Strings(ps)
		r.replaces("%d paths that differ from the version: replaced, the old ones kept under %s/: %s", len(ps), job.aside, strings.Join(ps, ", "))
		if err := r.do(job.describeKept(), job.keep); err != nil {
			return err
		}
	}
	return r.do(desc, func() error {
		if _, err := r.root(); err != nil {
			return err
		}
		defer r.counting(filesBytes(job.todo, nil))()
		return job.restore(ctx)
	})
}

func filterPaths(ps []string, keep func(string) bool) []string {
	var out []string
	for _, p := range ps {
		if keep(p) {
			out = append(out, p)
		}
	}
	return out
}
