package agent

// How the delta stream reaches etcd again after losing it, and what it
// tells status and metrics about etcd meanwhile.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/kubekeep/kubekeep/config"
	"github.com/kubekeep/kubekeep/etcdsnap"
)

// deltaLog rate-limits the delta stream's failure log: a new error is
// logged at once, the same one again at most once a minute (the metrics
// and the status file count every failure).
type deltaLog struct {
	at  time.Time
	msg string
}

func (l *deltaLog) should(now time.Time, err error) bool {
	msg := err.Error()
	if msg == l.msg && now.Sub(l.at) < time.Minute {
		return false
	}
	l.at, l.msg = now, msg
	return true
}

// Delta stream retry delays: jittered, doubling from deltaRetryBase,
// capped at deltaRetryFlapping while etcd was reachable within
// deltaFlapWindow (an etcd that restarts, or one that is up between
// crashes), at deltaRetryMax otherwise and after a store failure.
const (
	deltaRetryBase     = 250 * time.Millisecond
	deltaRetryFlapping = 2 * time.Second
	deltaRetryMax      = 30 * time.Second
	deltaFlapWindow    = 5 * time.Minute
)

func (a *Agent) deltaRetryDelay(cfg config.Config, failures int, err error) time.Duration {
	limit := min(deltaRetryMax, max(cfg.Schedules.Backup, deltaRetryFlapping))
	a.stMu.Lock()
	lastUp := a.etcdLastUp
	a.stMu.Unlock()
	var behind *etcdBehindError
	if !lastUp.IsZero() && a.now().Sub(lastUp) < deltaFlapWindow && !isNoSpace(err) && a.storeOK.Load() && !errors.As(err, &behind) {
		limit = deltaRetryFlapping
	}
	d := deltaRetryBase
	for i := 1; i < failures && d < limit; i++ {
		d *= 2
	}
	d = min(d, limit)
	// ±50 %: several agents (or a restarting etcd's own clients) do not
	// retry in lockstep.
	return d/2 + rand.N(d)
}

// waitReachable returns once a TCP connection to one of the endpoints
// succeeds (or ctx ends): a port that refuses means etcd is not there,
// and a fresh client per attempt would each wait out its dial timeout,
// missing an etcd that is up only for a few seconds. The first refusal
// is reported as an outage; the polling itself is quiet.
func (a *Agent) waitReachable(ctx context.Context, cc etcdsnap.ClientConfig) {
	var hosts []string
	for _, ep := range cc.Endpoints {
		if h := endpointHost(ep); h != "" {
			hosts = append(hosts, h)
		}
	}
	if len(hosts) == 0 {
		return // let the client say what is wrong with them
	}
	since := a.now()
	reported := false
	for {
		for _, h := range hosts {
			d := net.Dialer{Timeout: 500 * time.Millisecond}
			c, err := d.DialContext(ctx, "tcp", h)
			if err == nil {
				c.Close()
				return
			}
			if ctx.Err() != nil {
				return
			}
			if !reported {
				reported = true
				a.etcdUnreachable(fmt.Errorf("etcd unreachable at %s: %w", strings.Join(hosts, ", "), err))
			}
		}
		// Poll fast while the outage is young; an etcd gone for long is
		// polled every couple of seconds.
		poll := 200 * time.Millisecond
		if a.now().Sub(since) > deltaFlapWindow {
			poll = 2 * time.Second
		}
		t := time.NewTimer(poll/2 + rand.N(poll))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// endpointHost is host:port of an etcd endpoint URL ("" when it is not a
// TCP one).
func endpointHost(ep string) string {
	if !strings.Contains(ep, "://") {
		ep = "https://" + ep
	}
	u, err := url.Parse(ep)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Hostname() == "" {
		return ""
	}
	if u.Port() == "" {
		return net.JoinHostPort(u.Hostname(), "2379")
	}
	return u.Host
}

// etcdUnreachable records that the etcd API did not answer.
func (a *Agent) etcdUnreachable(err error) {
	a.m.etcdAPIUp.Set(0)
	a.stMu.Lock()
	if a.etcdDownSince.IsZero() {
		a.etcdDownSince = a.now()
	}
	a.state.Etcd.APIUp, a.state.Etcd.Error = false, err.Error()
	a.statusChangedLocked()
	a.stMu.Unlock()
}

// etcdReachable records that the etcd API answered.
func (a *Agent) etcdReachable() {
	a.m.etcdAPIUp.Set(1)
	a.stMu.Lock()
	a.etcdDownSince = time.Time{}
	a.etcdLastUp = a.now()
	a.state.Etcd.APIUp, a.state.Etcd.Error = true, ""
	a.statusChangedLocked()
	a.stMu.Unlock()
}
