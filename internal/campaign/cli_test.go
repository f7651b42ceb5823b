package campaign

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// result is one finished kubekeep process.
type result struct {
	args           []string
	stdout, stderr string
	code           int  // exit status; -1 when a signal ended it
	signaled       bool // ended by a signal (our SIGKILL or the timeout)
	timedOut       bool
	dur            time.Duration
}

func (r result) String() string {
	how := fmt.Sprintf("exit %d", r.code)
	if r.signaled {
		how = "killed"
	}
	if r.timedOut {
		how = "timed out"
	}
	return fmt.Sprintf("kubekeep %s: %s after %s\nstdout: %s\nstderr: %s", strings.Join(r.args, " "), how,
		r.dur.Round(time.Millisecond), clip(r.stdout, 2000), clip(r.stderr, 4000))
}

func clip(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// proc is a running kubekeep in its own process group.
type proc struct {
	cmd    *exec.Cmd
	args   []string
	out    bytes.Buffer
	err    bytes.Buffer
	start  time.Time
	done   chan struct{}
	res    result
	mu     sync.Mutex
	killed bool
	timer  *time.Timer
}

// procs tracks every process group a test started, so cleanup kills what
// a failed test left running.
type procs struct {
	mu  sync.Mutex
	all map[*proc]bool
}

func (ps *procs) add(p *proc) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.all == nil {
		ps.all = map[*proc]bool{}
	}
	ps.all[p] = true
}

func (ps *procs) remove(p *proc) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	delete(ps.all, p)
}

func (ps *procs) killAll() {
	ps.mu.Lock()
	var live []*proc
	for p := range ps.all {
		live = append(live, p)
	}
	ps.mu.Unlock()
	for _, p := range live {
		p.signal(syscall.SIGKILL)
		<-p.done
	}
}

// startCLI starts bin with args, stdin closed, in a new process group; the
// whole group is SIGKILLed after timeout.
func startCLI(t *testing.T, ps *procs, bin string, timeout time.Duration, args ...string) *proc {
	t.Helper()
	p := &proc{args: args, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.err
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p.cmd.Env = append(os.Environ(), "KUBEKEEP_CONFIG=/nonexistent-campaign-config")
	p.start = time.Now()
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start kubekeep %s: %v", strings.Join(args, " "), err)
	}
	ps.add(p)
	p.timer = time.AfterFunc(timeout, func() {
		p.mu.Lock()
		p.res.timedOut = true
		p.mu.Unlock()
		p.signal(syscall.SIGKILL)
	})
	go func() {
		err := p.cmd.Wait()
		p.timer.Stop()
		p.mu.Lock()
		p.res.args, p.res.dur = args, time.Since(p.start)
		p.res.stdout, p.res.stderr = p.out.String(), p.err.String()
		p.res.code = p.cmd.ProcessState.ExitCode()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				p.res.signaled = true
			}
		}
		p.mu.Unlock()
		// The group may hold children (the snapshot check); none may
		// outlive the leader.
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		ps.remove(p)
		close(p.done)
	}()
	return p
}

// signal sends sig to the whole process group.
func (p *proc) signal(sig syscall.Signal) {
	select {
	case <-p.done:
		return
	default:
	}
	if sig == syscall.SIGKILL {
		p.mu.Lock()
		p.killed = true
		p.mu.Unlock()
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, sig)
}

// wait returns the result once the process has ended.
func (p *proc) wait() result {
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.res
}

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// killAfter SIGKILLs the group d after start, unless it ended first, and
// reports whether the kill landed.
func (p *proc) killAfter(d time.Duration) (landed bool, r result) {
	select {
	case <-p.done:
	case <-time.After(time.Until(p.start.Add(d))):
		p.signal(syscall.SIGKILL)
	}
	r = p.wait()
	return r.signaled && !r.timedOut, r
}
