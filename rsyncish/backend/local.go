package backend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/kubekeep/kubekeep/internal/ctxio"
)

// Local keeps objects as files under a directory: <dir>/<type>/<name>,
// except ConfigFile objects, which sit in <dir> itself (config.json): the
// layout of the store's own directory (rsyncish's package doc), so Local
// over a store dir sees exactly the store's objects. Directories are 0700
// and files 0600 (the store holds CA keys).
type Local struct {
	dir string
}

// OpenLocal returns the backend of the store directory dir, creating it
// (0700) if needed.
func OpenLocal(dir string) (*Local, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("backend %s: %w", dir, err)
	}
	return &Local{dir: dir}, nil
}

// Location implements Backend.
func (l *Local) Location() string { return l.dir }

// Close implements Backend.
func (l *Local) Close() error { return nil }

func (l *Local) path(h Handle) (string, error) {
	if err := h.Valid(); err != nil {
		return "", err
	}
	return filepath.Join(l.typeDir(h.Type), filepath.FromSlash(h.Name)), nil
}

func (l *Local) typeDir(t FileType) string {
	if t == ConfigFile {
		return l.dir
	}
	return filepath.Join(l.dir, string(t))
}

// Save implements Backend: a temp file beside the target, fsynced, then
// hard-linked to the name (link fails if the name exists: no replace,
// even between two savers racing), the temp name removed and the
// directory fsynced.
func (l *Local) Save(ctx context.Context, h Handle, rd RewindReader) (err error) {
	p, err := l.path(h)
	if err != nil {
		return err
	}
	dir := filepath.Dir(p)
	if err := l.mkdirs(dir); err != nil {
		return err
	}
	if _, err := os.Lstat(p); err == nil {
		return fmt.Errorf("save %s: %w", h, ErrExists)
	}
	tmp, err := os.CreateTemp(dir, ".tmp-")
	if err != nil {
		return fmt.Errorf("save %s: %w", h, err)
	}
	defer func() {
		tmp.Close()
		os.Remove(tmp.Name())
	}()
	if err := rd.Rewind(); err != nil {
		return fmt.Errorf("save %s: %w", h, err)
	}
	n, err := io.Copy(tmp, ctxio.Reader(ctx, rd))
	if err != nil {
		return fmt.Errorf("save %s: %w", h, err)
	}
	if n != rd.Length() {
		return fmt.Errorf("save %s: the reader gave %d bytes, %d announced", h, n, rd.Length())
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("save %s: %w", h, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("save %s: %w", h, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("save %s: %w", h, err)
	}
	if err := os.Link(tmp.Name(), p); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("save %s: %w", h, ErrExists)
		}
		return fmt.Errorf("save %s: %w", h, err)
	}
	return syncDir(dir)
}

func (l *Local) mkdirs(dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	// New directory entries up to the store root must be durable too.
	for d := dir; strings.HasPrefix(d, l.dir) && d != l.dir; d = filepath.Dir(d) {
		if err := syncDir(filepath.Dir(d)); err != nil {
			return err
		}
	}
	return nil
}

// Open opens object h for reading: the sync to a tier sends store
// objects straight from their files.
func (l *Local) Open(h Handle) (*os.File, error) {
	p, err := l.path(h)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, notFound(h, err)
	}
	return f, nil
}

// Load implements Backend.
func (l *Local) Load(ctx context.Context, h Handle, length int, offset int64, fn func(io.Reader) error) error {
	p, err := l.path(h)
	if err != nil {
		return err
	}
	if length < 0 || offset < 0 {
		return fmt.Errorf("load %s: negative range %d+%d", h, offset, length)
	}
	f, err := os.Open(p)
	if err != nil {
		return notFound(h, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("load %s: %w", h, err)
	}
	size := fi.Size()
	if offset > size || length > 0 && offset+int64(length) > size {
		return fmt.Errorf("load %s: range %d+%d of %d bytes: %w", h, offset, length, size, ErrShortRead)
	}
	n := size - offset
	if length > 0 {
		n = int64(length)
	}
	return fn(ctxio.Reader(ctx, io.NewSectionReader(f, offset, n)))
}

// Stat implements Backend.
func (l *Local) Stat(ctx context.Context, h Handle) (FileInfo, error) {
	p, err := l.path(h)
	if err != nil {
		return FileInfo{}, err
	}
	fi, err := os.Stat(p)
	if err != nil {
		return FileInfo{}, notFound(h, err)
	}
	if !fi.Mode().IsRegular() {
		return FileInfo{}, fmt.Errorf("stat %s: not a regular file", h)
	}
	return FileInfo{Name: h.Name, Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

// List implements Backend. Temp files and anything that is not a valid
// name (a stray file an operator left) are not listed.
func (l *Local) List(ctx context.Context, t FileType, fn func(FileInfo) error) error {
	if err := (Handle{Type: t, Name: "x"}).Valid(); err != nil {
		return err
	}
	base := l.typeDir(t)
	err := filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == base && errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if d.IsDir() {
			if p != base && (strings.HasPrefix(d.Name(), ".") || t == ConfigFile) {
				return filepath.SkipDir // config objects are the root's files only
			}
			return nil
		}
		rel, err := filepath.Rel(base, p)
		if err != nil {
			return err
		}
		name := filepath.ToSlash(rel)
		if !d.Type().IsRegular() || ValidName(name) != nil {
			return nil
		}
		fi, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil // removed meanwhile
		}
		if err != nil {
			return err
		}
		return fn(FileInfo{Name: name, Size: fi.Size(), ModTime: fi.ModTime()})
	})
	if err != nil {
		return fmt.Errorf("list %s: %w", t, err)
	}
	return nil
}

// Remove implements Backend.
func (l *Local) Remove(ctx context.Context, h Handle) error {
	p, err := l.path(h)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil {
		return notFound(h, err)
	}
	return syncDir(filepath.Dir(p))
}

func notFound(h Handle, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s: %w", h, ErrNotFound)
	}
	return fmt.Errorf("%s: %w", h, err)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return err
	}
	return nil
}
