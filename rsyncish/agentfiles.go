package rsyncish

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// The agent's own files at the top of the store: its lock and its status.
// They are no part of any version (verify neither hashes nor warns about
// them, see reservedNames), but they live on the second disk, beside the
// versions, so that `kubekeep status` reads them with or without a running
// agent and they survive the root disk. The agent and the CLI reach them
// only through AgentFiles, never with os calls on store paths, so the
// store decides where and how they are kept; the local directory is the
// one implementation and stays the source of truth.
const (
	// AgentLockFile is flocked exclusively by the running agent for its
	// whole life and holds its pid. The name and the lock type are a
	// contract between kubekeep versions: an agent of any version and one
	// of another exclude each other on the same store.
	AgentLockFile = agentLockFile
	// AgentStatusFile is the agent's state (JSON written by package agent;
	// the store treats it as bytes), replaced atomically.
	AgentStatusFile = agentStatusFile
)

// ErrAgentRunning is AgentFiles.Lock's error when another agent holds the
// store.
var ErrAgentRunning = errors.New("another kubekeep agent runs on this store")

// Status temp files: "." + AgentStatusFile + tmpMarker + <pid>-<rand>, the
// store's temp naming, so a killed writer's leftover is removed by the next
// Lock (dead pid) and by RemoveStatusTemps; agentStatusLegacyTemp is the one
// temp name kubekeep agents before that used for every write.
const (
	agentStatusTempBase   = "." + agentStatusFile
	agentStatusLegacyTemp = agentStatusTempBase + ".new"
)

// AgentFiles are the agent's lock and status file of one store.
type AgentFiles struct{ dir string }

// AgentFiles returns the store's agent files.
func (s *Store) AgentFiles() AgentFiles { return AgentFiles{dir: s.dir} }

// AgentFilesIn returns the agent files of a store directory without
// opening it as a Store (reading the status of a directory no agent ever
// ran on, tests). The directory is not created.
func AgentFilesIn(dir string) AgentFiles { return AgentFiles{dir: dir} }

// StatusPath names the status file in messages. Read and write it with
// ReadStatus and WriteStatus.
func (f AgentFiles) StatusPath() string { return filepath.Join(f.dir, agentStatusFile) }

// Lock takes the agent lock: an exclusive, non-blocking flock on
// AgentLockFile (created 0600), held by the open file until release, with
// the holder's pid written into the file. It fails at once, wrapping
// ErrAgentRunning and naming the holder's pid, when any other open file
// holds it: another process, or another Lock in this one. The kernel drops
// the lock when its holder dies, so a killed agent never locks the store
// out. A non-regular file in its place (a FIFO, a symlink) is refused,
// never opened in a way that blocks.
//
// The agent lock is independent of the store's writer lock (Store.Lock):
// that one is taken per operation, this one for an agent's whole life, so
// two agents never run the same jobs on one store.
func (f AgentFiles) Lock() (release func(), err error) {
	p := filepath.Join(f.dir, agentLockFile)
	fd, err := openLockFile(p, os.O_RDWR)
	if err != nil {
		return nil, fmt.Errorf("agent lock: %w", err)
	}
	if err := syscall.Flock(int(fd.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		fd.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			holder, _ := readStoreFile(p)
			who := strings.TrimSpace(string(holder))
			if who == "" {
				who = "unknown"
			}
			return nil, fmt.Errorf("%w: store %s is held by pid %s; stop that agent first", ErrAgentRunning, f.dir, who)
		}
		return nil, fmt.Errorf("agent lock %s: %w", p, err)
	}
	if err := fd.Truncate(0); err == nil {
		_, _ = fd.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return func() {
		_ = fd.Truncate(0)
		_ = fd.Close()
	}, nil
}

// Running reports whether an agent holds the agent lock, and the pid it
// wrote. It probes with a shared, non-blocking flock released at once,
// never creates the file and never blocks; a missing or unopenable lock
// file is no agent.
func (f AgentFiles) Running() (bool, int) {
	p := filepath.Join(f.dir, agentLockFile)
	fd, err := openStoreFile(p)
	if err != nil {
		return false, 0
	}
	defer fd.Close()
	if err := syscall.Flock(int(fd.Fd()), syscall.LOCK_SH|syscall.LOCK_NB); err == nil {
		_ = syscall.Flock(int(fd.Fd()), syscall.LOCK_UN)
		return false, 0
	}
	data, _ := readStoreFile(p)
	pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	return true, pid
}

// ReadStatus returns the status file's content as the last WriteStatus
// published it, whole: never a torn or partly written one. No agent ever
// wrote one: an error wrapping fs.ErrNotExist. A non-regular file in its
// place is an error wrapping ErrNotRegular, never a blocking open.
func (f AgentFiles) ReadStatus() ([]byte, error) {
	return readStoreFile(f.StatusPath())
}

// WriteStatus replaces the status file with data, atomically: a temp file
// of its own in the store directory (0600; the store's temp naming with
// this writer's pid and a random part, created exclusively), written,
// fsynced and renamed over the file. The directory is not fsynced: the
// agent rewrites its status every couple of seconds even when idle, and a
// crash that loses the rename leaves the previous status, whole, which
// the next write replaces (the status reports; versions are the data).
// So a reader or a crash sees the old content or the new, never a torn
// file; concurrent writers (in one process or several)
// never share a temp file, all succeed, and the last rename wins; a failed
// write removes its temp file, and a killed writer's is removed by the
// next Store.Lock or RemoveStatusTemps. The file is 0600: it names the
// control plane's paths and errors.
func (f AgentFiles) WriteStatus(data []byte) error {
	fd, err := f.createStatusTemp()
	if err != nil {
		return err
	}
	tmp := fd.Name()
	fail := func(err error) error {
		fd.Close()
		os.Remove(tmp)
		return err
	}
	if _, err := fd.Write(data); err != nil {
		return fail(err)
	}
	if err := fd.Sync(); err != nil {
		return fail(err)
	}
	if err := fd.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, f.StatusPath()); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// createStatusTemp creates WriteStatus's temp file, 0600, a name no other
// writer has: O_EXCL, and a fresh random part on the rare collision of
// two writers of one process.
func (f AgentFiles) createStatusTemp() (*os.File, error) {
	base := filepath.Join(f.dir, agentStatusTempBase)
	for try := 0; ; try++ {
		fd, err := os.OpenFile(tmpName(base), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err == nil || !errors.Is(err, fs.ErrExist) || try == 9 {
			return fd, err
		}
	}
}

// RemoveStatusTemps removes the temp files of earlier status writes,
// whoever made them (a killed agent's, and the single name older agents
// used), and returns the first error other than a file already gone. Call
// it holding the agent lock: it would remove the temp file of a live
// writer, and the lock holder is the only one.
func (f AgentFiles) RemoveStatusTemps() error {
	ents, err := readStoreDir(f.dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("status temp files: %w", err)
	}
	var first error
	for _, e := range ents {
		n := e.Name()
		if n != agentStatusLegacyTemp && !strings.HasPrefix(n, agentStatusTempBase+tmpMarker) {
			continue
		}
		if err := os.Remove(filepath.Join(f.dir, n)); err != nil && !errors.Is(err, fs.ErrNotExist) && first == nil {
			first = fmt.Errorf("status temp files: %w", err)
		}
	}
	return first
}
