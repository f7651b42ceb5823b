package backup

import (
	"path"
	"slices"
	"strings"

	"github.com/kubekeep/kubekeep/layout"
)

// filePaths returns the host paths stored as files, and the excludes. The
// etcd data dir is never copied as files: a live bbolt file copied while
// etcd writes is not a backup (etcd-io/etcd#13109). etcd goes in as a
// snapshot stream instead; so every etcd-data path of the set (the data
// dir, what it links to) and every path layout says a walk must leave out
// is excluded.
//
// set is what layout placed: every path free of symlinks in its parents,
// links to keep as their own paths (a walk stores a link as a link), so
// the version holds both the links and what they lead to. A path of
// opts.Paths that is not there is passed on for the store to record as
// skipped.
func filePaths(set *layout.Set, opts Options) (paths, exclude []string) {
	exclude = slices.Clone(opts.Exclude)
	if set == nil {
		return slices.Clone(opts.Paths), exclude
	}
	for _, p := range set.Paths {
		if p.Role == layout.RoleEtcdData {
			exclude = append(exclude, p.Path)
			continue
		}
		paths = append(paths, p.Path)
		exclude = append(exclude, p.Exclude...)
	}
	if set.Etcd.DataDir != "" {
		exclude = append(exclude, set.Etcd.DataDir)
	}
	for _, m := range set.Missing {
		if slices.Contains(opts.Paths, m.Path) {
			paths = append(paths, m.Path)
		}
	}
	seen := map[string]bool{}
	exclude = slices.DeleteFunc(exclude, func(ex string) bool {
		dup := seen[ex]
		seen[ex] = true
		return dup
	})
	return paths, exclude
}

// hostExcludes are the excludes that name host paths; the store applies
// the glob patterns among them too, layout knows only paths.
func hostExcludes(exclude []string) []string {
	var out []string
	for _, ex := range exclude {
		if strings.HasPrefix(ex, "/") && !strings.ContainsAny(ex, "*?[") {
			out = append(out, ex)
		}
	}
	return out
}

// hostFile is where hostPath is under root, its symlinks resolved inside
// root as on the host (layout.Real: an absolute link starts again at root,
// and no link leads out of it), so etcd's certificates are read where the
// node's etcd reads them. A path that cannot be looked up (a loop) is
// joined as it is, for the error to name it.
func hostFile(root, hostPath string) string {
	if real, err := layout.Real(root, hostPath); err == nil {
		return real
	}
	return path.Join(root, hostPath)
}
