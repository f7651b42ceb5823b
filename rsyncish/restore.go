package rsyncish

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kubekeep/kubekeep/rsyncish/format"
)

// SafePath reports whether a stored host path may be restored: absolute,
// clean, not the root itself, and free of "..".
func SafePath(p string) bool {
	if !filepath.IsAbs(p) || filepath.Clean(p) != p || p == "/" || strings.ContainsRune(p, 0) {
		return false
	}
	for _, c := range strings.Split(p, "/") {
		if c == ".." {
			return false
		}
	}
	return true
}

// toFileMode turns Unix mode bits (as stored) into an os.FileMode.
func toFileMode(m uint32) os.FileMode {
	fm := os.FileMode(m & 0o777)
	if m&unix.S_ISUID != 0 {
		fm |= os.ModeSetuid
	}
	if m&unix.S_ISGID != 0 {
		fm |= os.ModeSetgid
	}
	if m&unix.S_ISVTX != 0 {
		fm |= os.ModeSticky
	}
	return fm
}

// RestoreFiles writes the files, directories and symlinks of version id for
// which filter (nil = all) returns true under toDir at their host paths
// (toDir/etc/kubernetes/pki/ca.crt), with mode, owner (when root), mtime
// and symlinks; each file appears atomically (temp name, sync, rename).
// Symlink mtimes are not restored. Every write goes through an os.Root on
// toDir, so neither a stored path nor a symlink restored earlier can lead a
// write outside toDir; a version holding any unsafe path (absolute-escaping
// or with "..") is refused before anything is written. It holds the read
// lock throughout, so a prune waits for it.
func (s *Store) RestoreFiles(ctx context.Context, id, toDir string, filter func(hostPath string) bool) error {
	release, err := s.readLock(ctx)
	if err != nil {
		return err
	}
	defer release()
	m, err := s.manifest(id)
	if err != nil {
		return err
	}
	var bad []string
	var todo []*format.Entry
	for i := range m.Entries {
		e := &m.Entries[i]
		if e.Type == format.TypeStream {
			continue
		}
		if !SafePath(e.Path) {
			bad = append(bad, fmt.Sprintf("%q", e.Path))
			continue
		}
		if filter == nil || filter(e.Path) {
			todo = append(todo, e)
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("version %s: %w: %s; nothing restored", id, ErrUnsafePath, strings.Join(bad, ", "))
	}
	if err := os.MkdirAll(toDir, 0o700); err != nil {
		return fmt.Errorf("restore target: %w", err)
	}
	root, err := os.OpenRoot(toDir)
	if err != nil {
		return fmt.Errorf("restore target: %w", err)
	}
	defer root.Close()
	x, err := s.index()
	if err != nil {
		return err
	}
	br := newBlobReader(s, x)
	defer br.Close()
	asRoot := os.Geteuid() == 0
	var dirs []*format.Entry
	// Files are written under temporary names first and renamed into
	// place after one sync of the filesystem: each still appears whole or
	// not at all, for one journal commit instead of one per file.
	var pending []pendingFile
	defer func() {
		for _, p := range pending {
			root.Remove(p.tmp)
		}
	}()
	cleaned := map[string]bool{}
	for _, e := range todo {
		if err := ctx.Err(); err != nil {
			return err
		}
		rel := strings.TrimPrefix(e.Path, "/")
		if err := root.MkdirAll(filepath.Dir(rel), 0o755); err != nil {
			return fmt.Errorf("restoring %s: %w", e.Path, err)
		}
		if d := filepath.Dir(rel); !cleaned[d] {
			cleaned[d] = true
			removeRestoreLeftovers(root, d)
		}
		switch e.Type {
		case format.TypeDir:
			if fi, err := root.Lstat(rel); err == nil && !fi.IsDir() {
				if err := root.RemoveAll(rel); err != nil {
					return fmt.Errorf("restoring %s: %w", e.Path, err)
				}
			}
			if err := root.Mkdir(rel, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("restoring %s: %w", e.Path, err)
			}
			dirs = append(dirs, e)
		case format.TypeSymlink:
			tmp := tmpName(filepath.Join(filepath.Dir(rel), restoreTemp))
			if err := root.Symlink(e.Target, tmp); err != nil {
				return fmt.Errorf("restoring %s: %w", e.Path, err)
			}
			if asRoot {
				if err := root.Lchown(tmp, int(e.UID), int(e.GID)); err != nil {
					root.Remove(tmp)
					return fmt.Errorf("restoring %s: %w", e.Path, err)
				}
			}
			if err := replace(root, tmp, rel); err != nil {
				return fmt.Errorf("restoring %s: %w", e.Path, err)
			}
		case format.TypeFile:
			tmp, err := writeTempFile(root, br, e, rel, asRoot)
			if err != nil {
				return fmt.Errorf("restoring %s: %w", e.Path, err)
			}
			pending = append(pending, pendingFile{e: e, rel: rel, tmp: tmp})
		}
	}
	if err := syncFS(root, toDir); err != nil {
		return err
	}
	for len(pending) > 0 {
		p := pending[0]
		mt := time.Unix(0, p.e.MTime)
		if err := root.Chtimes(p.tmp, mt, mt); err != nil {
			return fmt.Errorf("restoring %s: %w", p.e.Path, err)
		}
		if err := replace(root, p.tmp, p.rel); err != nil {
			return fmt.Errorf("restoring %s: %w", p.e.Path, err)
		}
		pending = pending[1:]
	}
	// Directories last and deepest first: writing their children changed
	// their mtimes, and a read-only mode must not stop those writes.
	for i := len(dirs) - 1; i >= 0; i-- {
		e := dirs[i]
		rel := strings.TrimPrefix(e.Path, "/")
		if asRoot {
			if err := root.Lchown(rel, int(e.UID), int(e.GID)); err != nil {
				return fmt.Errorf("restoring %s: %w", e.Path, err)
			}
		}
		if err := root.Chmod(rel, toFileMode(e.Mode)); err != nil {
			return fmt.Errorf("restoring %s: %w", e.Path, err)
		}
		mt := time.Unix(0, e.MTime)
		if err := root.Chtimes(rel, mt, mt); err != nil {
			return fmt.Errorf("restoring %s: %w", e.Path, err)
		}
	}
	return syncFS(root, toDir)
}

type pendingFile struct {
	e        *format.Entry
	rel, tmp string
}

// syncFS makes everything written under root durable.
func syncFS(root *os.Root, name string) error {
	d, err := root.Open(".")
	if err != nil {
		return err
	}
	defer d.Close()
	if err := unix.Syncfs(int(d.Fd())); err != nil {
		return fmt.Errorf("syncing %s: %w", name, err)
	}
	return nil
}

// replace renames tmp over rel, first removing a directory in the way.
func replace(root *os.Root, tmp, rel string) error {
	if fi, err := root.Lstat(rel); err == nil && fi.IsDir() {
		if err := root.RemoveAll(rel); err != nil {
			root.Remove(tmp)
			return err
		}
	}
	if err := root.Rename(tmp, rel); err != nil {
		root.Remove(tmp)
		return err
	}
	return nil
}

// restoreTemp is the base of the temp names a restore writes beside the
// files it restores (restoreTemp.tmp-<pid>-<rand>).
const restoreTemp = ".kubekeep-restore"

// removeRestoreLeftovers removes, from directory dir under root, the temp
// files a killed restore left (its pid is gone): a restore killed between
// writing a file and renaming it into place must not leave its temp files
// beside the restored ones for good. A live restore's are left alone.
func removeRestoreLeftovers(root *os.Root, dir string) {
	d, err := root.Open(dir)
	if err != nil {
		return
	}
	names, _ := d.Readdirnames(-1)
	d.Close()
	for _, n := range names {
		if !strings.HasPrefix(n, restoreTemp+tmpMarker) {
			continue
		}
		if pid, ok := tmpOwner(n); ok && !pidAlive(pid) {
			root.Remove(filepath.Join(dir, n))
		}
	}
}

// writeTempFile writes a stored file's content, owner and mode to a new
// temporary name beside rel and returns that name; the caller syncs and
// renames it into place.
func writeTempFile(root *os.Root, br *blobReader, e *format.Entry, rel string, asRoot bool) (string, error) {
	tmp := tmpName(filepath.Join(filepath.Dir(rel), restoreTemp))
	f, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", err
	}
	fail := func(err error) (string, error) {
		f.Close()
		root.Remove(tmp)
		return "", err
	}
	var buf []byte
	prog := br.s.progress()
	for _, x := range e.Extents {
		if prog != nil {
			prog.Add(int64(x.Len))
		}
		if x.ID.IsZero() {
			// Holes stay holes: a preallocated WAL segment restores sparse.
			if _, err := f.Seek(int64(x.Len), io.SeekCurrent); err != nil {
				return fail(err)
			}
			continue
		}
		blob, err := br.blob(x.ID, buf)
		if err != nil {
			return fail(err)
		}
		buf = blob
		if int(x.Off)+int(x.Len) > len(blob) {
			return fail(fmt.Errorf("extent beyond blob %s", x.ID.Short()))
		}
		if _, err := f.Write(blob[x.Off : x.Off+x.Len]); err != nil {
			return fail(err)
		}
	}
	if err := f.Truncate(e.Size); err != nil {
		return fail(err)
	}
	if asRoot {
		if err := f.Chown(int(e.UID), int(e.GID)); err != nil {
			return fail(err)
		}
	}
	// After chown, which clears setuid/setgid bits.
	if err := f.Chmod(toFileMode(e.Mode)); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		root.Remove(tmp)
		return "", err
	}
	return tmp, nil
}
