package restore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kubekeep/kubekeep/layout"
)

// Report is what preflight found: what will happen and what blocks it.
type Report struct {
	Version           string    `json:"version"`
	VersionTime       time.Time `json:"versionTime"`
	BackupStatus      string    `json:"backupStatus,omitempty"`
	Hostname          string    `json:"hostname"`
	HostIPs           []string  `json:"hostIPs"`
	NodeName          string    `json:"nodeName,omitempty"`
	KubernetesVersion string    `json:"kubernetesVersion,omitempty"`
	Kubeadm           string    `json:"kubeadm,omitempty"`
	Kubelet           string    `json:"kubelet,omitempty"`

	SnapshotRevision int64  `json:"snapshotRevision,omitempty"`
	SnapshotKeys     int64  `json:"snapshotKeys,omitempty"`
	SnapshotBytes    int64  `json:"snapshotBytes,omitempty"`
	SnapshotSHA256   string `json:"snapshotSha256,omitempty"`

	Certs       []CertCheck       `json:"certs"`
	Kubeconfigs []KubeconfigCheck `json:"kubeconfigs"`
	// NodeUnchanged: the kubeadm phase only puts the manifests back.
	NodeUnchanged bool     `json:"nodeUnchanged"`
	NodeChanges   []string `json:"nodeChanges,omitempty"`
	// Running are control-plane parts that still run (manifests present,
	// endpoints answering): the stop phase stops them.
	Running []string `json:"running,omitempty"`

	DataDir        string `json:"dataDir,omitempty"`
	DataDirEntries int    `json:"dataDirEntries"`
	FreeBytes      int64  `json:"freeBytes"`
	NeedBytes      int64  `json:"needBytes"`

	Blockers []string `json:"blockers,omitempty"`
	Warnings []string `json:"warnings,omitempty"`
}

func (r *runner) preflight(ctx context.Context) error {
	src := r.src
	rep := &Report{Version: src.id, VersionTime: src.info.Time, BackupStatus: string(src.status), Hostname: r.host.Hostname}
	r.report = rep
	for _, ip := range r.host.IPs {
		rep.HostIPs = append(rep.HostIPs, ip.String())
	}
	block := func(format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		rep.Blockers = append(rep.Blockers, msg)
		r.printf("  BLOCKER: %s", msg)
	}
	warn := func(format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		rep.Warnings = append(rep.Warnings, msg)
		r.warn("%s", msg)
	}
	r.note("version %s taken %s, status %s, %d files", src.id, src.info.Time.UTC().Format(time.RFC3339), orDash(string(src.status)), src.info.Files)

	for _, u := range src.unsafe {
		block("%s", u)
	}

	// The snapshot is read and checked whole now, so a truncated or
	// corrupt one stops the restore before anything is changed.
	if src.chainErr != nil {
		block("etcd state unusable: %v", src.chainErr)
	} else if src.hasSnapshot {
		if src.journal != nil {
			r.note("etcd: journal version at revision %d (%d keys): the snapshot of base version %s plus the delta journal from revision %d",
				src.journal.Revision, src.journal.Keys, src.snapID, src.journal.BaseRevision)
		}
		sf, err := r.snapshot(ctx, true)
		if err != nil {
			block("etcd snapshot unusable: %v", err)
		} else {
			rep.SnapshotRevision, rep.SnapshotKeys, rep.SnapshotBytes, rep.SnapshotSHA256 = sf.stats.Revision, sf.stats.Keys, sf.size, sf.sha
			r.note("etcd snapshot: revision %d, %d keys, %d bytes, intact (trailer and bbolt check)", sf.stats.Revision, sf.stats.Keys, sf.size)
		}
	} else if r.wants(PhaseEtcd) {
		block("version %s has no etcd snapshot (status %s): pick one whose status is ok", src.id, orDash(string(src.status)))
	}

	a, err := r.analyze()
	if err != nil {
		return err
	}
	rep.NodeName, rep.KubernetesVersion = a.nodeName, a.kubernetesVersion
	rep.Certs, rep.Kubeconfigs = a.certs, a.kubeconfigs
	rep.NodeUnchanged, rep.NodeChanges = a.unchanged, a.changed
	if a.nodeName != "" {
		if strings.EqualFold(a.nodeName, r.host.Hostname) {
			r.note("hostname %s matches the node name", r.host.Hostname)
		} else {
			warn("hostname %s is not the backed-up node name %s: kubeadm init keeps the old name (nodeRegistration.name is pinned)", r.host.Hostname, a.nodeName)
		}
	}
	for _, c := range a.certs {
		switch {
		case c.CA && c.Expired:
			block("CA %s %s: %s", c.Path, c.Reason, c.Fix)
		case c.Reason != "" && c.Fix != "":
			warn("%s %s: %s", c.Path, c.Reason, c.Fix)
		case c.Reason != "":
			warn("%s: %s", c.Path, c.Reason)
		}
	}
	for _, k := range a.kubeconfigs {
		if k.Stale {
			warn("%s: %s: the kubeadm phase moves it aside so kubeadm writes it anew", k.Path, k.Reason)
		}
	}
	if src.set != nil {
		for _, pu := range src.set.Etcd.PeerURLs {
			u, err := url.Parse(pu)
			if err != nil {
				continue
			}
			if ip := net.ParseIP(u.Hostname()); ip != nil && !r.host.hasIP(ip) {
				warn("the etcd member advertises peer URL %s, an address this host does not have: a one-member cluster still starts; fix it afterwards with `etcdctl member update`", pu)
			}
		}
	}
	if a.foreignEndpoint != "" {
		warn("the saved controlPlaneEndpoint %s is not an address of this host: unless it is a load balancer or VIP now pointing here, edit controlPlaneEndpoint in the config the kubeadm phase writes (%s) and run that phase again; kubeadm puts it into every kubeconfig and the apiserver certificate", a.foreignEndpoint, kubeadmConfigDir)
	}
	if a.unchanged {
		r.note("node unchanged: the kubeadm phase puts the backed-up manifests back")
	} else {
		r.note("node changed (%s): the kubeadm phase runs kubeadm init with the saved ClusterConfiguration", strings.Join(a.changed, "; "))
		if a.clusterConfigErr != nil && r.wants(PhaseKubeadm) {
			block("kubeadm init needs the saved ClusterConfiguration: %v", a.clusterConfigErr)
		}
	}

	r.checkTools(a, block, warn)
	r.checkRunning(rep)
	r.checkSpace(rep, block)

	if len(rep.Blockers) > 0 {
		return fmt.Errorf("%w: %s", ErrBlocked, strings.Join(rep.Blockers, "; "))
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (r *runner) wants(phase string) bool { return slices.Contains(r.phases, phase) }

var versionRE = regexp.MustCompile(`v?(\d+)\.(\d+)\.(\d+)`)

func minorOf(v string) string {
	m := versionRE.FindStringSubmatch(v)
	if m == nil {
		return ""
	}
	return m[1] + "." + m[2]
}

func toolVersion(ctx context.Context, bin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).Output()
	if err != nil {
		return "", err
	}
	if m := versionRE.FindString(string(out)); m != "" {
		return m, nil
	}
	return strings.TrimSpace(string(out)), nil
}

func (r *runner) kubeadmBin() string {
	if r.opts.Kubeadm != "" {
		return r.opts.Kubeadm
	}
	return "kubeadm"
}

func (r *runner) checkTools(a *analysis, block, warn func(string, ...any)) {
	rep := r.report
	ctx := context.Background()
	needKubeadm := !a.unchanged && r.wants(PhaseKubeadm)
	if p, err := exec.LookPath(r.kubeadmBin()); err != nil {
		if needKubeadm {
			block("kubeadm is not on PATH and the node changed: install the kubeadm of the backup (%s)", orDash(a.kubernetesVersion))
		} else {
			warn("kubeadm is not on PATH: fine while the node is unchanged, needed for a rebuild")
		}
	} else if v, err := toolVersion(ctx, p, "version", "-o", "short"); err != nil {
		warn("kubeadm at %s does not tell its version: %v", p, err)
	} else {
		rep.Kubeadm = v
		r.note("kubeadm %s at %s", v, p)
		if a.kubernetesVersion != "" && minorOf(v) != minorOf(a.kubernetesVersion) {
			warn("kubeadm %s is not the backup's Kubernetes %s: install kubeadm %s so init neither upgrades nor downgrades the control plane", v, a.kubernetesVersion, minorOf(a.kubernetesVersion))
		}
	}
	if p, err := exec.LookPath("kubelet"); err != nil {
		warn("kubelet is not on PATH: nothing will start the static pods")
	} else if v, err := toolVersion(ctx, p, "--version"); err == nil {
		rep.Kubelet = v
		r.note("kubelet %s at %s", v, p)
		if a.kubernetesVersion != "" && minorOf(v) != minorOf(a.kubernetesVersion) {
			warn("kubelet %s is not the backup's Kubernetes %s", v, a.kubernetesVersion)
		}
	}
	if r.opts.Root != "/" && needKubeadm {
		warn("root is %s, not /: kubeadm knows no root prefix and writes to this host's /etc/kubernetes; only a kubeadm wrapper honouring KUBEKEEP_ROOT belongs on PATH here", r.opts.Root)
	}
}

// checkRunning reports control-plane parts still running, judged by
// manifests present and etcd answering on its client port.
func (r *runner) checkRunning(rep *Report) {
	for _, m := range r.currentManifests() {
		rep.Running = append(rep.Running, "static pod manifest "+m)
	}
	if r.src.set != nil {
		for _, ep := range r.src.set.Etcd.Endpoints {
			if hp := hostPort(ep); hp != "" && answers(hp, time.Second) {
				rep.Running = append(rep.Running, "etcd answering on "+ep)
			}
		}
	}
	if len(rep.Running) > 0 {
		r.note("running now (the stop phase stops them): %s", strings.Join(rep.Running, ", "))
	} else {
		r.note("no control plane runs on this root")
	}
}

func (r *runner) checkSpace(rep *Report, block func(string, ...any)) {
	dataDir := "/var/lib/etcd"
	if r.src.set != nil && r.src.set.Etcd.DataDir != "" {
		dataDir = r.src.set.Etcd.DataDir
	}
	rep.DataDir = dataDir
	if p, err := layout.Join(r.opts.Root, dataDir); err == nil {
		if ents, err := os.ReadDir(p); err == nil {
			rep.DataDirEntries = len(ents)
		}
		if r.wants(PhaseEtcd) {
			if plan, err := r.planDataDir(dataDir); err != nil {
				block("%v", err)
			} else {
				r.note("the etcd phase: %s", plan.summary())
			}
		}
		// The old data dir is kept, so the restored one needs its own
		// room: the snapshot's size, plus the files, plus a margin for
		// the WAL etcd preallocates (64 MiB).
		rep.NeedBytes = r.src.snapshotSize + r.src.info.Size + 64<<20
		if free, err := freeAt(p); err == nil {
			rep.FreeBytes = free
			if free < rep.NeedBytes {
				block("only %d bytes free where %s lives, %d needed (snapshot + files + WAL): free some space", free, dataDir, rep.NeedBytes)
			} else {
				r.note("free space: %d bytes, %d needed", free, rep.NeedBytes)
			}
		}
	}
}

// freeAt measures free space on the filesystem of p's nearest existing
// ancestor (the data dir may not exist yet).
func freeAt(p string) (int64, error) {
	for {
		var st unix.Statfs_t
		err := unix.Statfs(p, &st)
		if err == nil {
			return int64(st.Bavail) * int64(st.Bsize), nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return 0, err
		}
		parent := filepath.Dir(p)
		if parent == p {
			return 0, err
		}
		p = parent
	}
}

// hostPort turns an etcd client URL into host:port for a dial.
func hostPort(ep string) string {
	u, err := url.Parse(ep)
	if err != nil || u.Host == "" {
		return ""
	}
	if u.Port() == "" {
		return net.JoinHostPort(u.Hostname(), "2379")
	}
	return u.Host
}

func answers(hostport string, timeout time.Duration) bool {
	c, err := net.DialTimeout("tcp", hostport, timeout)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// currentManifests lists the static pod manifests under the root now.
func (r *runner) currentManifests() []string {
	dir, err := layout.Join(r.opts.Root, layout.ManifestsDir)
	if err != nil {
		return nil
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range ents {
		n := e.Name()
		// The kubelet skips dotfiles; anything else it reads is a pod.
		if e.Type().IsRegular() && !strings.HasPrefix(n, ".") {
			out = append(out, layout.ManifestsDir+"/"+n)
		}
	}
	return out
}
