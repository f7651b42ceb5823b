package testetcd

// The etcd 3.5 server, as a child process. kubeadm up to 1.33 runs etcd
// 3.5.x, so a data dir kubekeep restores must start under a 3.5 server as
// well as under the 3.6 one embedded above. The two server lines cannot
// share one module graph, so internal/etcd35 is a module of its own (the
// unmodified etcdmain of the newest 3.5 release) that is built here on
// first use and cached by content.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/kubekeep/kubekeep/internal/gobuild"
	"github.com/kubekeep/kubekeep/internal/sandbox"
	"github.com/kubekeep/kubekeep/internal/tailbuf"
)

// SkipEtcd35Env set to 1 makes tests that need the etcd 3.5 binary skip
// instead of building it (a machine without the module proxy). Unset, a
// failed build fails the test with the compiler's output.
const SkipEtcd35Env = "KUBEKEEP_SKIP_ETCD35"

var (
	etcd35Once sync.Once
	etcd35Path string
	etcd35Err  error
)

// Etcd35BinaryT returns the path of the etcd 3.5 server binary, building
// it the first time in this process (and only when its sources changed
// since the cached build). It skips the test when KUBEKEEP_SKIP_ETCD35=1
// and fails it, with the build output, when the build fails.
func Etcd35BinaryT(t testing.TB) string {
	t.Helper()
	if os.Getenv(SkipEtcd35Env) == "1" {
		t.Skipf("%s=1: not building the etcd 3.5 server", SkipEtcd35Env)
	}
	p, err := Etcd35Binary()
	if err != nil {
		t.Fatalf("etcd 3.5 server binary (set %s=1 to skip the tests that need it): %v", SkipEtcd35Env, err)
	}
	return p
}

// Etcd35Binary is Etcd35BinaryT outside a test.
func Etcd35Binary() (string, error) {
	etcd35Once.Do(func() { etcd35Path, etcd35Err = buildEtcd35() })
	return etcd35Path, etcd35Err
}

// etcd35Dir finds internal/etcd35: beside this file when the sources are
// where they were compiled, else above the working directory (go test runs
// in the package directory).
func etcd35Dir() (string, error) {
	if _, file, _, ok := runtime.Caller(0); ok {
		d := filepath.Join(filepath.Dir(file), "..", "etcd35")
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return filepath.Clean(d), nil
		}
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		c := filepath.Join(d, "internal", "etcd35")
		if _, err := os.Stat(filepath.Join(c, "go.mod")); err == nil {
			return c, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("internal/etcd35 not found above %s", wd)
		}
	}
}

// etcd35BuildFlags are part of the cache key.
var etcd35BuildFlags = []string{"build", "-trimpath", "-buildvcs=false", "."}

func buildEtcd35() (string, error) {
	src, err := etcd35Dir()
	if err != nil {
		return "", err
	}
	dir, err := gobuild.Cached("etcd35", src, []string{"main.go", "go.mod", "go.sum"}, etcd35BuildFlags)
	if err != nil {
		return "", err
	}
	// go build -o DIR/ names the binary after the module's last element.
	return filepath.Join(dir, "etcd35"), nil
}

// Etcd35 is an etcd 3.5 server process serving a sandbox root the way
// its kubeadm etcd.yaml would, with the embedded server's loopback
// listeners. Its methods mirror Server's.
type Etcd35 struct {
	root *sandbox.Root
	bin  string
	opts Options

	mu  sync.Mutex
	cmd *exec.Cmd
	// terminated is the process Stop sent SIGTERM.
	terminated *exec.Cmd
	done       chan struct{} // closed when the process has exited
	exit       error
	client     *clientv3.Client
	log        *tailbuf.Buffer
}

// StartEtcd35 starts the etcd 3.5 binary bin (Etcd35Binary) on r and
// waits until it serves a linearizable read. opts.Logger is not used:
// the process's own log is kept, see Log.
func StartEtcd35(ctx context.Context, bin string, r *sandbox.Root, opts Options) (*Etcd35, error) {
	s := &Etcd35{root: r, bin: bin, opts: opts, log: &tailbuf.Buffer{Max: 4 << 20}}
	if err := s.start(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// StartEtcd35T builds (once) and starts etcd 3.5 for a test, stopping it
// when the test ends.
func StartEtcd35T(t testing.TB, r *sandbox.Root) *Etcd35 {
	t.Helper()
	return StartEtcd35WithT(t, r, Options{})
}

// StartEtcd35WithT is StartEtcd35T with options.
func StartEtcd35WithT(t testing.TB, r *sandbox.Root, opts Options) *Etcd35 {
	t.Helper()
	bin := Etcd35BinaryT(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := StartEtcd35(ctx, bin, r, opts)
	if err != nil {
		t.Fatalf("start etcd 3.5: %v", err)
	}
	t.Cleanup(s.Stop)
	return s
}

// Args are the server's flags: the sandbox etcd.yaml's for the etcd 3.5
// kubeadm releases (TLS with the sandbox PKI and client-cert auth on both
// sides, member name, data dir, initial cluster, snapshot count, the
// experimental corruption check), with the listeners on loopback as the
// embedded server has them and no metrics listener (a fixed port there
// would collide between tests).
func (s *Etcd35) Args() []string {
	r := s.root
	clientURL := r.EtcdClientURL()
	// The peer listener is on loopback like the embedded server's: the
	// advertise address may not exist here. With the default advertise
	// address this is exactly the manifest's peer URL.
	peerURL := "https://127.0.0.1:" + strconv.Itoa(r.Opts.EtcdPeerPort)
	args := []string{
		"--name=" + r.Opts.NodeName,
		"--data-dir=" + r.Path(r.EtcdDataDir),
		"--listen-client-urls=" + clientURL,
		"--advertise-client-urls=" + clientURL,
		"--listen-peer-urls=" + peerURL,
		"--initial-advertise-peer-urls=" + peerURL,
		"--initial-cluster=" + r.Opts.NodeName + "=" + peerURL,
		"--cert-file=" + r.Path(r.EtcdServerCert),
		"--key-file=" + r.Path(r.EtcdServerKey),
		"--trusted-ca-file=" + r.Path(r.EtcdCAFile),
		"--client-cert-auth=true",
		"--peer-cert-file=" + r.Path(r.EtcdPeerCert),
		"--peer-key-file=" + r.Path(r.EtcdPeerKey),
		"--peer-trusted-ca-file=" + r.Path(r.EtcdCAFile),
		"--peer-client-cert-auth=true",
		"--snapshot-count=10000",
		"--experimental-initial-corrupt-check=true",
		"--logger=zap",
		"--log-outputs=stderr",
		"--log-level=info",
	}
	if s.opts.ProgressNotifyInterval > 0 {
		args = append(args, "--experimental-watch-progress-notify-interval="+s.opts.ProgressNotifyInterval.String())
	} else {
		args = append(args, "--experimental-watch-progress-notify-interval=5s")
	}
	if s.opts.QuotaBackendBytes > 0 {
		args = append(args, "--quota-backend-bytes="+strconv.FormatInt(s.opts.QuotaBackendBytes, 10))
	}
	return args
}

func (s *Etcd35) start(ctx context.Context) error {
	cmd := exec.Command(s.bin, s.Args()...)
	cmd.Stdout = s.log
	cmd.Stderr = s.log
	// The environment could configure etcd too (ETCD_*): only ours counts.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ETCD_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	// A test binary killed by its timeout runs no cleanup: the kernel
	// stops etcd with it rather than leaving it on the ports.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	s.log.Mark()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("testetcd: start %s: %w", s.bin, err)
	}
	done := make(chan struct{})
	s.mu.Lock()
	s.cmd, s.done, s.exit = cmd, done, nil
	s.mu.Unlock()
	go func() {
		err := cmd.Wait()
		// etcd's interrupt handler shuts down and then re-raises the
		// signal: death by the SIGTERM Stop sent is a clean stop.
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGTERM {
				s.mu.Lock()
				if s.terminated == cmd {
					err = nil
				}
				s.mu.Unlock()
			}
		}
		s.mu.Lock()
		s.exit = err
		s.mu.Unlock()
		close(done)
	}()
	if err := s.waitHealthy(ctx, done); err != nil {
		s.Stop()
		return fmt.Errorf("testetcd: etcd 3.5 on %s: %w\netcd log:\n%s", s.DataDir(), err, s.log.SinceMark())
	}
	return nil
}

// waitHealthy polls what `etcdctl endpoint health` does, a linearizable
// read, until it succeeds, the process exits or ctx ends.
func (s *Etcd35) waitHealthy(ctx context.Context, done <-chan struct{}) error {
	tc, err := s.ClientTLS()
	if err != nil {
		return err
	}
	c, err := clientv3.New(clientv3.Config{
		Endpoints: []string{s.Endpoint()}, TLS: tc, DialTimeout: 2 * time.Second, Logger: zap.NewNop(),
	})
	if err != nil {
		return err
	}
	defer c.Close()
	var last error
	for {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := c.Get(rctx, "health")
		cancel()
		if err == nil {
			return nil
		}
		last = err
		select {
		case <-done:
			s.mu.Lock()
			exit := s.exit
			s.mu.Unlock()
			return fmt.Errorf("exited while starting: %v", exit)
		case <-ctx.Done():
			return fmt.Errorf("not healthy: %w (last: %v)", ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Endpoint is the client URL, e.g. https://127.0.0.1:34567.
func (s *Etcd35) Endpoint() string { return s.root.EtcdClientURL() }

// Root is the sandbox the server runs on.
func (s *Etcd35) Root() *sandbox.Root { return s.root }

// DataDir is the real path of the data dir.
func (s *Etcd35) DataDir() string { return s.root.Path(s.root.EtcdDataDir) }

// Log is everything the process wrote (its zap JSON lines), the last
// 4 MiB of it.
func (s *Etcd35) Log() string { return s.log.String() }

// ClientTLS is the healthcheck-client TLS config, the identity kubekeep uses.
func (s *Etcd35) ClientTLS() (*tls.Config, error) { return clientTLS(s.root) }

// Client returns a shared client authenticated with the sandbox's client
// certificate; it is closed by Stop.
func (s *Etcd35) Client() (*clientv3.Client, error) {
	return sharedClient(&s.mu, &s.client, s.root, s.Endpoint())
}

// ClientT is Client for tests.
func (s *Etcd35) ClientT(t testing.TB) *clientv3.Client {
	t.Helper()
	c, err := s.Client()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Stop sends etcd SIGTERM and waits until it has exited (SIGKILL after
// 30 s). Stopping a stopped server does nothing.
func (s *Etcd35) Stop() {
	s.mu.Lock()
	cmd, done, c := s.cmd, s.done, s.client
	s.cmd, s.client = nil, nil
	s.mu.Unlock()
	if c != nil {
		c.Close()
	}
	if cmd == nil {
		return
	}
	s.mu.Lock()
	s.terminated = cmd
	s.mu.Unlock()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// LoadCluster writes what Server.LoadCluster writes (the kubeadm-config
// ConfigMap, namespaces, a Secret, a ConfigMap, a Deployment) and returns
// the keys.
func (s *Etcd35) LoadCluster(ctx context.Context) ([]string, error) {
	c, err := s.Client()
	if err != nil {
		return nil, err
	}
	return (&Server{root: s.root, client: c}).LoadCluster(ctx)
}

// ExitError is how the last run ended: nil while running or after a
// clean stop (etcd re-raises the SIGTERM Stop sends once it has shut
// down; that counts as clean).
func (s *Etcd35) ExitError() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.exit
}

// Restart stops etcd and starts it again on the same data dir and ports.
func (s *Etcd35) Restart(ctx context.Context) error {
	s.Stop()
	return s.start(ctx)
}

// Running reports whether the process was started and has not exited.
func (s *Etcd35) Running() bool {
	s.mu.Lock()
	done := s.done
	running := s.cmd != nil
	s.mu.Unlock()
	if !running {
		return false
	}
	select {
	case <-done:
		return false
	default:
		return true
	}
}
