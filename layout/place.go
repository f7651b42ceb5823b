package layout

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"syscall"
)

// placement is where one path of discovery is on this node once its
// symlinks are followed (examine).
type placement struct {
	// loc is where the path's last component is: its parents' symlinks
	// followed, the last component not. It is the path itself unless a
	// parent is a symlink.
	loc string
	at  found // what loc is
	// targetKind is what at.target is, when set.
	targetKind string
	// links are the other symlinks on the way to the content, each
	// recorded as a link.
	links []string
}

// examine finds where e is on this node. ok false means it is left out
// (with a problem or warning already recorded); a zero at.kind means it is
// missing.
func (d *discovery) examine(e *entry) (pl placement, ok bool) {
	what := fmt.Sprintf("%s (%s, from %s)", e.path, e.role, describeSources(e.sources))
	if e.path == "/" {
		d.problemf("%s is the whole filesystem; left out (it would copy every file, /proc and /sys included): "+
			"back up what the pod needs with paths.extra, or acknowledge it with paths.exclude: [/]", what)
		return pl, false
	}
	if leaveOut(d, e.path, what) {
		return pl, false
	}
	parent, err := resolve(d.root, path.Dir(e.path))
	switch {
	case err == nil:
	case errors.Is(err, fs.ErrNotExist):
		return pl, true
	case errors.Is(err, ErrLinkLoop):
		d.warnf("%s: a parent directory: %v; left out", what, err)
		return pl, false
	default:
		d.problemf("%s: cannot look it up: %v; left out", what, err)
		return pl, false
	}
	pl.loc, pl.links = path.Join(parent.target, path.Base(e.path)), parent.links
	climbed := parent.climbed
	if pl.loc != e.path && leaveOut(d, pl.loc, what+" -> "+pl.loc) {
		return pl, false
	}
	real := filepath.Join(d.root, filepath.FromSlash(pl.loc))
	st, err := os.Lstat(real)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return placement{}, true
	}
	if err != nil {
		d.problemf("%s: %v; left out", what, err)
		return pl, false
	}
	target := pl.loc
	if st.Mode()&fs.ModeSymlink != 0 {
		r, err := resolve(d.root, pl.loc)
		switch {
		case err == nil:
		case errors.Is(err, ErrLinkLoop):
			d.warnf("%s: %v; only the link is backed up", what, err)
			pl.at = found{kind: KindSymlink}
			return pl, true
		case errors.Is(err, fs.ErrNotExist):
			link, _ := os.Readlink(real)
			hint := ""
			if r.climbed {
				hint = " (its .. climbs above the root, and /.. is /)"
			}
			d.warnf("%s is a symlink to %s, which does not exist under the root%s; only the link is backed up", what, link, hint)
			pl.at = found{kind: KindSymlink}
			return pl, true
		default:
			d.problemf("%s: cannot look it up: %v; left out", what, err)
			return pl, false
		}
		target, climbed = r.target, climbed || r.climbed
		pl.links = append(pl.links, r.links[1:]...) // r.links[0] is loc
		if target == "/" {
			d.problemf("%s resolves to / (the whole filesystem); left out", what)
			return pl, false
		}
		if leaveOut(d, target, what+" -> "+target) {
			return pl, false
		}
		real = filepath.Join(d.root, filepath.FromSlash(target))
		if st, err = os.Lstat(real); err != nil {
			d.problemf("%s: %v; left out", what, err)
			return pl, false
		}
	}
	if climbed {
		d.warnf("%s: a symlink on the way to %s climbs above the root with ..; followed as on a host, where /.. is /", what, target)
	}
	if fsName := pseudoFSAt(real); fsName != "" {
		d.problemf("%s is on a %s filesystem, kernel state and no files to back up; left out", what, fsName)
		return pl, false
	}
	kind := KindOther
	switch m := st.Mode(); {
	case m.IsDir():
		kind = KindDir
	case m.IsRegular():
		kind = KindFile
	}
	if target == pl.loc {
		pl.at = found{kind: kind}
	} else {
		pl.at, pl.targetKind = found{kind: KindSymlink, target: target}, kind
	}
	return pl, true
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
