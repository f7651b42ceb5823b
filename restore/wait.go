package restore

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// WaitFunc returns once nothing answers on any of endpoints (host:port),
// or with an error when ctx ends first. It is pluggable because only the
// kubelet knows when its containers are gone, and there may be no kubelet
// (a sandbox, a test).
type WaitFunc func(ctx context.Context, endpoints []string) error

// Defaults for the stop phase.
const (
	DefaultStopTimeout  = 2 * time.Minute
	DefaultPollInterval = 250 * time.Millisecond
)

// WaitPortsClosed polls every endpoint with a TCP dial until all refuse:
// an etcd or apiserver that no longer accepts connections has stopped
// (its process holds the listening socket until it exits).
func WaitPortsClosed(interval time.Duration) WaitFunc {
	return func(ctx context.Context, endpoints []string) error {
		for {
			var open []string
			for _, ep := range endpoints {
				if answers(ep, interval) {
					open = append(open, ep)
				}
			}
			if len(open) == 0 {
				return nil
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("still answering on %s: %w", strings.Join(open, ", "), ctx.Err())
			case <-time.After(interval):
			}
		}
	}
}
