package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// LockFile is the agent's lock at the top of the store. The store's own
// writer lock is taken per operation (one backup, one prune), so two agents
// would interleave happily and double every job; this one is held for the
// agent's whole life.
const LockFile = "agent.lock"

// ErrAgentRunning: another agent holds the store.
var ErrAgentRunning = errors.New("another kubekeep agent runs on this store")

// lockAgent takes the agent lock on the store directory, or fails at once
// naming the holder.
func lockAgent(dir string) (release func(), err error) {
	p := filepath.Join(dir, LockFile)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("agent lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			holder, _ := os.ReadFile(p)
			who := strings.TrimSpace(string(holder))
			if who == "" {
				who = "unknown"
			}
			return nil, fmt.Errorf("%w: store %s is held by pid %s; stop that agent first", ErrAgentRunning, dir, who)
		}
		return nil, fmt.Errorf("agent lock %s: %w", p, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return func() {
		_ = f.Truncate(0)
		_ = f.Close()
	}, nil
}

// agentRunning reports whether an agent holds the lock, without taking it
// for longer than the probe and without creating the file.
func agentRunning(dir string) (bool, int) {
	p := filepath.Join(dir, LockFile)
	f, err := os.Open(p)
	if err != nil {
		return false, 0
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB); err == nil {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		return false, 0
	}
	data, _ := os.ReadFile(p)
	pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	return true, pid
}
