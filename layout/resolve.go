package layout

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
)

// maxLinks is how many symlinks one resolution follows before giving up,
// Linux's MAXSYMLINKS.
const maxLinks = 40

// ErrLinkLoop is returned (wrapped) when a path's symlinks do not end.
var ErrLinkLoop = errors.New("too many levels of symbolic links")

// resolution is where a host path leads once its symlinks are followed.
type resolution struct {
	target string // a host path with no symlink in it
	// climbed is set when a link's ".." tried to go above the root; it
	// stayed at the root, as /.. is / on a host.
	climbed bool
	// links are the host paths of the symlinks followed, in order; the
	// parent of each is free of links (it was resolved first).
	links []string
	// missing is set when the path does not exist: the part that
	// resolved, then the rest unresolved, starting with the component
	// that is not there.
	missing string
}

// Resolve returns the host path hostPath leads to once every symlink in it
// (in any component, the last one included) is followed the way the kernel
// follows them on a host whose / is root: an absolute link target starts
// again at root, and ".." at root stays at root. The result therefore never
// leaves root, and Join(root, result) names the same file without the OS
// following any link in it (root's own components aside). Under root "/"
// this is what the kubelet sees when it mounts a hostPath.
//
// A path that does not exist, or that goes through a non-directory, is an
// error wrapping fs.ErrNotExist; a chain of more than 40 links one wrapping
// ErrLinkLoop.
func Resolve(root, hostPath string) (string, error) {
	r, err := resolve(root, hostPath)
	return r.target, err
}

// Real returns where hostPath is on this machine: root joined with what
// Resolve returns, so the OS follows no symlink in it and nothing outside
// root is reached. For a path that does not exist it returns, without an
// error, root joined with the part that resolves and then the rest as
// written, beginning with the component that is not there: opening it
// fails with "no such file or directory" (or "not a directory"), naming
// the file, where opening root+hostPath could follow a link out of root.
// Other errors (a loop, no permission) are returned.
func Real(root, hostPath string) (string, error) {
	r, err := resolve(root, hostPath)
	switch {
	case err == nil:
		return filepath.Join(root, filepath.FromSlash(r.target)), nil
	case r.missing != "":
		return strings.TrimSuffix(root, "/") + filepath.FromSlash(r.missing), nil
	}
	return "", err
}

func resolve(root, hostPath string) (resolution, error) {
	var r resolution
	clean, err := cleanHostPath(hostPath)
	if err != nil {
		return r, err
	}
	rest := splitPath(clean)
	cur := "/"
	for len(rest) > 0 {
		comp := rest[0]
		rest = rest[1:]
		switch comp {
		case "", ".":
			continue
		case "..":
			if cur == "/" {
				r.climbed = true
			} else {
				cur = path.Dir(cur)
			}
			continue
		}
		next := path.Join(cur, comp)
		st, err := os.Lstat(filepath.Join(root, filepath.FromSlash(next)))
		if err != nil {
			if errors.Is(err, syscall.ENOTDIR) {
				err = fmt.Errorf("%s: a parent is not a directory: %w", next, fs.ErrNotExist)
			}
			if errors.Is(err, fs.ErrNotExist) {
				r.missing = strings.Join(append([]string{next}, rest...), "/")
			}
			return r, err
		}
		if st.Mode()&fs.ModeSymlink == 0 {
			if len(rest) > 0 && !st.IsDir() {
				r.missing = strings.Join(append([]string{next}, rest...), "/")
				return r, fmt.Errorf("%s is not a directory: %w", next, fs.ErrNotExist)
			}
			cur = next
			continue
		}
		if len(r.links) == maxLinks {
			return r, fmt.Errorf("%s: %w", hostPath, ErrLinkLoop)
		}
		r.links = append(r.links, next)
		link, err := os.Readlink(filepath.Join(root, filepath.FromSlash(next)))
		if err != nil {
			return r, err
		}
		link = filepath.ToSlash(link)
		if strings.HasPrefix(link, "/") {
			cur = "/"
		}
		rest = append(splitPath(link), rest...)
	}
	r.target = cur
	return r, nil
}

func splitPath(p string) []string {
	return strings.Split(strings.Trim(p, "/"), "/")
}

// pseudoDirs are where the kernel shows its own state as files: nothing in
// them is data a rebuild puts back, and reading them whole can block or
// never end (/proc/kmsg, /dev/zero, /sys/kernel/debug). A hostPath there is
// left out with a problem.
var pseudoDirs = []string{"/proc", "/sys", "/dev"}

// runtimeDirs hold runtime state (sockets, pid files, locks) that the boot
// empties and each service recreates; /var/run is a link to /run on every
// systemd distribution. A hostPath there is left out with a warning only:
// nothing a rebuild needs is lost, and restoring stale sockets or pid files
// onto a node would do harm.
var runtimeDirs = []string{"/run", "/var/run"}

func inAny(p string, dirs []string) string {
	for _, d := range dirs {
		if within(p, d) {
			return d
		}
	}
	return ""
}

// pseudoFS are the statfs magic numbers of kernel filesystems that hold no
// data (linux/magic.h). devtmpfs reports tmpfs's magic, so /dev is caught by
// its name only; tmpfs itself holds real files and is not in the list.
var pseudoFS = map[uint32]string{
	0x9fa0:     "proc",
	0x62656572: "sysfs",
	0x1cd1:     "devpts",
	0x27e0eb:   "cgroup",
	0x63677270: "cgroup2",
	0x73636673: "securityfs",
	0x64626720: "debugfs",
	0x74726163: "tracefs",
	0x6165676c: "pstore",
	0xcafe4a11: "bpf",
	0x62656570: "configfs",
	0x65735543: "fusectl",
	0x19800202: "mqueue",
	0x958458f6: "hugetlbfs",
	0x42494e4d: "binfmt_misc",
	0xde5e81e4: "efivarfs",
	0xf97cff8c: "selinuxfs",
	0x43415d53: "smackfs",
	0x6e736673: "nsfs",
	0x7655821:  "resctrl",
}

// pseudoFSAt returns the name of the kernel filesystem real (a path on this
// machine) is on, or "" for a filesystem that holds files.
func pseudoFSAt(real string) string {
	var st syscall.Statfs_t
	if err := syscall.Statfs(real, &st); err != nil {
		return ""
	}
	return pseudoFS[uint32(st.Type)] // magics are 32-bit; Type's width varies by arch
}
