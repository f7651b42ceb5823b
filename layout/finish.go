package layout

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"syscall"
)

// found is what the root holds at one entry's path.
type found struct {
	kind   string
	target string // set when the path goes through a symlink
}

// finish resolves and stats every path, applies excludes, leaves out what
// cannot or must not be copied, removes nested paths and returns the set
// in path order.
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

	at := map[string]found{}
	var present []*entry
	for _, e := range live {
		f, ok := d.examine(e)
		if !ok {
			continue
		}
		if f.kind == "" {
			k := KindDir
			if e.fileType {
				k = KindFile
			}
			s.Missing = append(s.Missing, Path{Path: e.path, Kind: k, Role: e.role, Sources: e.sources})
			d.warnf("%s (%s, from %s) does not exist under the root; nothing to back up there", e.path, e.role, describeSources(e.sources))
			continue
		}
		at[e.path] = f
		present = append(present, e)
	}

	// Sorted order puts every ancestor before its descendants, so the
	// first kept ancestor found is the outermost one.
	var kept []*entry
	for _, e := range present {
		var cover *entry
		for _, k := range kept {
			if k.path != e.path && within(e.path, k.path) && at[k.path].kind == KindDir {
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
		f := at[e.path]
		p := Path{Path: e.path, Kind: f.kind, Role: e.role, Sources: e.sources, Target: f.target}
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
		size, err := d.size(&p)
		if err != nil {
			d.problemf("%s (%s): cannot read it: %v; the backup will try, its size is unknown", e.path, e.role, err)
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
	s.Problems = append([]string{}, d.problems...)
	return s, nil
}

// matchExclude returns the exclude that covers p. An exclude of "/"
// matches the path "/" only: it acknowledges a hostPath / volume, it does
// not empty the set.
func matchExclude(p string, excludes []string) string {
	for _, ex := range excludes {
		if ex == "/" && p != "/" {
			continue
		}
		if within(p, ex) {
			return ex
		}
	}
	return ""
}

// examine decides what e is on this node. ok false means it is left out
// (with a problem or warning already recorded); a zero kind means missing.
func (d *discovery) examine(e *entry) (found, bool) {
	what := fmt.Sprintf("%s (%s, from %s)", e.path, e.role, describeSources(e.sources))
	if e.path == "/" {
		d.problemf("%s is the whole filesystem; left out (it would copy every file, /proc and /sys included): "+
			"back up what the pod needs with paths.extra, or acknowledge it with paths.exclude: [/]", what)
		return found{}, false
	}
	if leaveOut(d, e.path, what) {
		return found{}, false
	}
	r, err := resolve(d.root, e.path)
	switch {
	case err == nil:
	case errors.Is(err, ErrLinkLoop):
		d.warnf("%s: %v; only the link is backed up", what, err)
		return found{kind: KindSymlink}, true
	case errors.Is(err, fs.ErrNotExist):
		if link, ok := d.danglingLink(e.path); ok {
			d.warnf("%s is a symlink to %s, which does not exist under the root; only the link is backed up", what, link)
			return found{kind: KindSymlink}, true
		}
		return found{}, true
	default:
		d.problemf("%s: cannot look it up: %v; left out", what, err)
		return found{}, false
	}
	target := r.target
	if target == e.path {
		target = ""
	} else {
		if target == "/" {
			d.problemf("%s resolves to / (the whole filesystem); left out", what)
			return found{}, false
		}
		if leaveOut(d, target, what+" -> "+target) {
			return found{}, false
		}
		if r.climbed {
			d.warnf("%s: a symlink on the way to %s climbs above the root with ..; followed as on a host, where /.. is /", what, target)
		}
	}
	real := filepath.Join(d.root, filepath.FromSlash(r.target))
	st, err := os.Lstat(real)
	if err != nil {
		d.problemf("%s: %v; left out", what, err)
		return found{}, false
	}
	if fsName := pseudoFSAt(real); fsName != "" {
		d.problemf("%s is on a %s filesystem, kernel state and no files to back up; left out", what, fsName)
		return found{}, false
	}
	kind := KindOther
	switch m := st.Mode(); {
	case m.IsDir():
		kind = KindDir
	case m.IsRegular():
		kind = KindFile
	}
	return found{kind: kind, target: target}, true
}

// leaveOut records why p (a host path, named or resolved) is not copied,
// if it is in a pseudo or runtime directory.
func leaveOut(d *discovery, p, what string) bool {
	if dir := inAny(p, pseudoDirs); dir != "" {
		d.problemf("%s is in %s, kernel state and no files to back up; left out", what, dir)
		return true
	}
	if dir := inAny(p, runtimeDirs); dir != "" {
		d.warnf("%s is in %s, runtime state (sockets, pid files) its services recreate at boot; not backed up", what, dir)
		return true
	}
	return false
}

// danglingLink reports whether hostPath itself is a symlink (its parent
// resolving inside the root) and where it points.
func (d *discovery) danglingLink(hostPath string) (string, bool) {
	parent, err := Resolve(d.root, path.Dir(hostPath))
	if err != nil {
		return "", false
	}
	link, err := os.Readlink(filepath.Join(d.root, filepath.FromSlash(path.Join(parent, path.Base(hostPath)))))
	if err != nil {
		return "", false
	}
	return link, true
}

// size adds up the regular files of p, read at its target. Symlinks below
// it stay links (not followed, not counted), Exclude subtrees and kernel
// filesystems mounted below it are left out; the latter are added to
// p.Exclude with a problem.
func (d *discovery) size(p *Path) (int64, error) {
	src := p.Path
	if p.Target != "" {
		src = p.Target
	}
	full := filepath.Join(d.root, filepath.FromSlash(src))
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
	devs := map[string]uint64{}
	err := filepath.WalkDir(full, func(fp string, de fs.DirEntry, err error) error {
		if err != nil {
			// An unreadable subdir is the backup's problem to report;
			// the size is an estimate.
			if de != nil && de.IsDir() && fp != full {
				return fs.SkipDir
			}
			return err
		}
		rel, _ := filepath.Rel(full, fp)
		host := p.Path
		if rel != "." {
			host = path.Join(p.Path, filepath.ToSlash(rel))
		}
		for _, ex := range p.Exclude {
			if within(host, ex) {
				if de.IsDir() {
					return fs.SkipDir
				}
				return nil
			}
		}
		info, err := de.Info()
		if err != nil {
			return nil
		}
		if de.IsDir() {
			dev := deviceOf(info)
			devs[fp] = dev
			if parent, ok := devs[filepath.Dir(fp)]; ok && fp != full && parent != dev {
				if fsName := pseudoFSAt(fp); fsName != "" {
					p.Exclude = append(p.Exclude, host)
					d.problemf("%s inside %s is a %s mount, kernel state and no files to back up; left out of it", host, p.Path, fsName)
					return fs.SkipDir
				}
			}
			return nil
		}
		if de.Type().IsRegular() {
			total += info.Size()
		}
		return nil
	})
	return total, err
}

func deviceOf(info fs.FileInfo) uint64 {
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Dev) // Dev's width varies by arch
	}
	return 0
}
