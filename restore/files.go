package restore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"strings"
	"time"

	"github.com/kubekeep/kubekeep/rsyncish"
)

// FilesOptions describe writing a version's files under a directory
// (`kubekeep restore files`).
type FilesOptions struct {
	Store *rsyncish.Store
	// Version is an ID, a unique prefix or "latest".
	Version string
	// To is the directory the host paths are written under (created when
	// missing); "/" writes them where they belong.
	To string
	// Paths restricts the restore to these host paths and what is below
	// them; each must match something the version holds.
	Paths []string
	// Now is the clock (the name of the dir replaced files are kept in).
	Now    func() time.Time
	Logger *slog.Logger
	// Progress hears the bytes of the files read out of the store (nil:
	// none); the caller names the step.
	Progress Progress
}

// FilesResult is what RestoreFiles did.
type FilesResult struct {
	Version string `json:"version"`
	To      string `json:"to"`
	// Entries is how many files, dirs and symlinks were written.
	Entries int `json:"entries"`
	// Kept lists the host paths whose old content differed from the
	// version's and is now kept under KeptDir (a host path below To).
	Kept    []string `json:"kept,omitempty"`
	KeptDir string   `json:"keptDir,omitempty"`
	// Damaged are the files the store could not read back, left out
	// (RestoreFiles then returns a *DamagedFilesError).
	Damaged []DamagedFile `json:"damaged,omitempty"`
}

// RestoreFiles writes a version's files, dirs and symlinks under o.To at
// their host paths. Before anything is written it checks the whole job: a
// version with an unsafe path, a --path that matches nothing, or a target
// whose parent dirs lead out of o.To (a symlink) or are not dirs is
// refused. What the restore replaces (a file with other content, a symlink
// with another target, anything in the way of another type) is first kept
// under KeptDir: hard-linked (copied across filesystems) or moved there,
// never deleted.
//
// A file that is damaged in the store (a block that no longer matches its
// hash) does not stop the others: every intact file is restored, and the
// error, a *DamagedFilesError (ErrDamagedFiles), names each damaged one
// and the newest other version that still holds an intact copy of it.
func RestoreFiles(ctx context.Context, o FilesOptions) (FilesResult, error) {
	if o.Store == nil || o.To == "" {
		return FilesResult{}, errors.New("restore files: a store and a target directory are required")
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	src, err := loadSource(o.Store, o.Version)
	if err != nil {
		return FilesResult{}, err
	}
	res := FilesResult{Version: src.id, To: o.To}
	if err := src.unsafeError(); err != nil {
		return res, err
	}
	filter, err := pathFilter(src, o.Paths)
	if err != nil {
		return res, err
	}
	var root *os.Root
	if fi, err := os.Stat(o.To); err == nil && fi.IsDir() {
		if root, err = os.OpenRoot(o.To); err != nil {
			return res, fmt.Errorf("restore target %s: %w", o.To, err)
		}
		defer root.Close()
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return res, fmt.Errorf("restore target %s: %w", o.To, err)
	} else if err == nil {
		return res, fmt.Errorf("restore target %s is not a directory", o.To)
	}
	job, err := planFiles(ctx, o.Store, src, root, o.To, filter, freeAsideDir(root, asideDirAt("replaced", o.Now().UTC().Format(stampFormat))))
	if err != nil {
		return res, err
	}
	if len(job.replaced) > 0 {
		res.KeptDir = job.aside
		res.Kept = job.replacedPaths()
		if err := job.keep(); err != nil {
			return res, err
		}
		if o.Logger != nil {
			o.Logger.Info("kept what the restore replaces", "version", src.id, "to", o.To, "dir", job.aside, "paths", len(res.Kept))
		}
	}
	progressBytes(o.Progress, filesBytes(job.todo, nil))
	stop := watchStore(o.Store, o.Progress)
	err = job.restore(ctx)
	stop()
	res.Entries = job.restoredCount()
	if res.Kept != nil {
		// Damaged files were not restored: what they would have replaced
		// is where it was.
		if res.Kept = job.replacedPaths(); len(res.Kept) == 0 {
			res.Kept, res.KeptDir = nil, ""
		}
	}
	var de *DamagedFilesError
	if errors.As(err, &de) {
		res.Damaged = de.Damaged
	}
	if err != nil {
		return res, err
	}
	return res, nil
}

// pathFilter turns host paths into a filter, refusing a relative path and
// one under which the version holds nothing (a typo must not "restore"
// nothing and succeed).
func pathFilter(src *source, paths []string) (func(string) bool, error) {
	if len(paths) == 0 {
		return nil, nil
	}
	var want []string
	for _, p := range paths {
		if !strings.HasPrefix(p, "/") {
			return nil, fmt.Errorf("path %q is not an absolute host path", p)
		}
		c := path.Clean(p)
		n := 0
		for _, e := range src.entries {
			if e.Type != "stream" && within(e.Path, c) {
				n++
			}
		}
		if n == 0 {
			return nil, fmt.Errorf("path %s: version %s holds nothing at or below it (it holds %s); nothing restored", p, src.id, strings.Join(src.info.Paths, ", "))
		}
		want = append(want, c)
	}
	return func(p string) bool {
		for _, w := range want {
			if within(p, w) {
				return true
			}
		}
		return false
	}, nil
}

// freeAsideDir returns dir, or dir-2, dir-3… when a run in the same second
// already used it.
func freeAsideDir(root *os.Root, dir string) string {
	if root == nil {
		return dir
	}
	for i := 1; ; i++ {
		d := dir
		if i > 1 {
			d = fmt.Sprintf("%s-%d", dir, i)
		}
		if _, err := root.Lstat(strings.TrimPrefix(d, "/")); errors.Is(err, fs.ErrNotExist) {
			return d
		}
	}
}
