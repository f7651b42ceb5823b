package agent

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/kubekeep/kubekeep/config"
	"github.com/kubekeep/kubekeep/layout"
)

// Host directories watched whatever discovery says: kubeadm writes the
// kubeconfigs into the first, renews certificates in the second, and an
// upgrade rewrites the manifests in the third.
const (
	kubernetesDir = "/etc/kubernetes"
	pkiDir        = "/etc/kubernetes/pki"
	manifestsDir  = "/etc/kubernetes/manifests"
)

// watchSet is what the change watcher looks at, as real paths.
type watchSet struct {
	trees     []string        // watched with everything below
	files     map[string]bool // single files, watched through their directory
	manifests string
	config    string // the config file, "" when none
}

func (w *watchSet) relevant(p string) (backup, manifest, cfg bool) {
	if w.config != "" && p == w.config {
		return false, false, true
	}
	if w.files[p] {
		return true, false, false
	}
	for _, t := range w.trees {
		if p == t || strings.HasPrefix(p, t+"/") {
			return true, t == w.manifests, false
		}
	}
	return false, false, false
}

func (a *Agent) buildWatchSet(cfg config.Config) *watchSet {
	root := cfg.Root
	real := func(h string) string { return filepath.Join(root, h) }
	ws := &watchSet{files: map[string]bool{}, manifests: real(manifestsDir)}
	ws.trees = append(ws.trees, real(pkiDir), ws.manifests)
	a.setMu.Lock()
	set := a.discovered
	a.setMu.Unlock()
	if set != nil {
		for _, p := range set.Paths {
			switch p.Role {
			case layout.RolePKI, layout.RoleKubeconfig, layout.RoleManifests:
			default:
				continue
			}
			rp := real(p.Path)
			if p.Kind == layout.KindDir {
				ws.trees = append(ws.trees, rp)
			} else {
				ws.files[rp] = true
			}
		}
	}
	// The kubeconfigs kubeadm writes, even when discovery missed them.
	for _, n := range []string{"admin.conf", "super-admin.conf", "kubelet.conf", "controller-manager.conf", "scheduler.conf"} {
		ws.files[real(kubernetesDir+"/"+n)] = true
	}
	if a.opts.ConfigFile != "" {
		if abs, err := filepath.Abs(a.opts.ConfigFile); err == nil {
			ws.config = abs
		}
	}
	return ws
}

// apply adds inotify watches for ws: every directory of each tree, and the
// directory of each file (editors and kubeadm replace files by rename, so
// watching the file itself would lose it after the first change).
func (ws *watchSet) apply(w *fsnotify.Watcher, log func(msg string, args ...any)) {
	for _, p := range w.WatchList() {
		_ = w.Remove(p)
	}
	dirs := map[string]bool{}
	for _, t := range ws.trees {
		_ = filepath.WalkDir(t, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return nil
			}
			if d.IsDir() {
				dirs[p] = true
			}
			return nil
		})
	}
	for f := range ws.files {
		dirs[filepath.Dir(f)] = true
	}
	if ws.config != "" {
		dirs[filepath.Dir(ws.config)] = true
	}
	for d := range dirs {
		if err := w.Add(d); err != nil && !os.IsNotExist(err) {
			log("cannot watch directory for changes", "dir", d, "err", err)
		}
	}
}

// watchLoop turns file changes into backups: a burst of changes (a cert
// renewal touches several files) settles for schedules.debounce, then one
// backup runs. A changed manifest re-runs discovery first. A changed
// config file reloads the configuration.
func (a *Agent) watchLoop(ctx context.Context) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		a.log.Error("file change watching unavailable; backups run on schedule only", "err", err)
		return
	}
	defer w.Close()
	ws := a.buildWatchSet(a.config())
	ws.apply(w, a.log.Warn)
	a.watching.Store(true)

	var (
		debounce    *time.Timer
		debounceC   <-chan time.Time
		firstChange time.Time
		changed     []string
		manifest    bool
		reloadT     *time.Timer
		reloadC     <-chan time.Time
	)
	stop := func(t *time.Timer) {
		if t != nil {
			t.Stop()
		}
	}
	defer func() { stop(debounce); stop(reloadT) }()
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.rewatch:
			ws = a.buildWatchSet(a.config())
			ws.apply(w, a.log.Warn)
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			a.log.Warn("file change watcher", "err", err)
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			isBackup, isManifest, isConfig := ws.relevant(ev.Name)
			if isConfig {
				stop(reloadT)
				// Editors write in several steps; reload once they are done.
				reloadT = time.NewTimer(500 * time.Millisecond)
				reloadC = reloadT.C
				continue
			}
			if !isBackup {
				continue
			}
			if ev.Has(fsnotify.Create) {
				if fi, err := os.Stat(ev.Name); err == nil && fi.IsDir() {
					_ = w.Add(ev.Name)
				}
			}
			now := time.Now()
			if len(changed) == 0 {
				firstChange = now
			}
			if len(changed) < 20 {
				changed = append(changed, ev.Name)
			}
			manifest = manifest || isManifest
			d := a.config().Schedules.Debounce
			// A file rewritten without pause must not postpone its backup
			// forever.
			if maxWait := max(10*d, time.Minute); now.Sub(firstChange) > maxWait {
				d = 0
			}
			stop(debounce)
			debounce = time.NewTimer(d)
			debounceC = debounce.C
		case <-debounceC:
			debounceC = nil
			cfg := a.config()
			if manifest {
				a.log.Info("a static pod manifest changed; discovering again")
				a.rediscover(cfg)
				ws = a.buildWatchSet(cfg)
				ws.apply(w, a.log.Warn)
			}
			reason := "changed: " + strings.Join(relPaths(cfg.Root, changed, 5), ", ")
			changed, manifest = nil, false
			if j := a.job(JobBackup); j != nil {
				go a.trigger(j, reason, false)
			}
		case <-reloadC:
			reloadC = nil
			a.log.Info("config file changed; reloading", "file", ws.config)
			_ = a.Reload()
		}
	}
}

func relPaths(root string, ps []string, n int) []string {
	var out []string
	seen := map[string]bool{}
	for _, p := range ps {
		h := "/" + strings.TrimPrefix(strings.TrimPrefix(p, root), "/")
		if seen[h] {
			continue
		}
		seen[h] = true
		if len(out) == n {
			out = append(out, "...")
			break
		}
		out = append(out, h)
	}
	return out
}
