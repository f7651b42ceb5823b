package layout

import (
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
)

// found is what the root holds at one placed path.
type found struct {
	kind string
	// target is where a symlink leads, when it leads somewhere: its
	// content is placed there.
	target string
}

// finish places every path where it is on this node (following symlinks
// as the kubelet does), applies excludes, leaves out what cannot or must
// not be copied, removes nested paths and returns the set in path order.
//
// Placing: a path whose last component is a symlink stays (as the link)
// and what it resolves to is added with the same role; a path with a
// symlink in a parent is replaced by where it is, since a walk there would
// store files below a symlink, which nothing can restore; every symlink
// followed on the way is added as a link. So every path of the set is
// free of symlinks in its parents, and the set is exactly what a backup
// walks.
func (d *discovery) finish(excludes []string) (*Set, error) {
	s := &Set{Paths: []Path{}, Skipped: []Skipped{}, Excluded: []Excluded{}, Missing: []Path{}, Etcd: d.etcd}
	keys := make([]string, 0, len(d.entries))
	for k := range d.entries {
		keys = append(keys, k)
	}
	sort.Strings(keys)

	used := map[string]bool{}
	excluded := map[string]bool{}
	exclude := func(p string) bool {
		ex := matchExclude(p, excludes)
		if ex == "" {
			return false
		}
		used[ex] = true
		if !excluded[p] {
			excluded[p] = true
			s.Excluded = append(s.Excluded, Excluded{Path: p, Exclude: ex})
		}
		return true
	}

	placed := map[string]*entry{}
	at := map[string]found{}
	place := func(p string, role Role, srcs []Source, f found, moved bool) {
		if exclude(p) {
			return
		}
		e, ok := placed[p]
		if !ok {
			e = &entry{path: p, role: role, rank: roleRank[role], moved: moved}
			placed[p] = e
			at[p] = f
		}
		if r := roleRank[role]; r < e.rank {
			e.role, e.rank = role, r
		}
		e.moved = e.moved && moved
		for _, src := range srcs {
			if !slices.Contains(e.sources, src) {
				e.sources = append(e.sources, src)
			}
		}
	}
	movedTo := map[string]string{} // a path with a symlink in a parent -> where it is
	linkUsers := map[string][]string{}
	var linkOrder []string
	for _, k := range keys {
		e := d.entries[k]
		if exclude(k) {
			continue
		}
		pl, ok := d.examine(e)
		if !ok {
			continue
		}
		if pl.at.kind == "" {
			kind := KindDir
			if e.fileType {
				kind = KindFile
			}
			s.Missing = append(s.Missing, Path{Path: e.path, Kind: kind, Role: e.role, Sources: e.sources})
			d.warnf("%s (%s, from %s) does not exist under the root; nothing to back up there", e.path, e.role, describeSources(e.sources))
			continue
		}
		srcs := e.sources
		moved := pl.loc != e.path
		if moved {
			movedTo[e.path] = pl.loc
			srcs = append(slices.Clone(e.sources), Source{From: FromSymlink, Note: e.path + " through symlink " + pl.links[0]})
		}
		place(pl.loc, e.role, srcs, pl.at, moved)
		if pl.at.target != "" {
			place(pl.at.target, e.role, []Source{{From: FromSymlink, Note: "target of symlink " + pl.loc}}, found{kind: pl.targetKind}, false)
		}
		// A link on the way is structure, not etcd data: it is stored
		// as a link even when only the etcd data dir goes through it.
		linkRole := e.role
		if linkRole == RoleEtcdData {
			linkRole = RoleExtra
		}
		for _, l := range pl.links {
			if _, ok := linkUsers[l]; !ok {
				linkOrder = append(linkOrder, l)
			}
			if !slices.Contains(linkUsers[l], e.path) {
				linkUsers[l] = append(linkUsers[l], e.path)
			}
			f := found{kind: KindSymlink}
			if placed[l] == nil {
				// Once per link, not per path through it (place
				// keeps what was found first); it resolved on the way.
				f.target, _ = Resolve(d.root, l)
			}
			place(l, linkRole, nil, f, false)
		}
	}
	for _, l := range linkOrder {
		if e := placed[l]; e != nil && len(e.sources) == 0 {
			e.sources = append(e.sources, Source{From: FromSymlink, Note: linkNote(linkUsers[l])})
		}
	}

	pkeys := make([]string, 0, len(placed))
	for k := range placed {
		pkeys = append(pkeys, k)
	}
	sort.Strings(pkeys)
	// Sorted order puts every ancestor before its descendants, so the
	// first kept ancestor found is the outermost one. Only a directory
	// holds what is below it: no path of the set lies below a symlink.
	var kept []*entry
	holder := map[string]string{} // placed path -> the kept path a walk stores it with
	for _, k := range pkeys {
		e := placed[k]
		var cover *entry
		for _, c := range kept {
			if c.path != e.path && within(e.path, c.path) && at[c.path].kind == KindDir {
				cover = c
				break
			}
		}
		// etcd's data dir is snapshotted, not copied: it stays its own
		// entry so nothing copies the live bbolt file as part of a parent.
		if cover != nil && e.role != RoleEtcdData {
			holder[e.path] = cover.path
			if !e.moved {
				s.Skipped = append(s.Skipped, Skipped{Path: e.path, CoveredBy: cover.path, Sources: e.sources})
			}
			continue
		}
		if cover != nil {
			d.warnf("etcd data dir %s is inside %s (%s): a walk of %s must leave it out; etcd is backed up by snapshot",
				e.path, cover.path, cover.role, cover.path)
		}
		holder[e.path] = e.path
		kept = append(kept, e)
	}
	for _, k := range keys {
		loc, ok := movedTo[k]
		if !ok || holder[loc] == "" {
			continue
		}
		s.Skipped = append(s.Skipped, Skipped{Path: k, CoveredBy: holder[loc], Sources: d.entries[k].sources})
	}
	sort.SliceStable(s.Skipped, func(i, j int) bool { return s.Skipped[i].Path < s.Skipped[j].Path })

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

// linkNote says which paths of the set go through a symlink.
func linkNote(users []string) string {
	if len(users) > 3 {
		return fmt.Sprintf("symlink on the way to %s and %d more", strings.Join(users[:2], ", "), len(users)-2)
	}
	return "symlink on the way to " + strings.Join(users, ", ")
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

// size adds up the regular files of p. Symlinks below it stay links (not
// followed, not counted), Exclude subtrees and kernel filesystems mounted
// below it are left out; the latter are added to p.Exclude with a problem.
func (d *discovery) size(p *Path) (int64, error) {
	full := filepath.Join(d.root, filepath.FromSlash(p.Path))
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
