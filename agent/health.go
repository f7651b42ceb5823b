package agent

import (
	"fmt"
	"strings"
	"time"
)

// health backs /healthz: unhealthy while the store cannot be written, no
// backup succeeded for three intervals, the last backup run failed, or the
// newest version is not good (etcd-failed, degraded, files-only): a
// backup that commits every 5 minutes is no comfort when what it commits
// is not a version a restore would take.
func (a *Agent) health() (bool, []string) {
	var problems []string
	if !a.storeOK.Load() {
		problems = append(problems, "store on the second disk is unavailable: "+a.storeError())
	}
	cfg := a.config()
	limit := 3*cfg.Schedules.Backup + time.Minute
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
	newest := a.newest
	a.stMu.Unlock()
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
	return len(problems) == 0, problems
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
