package restore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/kubekeep/kubekeep/etcdsnap"
	"github.com/kubekeep/kubekeep/layout"
)

// dataDirPlan is how the etcd phase swaps the old data dir for the restored
// one. The same planDataDir decides for a dry run and a real one, from the
// node as it is, so the preview says exactly what the run does.
//
// A data dir that is an ordinary directory is swapped whole: the snapshot
// is restored into a sibling (dataDir.kubekeep-restore-STAMP), the old dir
// renamed to dataDir.kubekeep-old-STAMP, the new one renamed into place.
// A data dir that is a mount point (a dedicated etcd disk) cannot be
// renamed (EBUSY) and its sibling lies on another filesystem, so all of it
// happens inside the mount: the snapshot is restored into
// dataDir/.kubekeep-restore-STAMP, the old contents move into
// dataDir/.kubekeep-old-STAMP, and the restored member/ moves up into
// dataDir. etcd reads only dataDir/member; other names in the data dir it
// logs as unexpected and leaves alone.
type dataDirPlan struct {
	dataDir string // host path
	exists  bool
	// mounted: dataDir is a mount point.
	mounted bool
	// staging is the host path the snapshot is restored into.
	staging string
	// old is where the old data goes ("" when there is none to keep);
	// oldEntries, for a mounted data dir, are the names moved there.
	old        string
	oldEntries []string
	// removeEmpty: an empty, unmounted data dir is removed (nothing in it
	// to keep) so the restored one can take its name.
	removeEmpty bool
	// hasDB: member/snap/db exists, so an etcd may hold it.
	hasDB bool
}

// keptPrefix starts the names the etcd phase gives what it keeps or stages
// inside a mounted data dir; such entries are never moved again.
const keptPrefix = ".kubekeep-"

func (r *runner) planDataDir(dataDir string) (*dataDirPlan, error) {
	real, err := layout.Join(r.opts.Root, dataDir)
	if err != nil {
		return nil, err
	}
	p := &dataDirPlan{
		dataDir: dataDir,
		staging: dataDir + ".kubekeep-restore-" + r.stamp,
	}
	fi, err := os.Lstat(real)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return p, nil
	case err != nil:
		return nil, fmt.Errorf("etcd data dir %s: %w", dataDir, err)
	}
	p.exists = true
	if _, err := os.Stat(etcdsnap.DBPath(real)); err == nil {
		p.hasDB = true
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("etcd data dir %s: %w", dataDir, err)
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		// A link to the real data dir elsewhere: the link is what gets
		// renamed aside (its target, the old data, stays as it is).
		p.old = dataDir + ".kubekeep-old-" + r.stamp
		return p, nil
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("etcd data dir %s is a %s, not a directory: move it away by hand", dataDir, fileKind(fi.Mode()))
	}
	ents, err := os.ReadDir(real)
	if err != nil {
		return nil, fmt.Errorf("etcd data dir %s: %w", dataDir, err)
	}
	if p.mounted, err = isMountPoint(real); err != nil {
		return nil, fmt.Errorf("etcd data dir %s: %w", dataDir, err)
	}
	if !p.mounted {
		if len(ents) == 0 {
			p.removeEmpty = true
		} else {
			p.old = dataDir + ".kubekeep-old-" + r.stamp
		}
		return p, nil
	}
	p.staging = dataDir + "/" + keptPrefix + "restore-" + r.stamp
	for _, e := range ents {
		n := e.Name()
		// lost+found belongs to the filesystem (fsck), and what earlier
		// restores kept or staged stays where it is.
		if n == "lost+found" || strings.HasPrefix(n, keptPrefix) {
			continue
		}
		p.oldEntries = append(p.oldEntries, n)
	}
	if len(p.oldEntries) > 0 {
		p.old = dataDir + "/" + keptPrefix + "old-" + r.stamp
	}
	return p, nil
}

// summary says in one line what the swap does with the old data.
func (p *dataDirPlan) summary() string {
	switch {
	case !p.exists:
		return fmt.Sprintf("no data dir at %s yet: the restored one is created there", p.dataDir)
	case p.mounted && p.old != "":
		return fmt.Sprintf("%s is a mount point: its contents (%s) are moved aside to %s inside the same filesystem (never deleted), the restored member/ moved in", p.dataDir, strings.Join(p.oldEntries, ", "), p.old)
	case p.mounted:
		return fmt.Sprintf("%s is a mount point holding no etcd data: the restored member/ is moved in", p.dataDir)
	case p.removeEmpty:
		return fmt.Sprintf("%s is empty: it is replaced by the restored one", p.dataDir)
	default:
		return fmt.Sprintf("%s is moved aside to %s (never deleted)", p.dataDir, p.old)
	}
}

// keepOld moves the old data aside, as planned.
func (r *runner) keepOld(p *dataDirPlan) error {
	switch {
	case p.old == "" && p.removeEmpty:
		return r.do(fmt.Sprintf("remove the empty data dir %s (nothing in it to keep)", p.dataDir), func() error {
			root, err := r.root()
			if err != nil {
				return err
			}
			rp, err := rel(p.dataDir)
			if err != nil {
				return err
			}
			return root.Remove(rp)
		})
	case p.old == "":
		return nil
	case !p.mounted:
		r.replaces("the etcd data dir %s: moved aside to %s (the restored one takes its place)", p.dataDir, p.old)
		return r.do(fmt.Sprintf("move the old data dir %s aside to %s (kept, never deleted)", p.dataDir, p.old), func() error {
			return r.moveAside(p.dataDir, p.old)
		})
	}
	r.replaces("the etcd data in %s (%s): moved aside to %s/ (the restored one takes its place)", p.dataDir, strings.Join(p.oldEntries, ", "), p.old)
	return r.do(fmt.Sprintf("%s is a mount point (it cannot be moved): move its contents %s aside to %s/ inside the same filesystem (kept, never deleted; etcd reads only %s/member)",
		p.dataDir, strings.Join(p.oldEntries, ", "), p.old, p.dataDir), func() error {
		root, err := r.root()
		if err != nil {
			return err
		}
		oldRel, err := rel(p.old)
		if err != nil {
			return err
		}
		if err := root.Mkdir(oldRel, 0o700); err != nil {
			return err
		}
		for _, n := range p.oldEntries {
			if err := root.Rename(path.Join(path.Dir(oldRel), n), path.Join(oldRel, n)); err != nil {
				return err
			}
		}
		return nil
	})
}

// putInPlace moves the restored data dir from staging to the data dir.
func (r *runner) putInPlace(p *dataDirPlan) error {
	if !p.mounted {
		return r.do(fmt.Sprintf("move %s into place as %s (mode 0700)", p.staging, p.dataDir), func() error {
			if err := r.moveAside(p.staging, p.dataDir); err != nil {
				return err
			}
			return r.chmod(p.dataDir, 0o700)
		})
	}
	return r.do(fmt.Sprintf("move the restored %s/member into %s, remove the emptied %s (mode 0700)", p.staging, p.dataDir, p.staging), func() error {
		root, err := r.root()
		if err != nil {
			return err
		}
		stRel, err := rel(p.staging)
		if err != nil {
			return err
		}
		ddRel, _ := rel(p.dataDir)
		f, err := root.Open(stRel)
		if err != nil {
			return err
		}
		names, err := f.Readdirnames(-1)
		f.Close()
		if err != nil {
			return err
		}
		slices.Sort(names)
		for _, n := range names {
			dst := path.Join(ddRel, n)
			if _, err := root.Lstat(dst); err == nil {
				return fmt.Errorf("%s/%s already exists; not overwriting it", p.dataDir, n)
			}
			if err := root.Rename(path.Join(stRel, n), dst); err != nil {
				return err
			}
		}
		if err := root.Remove(stRel); err != nil {
			return err
		}
		return r.chmod(p.dataDir, 0o700)
	})
}

func (r *runner) chmod(hostPath string, mode os.FileMode) error {
	root, err := r.root()
	if err != nil {
		return err
	}
	p, err := rel(hostPath)
	if err != nil {
		return err
	}
	return root.Chmod(p, mode)
}

// isMountPoint reports whether dir is a mount point: on another device
// than its parent, or listed in the kernel's mount table (a bind mount of
// the same filesystem has the same device; either way rename(2) of it
// fails with EBUSY).
func isMountPoint(dir string) (bool, error) {
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return false, err
	}
	var st, pst unix.Stat_t
	if err := unix.Stat(real, &st); err != nil {
		return false, fmt.Errorf("stat %s: %w", real, err)
	}
	if err := unix.Stat(filepath.Dir(real), &pst); err != nil {
		return false, fmt.Errorf("stat %s: %w", filepath.Dir(real), err)
	}
	if st.Dev != pst.Dev {
		return true, nil
	}
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		// No mount table (not Linux, no /proc): the device test stands.
		return false, nil
	}
	return mountinfoHas(string(data), real), nil
}

// mountinfoHas reports whether the mount table lists mountPoint (field 5,
// octal-escaped: \040 is a space).
func mountinfoHas(mountinfo, mountPoint string) bool {
	for _, line := range strings.Split(mountinfo, "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && unescapeOctal(f[4]) == mountPoint {
			return true
		}
	}
	return false
}

func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }

func fileKind(m fs.FileMode) string {
	switch {
	case m.IsRegular():
		return "regular file"
	case m&fs.ModeSymlink != 0:
		return "symlink"
	case m.IsDir():
		return "directory"
	case m&fs.ModeNamedPipe != 0:
		return "named pipe"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeDevice != 0:
		return "device"
	}
	return "special file"
}
