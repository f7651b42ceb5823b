package agent

import (
	"runtime"
	"sync"
)

// Fewer Ps while idle.
//
// Between jobs the agent only streams etcd changes, writes progress marks
// and probes the store: a goroutine or two at a time. With every CPU's P
// available, each wakeup of those lets the Go scheduler start spinning
// threads looking for work, and sysmon polls while any goroutine runs: on
// a 2-vCPU VM an idle agent cost 0.122% of a core with GOMAXPROCS=2 and
// 0.089% with 1 (a sandbox agent at the real cadence, one run each). So
// with Config.IdleProcs the agent runs with one P while no job runs and
// with the process's GOMAXPROCS while any does: a backup, drill, verify or
// sync keeps all the parallelism it had. Setting GOMAXPROCS costs a
// stop-the-world of microseconds, twice a job.

// idleProcs switches GOMAXPROCS between 1 (no job running) and the
// process's own; the zero value does nothing.
type idleProcs struct {
	mu   sync.Mutex
	on   bool
	full int // the process's GOMAXPROCS
	busy int // jobs running
}

// start turns the switching on (with more than one P to switch from) and
// drops to one P.
func (p *idleProcs) start() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.full = runtime.GOMAXPROCS(0)
	if p.full <= 1 {
		return
	}
	p.on = true
	if p.busy == 0 {
		runtime.GOMAXPROCS(1)
	}
}

// stop gives the process its GOMAXPROCS back for good.
func (p *idleProcs) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.on {
		runtime.GOMAXPROCS(p.full)
		p.on = false
	}
}

// jobStarted and jobEnded bracket each job run.
func (p *idleProcs) jobStarted() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.busy++
	if p.on && p.busy == 1 {
		runtime.GOMAXPROCS(p.full)
	}
}

func (p *idleProcs) jobEnded() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.busy--
	if p.on && p.busy == 0 {
		runtime.GOMAXPROCS(1)
	}
}
