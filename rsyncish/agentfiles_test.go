package rsyncish

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The agent-files helper process: the test binary run again with
// KUBEKEEP_AGENTFILES_HELPER set does one thing to the agent files of
// KUBEKEEP_AGENTFILES_DIR, prints a line, and (but for "write") waits to
// be killed: "lock" holds the agent lock, "tempwrite" is a status write
// stopped after its temp file got half its data, "write <w> <n>" makes n
// status writes of writer w.
func TestAgentFilesHelper(t *testing.T) {
	mode := os.Getenv("KUBEKEEP_AGENTFILES_HELPER")
	if mode == "" {
		t.Skip("helper process only")
	}
	af := AgentFilesIn(os.Getenv("KUBEKEEP_AGENTFILES_DIR"))
	switch f := strings.Fields(mode); f[0] {
	case "lock":
		if _, err := af.Lock(); err != nil {
			fmt.Println("ERROR", err)
			os.Exit(1)
		}
		fmt.Println("LOCKED", os.Getpid())
	case "tempwrite":
		fd, err := af.createStatusTemp()
		if err == nil {
			_, err = fd.Write([]byte(`{"partial":`))
		}
		if err != nil {
			fmt.Println("ERROR", err)
			os.Exit(1)
		}
		fmt.Println("TEMP", fd.Name())
	case "write":
		w, _ := strconv.Atoi(f[1])
		n, _ := strconv.Atoi(f[2])
		for i := range n {
			if err := af.WriteStatus(statusPayload(w, i)); err != nil {
				fmt.Println("ERROR", err)
				os.Exit(1)
			}
		}
		fmt.Println("WROTE")
		os.Exit(0)
	}
	_, _ = io.Copy(io.Discard, os.Stdin) // until killed (or the parent goes)
	os.Exit(0)
}

// helper starts the helper process in mode on dir and returns it with the
// first line it printed.
func helper(t *testing.T, dir, mode string) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestAgentFilesHelper$")
	cmd.Env = append(os.Environ(), "KUBEKEEP_AGENTFILES_HELPER="+mode, "KUBEKEEP_AGENTFILES_DIR="+dir)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || strings.HasPrefix(line, "ERROR") {
		t.Fatalf("helper %q: %q %v", mode, line, err)
	}
	return cmd, strings.TrimSpace(line)
}

func kill(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
}

// oldAgentLock is how every kubekeep agent before AgentFiles took its
// lock, verbatim: the lock is a contract between versions.
func oldAgentLock(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "agent.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// One agent per store: the agent lock excludes a second Lock on another
// open file of this process, an agent of an older kubekeep (and it them),
// and another process until that one dies; Running sees the holder and
// its pid every time.
func TestAgentLockExcludes(t *testing.T) {
	dir := t.TempDir()
	af := AgentFilesIn(dir)
	if running, _ := af.Running(); running {
		t.Fatal("running before any lock")
	}
	if _, err := os.Lstat(filepath.Join(dir, AgentLockFile)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Running created the lock file: %v", err)
	}

	release, err := af.Lock()
	if err != nil {
		t.Fatal(err)
	}
	me := strconv.Itoa(os.Getpid())
	fi, err := os.Stat(filepath.Join(dir, "agent.lock"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("agent.lock: %v %v, want mode 0600", fi, err)
	}
	if data, _ := os.ReadFile(filepath.Join(dir, "agent.lock")); string(data) != me+"\n" {
		t.Errorf("agent.lock holds %q, want the pid %s", data, me)
	}
	_, err = AgentFilesIn(dir).Lock()
	if !errors.Is(err, ErrAgentRunning) || !strings.Contains(err.Error(), "pid "+me) || !strings.Contains(err.Error(), dir) {
		t.Fatalf("second Lock in this process: %v, want ErrAgentRunning naming the store and pid %s", err, me)
	}
	if running, pid := af.Running(); !running || pid != os.Getpid() {
		t.Errorf("Running = %v %d while this process holds the lock", running, pid)
	}
	if f, err := oldAgentLock(dir); !errors.Is(err, syscall.EWOULDBLOCK) {
		f.Close()
		t.Fatalf("an older agent's lock while this one holds it: %v, want EWOULDBLOCK", err)
	}
	release()
	if running, _ := af.Running(); running {
		t.Error("running after release")
	}

	old, err := oldAgentLock(dir)
	if err != nil {
		t.Fatalf("an older agent's lock after release: %v", err)
	}
	if _, err := af.Lock(); !errors.Is(err, ErrAgentRunning) {
		t.Fatalf("Lock while an older agent holds the store: %v, want ErrAgentRunning", err)
	}
	if running, _ := af.Running(); !running {
		t.Error("an older agent's lock is not seen as running")
	}
	old.Close()

	cmd, line := helper(t, dir, "lock")
	child := strconv.Itoa(cmd.Process.Pid)
	if line != "LOCKED "+child {
		t.Fatalf("helper said %q", line)
	}
	if _, err := af.Lock(); !errors.Is(err, ErrAgentRunning) || !strings.Contains(err.Error(), "pid "+child) {
		t.Fatalf("Lock while another process holds it: %v, want ErrAgentRunning naming pid %s", err, child)
	}
	if running, pid := af.Running(); !running || pid != cmd.Process.Pid {
		t.Errorf("Running = %v %d, want true %s", running, pid, child)
	}
	kill(t, cmd)
	release, err = af.Lock()
	if err != nil {
		t.Fatalf("Lock after the holder was killed: %v", err)
	}
	release()
}

// A FIFO (or anything but a regular file) planted as the lock or the
// status file is refused at once, never opened in a way that hangs the
// agent's start or `kubekeep status`.
func TestAgentFilesRefuseFIFO(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{AgentLockFile, AgentStatusFile} {
		if err := syscall.Mkfifo(filepath.Join(dir, n), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	af := AgentFilesIn(dir)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if _, err := af.Lock(); !errors.Is(err, ErrNotRegular) {
			t.Errorf("Lock on a FIFO: %v, want ErrNotRegular", err)
		}
		if running, _ := af.Running(); running {
			t.Error("a FIFO lock file is a running agent")
		}
		if _, err := af.ReadStatus(); !errors.Is(err, ErrNotRegular) || !strings.Contains(err.Error(), AgentStatusFile) {
			t.Errorf("ReadStatus of a FIFO: %v, want ErrNotRegular naming the file", err)
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("blocked on a FIFO")
	}
}

// statusPayload is writer w's i-th status: sizes differ by writer, so a
// torn or mixed file cannot pass for a whole one.
func statusPayload(w, i int) []byte {
	return fmt.Appendf(nil, `{"w":%d,"i":%d,"pad":%q}`+"\n", w, i, strings.Repeat("x", 3000*(w%7)+i))
}

// Status writes race: goroutines of this process (sharing its pid, so
// only the random part tells their temp files apart) and two other
// processes, with a reader throughout. Every write succeeds, every read
// is one writer's whole status, and what is left is the status file
// alone, 0600.
func TestAgentStatusConcurrentWriters(t *testing.T) {
	dir := t.TempDir()
	af := AgentFilesIn(dir)
	if _, err := af.ReadStatus(); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("ReadStatus before any write: %v, want fs.ErrNotExist", err)
	}
	const goroutines, procs, writes = 4, 2, 50
	whole := func(data []byte) error {
		var p struct{ W, I int }
		if err := json.Unmarshal(data, &p); err != nil {
			return fmt.Errorf("not whole (%d bytes): %w", len(data), err)
		}
		if want := statusPayload(p.W, p.I); string(data) != string(want) {
			return fmt.Errorf("writer %d's status %d has %d bytes, wrote %d", p.W, p.I, len(data), len(want))
		}
		return nil
	}
	stop := make(chan struct{})
	var reads int
	readerDone := make(chan error, 1)
	go func() {
		for {
			select {
			case <-stop:
				readerDone <- nil
				return
			default:
			}
			data, err := af.ReadStatus()
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err == nil {
				err = whole(data)
			}
			if err != nil {
				readerDone <- err
				return
			}
			reads++
		}
	}()

	var wg sync.WaitGroup
	errs := make(chan error, goroutines*writes+procs)
	for w := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range writes {
				if err := af.WriteStatus(statusPayload(w, i)); err != nil {
					errs <- err
				}
			}
		}()
	}
	for p := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command(os.Args[0], "-test.run=^TestAgentFilesHelper$")
			cmd.Env = append(os.Environ(), fmt.Sprintf("KUBEKEEP_AGENTFILES_HELPER=write %d %d", 100+p, writes), "KUBEKEEP_AGENTFILES_DIR="+dir)
			if out, err := cmd.CombinedOutput(); err != nil || !strings.HasPrefix(string(out), "WROTE") {
				errs <- fmt.Errorf("writer process: %v: %s", err, out)
			}
		}()
	}
	wg.Wait()
	close(stop)
	if err := <-readerDone; err != nil {
		t.Errorf("a reader saw a status no writer wrote: %v", err)
	}
	close(errs)
	n := 0
	for err := range errs {
		if n < 3 {
			t.Error(err)
		}
		n++
	}
	if n > 0 {
		t.Fatalf("%d status writes failed", n)
	}
	t.Logf("%d whole reads during the writes", reads)
	data, err := af.ReadStatus()
	if err != nil {
		t.Fatal(err)
	}
	if err := whole(data); err != nil {
		t.Fatalf("status after the writes: %v", err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 || ents[0].Name() != "agent-status.json" {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("files left: %v, want agent-status.json alone", names)
	}
	if fi, err := os.Stat(filepath.Join(dir, "agent-status.json")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("status file mode: %v %v, want 0600", fi, err)
	}
}

// A status writer killed between its temp file and the rename leaves the
// old status whole and a temp file, which the next store Lock removes
// (the writer is dead) and so does the next agent's RemoveStatusTemps;
// a live writer's temp file survives the store Lock.
func TestAgentStatusKilledWriter(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, 0)
	af := s.AgentFiles()
	old := []byte(`{"pid":1}` + "\n")
	if err := af.WriteStatus(old); err != nil {
		t.Fatal(err)
	}
	killedWriter := func() string {
		cmd, line := helper(t, dir, "tempwrite")
		tmp, ok := strings.CutPrefix(line, "TEMP ")
		if !ok || filepath.Dir(tmp) != dir || !strings.HasPrefix(filepath.Base(tmp), ".agent-status.json.tmp-"+strconv.Itoa(cmd.Process.Pid)+"-") {
			t.Fatalf("helper said %q", line)
		}
		kill(t, cmd)
		if _, err := os.Stat(tmp); err != nil {
			t.Fatalf("the killed writer's temp file: %v", err)
		}
		if data, err := af.ReadStatus(); err != nil || string(data) != string(old) {
			t.Fatalf("status after a killed write: %q %v, want the old one whole", data, err)
		}
		return tmp
	}

	tmp := killedWriter()
	live, err := af.createStatusTemp()
	if err != nil {
		t.Fatal(err)
	}
	live.Close()
	unlock := lockTest(t, s)
	unlock()
	if _, err := os.Stat(tmp); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the store Lock left the killed writer's %s: %v", filepath.Base(tmp), err)
	}
	if _, err := os.Stat(live.Name()); err != nil {
		t.Errorf("the store Lock removed a live writer's temp file: %v", err)
	}
	os.Remove(live.Name())

	tmp = killedWriter()
	legacy := filepath.Join(dir, ".agent-status.json.new")
	if err := os.WriteFile(legacy, old, 0o600); err != nil {
		t.Fatal(err)
	}
	release, err := af.Lock()
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if err := af.RemoveStatusTemps(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{tmp, legacy} {
		if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("RemoveStatusTemps left %s: %v", filepath.Base(p), err)
		}
	}
	if data, err := af.ReadStatus(); err != nil || string(data) != string(old) {
		t.Errorf("RemoveStatusTemps touched the status file: %q %v", data, err)
	}
}

// RemoveStatusTemps matches names, not a glob of the store path: a store
// directory whose name holds glob characters ("[", "*") has its leftovers
// removed too (filepath.Glob read "st[1]" as "st1" and removed nothing),
// and only the status temp files go.
func TestRemoveStatusTempsGlobDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "st[1]*")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	af := AgentFilesIn(dir)
	if err := af.WriteStatus([]byte("{}")); err != nil {
		t.Fatal(err)
	}
	stale := []string{".agent-status.json.tmp-999999-1", ".agent-status.json.new"}
	keep := []string{"agent-status.json", ".agent-status.jsonx", "agent-status.json.tmp-999999-1", "RESTORE.md"}
	for _, n := range append(append([]string{}, stale...), keep[1:]...) {
		if err := os.WriteFile(filepath.Join(dir, n), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := af.RemoveStatusTemps(); err != nil {
		t.Fatal(err)
	}
	for _, n := range stale {
		if _, err := os.Lstat(filepath.Join(dir, n)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s left behind: %v", n, err)
		}
	}
	for _, n := range keep {
		if _, err := os.Lstat(filepath.Join(dir, n)); err != nil {
			t.Errorf("%s removed: %v", n, err)
		}
	}
}
