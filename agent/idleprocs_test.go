package agent

import (
	"runtime"
	"testing"
)

// With IdleProcs the process has one P while no job runs and its own
// GOMAXPROCS while any does, overlapping jobs included; stop gives it back.
func TestIdleProcs(t *testing.T) {
	full := runtime.GOMAXPROCS(0)
	if full < 2 {
		runtime.GOMAXPROCS(2)
		full = 2
	}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	var p idleProcs
	p.jobEnded() // the zero value does nothing
	p.jobStarted()
	if got := runtime.GOMAXPROCS(0); got != full {
		t.Fatalf("switching off: GOMAXPROCS %d, want %d", got, full)
	}
	p = idleProcs{}
	p.start()
	check := func(what string, want int) {
		t.Helper()
		if got := runtime.GOMAXPROCS(0); got != want {
			t.Errorf("%s: GOMAXPROCS %d, want %d", what, got, want)
		}
	}
	check("idle", 1)
	p.jobStarted()
	check("a job running", full)
	p.jobStarted()
	p.jobEnded()
	check("one of two overlapping jobs ended", full)
	p.jobEnded()
	check("idle again", 1)
	p.stop()
	check("stopped", full)
	p.jobStarted()
	p.jobEnded()
	check("a job after stop", full)
}
