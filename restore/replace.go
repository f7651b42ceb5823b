package restore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/kubekeep/kubekeep/rsyncish"
)

// filesJob is one restore of stored entries under a root, checked and
// planned whole before anything is written.
type filesJob struct {
	store   *rsyncish.Store
	src     *source
	root    *os.Root // nil: the target does not exist yet
	rootDir string
	filter  func(string) bool
	aside   string // host path of the dir replaced items are kept in
	todo    []rsyncish.Entry
	// replaced are what the restore would overwrite or remove.
	replaced []replacedItem
	// damaged are stored files that do not read back (a rotten or lost
	// block): left out of the restore, named by its error.
	damaged map[string]error
}

type replacedItem struct {
	path string
	// kind is what is there now: "file", "symlink" or "dir".
	kind string
	// move: keep it by renaming it (a dir in the way of a file would be
	// removed with all it holds).
	move bool
}

func (j *filesJob) replacedPaths() []string {
	out := make([]string, len(j.replaced))
	for i, it := range j.replaced {
		out[i] = it.path
	}
	return out
}

// planFiles lists the entries to restore and finds, in the target as it
// is, everything that would stop the restore half-way (a parent that is a
// symlink leading out of the root, or not a directory) and everything the
// restore would replace. It changes nothing.
func planFiles(ctx context.Context, store *rsyncish.Store, src *source, root *os.Root, rootDir string, filter func(string) bool, aside string) (*filesJob, error) {
	j := &filesJob{store: store, src: src, root: root, rootDir: rootDir, filter: filter, aside: aside, damaged: map[string]error{}}
	dirs := map[string]bool{}
	for _, e := range src.entries {
		if e.Type == "stream" || (filter != nil && !filter(e.Path)) {
			continue
		}
		j.todo = append(j.todo, e)
		if e.Type == "dir" {
			dirs[e.Path] = true
		}
	}
	if root == nil {
		return j, nil
	}
	checked := map[string]bool{}
	// Parents first: the first problem named is the outermost one.
	checkParents := func(p string) error {
		var parents []string
		for d := parentDir(p); d != "/"; d = parentDir(d) {
			parents = append(parents, d)
		}
		for i := len(parents) - 1; i >= 0; i-- {
			d := parents[i]
			if checked[d] || dirs[d] {
				// A stored dir replaces whatever is there: judged as
				// an entry of its own.
				continue
			}
			checked[d] = true
			if err := j.checkParent(d); err != nil {
				return err
			}
		}
		return nil
	}
	for _, e := range j.todo {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err := checkParents(e.Path); err != nil {
			return nil, err
		}
		it, err := j.judge(e)
		if err != nil {
			return nil, err
		}
		if it != nil {
			j.replaced = append(j.replaced, *it)
		}
	}
	// The kept dir is written first: its parents must hold too.
	if len(j.replaced) > 0 {
		if err := checkParents(j.aside + "/x"); err != nil {
			return nil, err
		}
	}
	return j, nil
}

// checkParent refuses a parent dir the restore could not write through.
func (j *filesJob) checkParent(d string) error {
	rp := strings.TrimPrefix(d, "/")
	fi, err := j.root.Stat(rp)
	switch {
	case err == nil && fi.IsDir():
		return nil
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err == nil:
		return fmt.Errorf("%s under %s is a %s, not a directory: the version's files below it cannot be written; nothing restored", d, j.rootDir, fileKind(fi.Mode()))
	}
	if li, lerr := j.root.Lstat(rp); lerr == nil && li.Mode()&fs.ModeSymlink != 0 {
		t, _ := j.root.Readlink(rp)
		if j.rootDir == "/" && path.IsAbs(t) {
			// At / nothing leads out, but a restore writes through an
			// os.Root, which never follows an absolute link.
			fix := t
			if r, err := filepath.Rel(path.Dir(d), t); err == nil {
				fix = r
			}
			return fmt.Errorf("%s is a symlink with an absolute target (%s): a restore writes through relative links only (ln -sfn %s %s makes it one), or restore under another --to and copy; %w; nothing restored", d, t, fix, d, rsyncish.ErrUnsafePath)
		}
		return fmt.Errorf("%s under %s is a symlink to %s, which leads out of %s (only relative links that stay inside are followed): %w; nothing restored", d, j.rootDir, t, j.rootDir, rsyncish.ErrUnsafePath)
	}
	return fmt.Errorf("%s under %s: %w; nothing restored", d, j.rootDir, err)
}

// judge says whether restoring e replaces something that differs from it.
func (j *filesJob) judge(e rsyncish.Entry) (*replacedItem, error) {
	rp := strings.TrimPrefix(e.Path, "/")
	fi, err := j.root.Lstat(rp)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s under %s: %w; nothing restored", e.Path, j.rootDir, err)
	}
	cur := &replacedItem{path: e.Path}
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		cur.kind = "symlink"
	case fi.IsDir():
		cur.kind = "dir"
	case fi.Mode().IsRegular():
		cur.kind = "file"
	default:
		return nil, fmt.Errorf("%s under %s is a %s: move it away by hand; nothing restored", e.Path, j.rootDir, fileKind(fi.Mode()))
	}
	switch e.Type {
	case "dir":
		if cur.kind == "dir" {
			return nil, nil // kept as it is; only its mode, owner and mtime change
		}
		return cur, nil
	case "symlink":
		if cur.kind == "symlink" {
			if t, err := j.root.Readlink(rp); err == nil && t == e.Target {
				return nil, nil
			}
		}
	case "file":
		if cur.kind == "file" {
			same, err := j.sameContent(e, rp, fi.Size())
			if err != nil {
				return nil, err
			}
			if same || j.damaged[e.Path] != nil {
				// A damaged file is not restored: what is there stays.
				return nil, nil
			}
		}
	}
	cur.move = cur.kind == "dir"
	return cur, nil
}

// sameContent compares a file in the target with the stored one.
func (j *filesJob) sameContent(e rsyncish.Entry, rp string, size int64) (bool, error) {
	if size != e.Size {
		return false, nil
	}
	f, err := j.root.Open(rp)
	if err != nil {
		return false, fmt.Errorf("%s under %s: %w; nothing restored", e.Path, j.rootDir, err)
	}
	defer f.Close()
	rc, _, err := j.store.OpenFile(j.src.id, e.Path)
	if err != nil {
		return false, err
	}
	defer rc.Close()
	a := make([]byte, 64<<10)
	b := make([]byte, 64<<10)
	for {
		na, ea := io.ReadFull(f, a)
		nb, eb := io.ReadFull(rc, b)
		endA := ea == io.EOF || ea == io.ErrUnexpectedEOF
		endB := eb == io.EOF || eb == io.ErrUnexpectedEOF
		if eb != nil && !endB {
			j.damaged[e.Path] = eb
			return false, nil
		}
		if na != nb || !bytes.Equal(a[:na], b[:nb]) {
			return false, nil
		}
		if ea != nil && !endA {
			return false, fmt.Errorf("%s under %s: %w", e.Path, j.rootDir, ea)
		}
		if endA || endB {
			return endA && endB, nil
		}
	}
}

// keep puts everything the restore replaces under the aside dir, at its
// host path: a file hard-linked (the restore renames a new file over the
// old name, so the link keeps the old bytes, mode and owner) or copied
// when the aside dir is on another filesystem; a symlink recreated; a dir
// in the way of another type moved.
func (j *filesJob) keep() error {
	for _, it := range j.replaced {
		if err := j.keepOne(it); err != nil {
			return fmt.Errorf("keep %s under %s%s before replacing it: %w (nothing restored yet)", it.path, j.rootDir, j.aside, err)
		}
	}
	return nil
}

func (j *filesJob) keepOne(it replacedItem) error {
	from := strings.TrimPrefix(it.path, "/")
	to := strings.TrimPrefix(j.aside+it.path, "/")
	if err := j.root.MkdirAll(path.Dir(to), 0o700); err != nil {
		return err
	}
	switch {
	case it.move:
		return j.root.Rename(from, to)
	case it.kind == "symlink":
		t, err := j.root.Readlink(from)
		if err != nil {
			return err
		}
		if err := j.root.Symlink(t, to); err != nil {
			return err
		}
		if fi, err := j.root.Lstat(from); err == nil && os.Geteuid() == 0 {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				return j.root.Lchown(to, int(st.Uid), int(st.Gid))
			}
		}
		return nil
	}
	err := j.root.Link(from, to)
	if err == nil {
		return nil
	}
	var le *os.LinkError
	if errors.As(err, &le) && (errors.Is(le.Err, syscall.EXDEV) || errors.Is(le.Err, syscall.EPERM) || errors.Is(le.Err, syscall.EMLINK)) {
		return copyInRoot(j.root, from, to)
	}
	return err
}

// copyInRoot copies a regular file with its mode, owner and times.
func copyInRoot(root *os.Root, from, to string) error {
	in, err := root.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := root.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && os.Geteuid() == 0 {
		if err := root.Lchown(to, int(st.Uid), int(st.Gid)); err != nil {
			return err
		}
	}
	if err := root.Chmod(to, fi.Mode().Perm()); err != nil {
		return err
	}
	return root.Chtimes(to, fi.ModTime(), fi.ModTime())
}

// restore writes the planned entries. A stored file that does not read
// back does not stop the rest: when the store's restore fails, every file
// of the job is read back, the damaged ones are left out and the rest is
// restored; the result is then a *DamagedFilesError naming each damaged
// file and the newest other version with an intact copy of it.
func (j *filesJob) restore(ctx context.Context) error {
	for {
		filter := j.filter
		if len(j.damaged) > 0 {
			filter = func(p string) bool { return (j.filter == nil || j.filter(p)) && j.damaged[p] == nil }
		}
		err := j.store.RestoreFiles(ctx, j.src.id, j.rootDir, filter)
		if err == nil {
			break
		}
		if ctx.Err() != nil || j.findDamaged(ctx) == 0 {
			return err
		}
	}
	if len(j.damaged) == 0 {
		return nil
	}
	if err := j.unkeep(); err != nil {
		return err
	}
	return j.damageError(ctx)
}

// describeKept is the action line for keeping what a restore replaces.
func (j *filesJob) describeKept() string {
	ps := j.replacedPaths()
	sort.Strings(ps)
	return fmt.Sprintf("keep the %d paths this restore replaces (they differ from the version) under %s/ at their host paths: %s",
		len(ps), filepath.Join(j.rootDir, j.aside), strings.Join(ps, ", "))
}
