package kubenode

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/kubekeep/kubekeep/internal/tailbuf"
)

// KubeletConfig configures the stand-in kubelet.
type KubeletConfig struct {
	// ManifestsDir is the static pod path; default
	// /etc/kubernetes/manifests (kubeadm's staticPodPath).
	ManifestsDir string
	// Commands maps a container's command[0] (by base name: "etcd",
	// "kube-apiserver") to the binary that runs it; Bins.Commands gives
	// the built ones. A pod whose command is not here is not run (its
	// PodStatus.Error says so).
	Commands map[string]string
	// NodeName is appended to each pod's metadata.name, as the kubelet
	// names static pods (etcd-cp1); default the hostname.
	NodeName string
	// Logf, if set, gets one line per thing the kubelet does (start, stop,
	// exit, restart, refused manifest). t.Logf fits.
	Logf func(format string, args ...any)
	// Poll is how often the directory is read; default 200ms.
	Poll time.Duration
	// StopTimeout caps the pod's terminationGracePeriodSeconds (default
	// 30 s, the Kubernetes default) between SIGTERM and SIGKILL; default
	// 30 s.
	StopTimeout time.Duration
	// MaxBackoff caps the restart delay of a container that exits; it
	// starts at 1 s and doubles. Default 10 s (a real kubelet: 10 s up to
	// 5 min).
	MaxBackoff time.Duration
	// Settle is how long a new or changed manifest must stay unmodified
	// before it is acted on, so a file being written (kubeadm writes
	// manifests in place, not by rename) is not started half-written:
	// default 100ms.
	Settle time.Duration
	// WorkDir is the working directory of containers without workingDir
	// (a container's is its image's root, which a process on the host does
	// not have: a relative path, such as etcd's default data dir, must
	// not land in the host's /); default a directory StartKubelet makes
	// under os.TempDir and Stop removes.
	WorkDir string
	// LogBytes is how much of each container's output is kept; default
	// 4 MiB.
	LogBytes int
}

// Kubelet runs the static pods of a manifests directory as processes on
// this host, the part of a kubelet a control-plane node needs without a
// container runtime:
//
//   - it reads the directory every Poll (files whose name starts with "."
//     are ignored, as the kubelet does) and parses each file as a v1 Pod;
//   - each pod must have exactly one container (kubeadm's do) whose
//     command[0] is in Commands; the process gets exactly the command's
//     remaining words and the args, the container's literal env values
//     (no host environment beyond PATH), its workingDir (default
//     WorkDir);
//   - hostPath volumes are checked and created the kubelet's way
//     (DirectoryOrCreate: mkdir 0755; FileOrCreate: an empty 0644 file;
//     Directory/File/Socket...: must exist) before the process starts, so a
//     missing /var/lib/etcd starts etcd on a new, empty data dir exactly
//     as a real node would. The process sees the host's filesystem, so a
//     volumeMount must mount its hostPath at the same path (kubeadm's all
//     do); one that does not refuses the pod;
//   - a changed manifest (different bytes) stops the old process and
//     starts the new one; a removed one stops it: SIGTERM, then SIGKILL
//     after the pod's grace period (capped by StopTimeout);
//   - a process that exits is started again after a backoff (restartPolicy
//     Always, which kubeadm's pods have; Never and OnFailure are honoured).
//
// Not played: probes (use WaitEtcd/WaitAPIServer), mirror pods in the API,
// resource limits, $(VAR) expansion, env valueFrom, images (the image is
// only reported), init containers, container log files under /var/log.
type Kubelet struct {
	cfg KubeletConfig

	mu     sync.Mutex
	pods   map[string]*staticPod // by manifest file name
	scans  int
	closed bool

	ownWorkDir bool

	syncMu sync.Mutex // one scan at a time
	stop   chan struct{}
	done   chan struct{}
}

type staticPod struct {
	file     string
	sum      [32]byte
	name     string // metadata.name-NodeName, e.g. etcd-cp1
	image    string
	binary   string
	args     []string
	env      []string
	dir      string
	volumes  []corev1.Volume
	grace    time.Duration
	restart  corev1.RestartPolicy
	err      error // why it is not run
	log      *tailbuf.Buffer
	restarts int

	cmd      *exec.Cmd
	exited   chan struct{} // closed when cmd has exited
	exitErr  error
	stopping bool
	backoff  time.Duration
	nextRun  time.Time
	started  time.Time
	finished bool // exited and will not be restarted (restartPolicy)
}

// PodStatus is what the kubelet knows about one static pod.
type PodStatus struct {
	File     string   // manifest file name in ManifestsDir
	Name     string   // metadata.name-NodeName (etcd-cp1)
	Image    string   // the container's image, not used
	Binary   string   // what runs it
	Args     []string // its arguments, the manifest's command[1:] + args
	PID      int      // 0 when not running
	Running  bool
	Restarts int    // how many times it was started again after exiting
	LastExit string // how the last process ended, "" if none did
	Error    string // why it is not run (unknown command, bad manifest, hostPath check)
}

// StartKubelet starts the stand-in kubelet and returns once it has read
// the directory and started what it found.
func StartKubelet(cfg KubeletConfig) (*Kubelet, error) {
	if cfg.ManifestsDir == "" {
		cfg.ManifestsDir = "/etc/kubernetes/manifests"
	}
	if cfg.NodeName == "" {
		cfg.NodeName, _ = os.Hostname()
	}
	if cfg.Poll <= 0 {
		cfg.Poll = 200 * time.Millisecond
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = 30 * time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 10 * time.Second
	}
	if cfg.Settle <= 0 {
		cfg.Settle = 100 * time.Millisecond
	}
	if cfg.LogBytes <= 0 {
		cfg.LogBytes = 4 << 20
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	k := &Kubelet{cfg: cfg, pods: map[string]*staticPod{}, stop: make(chan struct{}), done: make(chan struct{})}
	if cfg.WorkDir == "" {
		d, err := os.MkdirTemp("", "kubenode-kubelet-")
		if err != nil {
			return nil, err
		}
		k.cfg.WorkDir, k.ownWorkDir = d, true
	}
	k.Sync()
	go k.loop()
	return k, nil
}

func (k *Kubelet) loop() {
	defer close(k.done)
	tick := time.NewTicker(k.cfg.Poll)
	defer tick.Stop()
	for {
		select {
		case <-k.stop:
			return
		case <-tick.C:
			k.Sync()
		}
	}
}

// Sync reads the manifests directory now and acts on it: starts new and
// changed pods (once unmodified for Settle), stops removed ones, restarts
// exited ones whose backoff has passed. It returns when the actions are taken (a stop has waited for
// the process to exit). The background loop calls it every Poll.
func (k *Kubelet) Sync() {
	k.syncMu.Lock()
	defer k.syncMu.Unlock()
	k.mu.Lock()
	if k.closed {
		k.mu.Unlock()
		return
	}
	k.mu.Unlock()

	seen := map[string]bool{}
	ents, err := os.ReadDir(k.cfg.ManifestsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		k.cfg.Logf("kubelet: read %s: %v", k.cfg.ManifestsDir, err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") || e.IsDir() {
			continue
		}
		path := filepath.Join(k.cfg.ManifestsDir, e.Name())
		data, err := os.ReadFile(path)
		if err != nil {
			continue // removed while reading: the next scan sees it gone
		}
		seen[e.Name()] = true
		sum := sha256.Sum256(data)
		k.mu.Lock()
		old := k.pods[e.Name()]
		k.mu.Unlock()
		if old != nil && old.sum == sum {
			continue
		}
		if fi, err := os.Stat(path); err != nil || time.Since(fi.ModTime()) < k.cfg.Settle {
			continue // still being written, perhaps: the next scan
		}
		if old != nil {
			k.cfg.Logf("kubelet: %s changed: stopping %s", e.Name(), old.name)
			k.stopPod(old)
		}
		p := k.parse(e.Name(), data, sum)
		k.mu.Lock()
		k.pods[e.Name()] = p
		k.mu.Unlock()
		if p.err != nil {
			k.cfg.Logf("kubelet: %s: not run: %v", e.Name(), p.err)
			continue
		}
		k.startPod(p)
	}
	k.mu.Lock()
	var gone, due []*staticPod
	for name, p := range k.pods {
		if !seen[name] {
			gone = append(gone, p)
			delete(k.pods, name)
			continue
		}
		if p.err == nil && p.cmd == nil && !p.finished && time.Now().After(p.nextRun) {
			due = append(due, p)
		}
	}
	k.scans++
	k.mu.Unlock()
	sort.Slice(gone, func(i, j int) bool { return gone[i].file > gone[j].file })
	for _, p := range gone {
		k.cfg.Logf("kubelet: %s removed: stopping %s", p.file, p.name)
		k.stopPod(p)
	}
	for _, p := range due {
		k.mu.Lock()
		p.restarts++
		k.mu.Unlock()
		k.startPod(p)
	}
}

func (k *Kubelet) parse(file string, data []byte, sum [32]byte) *staticPod {
	p := &staticPod{file: file, sum: sum, name: file, log: &tailbuf.Buffer{Max: k.cfg.LogBytes}, backoff: time.Second,
		grace: 30 * time.Second, restart: corev1.RestartPolicyAlways}
	var pod corev1.Pod
	if err := yaml.Unmarshal(data, &pod); err != nil {
		p.err = fmt.Errorf("not a pod: %w", err)
		return p
	}
	if pod.Kind != "Pod" {
		p.err = fmt.Errorf("kind %q, not Pod", pod.Kind)
		return p
	}
	if pod.Name != "" {
		p.name = pod.Name + "-" + k.cfg.NodeName
	}
	if pod.Spec.TerminationGracePeriodSeconds != nil {
		p.grace = time.Duration(*pod.Spec.TerminationGracePeriodSeconds) * time.Second
	}
	if p.grace > k.cfg.StopTimeout {
		p.grace = k.cfg.StopTimeout
	}
	if pod.Spec.RestartPolicy != "" {
		p.restart = pod.Spec.RestartPolicy
	}
	if len(pod.Spec.InitContainers) > 0 {
		p.err = errors.New("init containers are not played")
		return p
	}
	if len(pod.Spec.Containers) != 1 {
		p.err = fmt.Errorf("%d containers; only single-container pods are played", len(pod.Spec.Containers))
		return p
	}
	c := pod.Spec.Containers[0]
	p.image = c.Image
	if len(c.Command) == 0 {
		p.err = fmt.Errorf("container %s has no command (the image's entrypoint is not known here)", c.Name)
		return p
	}
	bin, ok := k.cfg.Commands[filepath.Base(c.Command[0])]
	if !ok || bin == "" {
		p.err = fmt.Errorf("no binary plays %q (image %s)", c.Command[0], c.Image)
		return p
	}
	p.binary = bin
	p.args = append(append([]string{}, c.Command[1:]...), c.Args...)
	p.env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	for _, e := range c.Env {
		if e.ValueFrom != nil {
			p.err = fmt.Errorf("env %s: valueFrom is not played", e.Name)
			return p
		}
		p.env = append(p.env, e.Name+"="+e.Value)
	}
	p.dir = c.WorkingDir
	if p.dir == "" {
		p.dir = k.cfg.WorkDir
	}
	vols := map[string]corev1.Volume{}
	for _, v := range pod.Spec.Volumes {
		vols[v.Name] = v
	}
	for _, m := range c.VolumeMounts {
		v, ok := vols[m.Name]
		if !ok {
			p.err = fmt.Errorf("volumeMount %s names no volume", m.Name)
			return p
		}
		if v.HostPath == nil {
			p.err = fmt.Errorf("volume %s is not a hostPath; only hostPath volumes are played", m.Name)
			return p
		}
		if m.SubPath != "" || m.SubPathExpr != "" {
			p.err = fmt.Errorf("volumeMount %s: subPath is not played", m.Name)
			return p
		}
		if filepath.Clean(v.HostPath.Path) != filepath.Clean(m.MountPath) {
			p.err = fmt.Errorf("volume %s mounts hostPath %s at %s: the process runs on the host's filesystem, so only same-path mounts are played",
				m.Name, v.HostPath.Path, m.MountPath)
			return p
		}
	}
	// The hostPath types are checked (and created) at each start, see
	// prepareVolumes.
	p.volumes = pod.Spec.Volumes
	return p
}

// prepareVolumes does what the kubelet's hostPath volume plugin does
// before a container starts.
func prepareVolumes(vols []corev1.Volume) error {
	for _, v := range vols {
		if v.HostPath == nil {
			continue
		}
		path := v.HostPath.Path
		typ := corev1.HostPathUnset
		if v.HostPath.Type != nil {
			typ = *v.HostPath.Type
		}
		fi, err := os.Stat(path)
		switch typ {
		case corev1.HostPathUnset:
		case corev1.HostPathDirectoryOrCreate:
			if errors.Is(err, os.ErrNotExist) {
				if err := os.MkdirAll(path, 0o755); err != nil {
					return fmt.Errorf("volume %s: %w", v.Name, err)
				}
			} else if err != nil || !fi.IsDir() {
				return fmt.Errorf("volume %s: %s exists and is not a directory", v.Name, path)
			}
		case corev1.HostPathFileOrCreate:
			if errors.Is(err, os.ErrNotExist) {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					return fmt.Errorf("volume %s: %w", v.Name, err)
				}
				f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0o644)
				if err != nil {
					return fmt.Errorf("volume %s: %w", v.Name, err)
				}
				f.Close()
			} else if err != nil || fi.IsDir() {
				return fmt.Errorf("volume %s: %s exists and is a directory", v.Name, path)
			}
		case corev1.HostPathDirectory:
			if err != nil || !fi.IsDir() {
				return fmt.Errorf("volume %s: hostPath type check failed: %s is not a directory", v.Name, path)
			}
		case corev1.HostPathFile:
			if err != nil || !fi.Mode().IsRegular() {
				return fmt.Errorf("volume %s: hostPath type check failed: %s is not a file", v.Name, path)
			}
		case corev1.HostPathSocket:
			if err != nil || fi.Mode()&os.ModeSocket == 0 {
				return fmt.Errorf("volume %s: hostPath type check failed: %s is not a socket", v.Name, path)
			}
		case corev1.HostPathCharDev, corev1.HostPathBlockDev:
			if err != nil || fi.Mode()&os.ModeDevice == 0 {
				return fmt.Errorf("volume %s: hostPath type check failed: %s is not a device", v.Name, path)
			}
		default:
			return fmt.Errorf("volume %s: unknown hostPath type %q", v.Name, typ)
		}
	}
	return nil
}

func (k *Kubelet) startPod(p *staticPod) {
	if err := prepareVolumes(p.volumes); err != nil {
		// The kubelet retries volume setup; so do we, with the backoff.
		k.mu.Lock()
		p.exitErr = err
		p.nextRun = time.Now().Add(p.backoff)
		k.mu.Unlock()
		k.cfg.Logf("kubelet: %s: %v", p.name, err)
		return
	}
	cmd := exec.Command(p.binary, p.args...)
	cmd.Env, cmd.Dir = p.env, p.dir
	cmd.Stdout, cmd.Stderr = p.log, p.log
	// Its own process group; killed with the test binary (and, in
	// RunIsolated, with the PID namespace).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		k.mu.Lock()
		p.exitErr = err
		p.nextRun = time.Now().Add(p.backoff)
		k.mu.Unlock()
		k.cfg.Logf("kubelet: %s: start %s: %v", p.name, p.binary, err)
		return
	}
	exited := make(chan struct{})
	k.mu.Lock()
	p.cmd, p.exited, p.started, p.stopping = cmd, exited, time.Now(), false
	k.mu.Unlock()
	k.cfg.Logf("kubelet: started %s (pid %d): %s %s", p.name, cmd.Process.Pid, filepath.Base(p.binary), strings.Join(p.args, " "))
	go func() {
		err := cmd.Wait()
		k.mu.Lock()
		p.exitErr = err
		p.cmd = nil
		stopping := p.stopping
		ran := time.Since(p.started)
		if !stopping {
			// CrashLoopBackOff, shortened; a container that ran for a
			// while starts from the shortest delay again.
			if ran > 2*k.cfg.MaxBackoff {
				p.backoff = time.Second
			}
			p.nextRun = time.Now().Add(p.backoff)
			p.backoff *= 2
			if p.backoff > k.cfg.MaxBackoff {
				p.backoff = k.cfg.MaxBackoff
			}
			ok := err == nil
			if p.restart == corev1.RestartPolicyNever || (p.restart == corev1.RestartPolicyOnFailure && ok) {
				p.finished = true
			}
		}
		k.mu.Unlock()
		close(exited)
		if !stopping {
			k.cfg.Logf("kubelet: %s exited after %s: %s", p.name, ran.Round(time.Millisecond), exitString(err))
		}
	}()
}

func exitString(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// stopPod stops p's process, if any, and keeps it from being restarted.
func (k *Kubelet) stopPod(p *staticPod) {
	k.mu.Lock()
	p.finished = true
	cmd, exited := p.cmd, p.exited
	if cmd != nil {
		p.stopping = true
	}
	k.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(p.grace):
		k.cfg.Logf("kubelet: %s did not stop within %s of SIGTERM: SIGKILL", p.name, p.grace)
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	}
	k.cfg.Logf("kubelet: stopped %s (%s)", p.name, exitString(p.exitErrLocked(k)))
}

func (p *staticPod) exitErrLocked(k *Kubelet) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return p.exitErr
}

// Stop stops every pod (as if the kubelet were stopped with its pods
// torn down) and the loop. The manifests stay; StartKubelet on the same
// directory starts them again.
func (k *Kubelet) Stop() {
	k.mu.Lock()
	if k.closed {
		k.mu.Unlock()
		return
	}
	k.closed = true
	k.mu.Unlock()
	close(k.stop)
	<-k.done
	k.syncMu.Lock()
	defer k.syncMu.Unlock()
	k.mu.Lock()
	pods := make([]*staticPod, 0, len(k.pods))
	for _, p := range k.pods {
		pods = append(pods, p)
	}
	k.mu.Unlock()
	// One at a time, in reverse order of the file names: kube-apiserver
	// before etcd, so the apiserver's shutdown still reaches its storage
	// (stopped together, it waits out its grace period for etcd).
	sort.Slice(pods, func(i, j int) bool { return pods[i].file > pods[j].file })
	for _, p := range pods {
		k.stopPod(p)
	}
	if k.ownWorkDir {
		os.RemoveAll(k.cfg.WorkDir)
	}
}

// Pods reports every manifest the kubelet knows, by file name.
func (k *Kubelet) Pods() []PodStatus {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []PodStatus
	for _, p := range k.pods {
		out = append(out, p.statusLocked())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].File < out[j].File })
	return out
}

// Pod is the status of the pod named name: its full name (etcd-cp1), its
// manifest's file name (etcd.yaml), or, when unambiguous, the name without
// the node's (etcd).
func (k *Kubelet) Pod(name string) (PodStatus, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if p := k.findLocked(name); p != nil {
		return p.statusLocked(), true
	}
	return PodStatus{}, false
}

func (k *Kubelet) findLocked(name string) *staticPod {
	var prefixed *staticPod
	n := 0
	for _, p := range k.pods {
		if p.name == name || p.file == name {
			return p
		}
		if strings.HasPrefix(p.name, name+"-") {
			prefixed = p
			n++
		}
	}
	if n == 1 {
		return prefixed
	}
	return nil
}

func (p *staticPod) statusLocked() PodStatus {
	s := PodStatus{File: p.file, Name: p.name, Image: p.image, Binary: p.binary, Args: append([]string(nil), p.args...), Restarts: p.restarts}
	if p.cmd != nil && p.cmd.Process != nil {
		s.PID, s.Running = p.cmd.Process.Pid, true
	}
	if p.exitErr != nil || (!s.Running && !p.started.IsZero()) {
		s.LastExit = exitString(p.exitErr)
	}
	if p.err != nil {
		s.Error = p.err.Error()
	}
	return s
}

// Log is what the pod's process wrote (stdout and stderr, all starts, the
// last LogBytes of it); "" for an unknown pod.
func (k *Kubelet) Log(name string) string {
	k.mu.Lock()
	p := k.findLocked(name)
	k.mu.Unlock()
	if p == nil {
		return ""
	}
	return p.log.String()
}

// WaitRunning waits until the pod named name has a running process, and
// returns its status. It fails early when the pod is refused.
func (k *Kubelet) WaitRunning(ctx context.Context, name string) (PodStatus, error) {
	for {
		s, ok := k.Pod(name)
		if ok && s.Running {
			return s, nil
		}
		if ok && s.Error != "" {
			return s, fmt.Errorf("kubenode: pod %s is not run: %s", name, s.Error)
		}
		select {
		case <-ctx.Done():
			return s, fmt.Errorf("kubenode: pod %s not running: %w (status %+v)", name, ctx.Err(), s)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// WaitGone waits until no process of the pod named name runs (its
// manifest was removed, or it exited and is in backoff).
func (k *Kubelet) WaitGone(ctx context.Context, name string) error {
	for {
		s, ok := k.Pod(name)
		if !ok || !s.Running {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kubenode: pod %s still running: %w", name, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// tail is the last n bytes of s, from a line start.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[len(s)-n:]
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return s
}
