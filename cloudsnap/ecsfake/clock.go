package ecsfake

import (
	"context"
	"sync"
	"time"
)

// Clock is where the fake reads the time that moves its resources along
// (snapshot progress, instance state, retention expiry). Signatures are
// still checked against the wall clock, because the real SDK stamps
// requests with time.Now.
type Clock interface {
	Now() time.Time
}

type wallClock struct{}

func (wallClock) Now() time.Time { return time.Now() }

// ManualClock is a clock that only moves when told to, or when a waiter
// sleeps on it: Sleep advances the time at once, so code that polls "every
// ten seconds for up to thirty minutes" runs in microseconds against a fake
// whose snapshots complete in fake minutes. It satisfies cloudsnap.Clock.
type ManualClock struct {
	mu  sync.Mutex
	now time.Time
	// slept is the total time callers spent in Sleep, so tests can check
	// that backoff really backed off.
	slept time.Duration
}

// NewManualClock starts a clock at t.
func NewManualClock(t time.Time) *ManualClock { return &ManualClock{now: t} }

// Now returns the clock's current time.
func (c *ManualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *ManualClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// Sleep advances the clock by d unless ctx is already done.
func (c *ManualClock) Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.slept += d
	c.mu.Unlock()
	return nil
}

// Slept is the total duration passed to Sleep so far.
func (c *ManualClock) Slept() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.slept
}
