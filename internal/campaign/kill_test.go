package campaign

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

var killTargets = []string{"backup", "prune", "restore-files", "restore-etcd", "repair", "agent", "agent-sigterm"}

// runKill: SIGKILL at a random delay into each command, N times each, on
// one store that lives through the whole sub-campaign.
func runKill(t *testing.T, bin string, k knobs, sum *summary) {
	rng := rngFor(k.seed, "kill")
	w := newWorld(t, bin, rng, sum, "kill", worldOptions{})
	w.setupBackups(t, k, 3)
	w.runRounds(t, k, rng, killTargets, func(t *testing.T, target string) {
		if target == "repair" && !repairAvailable(w) {
			w.t = t
			sum.add("kill", "cases skipped (no repair command)", 1)
			t.Skip("kubekeep has no repair command yet (`kubekeep repair --help` fails): the SIGKILL-into-repair case runs once it exists")
		}
		f := fault{kind: "kill", target: target}
		c := newChecker(t, w, f, k.strict)
		defer c.finish()
		w.killRound(c, target)
	})
}

// setupBackups takes n backups of n mutations, checked by a setup
// checker, and stops the sub-campaign when one fails.
func (w *world) setupBackups(t *testing.T, k knobs, n int) {
	t.Helper()
	setup := setupChecker(t, w, k)
	for i := 0; i < n; i++ {
		w.mutate(1)
		w.backup(setup, "setup")
	}
	if t.Failed() {
		t.FailNow()
	}
}

// runRounds runs round for each of targets 3*k.n times, in an order
// shuffled by rng, each a subtest with choices of its own.
func (w *world) runRounds(t *testing.T, k knobs, rng *rand.Rand, targets []string, round func(t *testing.T, target string)) {
	var rounds []string
	for i := 0; i < 3*k.n; i++ {
		rounds = append(rounds, targets...)
	}
	rng.Shuffle(len(rounds), func(i, j int) { rounds[i], rounds[j] = rounds[j], rounds[i] })
	for i, target := range rounds {
		t.Run(fmt.Sprintf("%02d-%s", i, target), func(t *testing.T) {
			w.rng = rngFor(k.seed, t.Name()) // each case its own choices
			round(t, target)
		})
	}
}

// setupChecker checks the setup steps of a sub-campaign; it counts no
// fault.
func setupChecker(t *testing.T, w *world, k knobs) *checker {
	return &checker{t: t, w: w, f: fault{kind: w.kind, target: "setup"}, strict: k.strict, known: map[string]string{}}
}

func (w *world) killRound(c *checker, target string) {
	switch target {
	case "backup":
		w.killBackup(c)
	case "prune":
		w.killPrune(c)
	case "restore-files":
		w.killRestoreFiles(c)
	case "restore-etcd":
		w.killRestoreEtcd(c)
	case "repair":
		w.killRepair(c)
	case "agent":
		w.killAgent(c)
	case "agent-sigterm":
		w.stopAgent(c)
	}
	if target == "repair" {
		return // it ran on a copy of the store, with its own next backup
	}
	w.nextBackup(c, false)
	w.trim(c)
}

func landedWord(landed bool) string {
	if landed {
		return "killed"
	}
	return "finished before the kill"
}

// adoptOne accepts at most one new version, with the given truth.
func adoptOne(c *checker, files *fileState, rev int64, by string) func(v versionJSON) *versionTruth {
	n := 0
	return func(v versionJSON) *versionTruth {
		n++
		if n > 1 {
			c.fail("truth", "a second new version %s appeared after one %s", v.ID, by)
			return nil
		}
		vt := &versionTruth{id: v.ID, files: files, by: by}
		if v.Etcd != nil && v.Etcd.Revision > 0 {
			vt.etcdRev = rev
			if v.Etcd.Revision != rev {
				c.fail("truth", "version %s of a %s says etcd revision %d, etcd was at %d throughout", v.ID, by, v.Etcd.Revision, rev)
			}
		}
		return vt
	}
}

func (w *world) killBackup(c *checker) {
	w.mutate(1)
	rev, files := w.etcdRev(), w.state
	delay := w.killDelay("backup", 300*time.Millisecond)
	p := w.start(2*time.Minute, "backup", "-o", "json")
	landed, r := p.killAfter(delay)
	c.f.detail = fmt.Sprintf("after %s, %s", delay.Round(time.Millisecond), landedWord(landed))
	w.countLanded(c, landed)
	if !landed && r.code != 0 {
		c.fail("backup", "backup failed without a fault: %s", r)
	}
	w.audit(c, expect{clean: true, adopt: adoptOne(c, files, rev, "killed backup")})
}

func (w *world) countLanded(c *checker, landed bool) {
	if landed {
		w.sum.add(c.f.kind, "kills that landed mid-run", 1)
	} else {
		w.sum.add(c.f.kind, "kills after the run ended", 1)
	}
}

// pruneJSON is `prune -o json`.
type pruneJSON struct {
	Keep []struct {
		ID string `json:"id"`
	} `json:"keep"`
	Remove []struct {
		ID string `json:"id"`
	} `json:"remove"`
}

func (w *world) prune(c *checker, dry bool) (*pruneJSON, bool) {
	args := []string{"prune", "-o", "json", "--wait", "30s"}
	if dry {
		args = append(args, "--dry-run")
	}
	r := w.kk(2*time.Minute, args...)
	var pj pruneJSON
	if r.code != 0 {
		c.fail("prune", "prune (dry %v): %s", dry, r)
		return nil, false
	}
	if err := json.Unmarshal([]byte(r.stdout), &pj); err != nil {
		c.fail("prune", "prune -o json: %v: %s", err, r)
		return nil, false
	}
	return &pj, true
}

// enoughToPrune backs up until the store holds enough versions that a
// prune has versions to drop and packs to rewrite; false when a backup
// failed (by says before what).
func (w *world) enoughToPrune(c *checker, by string) bool {
	for len(w.live()) < 6 {
		w.mutate(1)
		if w.backup(c, by) == "" {
			return false
		}
	}
	return true
}

// prunePlan is what a prune would do (a dry run) and, from it, which
// versions may vanish in the real one.
func (w *world) prunePlan(c *checker) (plan *pruneJSON, mayVanish func(id string) bool, ok bool) {
	plan, ok = w.prune(c, true)
	if !ok {
		return nil, nil, false
	}
	keep := map[string]bool{}
	for _, k := range plan.Keep {
		keep[k.ID] = true
	}
	return plan, func(id string) bool { return !keep[id] }, true
}

func (w *world) killPrune(c *checker) {
	if !w.enoughToPrune(c, "before a killed prune") {
		return
	}
	plan, mayVanish, ok := w.prunePlan(c)
	if !ok {
		return
	}
	delay := w.killDelay("prune", 200*time.Millisecond)
	p := w.start(2*time.Minute, "prune", "--wait", "30s")
	landed, r := p.killAfter(delay)
	c.f.detail = fmt.Sprintf("after %s, %s, %d of %d versions to drop", delay.Round(time.Millisecond), landedWord(landed), len(plan.Remove), len(w.live()))
	w.countLanded(c, landed)
	if !landed && r.code != 0 {
		c.fail("prune", "prune failed without a fault: %s", r)
	}
	w.audit(c, expect{clean: true, mayVanish: mayVanish})
}

// live lists the versions the test believes are in the store.
func (w *world) live() []string {
	var ids []string
	for id := range w.truth {
		if !w.gone[id] {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids
}

func (w *world) pick(withEtcd bool) *versionTruth {
	var cands []*versionTruth
	for _, id := range w.live() {
		if vt := w.truth[id]; !withEtcd || vt.etcdRev > 0 {
			cands = append(cands, vt)
		}
	}
	if len(cands) == 0 {
		return nil
	}
	return cands[w.rng.IntN(len(cands))]
}

// killRestore kills `restore what` of a random live version (one with
// etcd when withEtcd) at a delay around base, into a fresh directory to;
// a nil version when there is none to restore.
func (w *world) killRestore(c *checker, what string, withEtcd bool, base time.Duration) (vt *versionTruth, to string) {
	vt = w.pick(withEtcd)
	if vt == nil {
		if withEtcd {
			c.fail("setup", "no version with etcd to restore")
		} else {
			c.fail("setup", "no version to restore")
		}
		return nil, ""
	}
	to = filepath.Join(c.t.TempDir(), what)
	delay := w.killDelay("restore "+what, base)
	p := w.start(2*time.Minute, "restore", what, "--version", vt.id, "--to", to)
	landed, r := p.killAfter(delay)
	c.f.detail = fmt.Sprintf("version %s after %s, %s", vt.id, delay.Round(time.Millisecond), landedWord(landed))
	w.countLanded(c, landed)
	if !landed && r.code != 0 {
		c.fail("restore", "restore %s failed without a fault: %s", what, r)
	}
	return vt, to
}

func (w *world) killRestoreFiles(c *checker) {
	vt, to := w.killRestore(c, "files", false, 150*time.Millisecond)
	if vt == nil {
		return
	}
	// Each file is restored atomically: whatever a killed restore left at
	// a file's own name is that file, whole.
	partial, err := walkTree(to, w.plan)
	if err == nil {
		for p, e := range partial {
			want, ok := (*vt.files)[p]
			if e.typ == 'd' {
				continue
			}
			if !ok {
				w.sum.add(c.f.kind, "temp files left by a killed restore", 1)
				continue
			}
			if e.typ != want.typ || e.sum != want.sum || e.size != want.size || e.link != want.link {
				c.fail("restore-atomic", "a killed restore files left %s as %s; the version holds %s", p, e, want)
			}
		}
	}
	// The operator runs the same command again.
	r := w.kk(2*time.Minute, "restore", "files", "--version", vt.id, "--to", to)
	if r.code != 0 {
		c.fail("restore-rerun", "restore files again into the killed restore's directory: %s", r)
	} else {
		// The killed run's temp files (kubekeep names them
		// .kubekeep-restore.tmp-PID-RAND) are told apart from real
		// differences.
		var leftovers, diffs []string
		for _, d := range compareTree(to, w.plan, vt.files) {
			if i := strings.Index(d, "/.kubekeep-restore.tmp-"); i >= 0 {
				leftovers = append(leftovers, strings.Fields(d[strings.LastIndex(d[:i], " ")+1:])[0])
			} else {
				diffs = append(diffs, d)
			}
		}
		if len(diffs) > 0 {
			c.fail("restore-rerun", "restore files again into the killed restore's directory gives %d difference(s): %s", len(diffs), clip(strings.Join(diffs, "; "), 1500))
		} else {
			w.sum.add(c.f.kind, "file restores byte-identical", 1)
		}
		if len(leftovers) > 0 {
			c.fail("restore-leftovers", "the rerun of restore files leaves the killed run's %d temp file(s) in the restored tree: %s", len(leftovers), clip(strings.Join(leftovers, " "), 600))
		}
	}
	w.audit(c, expect{clean: true})
}

func (w *world) killRestoreEtcd(c *checker) {
	vt, to := w.killRestore(c, "etcd", true, 300*time.Millisecond)
	if vt == nil {
		return
	}
	// A killed restore must not leave at --to a data dir etcd would start
	// on with the wrong content.
	if _, err := os.Stat(filepath.Join(to, "member")); err == nil {
		want, err := w.etcdAt(vt.etcdRev)
		if err != nil {
			c.t.Fatal(err)
		}
		got, _, err := restoredKV(to)
		if err != nil {
			c.fail("restore-atomic", "a killed restore etcd left a data dir at --to whose db is unreadable: %v", err)
		} else if diffs := compareKV(got, want); len(diffs) > 0 {
			c.fail("restore-atomic", "a killed restore etcd left a data dir at --to with %d wrong key(s): %s", len(diffs), clip(strings.Join(diffs, "; "), 500))
		}
	}
	w.audit(c, expect{clean: true})
}

// killRepair damages one pack, kills the repair of it, and then repairs
// and backs up for real, all on a copy of the store: what the damage
// destroys stays lost (repair says which versions), and the kill
// campaign's later rounds need a whole store.
func (w *world) killRepair(c *checker) {
	saved := filepath.Join(c.t.TempDir(), "saved-store")
	if out, err := exec.Command("cp", "-a", w.store, saved).CombinedOutput(); err != nil {
		c.t.Fatalf("cp -a: %v %s", err, out)
	}
	truth, gone := map[string]*versionTruth{}, map[string]bool{}
	for id, vt := range w.truth {
		truth[id] = vt
	}
	for id := range w.gone {
		gone[id] = true
	}
	state := w.state
	defer func() {
		if err := os.RemoveAll(w.store); err != nil {
			c.t.Fatal(err)
		}
		if err := os.Rename(saved, w.store); err != nil {
			c.t.Fatal(err)
		}
		w.truth, w.gone, w.state = truth, gone, state
	}()

	packs, _ := filepath.Glob(filepath.Join(w.store, "packs", "*.pack"))
	if len(packs) == 0 {
		c.fail("setup", "no pack to damage")
		return
	}
	sort.Strings(packs)
	pack := packs[w.rng.IntN(len(packs))]
	detail, err := damageFile(w.rng, pack, "flip")
	if err != nil {
		c.t.Fatal(err)
	}
	delay := w.killDelay("repair", 300*time.Millisecond)
	p := w.start(3*time.Minute, "repair", "--read-data")
	landed, r := p.killAfter(delay)
	c.f.detail = fmt.Sprintf("%s %s, then repair --read-data killed after %s, %s", filepath.Base(pack), detail, delay.Round(time.Millisecond), landedWord(landed))
	w.countLanded(c, landed)
	if !landed && r.code != 0 && r.code != 1 {
		c.fail("repair", "repair could not run: %s", r)
	}
	w.audit(c, expect{})
	w.nextBackup(c, true)
}

// agentArgs run the agent with a short cadence and nothing else on a
// schedule (the config turns prune, verify and drill off).
var agentArgs = []string{"agent", "--backup-interval", "1s", "--backup-cpu-budget", "0%", "--metrics-listen", "", "--shutdown-timeout", "5s"}

// runAgent runs the agent for d while etcd changes every ~150 ms, then
// stops it with sig (SIGKILL: the test's process-group kill) and returns
// the etcd revisions before and after and whether the agent was still
// running when stopped.
func (w *world) runAgent(c *checker, d time.Duration, stop func(*proc) result) (revStart, revEnd int64, r result, running bool) {
	revStart = w.etcdRev()
	p := w.start(2*time.Minute, agentArgs...)
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) && !p.exited() {
		w.mutateEtcd(1)
		time.Sleep(time.Duration(100+w.rng.IntN(100)) * time.Millisecond)
	}
	running = !p.exited()
	r = stop(p)
	revEnd = w.etcdRev()
	return revStart, revEnd, r, running
}

// adoptAgent gives the agent's versions their truth: the files did not
// change while it ran; etcd's revision is the one the version claims, which
// must lie within the run.
func adoptAgent(c *checker, files *fileState, revStart, revEnd int64) func(v versionJSON) *versionTruth {
	return func(v versionJSON) *versionTruth {
		vt := &versionTruth{id: v.ID, files: files, by: "agent"}
		if v.Etcd != nil && v.Etcd.Revision > 0 {
			if v.Etcd.Revision < revStart || v.Etcd.Revision > revEnd {
				c.fail("truth", "agent version %s claims etcd revision %d, outside the run's %d..%d", v.ID, v.Etcd.Revision, revStart, revEnd)
				return nil
			}
			vt.etcdRev = v.Etcd.Revision
		}
		c.w.sum.add(c.f.kind, "agent versions", 1)
		return vt
	}
}

func (w *world) killAgent(c *checker) {
	w.mutate(1)
	files := w.state
	d := time.Duration(300+w.rng.IntN(3700)) * time.Millisecond
	revStart, revEnd, _, running := w.runAgent(c, d, func(p *proc) result {
		_, r := p.killAfter(0)
		return r
	})
	c.f.detail = fmt.Sprintf("after %s, etcd revisions %d..%d", d.Round(time.Millisecond), revStart, revEnd)
	if !running {
		c.fail("agent", "the agent exited on its own before the kill")
	}
	w.countLanded(c, running)
	ar := w.audit(c, expect{clean: true, adopt: adoptAgent(c, files, revStart, revEnd)})
	w.checkPITR(c, ar)
}

// stopAgent stops the agent the way systemd does (KillMode=control-group:
// SIGTERM to every process of the service, the snapshot check child too)
// at a random point; it must exit 0, and every version it committed
// while etcd was up must be good.
func (w *world) stopAgent(c *checker) {
	w.mutate(1)
	files := w.state
	d := time.Duration(300+w.rng.IntN(3700)) * time.Millisecond
	revStart, revEnd, r, running := w.runAgent(c, d, func(p *proc) result {
		p.signal(syscall.SIGTERM)
		return p.wait()
	})
	c.f.detail = fmt.Sprintf("SIGTERM to the process group after %s, etcd revisions %d..%d", d.Round(time.Millisecond), revStart, revEnd)
	if !running {
		c.fail("agent", "the agent exited on its own before the SIGTERM: %s", r)
	} else if r.code != 0 {
		c.fail("agent-stop", "the agent did not exit 0 on SIGTERM: %s", r)
	}
	adopt := adoptAgent(c, files, revStart, revEnd)
	ar := w.audit(c, expect{clean: true, adopt: func(v versionJSON) *versionTruth {
		if v.Status != "" && v.Status != "ok" {
			c.fail("agent-stop", "the agent committed version %s with status %q while etcd ran fine (stopped by SIGTERM): %s", v.ID, v.Status, clip(r.stderr, 1500))
		}
		return adopt(v)
	}})
	w.checkPITR(c, ar)
}

// segments lists the store's etcd delta segments as revision ranges.
func segments(store string) [][2]int64 {
	paths, _ := filepath.Glob(filepath.Join(store, "journals", "*", "*.seg"))
	var out [][2]int64
	for _, p := range paths {
		parts := strings.Split(strings.TrimSuffix(filepath.Base(p), ".seg"), "-")
		if len(parts) < 2 {
			continue
		}
		a, err1 := strconv.ParseInt(parts[0], 10, 64)
		b, err2 := strconv.ParseInt(parts[1], 10, 64)
		if err1 == nil && err2 == nil {
			out = append(out, [2]int64{a, b})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i][0] < out[j][0] })
	return out
}

// checkPITR restores etcd to the newest revision the delta journal
// covers, from the newest version taken before it, and compares with
// etcd at that revision.
func (w *world) checkPITR(c *checker, ar auditResult) {
	segs := segments(w.store)
	if len(segs) == 0 {
		return
	}
	// The newest revision reachable without a gap from some snapshot.
	var base *versionTruth
	var target int64
	for _, id := range w.live() {
		vt := w.truth[id]
		if vt.etcdRev == 0 {
			continue
		}
		reach := vt.etcdRev
		for _, s := range segs {
			if s[0] <= reach+1 && s[1] > reach {
				reach = s[1]
			}
		}
		if reach > vt.etcdRev && (reach > target || (reach == target && vt.etcdRev > base.etcdRev)) {
			base, target = vt, reach
		}
	}
	if base == nil {
		return
	}
	good := ar.good(base.id) && !ar.kinds["journal"]
	say := "version and journal called good by verify"
	if !good {
		say = "version or journal called damaged by verify"
	}
	before := w.sum.get(c.f.kind, "etcd restores key-identical")
	w.checkEtcd(c, base.id, target, good, say, []string{"--revision", strconv.FormatInt(target, 10)})
	if w.sum.get(c.f.kind, "etcd restores key-identical") > before {
		w.sum.add(c.f.kind, "point-in-time restores exact", 1)
	}
}

// trim keeps the store small (restoring every version after every fault
// is the expensive part): an ordinary prune once it holds 6 versions.
func (w *world) trim(c *checker) {
	if len(w.live()) < 6 {
		return
	}
	res, ok := w.prune(c, false)
	if !ok {
		return
	}
	for _, v := range res.Remove {
		w.gone[v.ID] = true
	}
}
