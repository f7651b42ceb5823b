package campaign

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// fault is one injected fault, what the summary and the known-bug table
// key on.
type fault struct {
	kind     string // kill, damage, enospc, eio
	target   string // the command killed, the store file kind damaged...
	mutation string // damage: flip, truncate, delete
	detail   string // the file, the delay, the fill level
}

func (f fault) String() string {
	s := f.kind + " " + f.target
	if f.mutation != "" {
		s += " " + f.mutation
	}
	if f.detail != "" {
		s += " (" + f.detail + ")"
	}
	return s
}

// knownBug is a bug the campaign found that its owner has not fixed yet:
// a failing check it matches skips its case instead of failing it.
type knownBug struct {
	id    string
	desc  string
	match func(f fault, check, msg string) bool
}

// knownBugs: keep each match as narrow as the bug, so that any other
// failure of the same check still fails the test. Found by this campaign
// and fixed since (their checks stay): a damaged config.json locked every
// command out of the store (c37e6f1); verify did not notice a deleted
// delta segment between two others (c98c6cd); a bit-rotten rescue kit
// binary (size and mtime kept) was never rewritten by the next backup
// (rescue-kit-rot); a killed files restore left its temp files beside the
// restored ones for good (restore-leftovers).
var knownBugs = []knownBug{}

// checker collects the outcome of the checks after one fault.
type checker struct {
	t      *testing.T
	w      *world
	f      fault
	strict bool
	known  map[string]string
	failed bool
}

func newChecker(t *testing.T, w *world, f fault, strict bool) *checker {
	w.t = t
	w.sum.add(f.kind, "faults injected", 1)
	w.sum.add(f.kind, "faults: "+f.target, 1)
	return &checker{t: t, w: w, f: f, strict: strict, known: map[string]string{}}
}

// fail records a failed check: a known bug is logged (and the case
// skipped at finish), anything else fails the test.
func (c *checker) fail(check, format string, args ...any) {
	c.t.Helper()
	msg := fmt.Sprintf(format, args...)
	for _, b := range knownBugs {
		if b.match(c.f, check, msg) {
			c.w.sum.add(c.f.kind, "known-bug hits", 1)
			c.w.sum.hit(b.id)
			if c.strict {
				break
			}
			c.t.Logf("known bug %s after %s: [%s] %s", b.id, c.f, check, clip(msg, 600))
			c.known[b.id] = b.desc
			return
		}
	}
	c.failed = true
	c.w.sum.add(c.f.kind, "check failures", 1)
	c.t.Errorf("after %s: [%s] %s", c.f, check, msg)
}

// lost records data lost: a version that should restore and does not, or
// restores wrong.
func (c *checker) lost(format string, args ...any) {
	c.t.Helper()
	c.w.sum.add(c.f.kind, "data lost", 1)
	c.fail("data-lost", format, args...)
}

// finish skips the case when only known bugs failed it.
func (c *checker) finish() {
	c.t.Helper()
	if len(c.known) == 0 {
		return
	}
	var ids []string
	for id := range c.known {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var descs []string
	for _, id := range ids {
		descs = append(descs, id+": "+c.known[id])
	}
	c.w.sum.add(c.f.kind, "cases skipped (known bug)", 1)
	c.t.Skipf("known bug: %s; see issue 13", strings.Join(descs, "; "))
}

// verifyReport is `verify --read-data -o json`.
type verifyReport struct {
	Versions int `json:"versions"`
	Problems []struct {
		Kind     string   `json:"kind"`
		Object   string   `json:"object"`
		Detail   string   `json:"detail"`
		Versions []string `json:"versions"`
	} `json:"problems"`
	Warnings []string `json:"warnings"`
}

func (r *verifyReport) String() string {
	if r == nil {
		return "no report"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d problem(s)", len(r.Problems))
	for i, p := range r.Problems {
		if i == 6 {
			fmt.Fprintf(&b, "; …")
			break
		}
		fmt.Fprintf(&b, "; %s %s: %s %v", p.Kind, p.Object, clip(p.Detail, 200), p.Versions)
	}
	return b.String()
}

// verify runs `verify --read-data -o json` and holds its exit status to
// its contract: 0 with a report of no problem, 1 with a report naming
// the damage; anything else means the check could not run.
func (w *world) verify(c *checker) (*verifyReport, result) {
	r := w.kk(3*time.Minute, "verify", "--read-data", "-o", "json", "--wait", "30s")
	var rep *verifyReport
	var v verifyReport
	if err := json.Unmarshal([]byte(r.stdout), &v); err == nil {
		rep = &v
	}
	switch {
	case r.code == 0 && (rep == nil || len(rep.Problems) > 0):
		c.fail("verify-contract", "verify exited 0 with %s: %s", rep, r)
	case r.code == 1 && (rep == nil || len(rep.Problems) == 0):
		c.fail("verify-contract", "verify exited 1 ('damage found') without a report naming damage: %s", r)
	case r.code != 0 && r.code != 1:
		c.fail("verify-ran", "verify could not run: %s", r)
	}
	w.sum.add(c.f.kind, "verify runs", 1)
	return rep, r
}

// versionJSON is one entry of `versions -o json`.
type versionJSON struct {
	ID     string `json:"id"`
	Status string `json:"status"`
	Etcd   *struct {
		Revision int64 `json:"revision"`
	} `json:"etcd"`
}

func (w *world) versions(c *checker) ([]versionJSON, bool) {
	r := w.kk(time.Minute, "versions", "-o", "json")
	var vs []versionJSON
	if r.code != 0 {
		c.fail("versions", "versions: %s", r)
		return nil, false
	}
	if err := json.Unmarshal([]byte(r.stdout), &vs); err != nil {
		c.fail("versions", "versions -o json: %v: %s", err, r)
		return nil, false
	}
	return vs, true
}

// expect is what a fault may and must do to the store.
type expect struct {
	// clean: nothing was damaged on purpose; verify must find nothing.
	clean bool
	// detect: the store was damaged in a way verify must report.
	detect bool
	// mayVanish lets versions leave the store (a prune's, a deleted
	// manifest's); nil: none may.
	mayVanish func(id string) bool
	// adopt gives the truth of a version that appeared during the fault
	// (a killed backup that committed, the agent's); nil: none may.
	adopt func(v versionJSON) *versionTruth
}

// auditResult is what verify said after a fault.
type auditResult struct {
	clean  bool            // verify exited 0
	report bool            // verify gave a report
	named  map[string]bool // versions verify calls damaged
	global bool            // verify calls every version damaged (config, no report)
	kinds  map[string]bool // kinds of the problems found
}

// good reports whether verify calls version id good.
func (a auditResult) good(id string) bool { return !a.global && !a.named[id] }

// audit is the check after every fault: verify tells the truth, every
// version verify calls good restores byte-identical (files and etcd),
// and a version verify calls damaged never restores silently wrong.
func (w *world) audit(c *checker, exp expect) auditResult {
	c.t.Helper()
	rep, vr := w.verify(c)
	if exp.clean && (vr.code != 0 || rep == nil || len(rep.Problems) > 0) {
		c.fail("verify-truth", "nothing was damaged on purpose, yet verify says %s: %s", rep, vr)
	}
	if exp.detect && vr.code == 0 {
		c.fail("verify-truth", "the store was damaged (%s), verify says clean: %s", c.f.detail, vr)
	}
	ar := auditResult{clean: vr.code == 0, report: rep != nil, named: map[string]bool{}, global: rep == nil, kinds: map[string]bool{}}
	if rep != nil {
		for _, p := range rep.Problems {
			for _, v := range p.Versions {
				ar.named[v] = true
			}
			ar.kinds[p.Kind] = true
			if p.Kind == "config" {
				ar.global = true
			}
		}
	}
	vs, ok := w.versions(c)
	if !ok {
		if !exp.detect {
			c.lost("the store's versions cannot be listed after %s", c.f)
		} else {
			w.sum.add(c.f.kind, "versions unreachable (store refused)", len(w.live()))
		}
		return ar
	}
	listed := map[string]bool{}
	for _, v := range vs {
		listed[v.ID] = true
	}
	for _, id := range w.live() {
		if listed[id] {
			continue
		}
		w.gone[id] = true // reported once
		switch {
		case exp.mayVanish != nil && exp.mayVanish(id):
		case ar.named[id]:
			w.sum.add(c.f.kind, "versions destroyed by the damage (named by verify)", 1)
		default:
			c.lost("version %s (%s) is no longer in the store", id, w.truth[id].by)
		}
	}
	for _, v := range vs {
		vt := w.truth[v.ID]
		if vt == nil && exp.adopt != nil {
			if vt = exp.adopt(v); vt != nil {
				w.truth[v.ID] = vt
			}
		}
		if vt == nil {
			c.fail("truth", "version %s appeared without a backup the test knows of", v.ID)
			continue
		}
		w.checkVersion(c, v, vt, ar.good(v.ID))
	}
	return ar
}

// checkVersion restores one version's files and etcd and compares them
// with the truth.
func (w *world) checkVersion(c *checker, v versionJSON, vt *versionTruth, good bool) {
	c.t.Helper()
	kind := c.f.kind
	if good {
		w.sum.add(kind, "versions called good by verify", 1)
	} else {
		w.sum.add(kind, "versions called damaged by verify", 1)
	}
	say := "called damaged by verify"
	if good {
		say = "called good by verify"
	}
	to := filepath.Join(w.t.TempDir(), "files")
	r := w.kk(2*time.Minute, "restore", "files", "--version", v.ID, "--to", to)
	switch {
	case r.code != 0 && good:
		c.lost("version %s (%s): restore files failed: %s", v.ID, say, r)
	case r.code != 0:
		w.sum.add(kind, "damaged versions refused by restore", 1)
	default:
		if diffs := compareTree(to, w.plan, vt.files); len(diffs) > 0 {
			c.lost("version %s (%s, %s): restore files succeeded with %d difference(s): %s", v.ID, say, vt.by, len(diffs), clip(strings.Join(diffs, "; "), 1500))
		} else {
			w.sum.add(kind, "file restores byte-identical", 1)
		}
	}
	os.RemoveAll(to)

	if vt.etcdRev == 0 {
		return
	}
	if v.Etcd == nil || v.Etcd.Revision != vt.etcdRev {
		// A version committed without etcd (status etcd-failed) after a
		// fault is no loss if the fault caused it; one that had etcd and
		// lost it is.
		if good {
			c.lost("version %s (%s) lost its etcd snapshot record (listed as %+v, was revision %d)", v.ID, say, v.Etcd, vt.etcdRev)
		}
		return
	}
	w.checkEtcd(c, v.ID, vt.etcdRev, good, say, nil)
}

// checkEtcd restores a version's etcd (extra: --revision and the like)
// and compares the data dir with etcd at rev. Once per world, a real
// etcd is started on the result.
func (w *world) checkEtcd(c *checker, id string, rev int64, good bool, say string, extra []string) {
	c.t.Helper()
	kind := c.f.kind
	want, err := w.etcdAt(rev)
	if err != nil {
		c.t.Fatal(err)
	}
	to := filepath.Join(w.t.TempDir(), "etcd")
	defer os.RemoveAll(to)
	args := append([]string{"restore", "etcd", "--version", id, "--to", to}, extra...)
	serve := good && !w.served && len(extra) == 0
	peer := ""
	if serve {
		if peer, err = freePeerURL(); err != nil {
			c.t.Fatal(err)
		}
		name := w.root.Opts.NodeName
		args = append(args, "--name", name, "--initial-cluster", name+"="+peer, "--initial-advertise-peer-urls", peer)
	}
	r := w.kk(2*time.Minute, args...)
	what := fmt.Sprintf("version %s (%s) etcd at revision %d", id, say, rev)
	if r.code != 0 {
		if good {
			c.lost("%s: restore etcd failed: %s", what, r)
		} else {
			w.sum.add(kind, "damaged versions refused by restore", 1)
		}
		return
	}
	got, maxRev, err := restoredKV(to)
	if err != nil {
		c.lost("%s: restore etcd succeeded but the data dir is unreadable: %v", what, err)
		return
	}
	if diffs := compareKV(got, want); len(diffs) > 0 {
		c.lost("%s: restore etcd succeeded with %d difference(s): %s", what, len(diffs), clip(strings.Join(diffs, "; "), 1000))
		return
	}
	if maxRev < 1_000_000_000 {
		c.fail("etcd-bump", "%s: the restored db's newest revision is %d, without the 1e9 bump", what, maxRev)
	}
	w.sum.add(kind, "etcd restores key-identical", 1)
	if serve {
		w.served = true
		sgot, srev, err := serveRestored(to, w.root.Opts.NodeName, peer)
		if err != nil {
			c.lost("%s: etcd does not start on the restored data dir: %v", what, err)
			return
		}
		if diffs := compareKV(sgot, want); len(diffs) > 0 {
			c.lost("%s: etcd started on the restored dir serves %d difference(s): %s", what, len(diffs), clip(strings.Join(diffs, "; "), 1000))
			return
		}
		if srev < 1_000_000_000 {
			c.fail("etcd-bump", "%s: etcd on the restored dir is at revision %d, without the 1e9 bump", what, srev)
		}
		w.sum.add(kind, "etcd servers started on a restore", 1)
	}
}

// nextBackup: after the fault, (repair where the store was damaged,)
// back up again; the new version must be good and restore exact.
func (w *world) nextBackup(c *checker, damaged bool) {
	c.t.Helper()
	if damaged {
		if repairAvailable(w) {
			// 0: the store is whole; 1: versions remain damaged (their
			// data is gone); 2: repair could not run.
			r := w.kk(3*time.Minute, "repair", "--read-data", "-o", "json")
			switch r.code {
			case 0:
			case 1:
				w.sum.add(c.f.kind, "repairs leaving versions damaged", 1)
			default:
				c.fail("repair", "repair --read-data after %s: %s", c.f, r)
			}
			w.sum.add(c.f.kind, "repairs", 1)
		} else {
			w.sum.add(c.f.kind, "next backups without repair (no `kubekeep repair`)", 1)
		}
	}
	w.mutate(1)
	id := w.backup(c, "next backup after "+c.f.String())
	if id == "" {
		return
	}
	rep, _ := w.verify(c)
	if rep == nil {
		c.fail("next-backup", "verify after the next backup %s gave no report", id)
		return
	}
	for _, p := range rep.Problems {
		for _, v := range p.Versions {
			if v == id {
				c.fail("next-backup", "the next backup %s is damaged from birth: %s %s: %s", id, p.Kind, p.Object, clip(p.Detail, 300))
			}
		}
	}
	vs, ok := w.versions(c)
	if !ok {
		return
	}
	for _, v := range vs {
		if v.ID == id {
			w.checkVersion(c, v, w.truth[id], true)
			w.sum.add(c.f.kind, "next backups good", 1)
			return
		}
	}
	c.fail("next-backup", "the next backup %s is not listed", id)
}

var repairProbe = map[string]bool{}

// repairAvailable reports whether this kubekeep has a repair command.
func repairAvailable(w *world) bool {
	if v, ok := repairProbe[w.bin]; ok {
		return v
	}
	r := startCLI(w.t, w.procs, w.bin, time.Minute, "repair", "--help").wait()
	ok := r.code == 0 && strings.Contains(r.stdout, "repair")
	repairProbe[w.bin] = ok
	return ok
}
