package rsyncish

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Temp files carry the writer's pid in their name so that cleaning leftovers
// never removes the file of a process that is still writing (the journal is
// appended without the store lock, by the agent, while a CLI prune holds it).
const tmpMarker = ".tmp-"

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func tmpName(base string) string {
	return base + tmpMarker + strconv.Itoa(os.Getpid()) + "-" + randHex(4)
}

// tmpOwner returns the pid a temp name was made by.
func tmpOwner(name string) (int, bool) {
	i := strings.LastIndex(name, tmpMarker)
	if i < 0 {
		return 0, false
	}
	pidStr, _, _ := strings.Cut(name[i+len(tmpMarker):], "-")
	pid, err := strconv.Atoi(pidStr)
	return pid, err == nil && pid > 0
}

func pidAlive(pid int) bool {
	if pid == os.Getpid() {
		return true
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

func syncDir(dir string) error {
	d, err := os.OpenFile(dir, os.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}

// writeFileAtomic is the store's only way to publish a small file: temp name,
// write, fsync, rename, fsync the directory. A reader sees the old file, the
// new file, or (before the first publish) nothing; never a torn one.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	tmp := tmpName(path)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("fsync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(dir)
}

// freeBytes is what an unprivileged writer may still use on dir's filesystem.
func freeBytes(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// isMounted reports whether path is itself a mount point according to the
// kernel's mount table (a bind mount on the same device counts; st_dev
// comparison would miss it).
func isMounted(path string) (bool, error) {
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return false, err
	}
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false, fmt.Errorf("reading the mount table: %w", err)
	}
	return mountedIn(string(data), real), nil
}

// mountedIn reports whether mountinfo (the text of /proc/self/mountinfo)
// has a mount at path. Its fields are separated by single ASCII spaces and
// the kernel escapes only space, tab, newline and backslash in a path
// (fs/proc_namespace.c), so any other byte (U+00A0, \r, \v, \f) is part of
// the path: strings.Fields would split there.
func mountedIn(mountinfo, path string) bool {
	for _, line := range strings.Split(mountinfo, "\n") {
		f := strings.Split(line, " ")
		if len(f) > 4 && unescapeMount(f[4]) == path {
			return true
		}
	}
	return false
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// ErrNotRegular is returned for a store file that is not a regular file
// (a FIFO, a device, a socket or a symlink planted in the store).
var ErrNotRegular = errors.New("not a regular file")

// openStoreFile opens a store file for reading without ever blocking on
// the open itself: opening a FIFO waits for a writer forever, in a system
// call no signal or context interrupts. The type is checked with Lstat
// first (so a device is never opened at all), the open is O_NONBLOCK and
// O_NOFOLLOW, and the opened file is checked again with fstat (it may
// have been swapped in between). The store writes nothing but regular
// files, so anything else is refused as damage.
func openStoreFile(path string) (*os.File, error) {
	f, _, err := openStoreFileStat(path)
	return f, err
}

// openStoreFileStat is openStoreFile, also returning the opened file's
// fstat, so that a caller needing its size does not stat it again.
func openStoreFileStat(path string) (*os.File, fs.FileInfo, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, nil, &fs.PathError{Op: "open", Path: path, Err: fmt.Errorf("%w (%s)", ErrNotRegular, fileKind(fi.Mode()))}
	}
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, nil, &fs.PathError{Op: "open", Path: path, Err: fmt.Errorf("%w (%s)", ErrNotRegular, fileKind(st.Mode()))}
	}
	return f, st, nil
}

// openLockFile opens (creating it 0600) a file the store keeps open for
// writing, the lock or a scratch file, with the same care as
// openStoreFile: never blocking, refusing anything but a regular file.
func openLockFile(path string, flag int) (*os.File, error) {
	if fi, err := os.Lstat(path); err == nil && !fi.Mode().IsRegular() {
		return nil, &fs.PathError{Op: "open", Path: path, Err: fmt.Errorf("%w (%s)", ErrNotRegular, fileKind(fi.Mode()))}
	}
	f, err := os.OpenFile(path, flag|os.O_CREATE|syscall.O_NONBLOCK|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, err
	}
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		f.Close()
		if err == nil {
			err = fmt.Errorf("%w (%s)", ErrNotRegular, fileKind(st.Mode()))
		}
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	return f, nil
}

// readStoreFile is os.ReadFile through openStoreFile.
func readStoreFile(path string) ([]byte, error) {
	f, st, err := openStoreFileStat(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// Room for the file and bytes.MinRead more: with less, ReadFrom grows
	// the buffer to twice the file's size before it sees the end (a 1 MiB
	// segment read into 3 MiB allocated and copied).
	buf := bytes.NewBuffer(make([]byte, 0, st.Size()+bytes.MinRead))
	if _, err := buf.ReadFrom(f); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return buf.Bytes(), nil
}

// readStoreDir is os.ReadDir for a store directory, opened O_DIRECTORY and
// O_NONBLOCK so that something else in its place fails instead of blocking.
func readStoreDir(path string) ([]fs.DirEntry, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ents, err := f.ReadDir(-1)
	sort.Slice(ents, func(i, j int) bool { return ents[i].Name() < ents[j].Name() })
	return ents, err
}

func fileKind(m fs.FileMode) string {
	switch {
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO"
	case m&fs.ModeSymlink != 0:
		return "a symlink"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeDevice != 0:
		return "a device"
	case m.IsDir():
		return "a directory"
	}
	return "mode " + m.String()
}
