package restore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"time"

	"github.com/kubekeep/kubekeep/rsyncish"
)

// findDamaged reads back every file of the job not yet known damaged and
// returns how many more it found.
func (j *filesJob) findDamaged(ctx context.Context) int {
	n := 0
	for _, e := range j.todo {
		if e.Type != "file" || j.damaged[e.Path] != nil || ctx.Err() != nil {
			continue
		}
		if err := readsBack(j.store, j.src.id, e.Path); err != nil {
			j.damaged[e.Path] = err
			n++
		}
	}
	return n
}

// readsBack reads a stored file whole, every block checked against its
// hash on the way.
func readsBack(store *rsyncish.Store, id, hostPath string) error {
	rc, _, err := store.OpenFile(id, hostPath)
	if err != nil {
		return err
	}
	defer rc.Close()
	_, err = io.Copy(io.Discard, rc)
	return err
}

// restoredCount is how many entries the job wrote.
func (j *filesJob) restoredCount() int { return len(j.todo) - len(j.damaged) }

// DamagedFile is a stored file a restore left out because it does not read
// back: a block of it no longer matches its hash, or is gone.
type DamagedFile struct {
	Path  string `json:"path"`
	Error string `json:"error"`
	// GoodCopy is the newest other version whose copy of the path reads
	// back intact ("" when none does); SameContent says that copy has the
	// damaged one's size and mtime.
	GoodCopy     string    `json:"goodCopy,omitempty"`
	GoodCopyTime time.Time `json:"goodCopyTime,omitzero"`
	SameContent  bool      `json:"sameContent,omitempty"`
}

// ErrDamagedFiles: a restore of files left out files that are damaged in
// the store; every other one was restored. A *DamagedFilesError names them.
var ErrDamagedFiles = errors.New("files damaged in the store were not restored")

// DamagedFilesError is the ErrDamagedFiles a files restore returns.
type DamagedFilesError struct {
	Version string
	// To is the directory everything else was restored under; Restored
	// how many files, dirs and symlinks that was.
	To       string
	Restored int
	Damaged  []DamagedFile
}

func (e *DamagedFilesError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "version %s: %d file(s) damaged in the store, not restored; everything else was (%d files, dirs and symlinks under %s):",
		e.Version, len(e.Damaged), e.Restored, e.To)
	for _, d := range e.Damaged {
		fmt.Fprintf(&b, "\n  %s: %s; ", d.Path, d.Error)
		if d.GoodCopy == "" {
			b.WriteString("no version in the store holds an intact copy: take it from elsewhere")
			continue
		}
		same := ""
		if d.SameContent {
			same = " (same size and mtime)"
		}
		fmt.Fprintf(&b, "version %s of %s holds an intact copy%s: kubekeep restore files --version %s --path %s --to %s",
			d.GoodCopy, d.GoodCopyTime.UTC().Format(time.RFC3339), same, d.GoodCopy, d.Path, e.To)
	}
	b.WriteString("\n  (kubekeep verify --read-data names every damaged version; kubekeep repair drops what is lost so new backups store it again)")
	return b.String()
}

func (e *DamagedFilesError) Unwrap() error { return ErrDamagedFiles }

// damageError describes the damaged files, with where a good copy is.
func (j *filesJob) damageError(ctx context.Context) error {
	de := &DamagedFilesError{Version: j.src.id, To: j.rootDir, Restored: j.restoredCount()}
	var vs []rsyncish.VersionInfo
	if all, err := j.store.Versions(); err == nil {
		vs = all
	}
	for _, e := range j.todo {
		err := j.damaged[e.Path]
		if err == nil {
			continue
		}
		d := DamagedFile{Path: e.Path, Error: err.Error()}
		for i := len(vs) - 1; i >= 0 && ctx.Err() == nil; i-- {
			v := vs[i]
			if v.ID == j.src.id {
				continue
			}
			entries, lerr := j.store.List(v.ID)
			if lerr != nil {
				continue
			}
			for _, o := range entries {
				if o.Path != e.Path || o.Type != "file" {
					continue
				}
				if readsBack(j.store, v.ID, e.Path) == nil {
					d.GoodCopy, d.GoodCopyTime, d.SameContent = v.ID, v.Time, o.Size == e.Size && o.MTime == e.MTime
				}
				break
			}
			if d.GoodCopy != "" {
				break
			}
		}
		de.Damaged = append(de.Damaged, d)
	}
	return de
}

// unkeep undoes keeping what a damaged file would have replaced, which
// stays where it is: the kept copy (a hard link, copy or recreated
// symlink) is removed, a dir moved out of the way is moved back.
func (j *filesJob) unkeep() error {
	var still []replacedItem
	for _, it := range j.replaced {
		if j.damaged[it.path] == nil {
			still = append(still, it)
			continue
		}
		orig := strings.TrimPrefix(it.path, "/")
		kept := strings.TrimPrefix(j.aside+it.path, "/")
		var err error
		if it.move {
			err = j.root.Rename(kept, orig)
		} else {
			err = j.root.Remove(kept)
		}
		if err != nil {
			return fmt.Errorf("%s was not restored (damaged in the store), but putting back what it would have replaced failed: %w; it is kept under %s%s", it.path, err, j.rootDir, j.aside)
		}
		// Parents left empty go too, up to the kept dir itself.
		for d := path.Dir(kept); within("/"+d, j.aside) && j.root.Remove(d) == nil; d = path.Dir(d) {
		}
	}
	j.replaced = still
	return nil
}
