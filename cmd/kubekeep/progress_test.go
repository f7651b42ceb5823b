package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kubekeep/kubekeep/internal/progress"
	"github.com/kubekeep/kubekeep/internal/sandbox"
	"github.com/kubekeep/kubekeep/internal/testetcd"
)

// liveNode is a backed-up sandbox node: its manifests, PKI (with a big
// file in it, so reading it out takes a moment), kubeconfigs and etcd data
// dir are in place, etcd is stopped (nothing holds the data dir).
type liveNode struct {
	root  *sandbox.Root
	store string
	id    string
	big   int64
}

func newLiveNode(t *testing.T, bigMiB int) liveNode {
	t.Helper()
	root := testetcd.SandboxT(t)
	srv := testetcd.StartT(t, root)
	if _, err := srv.LoadCluster(context.Background()); err != nil {
		t.Fatal(err)
	}
	big := make([]byte, bigMiB<<20)
	if _, err := rand.Read(big); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root.Dir, "etc/kubernetes/pki/big.bin"), big, 0o600); err != nil {
		t.Fatal(err)
	}
	store := filepath.Join(t.TempDir(), "store")
	out, err := runCLI(t, "--root", root.Dir, "--store", store, "--allow-same-filesystem", "--log-level", "error", "backup")
	if err != nil {
		t.Fatalf("backup: %v\n%s", err, out)
	}
	srv.Stop()
	return liveNode{root: root, store: store, id: strings.TrimSpace(out), big: int64(len(big))}
}

// runKubekeepEnv runs the CLI in-process with stdin, stdout and stderr
// of its own (not terminals: plain progress, no question).
func runKubekeepEnv(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	t.Setenv("KUBEKEEP_CONFIG", "")
	t.Setenv(progress.EnvVar, "")
	return runKubekeep(t, "y\n", args...)
}

var summaryLine = regexp.MustCompile(`^restore phase (\w+): (done in \S+|[\d.]+ (B|KiB|MiB|GiB) in \S+ \([\d.]+ (B|KiB|MiB|GiB)/s\))$`)

// Without a terminal a restore writes one plain line per phase to stderr,
// with the bytes it read out of the store and how long it took; a restore
// into an empty new root asks nothing (no --yes needed).
func TestRestorePlainProgressLines(t *testing.T) {
	n := newLiveNode(t, 8)
	to := t.TempDir()
	stdout, stderr, err := runKubekeepEnv(t, "--root", to, "--store", n.store, "--allow-same-filesystem", "--log-level", "error",
		"restore", "--version", n.id, "--phase", "files", "--phase", "etcd")
	if err != nil {
		t.Fatalf("restore into an empty root: %v\nstdout:\n%s\nstderr:\n%s", err, stdout, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	if len(lines) != 2 {
		t.Fatalf("want one line per phase (2), got %d:\n%s", len(lines), stderr)
	}
	for i, phase := range []string{"files", "etcd"} {
		m := summaryLine.FindStringSubmatch(lines[i])
		if m == nil || m[1] != phase || strings.HasPrefix(m[2], "done") {
			t.Errorf("line %d %q: want the %s phase's bytes, time and rate", i+1, lines[i], phase)
		}
	}
	// The files phase read at least the big file out of the store.
	if !strings.Contains(lines[0], ": 8.0 MiB in ") && !strings.Contains(lines[0], ": 8.1 MiB in ") {
		t.Errorf("files line %q: the phase restores %d bytes of the big file", lines[0], n.big)
	}
	if b, err := os.ReadFile(filepath.Join(to, "etc/kubernetes/pki/big.bin")); err != nil || int64(len(b)) != n.big {
		t.Fatalf("big.bin not restored: %d bytes, %v", len(b), err)
	}

	// KUBEKEEP_PROGRESS=off: nothing on stderr.
	t.Setenv(progress.EnvVar, "off")
	_, stderr, err = runKubekeep(t, "", "--root", t.TempDir(), "--store", n.store, "--allow-same-filesystem", "--log-level", "error",
		"restore", "--version", n.id, "--phase", "files")
	if err != nil || stderr != "" {
		t.Fatalf("KUBEKEEP_PROGRESS=off: %v, stderr %q", err, stderr)
	}
}

// A restore over a node that holds what it would replace refuses without
// a terminal and without --yes: exit 2, a message naming --yes, nothing
// changed. --dry-run does not ask; --yes goes on and keeps what it
// replaces.
func TestRestoreOverLiveNodeNeedsYes(t *testing.T) {
	n := newLiveNode(t, 1)
	ca := filepath.Join(n.root.Dir, "etc/kubernetes/pki/ca.crt")
	if err := os.WriteFile(ca, []byte("edited by hand"), 0o644); err != nil {
		t.Fatal(err)
	}
	manifest := filepath.Join(n.root.Dir, "etc/kubernetes/manifests/etcd.yaml")
	common := []string{"--root", n.root.Dir, "--store", n.store, "--allow-same-filesystem", "--log-level", "error", "restore", "--version", n.id}
	replaced := func() []string {
		m, _ := filepath.Glob(filepath.Join(n.root.Dir, "etc/kubernetes/kubekeep-*"))
		return m
	}

	for _, phases := range [][]string{{"--phase", "files"}, nil} {
		_, stderr, err := runKubekeepEnv(t, append(common, phases...)...)
		if code := exitCode(err); code != 2 || !strings.Contains(err.Error(), "--yes") {
			t.Fatalf("restore %v over a live node without --yes: exit %d, %v", phases, code, err)
		}
		if strings.Contains(stderr, "Proceed?") {
			t.Errorf("no terminal, yet asked:\n%s", stderr)
		}
		if b, _ := os.ReadFile(ca); string(b) != "edited by hand" {
			t.Fatalf("a refused restore changed ca.crt: %q", b)
		}
		if _, err := os.Stat(manifest); err != nil || len(replaced()) != 0 {
			t.Fatalf("a refused restore moved things: manifest %v, %v", err, replaced())
		}
	}

	if _, _, err := runKubekeepEnv(t, append(common, "--phase", "files", "--dry-run")...); err != nil {
		t.Fatalf("--dry-run must not ask: %v", err)
	}

	stdout, stderr, err := runKubekeepEnv(t, append(common, "--phase", "files", "--yes")...)
	if err != nil {
		t.Fatalf("--yes: %v\n%s\n%s", err, stdout, stderr)
	}
	if b, _ := os.ReadFile(ca); string(b) == "edited by hand" {
		t.Fatal("--yes did not restore ca.crt")
	}
	kept, _ := filepath.Glob(filepath.Join(n.root.Dir, "etc/kubernetes/kubekeep-replaced-*/etc/kubernetes/pki/ca.crt"))
	if len(kept) != 1 {
		t.Fatalf("the replaced ca.crt is not kept: %v", kept)
	}
	if !summaryLine.MatchString(strings.TrimSpace(stderr)) {
		t.Errorf("stderr of --yes %q: want the files phase's line", stderr)
	}
}

// tmuxSession runs shell command line in a detached tmux session of its
// own server (a private socket), 120x30, and returns a capture function.
// The server is killed when the test ends.
func tmuxSession(t *testing.T, line string) (capture func() string, sendKeys func(keys ...string)) {
	t.Helper()
	tmux, err := exec.LookPath("tmux")
	if err != nil {
		t.Skip("tmux is not installed (apt-get install tmux; make deps installs it): the terminal tests need it")
	}
	sock := fmt.Sprintf("kubekeep-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	run := func(args ...string) (string, error) {
		out, err := exec.Command(tmux, append([]string{"-L", sock}, args...)...).CombinedOutput()
		return string(out), err
	}
	t.Cleanup(func() { run("kill-server") })
	if out, err := run("new-session", "-d", "-x", "120", "-y", "30", "-s", "t", line); err != nil {
		t.Fatalf("tmux new-session: %v\n%s", err, out)
	}
	capture = func() string {
		out, _ := run("capture-pane", "-p", "-J", "-t", "t") // -J: wrapped lines joined
		return out
	}
	sendKeys = func(keys ...string) {
		if out, err := run(append([]string{"send-keys", "-t", "t"}, keys...)...); err != nil {
			t.Fatalf("tmux send-keys: %v\n%s", err, out)
		}
	}
	return capture, sendKeys
}

// waitPane polls the pane until re matches (or a minute passes).
func waitPane(t *testing.T, capture func() string, re *regexp.Regexp, every time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	var last string
	for time.Now().Before(deadline) {
		if last = capture(); re.MatchString(last) {
			return last
		}
		time.Sleep(every)
	}
	t.Fatalf("the pane never showed %s; it shows:\n%s", re, last)
	return ""
}

// shellLine is the command tmux runs: the binary with a clean
// environment, then its exit status, then a pause so the pane stays.
func shellLine(bin string, args ...string) string {
	q := []string{"env", "-u", progress.EnvVar, "KUBEKEEP_CONFIG=", bin}
	for _, a := range args {
		q = append(q, "'"+a+"'")
	}
	return strings.Join(q, " ") + `; echo "EXIT=$?"; sleep 120`
}

var (
	barRe  = regexp.MustCompile(`restore files +\d+% \|[^|]*\| \([\d.]+/[\d.]+ MiB, [\d.]+ [KMG]?i?B/s\) \[\d+s:\d+s\]`)
	exitRe = regexp.MustCompile(`EXIT=(\d+)`)
)

// At a terminal (a tmux pane) a restore draws a bar with the bytes done
// and to do, the rate and the time left, and leaves one summary line.
func TestRestoreBarInTerminal(t *testing.T) {
	n := newLiveNode(t, 256)
	bin := buildCLI(t)
	to := filepath.Join(t.TempDir(), "new")
	capture, _ := tmuxSession(t, shellLine(bin, "--store", n.store, "--allow-same-filesystem", "--log-level", "error",
		"restore", "files", "--version", n.id, "--to", to))
	// The first drawing shows 0 B; wait for one with a rate.
	mid := waitPane(t, capture, regexp.MustCompile(barRe.String()+`|EXIT=`), 5*time.Millisecond)
	if !barRe.MatchString(mid) {
		t.Fatalf("no bar with bytes, rate and time left while it ran:\n%s", mid)
	}
	t.Logf("while running:\n%s", strings.TrimRight(mid, "\n"))
	end := waitPane(t, capture, exitRe, 50*time.Millisecond)
	if m := exitRe.FindStringSubmatch(end); m[1] != "0" {
		t.Fatalf("restore files exited %s:\n%s", m[1], end)
	}
	if !regexp.MustCompile(`(?m)^restore files: 256\.\d MiB in \S+ \([\d.]+ [KMG]iB/s\)$`).MatchString(end) || barRe.MatchString(end) {
		t.Fatalf("after the run: want the summary line and no bar:\n%s", end)
	}
	t.Logf("after:\n%s", strings.TrimRight(end, "\n"))
}

// At a terminal a restore over a live node shows what it replaces and
// asks; n refuses and changes nothing, y restores.
func TestRestorePromptInTerminal(t *testing.T) {
	n := newLiveNode(t, 1)
	ca := filepath.Join(n.root.Dir, "etc/kubernetes/pki/ca.crt")
	if err := os.WriteFile(ca, []byte("edited by hand"), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := buildCLI(t)
	args := []string{"--root", n.root.Dir, "--store", n.store, "--allow-same-filesystem", "--log-level", "error",
		"restore", "--version", n.id, "--phase", "files"}
	prompt := regexp.MustCompile(`Proceed\? \[y/N\]`)

	capture, send := tmuxSession(t, shellLine(bin, args...))
	pane := waitPane(t, capture, prompt, 20*time.Millisecond)
	for _, want := range []string{"replaces what the node under " + n.root.Dir + " holds", "/etc/kubernetes/pki/ca.crt", "paths that differ from the version"} {
		if !strings.Contains(pane, want) {
			t.Errorf("the summary lacks %q:\n%s", want, pane)
		}
	}
	send("n", "Enter")
	pane = waitPane(t, capture, exitRe, 20*time.Millisecond)
	if m := exitRe.FindStringSubmatch(pane); m[1] != "2" || !strings.Contains(pane, "nothing changed") {
		t.Fatalf("answered n: want exit 2 and nothing changed:\n%s", pane)
	}
	if b, _ := os.ReadFile(ca); string(b) != "edited by hand" {
		t.Fatalf("answered n, yet ca.crt changed: %q", b)
	}
	if m, _ := filepath.Glob(filepath.Join(n.root.Dir, "etc/kubernetes/kubekeep-*")); len(m) != 0 {
		t.Fatalf("answered n, yet %v", m)
	}
	t.Logf("answered n:\n%s", strings.TrimRight(pane, "\n"))

	// Ctrl-C at the question ends the command (it is not left waiting
	// for a line), nothing changed.
	capture, send = tmuxSession(t, shellLine(bin, args...))
	waitPane(t, capture, prompt, 20*time.Millisecond)
	send("C-c")
	pane = waitPane(t, capture, exitRe, 20*time.Millisecond)
	if m := exitRe.FindStringSubmatch(pane); m[1] != "2" || !strings.Contains(pane, "nothing changed") {
		t.Fatalf("Ctrl-C at the question: want exit 2 and nothing changed:\n%s", pane)
	}
	if b, _ := os.ReadFile(ca); string(b) != "edited by hand" {
		t.Fatalf("Ctrl-C, yet ca.crt changed: %q", b)
	}

	capture, send = tmuxSession(t, shellLine(bin, args...))
	waitPane(t, capture, prompt, 20*time.Millisecond)
	send("y", "Enter")
	pane = waitPane(t, capture, exitRe, 20*time.Millisecond)
	if m := exitRe.FindStringSubmatch(pane); m[1] != "0" || !strings.Contains(pane, "restored version "+n.id) {
		t.Fatalf("answered y: want the restore done:\n%s", pane)
	}
	if b, _ := os.ReadFile(ca); string(b) == "edited by hand" {
		t.Fatal("answered y, yet ca.crt is not restored")
	}
	if !regexp.MustCompile(`(?m)^restore phase files: `).MatchString(pane) {
		t.Errorf("answered y: no line for the files phase:\n%s", pane)
	}
	t.Logf("answered y:\n%s", strings.TrimRight(pane, "\n"))
}

// verify --read-data and drill write their one line too: the bytes read
// (every pack; the snapshot), the time and the rate.
func TestVerifyAndDrillPlainLines(t *testing.T) {
	n := newLiveNode(t, 1)
	common := []string{"--store", n.store, "--allow-same-filesystem", "--log-level", "error"}
	_, stderr, err := runKubekeepEnv(t, append(common, "verify", "--read-data")...)
	if err != nil {
		t.Fatalf("verify --read-data: %v\n%s", err, stderr)
	}
	if !regexp.MustCompile(`^verify --read-data: [\d.]+ (KiB|MiB) in \S+ \([\d.]+ [KMG]?i?B/s\)\n$`).MatchString(stderr) {
		t.Errorf("verify --read-data stderr %q: want one line with the bytes read", stderr)
	}
	_, stderr, err = runKubekeepEnv(t, append(common, "verify")...)
	if err != nil || stderr != "" {
		t.Errorf("verify without --read-data reads no data and says nothing: %v %q", err, stderr)
	}
	_, stderr, err = runKubekeepEnv(t, append(common, "drill", "--version", n.id)...)
	if err != nil {
		t.Fatalf("drill: %v\n%s", err, stderr)
	}
	if !regexp.MustCompile(`^drill: [\d.]+ (KiB|MiB) in \S+ \([\d.]+ [KMG]?i?B/s\)\n$`).MatchString(stderr) {
		t.Errorf("drill stderr %q: want one line with the snapshot's bytes", stderr)
	}
}
