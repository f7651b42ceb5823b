package backup

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path"
	"slices"
	"strings"

	"github.com/kubekeep/kubekeep/backup/versionread"
	"github.com/kubekeep/kubekeep/layout"
	"github.com/kubekeep/kubekeep/rsyncish"
)

// Good and degraded versions.
//
// A version is good when its etcd snapshot was taken and checked and its
// file set is complete: its recorded status is "ok". Only good versions are
// what "latest" means to a restore, `get` or the drill (rsyncish.Resolve
// reads the same status). Every other version is still committed and kept,
// because what it holds may be all there is, but it is never picked for
// you:
//
//   - etcd-failed: the files, no etcd snapshot (etcd unreachable, or the
//     snapshot failed its check);
//   - files-only: no etcd to back up (--no-discover without endpoints, or
//     a restore's safety backup of a node with no manifests left);
//   - degraded: etcd is fine but the file set is not complete. Its reasons
//     are in the version's "problems" meta; an etcd-failed or files-only
//     version can carry problems too (it is then shown as, e.g.,
//     "etcd-failed,degraded").
//
// A version has problems when discovery reported some (layout's
// Set.Problems: a manifest it could not parse, a path it had to leave out)
// or when it lost files the reference version held. The reference is the
// newest version with no problems (whatever its etcd status), so a
// vanished CA keeps every later version degraded until the file is back,
// instead of becoming the new normal one backup later. A loss is:
//
//  1. any must-never-lose file the reference held: ca.crt, ca.key, sa.key,
//     sa.pub, front-proxy-ca.crt, front-proxy-ca.key, etcd/ca.crt and
//     etcd/ca.key in /etc/kubernetes/pki (or any PKI dir discovery names
//     in the new version or the reference: with /etc/kubernetes/pki a
//     symlink to /data/pki, the files are stored at /data/pki);
//  2. half or more of the regular files below one of the reference's
//     top-level paths (a single-file path such as admin.conf: the file);
//  3. a quarter or more of all the reference's regular files.
//
// Files the configuration now excludes are not compared, and a file that
// is at another path through a symlink (pki moved to /data/pki and linked,
// or back) is not lost. When files went
// away on purpose (a static pod removed, super-admin.conf moved off the
// node), one backup with Options.AcceptMissing (`kubekeep backup
// --accept-missing`) records the loss as accepted and becomes the new
// reference.

// MustKeep are the files, relative to a PKI dir, that a control plane
// cannot be rebuilt without: the CAs and the service-account key pair.
// Leaf certificates can be re-signed from them; these cannot be recreated.
var MustKeep = []string{"ca.crt", "ca.key", "sa.key", "sa.pub", "front-proxy-ca.crt", "front-proxy-ca.key", "etcd/ca.crt", "etcd/ca.key"}

// defaultPKIDir is kubeadm's certificatesDir.
const defaultPKIDir = "/etc/kubernetes/pki"

// referenceVersion is the newest version with no problems: what a new
// version's file set is compared with.
func referenceVersion(store *rsyncish.Store) (rsyncish.VersionInfo, bool, error) {
	vs, err := store.Versions()
	if err != nil {
		return rsyncish.VersionInfo{}, false, err
	}
	for i := len(vs) - 1; i >= 0; i-- {
		if !versionread.VersionState(vs[i]).Degraded {
			return vs[i], true, nil
		}
	}
	return rsyncish.VersionInfo{}, false, nil
}

// pkiDirs are the directories MustKeep is relative to: kubeadm's, and
// every PKI dir of the new set and of the reference's (ref may be nil), so
// a PKI dir that a symlink leads to (/etc/kubernetes/pki -> /data/pki:
// the files are stored at /data/pki) counts also in the version where it
// vanished.
func pkiDirs(set, ref *layout.Set) []string {
	dirs := []string{defaultPKIDir}
	for _, s := range []*layout.Set{set, ref} {
		if s == nil {
			continue
		}
		for _, p := range s.Paths {
			if p.Role == layout.RolePKI && p.Kind == layout.KindDir && !slices.Contains(dirs, p.Path) {
				dirs = append(dirs, p.Path)
			}
		}
	}
	return dirs
}

// versionSet is the layout a version recorded, nil when none.
func versionSet(v rsyncish.VersionInfo) *layout.Set {
	raw, ok := v.Meta[versionread.MetaLayout]
	if !ok {
		return nil
	}
	var s layout.Set
	if json.Unmarshal(raw, &s) != nil {
		return nil
	}
	return &s
}

// dropMoved takes out of loss the files that are not gone but moved
// behind a symlink, or back from behind one: the reference's file f, seen
// through the symlinks on the node now (and through the reference's own
// links, whose targets it stored), is a regular file at another path the
// new version holds. An admin who moves /etc/kubernetes/pki to /data/pki
// and links it loses nothing, nor does the first backup after kubekeep
// learnt to store what links lead to: the reference holds
// /etc/kubernetes/pki/etcd/ca.key, the new version /data/pki/etcd/ca.key.
// held are the paths the new version was walked from, exclude its
// excludes (host paths).
func dropMoved(loss *rsyncish.Loss, root string, ref *layout.Set, held, exclude []string) (moved map[string]string) {
	moved = map[string]string{}
	for _, f := range loss.Missing {
		names := []string{f}
		if ref != nil {
			for _, p := range ref.Paths {
				if p.Target != "" && p.Target != p.Path && within(f, p.Target) {
					names = append(names, p.Path+strings.TrimPrefix(f, p.Target))
				}
			}
		}
		for _, n := range names {
			g, err := layout.Resolve(root, n)
			if err != nil || g == f || !holds(held, exclude, g) {
				continue
			}
			if st, err := os.Lstat(path.Join(root, g)); err == nil && st.Mode().IsRegular() {
				moved[f] = g
				break
			}
		}
	}
	if len(moved) == 0 {
		return moved
	}
	loss.Missing = slices.DeleteFunc(loss.Missing, func(f string) bool { return moved[f] != "" })
	for f := range moved {
		best := -1
		for i, pl := range loss.Paths {
			if within(f, pl.Path) && (best < 0 || len(pl.Path) > len(loss.Paths[best].Path)) {
				best = i
			}
		}
		if best >= 0 {
			loss.Paths[best].Missing--
		}
	}
	return moved
}

// holds reports whether a walk of held, leaving out exclude, reaches g
// (rsyncish.Excluded, the rule AddTree walks by).
func holds(held, exclude []string, g string) bool {
	if rsyncish.Excluded(g, exclude) {
		return false
	}
	for _, h := range held {
		if within(g, h) {
			return true
		}
	}
	return false
}

func within(p, base string) bool {
	return base == "/" || p == base || strings.HasPrefix(p, base+"/")
}

// lossProblems turns a loss into problems by the rules in the package
// comment; none when nothing that matters went away.
func lossProblems(loss *rsyncish.Loss, pki []string) []string {
	if len(loss.Missing) == 0 {
		return nil
	}
	var problems []string
	must := map[string]bool{}
	for _, d := range pki {
		for _, f := range MustKeep {
			must[path.Join(d, f)] = true
		}
	}
	var lost []string
	for _, f := range loss.Missing {
		if must[f] {
			lost = append(lost, f)
		}
	}
	if len(lost) > 0 {
		problems = append(problems, fmt.Sprintf("must-never-lose files are gone since version %s: %s (a control plane cannot be rebuilt without them)",
			loss.Ref, strings.Join(lost, ", ")))
	}
	perPath := false
	for _, pl := range loss.Paths {
		if pl.Missing > 0 && 2*pl.Missing >= pl.Files {
			perPath = true
			problems = append(problems, fmt.Sprintf("%d of the %d files below %s in version %s are gone (%s)",
				pl.Missing, pl.Files, pl.Path, loss.Ref, sample(loss.Missing, pl.Path)))
		}
	}
	if !perPath && 4*len(loss.Missing) >= loss.Files {
		problems = append(problems, fmt.Sprintf("%d of the %d files in version %s are gone (%s)",
			len(loss.Missing), loss.Files, loss.Ref, sample(loss.Missing, "/")))
	}
	return problems
}

// sample names up to three of the missing files below dir.
func sample(missing []string, dir string) string {
	var out []string
	n := 0
	for _, f := range missing {
		if within(f, dir) {
			if n < 3 {
				out = append(out, f)
			}
			n++
		}
	}
	if n > len(out) {
		out = append(out, fmt.Sprintf("and %d more", n-len(out)))
	}
	return strings.Join(out, ", ")
}

// checkLoss compares the files just added to w (walked from held) with
// the reference version and returns the problems the loss makes (none with
// AcceptMissing, which records the loss as accepted instead). Files that
// moved behind a symlink, or back, are not lost (dropMoved).
func checkLoss(w *rsyncish.VersionWriter, opts Options, set *layout.Set, held, exclude []string, log *slog.Logger) ([]string, error) {
	ref, ok, err := referenceVersion(opts.Store)
	if err != nil || !ok {
		return nil, err
	}
	loss, err := w.Lacks(ref.ID, exclude)
	if err != nil {
		// A damaged reference must not stop the backup; verify reports it.
		log.Warn("cannot compare the file set with the previous complete version", "version", ref.ID, "err", err)
		return nil, nil
	}
	refSet := versionSet(ref)
	if moved := dropMoved(loss, opts.Root, refSet, held, exclude); len(moved) > 0 {
		log.Info("files of the previous complete version are at another path now, through a symlink; not lost",
			"version", ref.ID, "files", len(moved))
	}
	problems := lossProblems(loss, pkiDirs(set, refSet))
	if len(problems) == 0 {
		return nil, nil
	}
	if opts.AcceptMissing {
		log.Warn("files gone since the previous complete version accepted (--accept-missing): this version is the new reference",
			"reference", ref.ID, "missing", len(loss.Missing), "problems", problems)
		return nil, w.SetMeta(versionread.MetaAccepted, loss)
	}
	problems[len(problems)-1] += "; if the files went away on purpose, run `kubekeep backup --accept-missing` once"
	return problems, nil
}
