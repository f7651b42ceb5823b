package restore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"strings"

	"github.com/kubekeep/kubekeep/layout"
)

// kubeadmConfigDir holds the config files kubeadm phases write, kept for
// the operator to read after the restore.
const kubeadmConfigDir = "/etc/kubernetes/kubekeep-restore"

// DirAvailableCheck is the name of kubeadm's preflight check that refuses
// a non-empty etcd data dir: "DirAvailable-" plus the path with slashes
// turned into dashes (cmd/kubeadm/app/preflight DirAvailableCheck.Name).
func DirAvailableCheck(dataDir string) string {
	return "DirAvailable-" + strings.ReplaceAll(dataDir, "/", "-")
}

// kubeadm brings the control plane back: the backed-up manifests when the
// node is unchanged, else `kubeadm init` with the saved config on top of
// the restored PKI and data dir.
func (r *runner) kubeadm(ctx context.Context) error {
	if err := r.src.unsafeError(); err != nil {
		return err
	}
	a, err := r.analyze()
	if err != nil {
		return err
	}
	if a.unchanged && !r.opts.ForceKubeadm {
		return r.putManifestsBack(ctx)
	}
	if a.unchanged {
		r.note("node unchanged, but kubeadm init was asked for")
	} else {
		r.note("node changed: %s", strings.Join(a.changed, "; "))
	}
	if a.clusterConfigErr != nil {
		return fmt.Errorf("kubeadm init needs the saved ClusterConfiguration: %w", a.clusterConfigErr)
	}
	dataDir := "/var/lib/etcd"
	if r.src.set != nil && r.src.set.Etcd.DataDir != "" {
		dataDir = r.src.set.Etcd.DataDir
	}
	if !r.opts.DryRun && !r.exists(dataDir+"/member") {
		return fmt.Errorf("no etcd data in %s (no member/): run the etcd phase first, or kubeadm init would start an empty cluster", dataDir)
	}
	// kubeadm init refuses existing manifests (FileAvailable checks), and
	// ports the old control plane still holds (Port-6443, -2379, -2380):
	// move the manifests aside, then wait for the kubelet to stop the pods,
	// as the stop phase does (this phase may run alone, --phase kubeadm).
	manifests := r.currentManifests()
	var targets []string
	if len(manifests) > 0 {
		targets = r.initTargets()
	}
	if err := r.moveManifestsAside(manifests, " so kubeadm init writes it anew"); err != nil {
		return err
	}
	if len(targets) > 0 {
		if err := r.waitDown(ctx, targets); err != nil {
			return err
		}
	}
	// kubeadm only warns about a kubeconfig with another server or an
	// expired client certificate, and keeps it: remove it to regenerate.
	stale := r.asideDir("stale-kubeconfigs")
	for _, k := range a.kubeconfigs {
		if !k.Stale || (!r.opts.DryRun && !r.exists(k.Path)) {
			continue
		}
		if r.exists(k.Path) {
			r.replaces("%s: moved aside to %s/ (%s)", k.Path, stale, k.Reason)
		}
		if err := r.do(fmt.Sprintf("move %s aside to %s/ (%s) so kubeadm init writes it anew", k.Path, stale, k.Reason), func() error {
			return r.moveAside(k.Path, stale+"/"+path.Base(k.Path))
		}); err != nil {
			return err
		}
	}
	if a.kubeletExpired {
		// kubeadm#2054: `certs renew` leaves kubelet.conf pointing at the
		// expired rotating cert; without kubelet.conf, init embeds a new one.
		for _, p := range []string{"/etc/kubernetes/kubelet.conf", kubeletClientCert} {
			if !r.opts.DryRun && !r.exists(p) {
				continue
			}
			if r.exists(p) {
				r.replaces("%s: moved aside to %s/ (the kubelet's client certificate expired)", p, stale)
			}
			if err := r.do(fmt.Sprintf("move %s aside to %s/ (the kubelet's client certificate expired, kubeadm#2054)", p, stale), func() error {
				return r.moveAside(p, stale+p)
			}); err != nil {
				return err
			}
		}
	}
	settings, pinned, err := r.initSettings(a)
	if err != nil {
		return err
	}
	cfg, err := InitConfig(settings)
	if err != nil {
		return err
	}
	cfgHost := kubeadmConfigDir + "/kubeadm-init-" + r.stamp + ".yaml"
	cfgReal, err := r.insideRoot(cfgHost)
	if err != nil {
		return err
	}
	what := fmt.Sprintf("the saved ClusterConfiguration with nodeRegistration.name %q", a.nodeName)
	if len(pinned) > 0 {
		what += "; " + strings.Join(pinned, "; ")
	}
	if err := r.do(fmt.Sprintf("write %s (0600): %s", cfgHost, what), func() error {
		root, err := r.root()
		if err != nil {
			return err
		}
		p, _ := rel(cfgHost)
		if err := root.MkdirAll(path.Dir(p), 0o700); err != nil {
			return err
		}
		return root.WriteFile(p, cfg, 0o600)
	}); err != nil {
		return err
	}
	args := []string{"init", "--config", cfgReal, "--ignore-preflight-errors=" + DirAvailableCheck(dataDir)}
	bin := r.kubeadmBin()
	return r.do(fmt.Sprintf("run %s %s", bin, strings.Join(args, " ")), func() error {
		exe, err := exec.LookPath(bin)
		if err != nil {
			return fmt.Errorf("kubeadm not found: %w (install the kubeadm of Kubernetes %s)", err, orDash(a.kubernetesVersion))
		}
		cmd := exec.CommandContext(ctx, exe, args...)
		cmd.Stdout, cmd.Stderr = r.out, r.out
		// kubeadm itself has no root prefix; a wrapper can use this.
		cmd.Env = append(os.Environ(), "KUBEKEEP_ROOT="+r.opts.Root)
		if err := cmd.Run(); err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				return fmt.Errorf("kubeadm init exited with status %d (its output is above; `kubeadm reset` is NOT needed: fix the cause and re-run this phase)", ee.ExitCode())
			}
			return err
		}
		return nil
	})
}

// putManifestsBack restores the backed-up static pod manifests, last, so
// the kubelet starts the control plane on restored files and data.
func (r *runner) putManifestsBack(ctx context.Context) error {
	var names []string
	for _, e := range r.src.entries {
		if e.Type == "file" && within(e.Path, layout.ManifestsDir) {
			names = append(names, e.Path)
		}
	}
	if len(names) == 0 {
		return fmt.Errorf("version %s holds no static pod manifests to put back; re-run with --force-kubeadm to regenerate them", r.src.id)
	}
	if dd := r.src.dataDir(); dd != "" && !r.opts.DryRun && !r.exists(dd+"/member") {
		return fmt.Errorf("no etcd data in %s (no member/): run the etcd phase first, or etcd would start an empty cluster there (the kubelet creates a missing data dir: DirectoryOrCreate)", dd)
	}
	return r.restoreEntries(ctx, func(p string) bool { return within(p, layout.ManifestsDir) },
		fmt.Sprintf("node unchanged: put back the backed-up manifests %s", strings.Join(names, ", ")))
}
