package parallel

import (
	"sync/atomic"
	"testing"
	"time"
)

// TestEachCallsEveryIndexOnceWithinTheLimit: every index is called
// exactly once, never more than workers at a time, and nothing for n 0.
func TestEachCallsEveryIndexOnceWithinTheLimit(t *testing.T) {
	for _, tc := range []struct{ n, workers, wantMax int }{{0, 4, 0}, {1, 4, 1}, {50, 3, 3}, {7, 0, 1}, {5, 16, 5}} {
		calls := make([]atomic.Int32, tc.n)
		var running, peak atomic.Int32
		Each(tc.n, tc.workers, func(i int) {
			r := running.Add(1)
			for p := peak.Load(); r > p && !peak.CompareAndSwap(p, r); p = peak.Load() {
			}
			time.Sleep(time.Millisecond)
			calls[i].Add(1)
			running.Add(-1)
		})
		for i := range calls {
			if c := calls[i].Load(); c != 1 {
				t.Fatalf("n %d workers %d: index %d called %d times", tc.n, tc.workers, i, c)
			}
		}
		if p := int(peak.Load()); p > tc.wantMax || tc.n > 0 && p < 1 {
			t.Fatalf("n %d workers %d: %d calls at once, want at most %d", tc.n, tc.workers, p, tc.wantMax)
		}
	}
}
