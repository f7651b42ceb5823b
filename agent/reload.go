package agent

import (
	"errors"
	"fmt"
	"reflect"
)

// Reload reads the configuration again (SIGHUP, an edited config file).
// A configuration that does not load or validate, or that changes the
// store under the running agent, is refused with one clear log line and
// the running configuration stays in force.
func (a *Agent) Reload() error {
	if a.opts.Reload == nil {
		return errors.New("reload: this agent has no configuration source to reload from")
	}
	next, err := a.opts.Reload()
	if err != nil {
		a.log.Error("config reload refused; keeping the running configuration", "err", err)
		return fmt.Errorf("reload: %w", err)
	}
	cur := a.config()
	if !reflect.DeepEqual(next.Store, cur.Store) {
		err := fmt.Errorf("store settings changed (%s -> %s): the agent holds that store's lock; restart the agent to switch stores",
			cur.Store.Path, next.Store.Path)
		a.log.Error("config reload refused; keeping the running configuration", "err", err)
		return fmt.Errorf("reload: %w", err)
	}
	if next.Metrics.Listen != cur.Metrics.Listen {
		if err := a.rebindMetrics(next.Metrics.Listen); err != nil {
			a.log.Error("config reload refused; keeping the running configuration", "err", err)
			return fmt.Errorf("reload: %w", err)
		}
	}
	a.cfgMu.Lock()
	a.cfg = next
	a.cfgMu.Unlock()
	a.schedule(next, false)
	if next.Root != cur.Root || !reflect.DeepEqual(next.Paths, cur.Paths) {
		a.rediscover(next)
		kick(a.rewatch)
	}
	if !reflect.DeepEqual(next.Etcd, cur.Etcd) || next.Root != cur.Root {
		a.restartDeltas()
	}
	a.log.Info("configuration reloaded", "backupEvery", next.Schedules.Backup.String(), "metrics", next.Metrics.Listen)
	a.writeStatus()
	return nil
}

// rebindMetrics moves the metrics server; the new listener is opened
// before the old one closes, so a bad address leaves the old one serving.
func (a *Agent) rebindMetrics(addr string) error {
	var srv *metricsServer
	if addr != "" {
		var err error
		if srv, err = startMetricsServer(addr, a.m, a.health); err != nil {
			return err
		}
	}
	a.srvMu.Lock()
	old := a.srv
	a.srv = srv
	a.srvMu.Unlock()
	old.close()
	if srv != nil {
		a.log.Info("metrics listening", "addr", srv.addr)
	}
	return nil
}
