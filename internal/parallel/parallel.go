// Package parallel runs independent pieces of one job on several
// goroutines: the pack indexes a reader loads, the journal segments a
// `get --at` maps and checks, the segments a replay decodes.
package parallel

import (
	"sync"
	"sync/atomic"
)

// Each calls fn(i) for every i in [0, n), on at most workers goroutines
// at once (at least one), and returns when every call has. Each i is
// taken once, in increasing order of start; fn records its own result
// (typically into slot i of slices the caller made).
func Each(n, workers int, fn func(i int)) {
	workers = max(1, min(workers, n))
	var wg sync.WaitGroup
	var next atomic.Int64
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				fn(i)
			}
		}()
	}
	wg.Wait()
}
