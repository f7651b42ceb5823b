package agent

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kubekeep/kubekeep/rsyncish"
)

// health backs /healthz: unhealthy whenever backups are not being made or
// are not worth restoring. The conditions, each a reason in the body (the
// README's "Status and metrics" has the table):
//
//   - the store cannot be written (second disk missing or read-only);
//   - the store is full: less than store.minFree free, or the last run of
//     the backup or the delta stream failed for lack of space;
//   - no backup succeeded for three intervals, or the last backup run
//     failed;
//   - the newest version is not good (etcd-failed, degraded, files-only):
//     a backup that commits every 5 minutes is no comfort when what it
//     commits is not a version a restore would take;
//   - the etcd API has not answered for longer than etcdLimit;
//   - the delta stream has made nothing durable for longer than etcdLimit
//     while it should run (the point-in-time RPO is lost);
//   - the restore drill cannot run for lack of space (no version gets
//     verified).
func (a *Agent) health() (bool, []string) {
	var problems []string
	if !a.storeOK.Load() {
		problems = append(problems, "store on the second disk is unavailable: "+a.storeError())
	}
	cfg := a.config()
	if full, why := a.storeFull(); full {
		problems = append(problems, "store on the second disk is full, backups are not being made: "+why)
	}
	limit := 3*cfg.Schedules.Backup + time.Minute
	etcdLimit := a.etcdLimit()
	a.stMu.Lock()
	started := a.state.Started
	var last *time.Time
	var failures int
	var lastErr string
	if js := a.state.Jobs[JobBackup]; js != nil {
		last = js.LastSuccess
		if js.Failures > 0 && js.LastFailure != nil && (last == nil || js.LastFailure.After(*last)) {
			failures, lastErr = js.Failures, js.LastError
		}
	}
	drillErr := failingWith(a.state.Jobs[JobDrill], isNoSpaceMsg)
	deltaErr := failingWith(a.state.Jobs[JobEtcdDeltas], func(string) bool { return true })
	newest := a.newest
	etcdDown, etcdErr := a.etcdDownSince, a.state.Etcd.Error
	a.stMu.Unlock()
	a.deltaMu.Lock()
	tail := a.deltaTail
	a.deltaMu.Unlock()
	now := a.now()
	switch {
	case last != nil && now.Sub(*last) > limit:
		problems = append(problems, fmt.Sprintf("no successful backup for %s", now.Sub(*last).Round(time.Second)))
	case last == nil && !started.IsZero() && now.Sub(started) > limit:
		problems = append(problems, "no successful backup since the agent started")
	}
	if failures > 0 {
		problems = append(problems, fmt.Sprintf("the last %d backup run(s) failed: %s", failures, lastErr))
	}
	if newest != nil && !newest.Good {
		msg := fmt.Sprintf("the newest version %s is %s, not a good version", newest.ID, orDash(newest.Status))
		if newest.Degraded {
			msg += " (degraded: " + strings.Join(newest.Problems, "; ") + ")"
		}
		problems = append(problems, msg)
	}
	if !etcdDown.IsZero() && now.Sub(etcdDown) > etcdLimit {
		problems = append(problems, fmt.Sprintf("etcd API unreachable for %s (since %s): %s",
			now.Sub(etcdDown).Round(time.Second), etcdDown.UTC().Format(time.RFC3339), orDash(etcdErr)))
	}
	if cfg.Etcd.Deltas && a.deltaWanted.Load() {
		since, what := started, "no etcd change or progress mark durable since the agent started"
		if tail != nil && tail.Time.After(since) {
			since = tail.Time
			what = fmt.Sprintf("etcd deltas durable only up to revision %d at %s", tail.Rev, tail.Time.UTC().Format(time.RFC3339))
		}
		if !since.IsZero() && now.Sub(since) > etcdLimit {
			msg := fmt.Sprintf("%s, %s ago: the delta stream is down", what, now.Sub(since).Round(time.Second))
			if deltaErr != "" {
				msg += ": " + deltaErr
			}
			problems = append(problems, msg)
		}
	}
	if drillErr != "" {
		problems = append(problems, "the restore drill cannot run for lack of space, no version gets verified: "+drillErr)
	}
	return len(problems) == 0, problems
}

// etcdLimit is how long etcd may be unreachable, or the delta stream make
// nothing durable, before /healthz reports it: a minute, plus two delta
// flushes so that a slow flush is not an outage. A kubeadm upgrade or a
// certificate renewal restarts etcd for well under that.
func (a *Agent) etcdLimit() time.Duration {
	return time.Minute + 2*a.config().Etcd.DeltaFlush
}

// storeFull reports whether the store's filesystem has too little room for
// backups: below store.minFree, or the newest backup or delta write failed
// for lack of space (as root, writes may succeed in the filesystem's
// reserved blocks while kubekeep refuses them, so the probe alone cannot
// tell).
func (a *Agent) storeFull() (bool, string) {
	if a.store == nil {
		return false, ""
	}
	minFree := int64(a.config().Store.MinFree)
	if free, err := freeSpace(a.store.Dir()); err == nil && minFree > 0 && free < minFree {
		return true, fmt.Sprintf("%s free on %s, store.minFree is %s; prune (kubekeep prune --dry-run first), lower retention or grow the disk",
			humanBytes(free), a.store.Dir(), humanBytes(minFree))
	}
	a.stMu.Lock()
	defer a.stMu.Unlock()
	for _, name := range []string{JobBackup, JobEtcdDeltas} {
		if msg := failingWith(a.state.Jobs[name], isNoSpaceMsg); msg != "" {
			return true, fmt.Sprintf("the last %s run failed: %s", name, msg)
		}
	}
	return false, ""
}

// failingWith returns the job's last error when its last run failed and
// the error satisfies match; "" otherwise.
func failingWith(js *JobState, match func(string) bool) string {
	if js == nil || js.Failures == 0 || js.LastFailure == nil || (js.LastSuccess != nil && !js.LastFailure.After(*js.LastSuccess)) {
		return ""
	}
	if !match(js.LastError) {
		return ""
	}
	return js.LastError
}

// isNoSpace reports an error caused by a full store: rsyncish's
// ErrNoSpace, ENOSPC, or (by its words, since the agent does not import
// the restore package) restore.ErrDrillSpace.
func isNoSpace(err error) bool {
	return err != nil && (errors.Is(err, rsyncish.ErrNoSpace) || errors.Is(err, syscall.ENOSPC) || isNoSpaceMsg(err.Error()))
}

// isNoSpaceMsg is isNoSpace for an error kept as text (the status file's
// lastError): rsyncish.ErrNoSpace says "not enough free space in the
// store", restore.ErrDrillSpace "not enough free space on the store's
// filesystem for the restore drill", ENOSPC "no space left on device".
func isNoSpaceMsg(msg string) bool {
	return strings.Contains(msg, "not enough free space") || strings.Contains(msg, "no space left on device")
}

// freeSpace is what an unprivileged writer may still use on dir's
// filesystem, as rsyncish counts it.
func freeSpace(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
