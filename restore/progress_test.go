package restore

import (
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

type recordProgress struct {
	mu    sync.Mutex
	steps []string
	total map[string]int64
	added map[string]int64
	cur   string
}

func (p *recordProgress) Step(n string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.steps, p.cur = append(p.steps, n), n
}
func (p *recordProgress) Bytes(n int64) { p.mu.Lock(); p.total[p.cur] += n; p.mu.Unlock() }
func (p *recordProgress) Add(n int64)   { p.mu.Lock(); p.added[p.cur] += n; p.mu.Unlock() }
func (p *recordProgress) Done()         { p.mu.Lock(); p.cur = ""; p.mu.Unlock() }

// A run tells its Progress every phase and the bytes the files and etcd
// phases read out of the store: the files' sizes, the snapshot's.
func TestRunReportsProgress(t *testing.T) {
	f := getFixture(t)
	p := &recordProgress{total: map[string]int64{}, added: map[string]int64{}}
	o := f.opts(filepath.Join(t.TempDir(), "new"), PhaseFiles, PhaseEtcd)
	o.Progress = p
	if _, err := Run(ctxT(t), o); err != nil {
		t.Fatal(err)
	}
	if want := []string{"restore phase files", "restore phase etcd"}; !slices.Equal(p.steps, want) {
		t.Fatalf("steps %q, want %q", p.steps, want)
	}
	snap := SnapshotBytes(f.store, f.id)
	if snap == 0 || p.total["restore phase etcd"] != snap || p.added["restore phase etcd"] != snap {
		t.Errorf("etcd phase: total %d, read %d; the snapshot is %d bytes", p.total["restore phase etcd"], p.added["restore phase etcd"], snap)
	}
	if n := p.total["restore phase files"]; n == 0 || p.added["restore phase files"] != n {
		t.Errorf("files phase: total %d, read %d", n, p.added["restore phase files"])
	}
	if p.cur != "" {
		t.Error("the run did not end its last step")
	}
	if o.Store.SetProgress(nil); t.Failed() {
		t.Logf("%+v", p)
	}
}

// Result.Replaces names what a run replaces on a node that holds a
// control plane (its manifests, the etcd data dir), and nothing for a
// restore into an empty new root: the CLI asks only for the first.
func TestReplacesNamesWhatTheNodeHolds(t *testing.T) {
	f := getFixture(t)
	o := f.opts(f.root.Dir, PhaseStop, PhaseFiles, PhaseEtcd)
	o.DryRun = true
	res, err := Run(ctxT(t), o)
	if err != nil {
		t.Fatal(err)
	}
	all := strings.Join(res.Replaces, "\n")
	for _, want := range []string{"static pod manifest /etc/kubernetes/manifests/etcd.yaml: moved aside", "the etcd data dir /var/lib/etcd: moved aside"} {
		if !strings.Contains(all, want) {
			t.Errorf("Replaces lacks %q:\n%s", want, all)
		}
	}
	o.Root = t.TempDir()
	res, err = Run(ctxT(t), o)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Replaces) != 0 {
		t.Errorf("a restore into an empty root replaces %q", res.Replaces)
	}
}
