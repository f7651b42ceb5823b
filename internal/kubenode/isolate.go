package kubenode

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The node an isolated test runs on.
const (
	// Hostname is the isolated test's hostname, and the default node name.
	Hostname = "cp1"
	// Address is the node's IP: a /32 on lo, with the default route
	// through lo, so it is both what kubeadm detects as the host's address
	// and the default advertiseAddress.
	Address = "10.127.0.1"
)

// Environment markers between a test and its isolated child.
const (
	childEnv   = "KUBEKEEP_KUBENODE_CHILD"   // the test's name, in the child only
	scratchEnv = "KUBEKEEP_KUBENODE_SCRATCH" // a directory the parent made and removes
)

// Isolated reports whether this process is the isolated child of
// RunIsolated (inside its namespaces, with its mounts).
func Isolated() bool { return os.Getenv(childEnv) != "" }

// RunIsolated runs fn as the test t inside private mount, UTS, network,
// PID and IPC namespaces, as root, on a host that looks like a fresh
// single-master node:
//
//   - / is made rprivate: nothing mounted here reaches the host.
//   - /etc is an overlay on the host's /etc (writes land in a tmpfs); in
//     it /etc/kubernetes is removed (whited out, the host's stays), and
//     /etc/hostname and /etc/hosts name the node.
//   - /var/lib and /run are fresh empty tmpfs directories (no host etcd
//     data, no systemd or containerd sockets: kubeadm's systemctl calls
//     fail instead of reaching the host's init system).
//   - /proc is this PID namespace's own. fn's process is PID 1 there, so
//     every process it starts dies with it, even when the test binary is
//     killed.
//   - the hostname is Hostname (cp1); lo is up and also carries Address
//     (10.127.0.1/32), and the default route is through lo.
//   - kubeadm, kubectl, kube-apiserver and etcd are first on PATH (links
//     to Binaries); there is no kubelet and no container runtime.
//
// One divergence from a one-disk master: /etc (an overlay), /var/lib and
// /tmp are different filesystems here, so a rename between them fails
// with EXDEV, as it does on a master with /var/lib/etcd on its own disk.
//
// Everything else (/usr, /tmp, /root, the user cache holding the
// binaries, the Go toolchain) is the host's. t.TempDir works as usual.
//
// It works by re-running the test binary: the parent starts
// os.Executable() with -test.run anchored to t's name and a marker in
// the environment, in new namespaces; the child's RunIsolated sees the
// marker, prepares the mounts and calls fn. The parent streams the child's
// output into t's log, fails t when the child fails and skips it when the
// child skipped. The parent skips t when not root or when namespaces
// cannot be created here, and builds the binaries (Binaries) first, so a
// failed build fails t outside (with KUBEKEEP_SKIP_KUBE=1 it does not, and
// fn runs without them: Init and Binaries skip there).
//
// Code outside fn in the same test runs twice (in the parent and in the
// child): keep it out, or guard what must run only outside with
// `if kubenode.Isolated() { return }` after RunIsolated. Tests that call
// RunIsolated may run in parallel (t.Parallel before RunIsolated): every
// child has its own namespaces, ports and files.
func RunIsolated(t *testing.T, fn func(t *testing.T)) {
	t.Helper()
	if name := os.Getenv(childEnv); name != "" {
		if name != t.Name() {
			t.Fatalf("kubenode: RunIsolated in %s, but this child was started for %s", t.Name(), name)
		}
		scratch := os.Getenv(scratchEnv)
		if err := setupIsolated(scratch); err != nil {
			t.Fatalf("kubenode: preparing the isolated node: %v", err)
		}
		// The binaries on PATH, first, as /usr/bin has them on a master.
		if os.Getenv(binsEnv) != "" {
			bins := Binaries(t)
			binDir := filepath.Join(scratch, "bin")
			if err := bins.Link(binDir); err != nil {
				t.Fatalf("kubenode: %v", err)
			}
			os.Setenv("PATH", binDir+string(os.PathListSeparator)+os.Getenv("PATH"))
		}
		fn(t)
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("kubenode: needs root (private mount, UTS, network and PID namespaces; bind mounts over /etc, /var/lib and /run)")
	}
	// Built here, outside, so that a failed build fails t with the
	// compiler's output; with KUBEKEEP_SKIP_KUBE=1 the child runs without
	// them (Init then skips).
	var bins *Bins
	if os.Getenv(SkipEnv) != "1" {
		b := Binaries(t)
		bins = &b
	}
	runChild(t, bins)
}

func runChild(t *testing.T, bins *Bins) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatalf("kubenode: %v", err)
	}
	binsJSON, err := json.Marshal(bins)
	if err != nil {
		t.Fatal(err)
	}
	scratch := t.TempDir()
	args := []string{"-test.run=" + runPattern(t.Name()), "-test.v=true", "-test.count=1"}
	ctx := context.Background()
	if dl, ok := t.Deadline(); ok {
		// Leave the parent time to report what the child printed.
		left := time.Until(dl) - 15*time.Second
		if left < 30*time.Second {
			left = time.Until(dl)
		}
		args = append(args, "-test.timeout="+left.Round(time.Second).String())
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, dl.Add(-5*time.Second))
		defer cancel()
	}
	if testing.Short() {
		args = append(args, "-test.short")
	}
	cmd := exec.CommandContext(ctx, self, args...)
	cmd.Dir, _ = os.Getwd()
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch strings.ToUpper(k) {
		case childEnv, scratchEnv, binsEnv, "KUBECONFIG", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY":
			continue // a proxy would catch the node's own 10.127.0.1
		}
		cmd.Env = append(cmd.Env, kv)
	}
	cmd.Env = append(cmd.Env, childEnv+"="+t.Name(), scratchEnv+"="+scratch)
	if bins != nil {
		cmd.Env = append(cmd.Env, binsEnv+"="+string(binsJSON))
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWUTS | syscall.CLONE_NEWNET | syscall.CLONE_NEWPID | syscall.CLONE_NEWIPC,
		Pdeathsig:  syscall.SIGKILL,
	}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EUSERS) {
			t.Skipf("kubenode: creating mount, UTS, network and PID namespaces is not permitted here: %v", err)
		}
		t.Fatalf("kubenode: start the isolated child: %v", err)
	}
	var (
		mu      sync.Mutex
		skipped bool
		reason  string // the last log line before the SKIP line
		wg      sync.WaitGroup
	)
	// go test -v prints a test's log as it goes, then "--- SKIP: name
	// (0.00s)" (for a subtest indented): the reason is the line before.
	skipLine := "--- SKIP: " + t.Name() + " ("
	wg.Add(1)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		last := ""
		for sc.Scan() {
			line := sc.Text()
			t.Log("│ " + line)
			trimmed := strings.TrimSpace(line)
			mu.Lock()
			if strings.HasPrefix(trimmed, skipLine) {
				skipped, reason = true, last
			}
			mu.Unlock()
			if trimmed != "" && !strings.HasPrefix(trimmed, "=== ") && !strings.HasPrefix(trimmed, "--- ") {
				last = trimmed
			}
		}
		io.Copy(io.Discard, pr)
	}()
	err = cmd.Wait()
	pw.Close()
	wg.Wait()
	if err != nil {
		t.Fatalf("kubenode: the isolated child (%s) failed: %v (its output is above, marked │)", t.Name(), err)
	}
	mu.Lock()
	defer mu.Unlock()
	if skipped {
		t.Skipf("kubenode: the isolated child skipped: %s", reason)
	}
}

// runPattern anchors each element of a (sub)test name for -test.run.
func runPattern(name string) string {
	parts := strings.Split(name, "/")
	for i, p := range parts {
		parts[i] = "^" + regexp.QuoteMeta(p) + "$"
	}
	return strings.Join(parts, "/")
}

// setupIsolated prepares the child's mounts, hostname and network; scratch
// is an empty directory the parent made (and removes afterwards).
func setupIsolated(scratch string) error {
	if scratch == "" || !filepath.IsAbs(scratch) {
		return fmt.Errorf("no scratch directory from the parent (%s=%q)", scratchEnv, scratch)
	}
	if os.Getpid() != 1 {
		return fmt.Errorf("not PID 1 of a new PID namespace (pid %d)", os.Getpid())
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("mount --make-rprivate /: %w", err)
	}
	if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount proc on /proc: %w", err)
	}
	// Everything the node writes lives in this tmpfs, gone with the
	// namespace.
	if err := unix.Mount("kubenode", scratch, "tmpfs", 0, "mode=0755"); err != nil {
		return fmt.Errorf("mount tmpfs on %s: %w", scratch, err)
	}
	for _, d := range []string{"etc.upper", "etc.work", "var-lib", "run"} {
		if err := os.Mkdir(filepath.Join(scratch, d), 0o755); err != nil {
			return err
		}
	}
	opts := "lowerdir=/etc,upperdir=" + filepath.Join(scratch, "etc.upper") + ",workdir=" + filepath.Join(scratch, "etc.work")
	if err := unix.Mount("overlay", "/etc", "overlay", 0, opts); err != nil {
		return fmt.Errorf("mount an overlay on /etc (%s): %w", opts, err)
	}
	for _, b := range [][2]string{{"var-lib", "/var/lib"}, {"run", "/run"}} {
		if err := unix.Mount(filepath.Join(scratch, b[0]), b[1], "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind %s over %s: %w", b[0], b[1], err)
		}
	}
	if err := os.RemoveAll("/etc/kubernetes"); err != nil {
		return fmt.Errorf("hide the host's /etc/kubernetes: %w", err)
	}
	if err := os.MkdirAll("/run/lock", 0o755); err != nil {
		return err
	}
	if err := unix.Sethostname([]byte(Hostname)); err != nil {
		return fmt.Errorf("sethostname: %w", err)
	}
	if err := os.WriteFile("/etc/hostname", []byte(Hostname+"\n"), 0o644); err != nil {
		return err
	}
	hosts := "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n" + Address + "\t" + Hostname + "\n"
	if err := os.WriteFile("/etc/hosts", []byte(hosts), 0o644); err != nil {
		return err
	}
	return setupNetwork()
}

// setupNetwork brings lo up, adds Address to it and routes everything
// else through it, with iproute2's ip (as `ip link set lo up; ip addr add
// 10.127.0.1/32 dev lo; ip route add default dev lo`).
func setupNetwork() error {
	ip, err := exec.LookPath("ip")
	if err != nil {
		for _, p := range []string{"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"} {
			if isExecutable(p) {
				ip, err = p, nil
				break
			}
		}
		if err != nil {
			return fmt.Errorf("the ip command (iproute2) is needed for the node's network: %w", err)
		}
	}
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"addr", "add", Address + "/32", "dev", "lo"},
		{"route", "add", "default", "dev", "lo"},
	} {
		if out, err := exec.Command(ip, args...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, out)
		}
	}
	return nil
}

// AddAddress adds another IPv4 address to lo inside an isolated test (a
// node moved to a new IP: restore onto a different advertise address).
func AddAddress(ip string) error {
	if !Isolated() {
		return errors.New("kubenode: AddAddress outside RunIsolated would change the host's network")
	}
	if p := net.ParseIP(ip); p == nil || p.To4() == nil {
		return fmt.Errorf("kubenode: %q is not an IPv4 address", ip)
	}
	out, err := exec.Command("ip", "addr", "add", ip+"/32", "dev", "lo").CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip addr add %s/32 dev lo: %w: %s", ip, err, out)
	}
	return nil
}
