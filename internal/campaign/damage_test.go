package campaign

import (
	"bytes"
	"encoding/binary"
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

// storeKinds are the kinds of file in a store (rsyncish/doc.go, Layout),
// each with the glob that finds them.
var storeKinds = []struct{ kind, glob string }{
	{"config", "config.json"},
	{"manifest", "versions/*.manifest"},
	{"index", "index/*.idx"},
	{"midx", "index.midx"},
	{"pack", "packs/*.pack"},
	{"journal", "journals/*/*.seg"},
	{"verified", "verified/*"},
	{"rescue-kit", "kubekeep"},
	{"tmp", "tmp/*"},
}

var mutations = []string{"flip", "truncate", "delete"}

// damageFile flips one bit, truncates or deletes path. A flipped file
// keeps its mtime, as bit rot does.
func damageFile(rng *rand.Rand, path, mutation string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	switch mutation {
	case "flip":
		if fi.Size() == 0 {
			return "", fmt.Errorf("%s is empty: nothing to flip", path)
		}
		off, bit := rng.Int64N(fi.Size()), rng.IntN(8)
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			return "", err
		}
		b := make([]byte, 1)
		if _, err := f.ReadAt(b, off); err != nil {
			f.Close()
			return "", err
		}
		b[0] ^= 1 << bit
		if _, err := f.WriteAt(b, off); err != nil {
			f.Close()
			return "", err
		}
		if err := f.Close(); err != nil {
			return "", err
		}
		st := fi.Sys().(*syscall.Stat_t)
		atime := time.Unix(st.Atim.Sec, st.Atim.Nsec)
		if err := os.Chtimes(path, atime, fi.ModTime()); err != nil {
			return "", err
		}
		return fmt.Sprintf("bit %d of byte %d of %d flipped", bit, off, fi.Size()), nil
	case "truncate":
		n := int64(0)
		if fi.Size() > 1 && rng.IntN(4) != 0 {
			n = rng.Int64N(fi.Size())
		}
		return fmt.Sprintf("truncated from %d to %d bytes", fi.Size(), n), os.Truncate(path, n)
	case "delete":
		return "deleted", os.Remove(path)
	}
	return "", fmt.Errorf("unknown mutation %q", mutation)
}

// runDamage: every mutation of one random file of every kind, each on a
// fresh copy of one golden store.
func runDamage(t *testing.T, bin string, k knobs, sum *summary) {
	rng := rngFor(k.seed, "damage")
	w := newWorld(t, bin, rng, sum, "damage", worldOptions{})
	setup := setupChecker(t, w, k)
	for i := 0; i < 2; i++ {
		w.mutate(1)
		w.backup(setup, "setup")
	}
	// The agent: versions of its own and etcd delta segments.
	files := w.state
	revStart, revEnd, r, running := w.runAgent(setup, 2500*time.Millisecond, func(p *proc) result {
		p.signal(syscall.SIGTERM)
		return p.wait()
	})
	if !running || r.code != 0 {
		setup.fail("agent", "the agent (stopped with SIGTERM) should have run and exited 0: %s", r)
	}
	vs, _ := w.versions(setup)
	adopt := adoptAgent(setup, files, revStart, revEnd)
	for _, v := range vs {
		if w.truth[v.ID] == nil {
			if vt := adopt(v); vt != nil {
				w.truth[v.ID] = vt
			}
		}
	}
	w.mutate(1)
	last := w.backup(setup, "setup")
	// A verification mark.
	if r := w.kk(3*time.Minute, "drill", "--version", last); r.code != 0 {
		setup.fail("drill", "drill: %s", r)
	}
	for _, sk := range storeKinds {
		if m, _ := filepath.Glob(filepath.Join(w.store, sk.glob)); len(m) == 0 {
			setup.fail("setup", "the golden store has no %s file (%s)", sk.kind, sk.glob)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	golden := filepath.Join(t.TempDir(), "golden")
	if out, err := exec.Command("cp", "-a", w.store, golden).CombinedOutput(); err != nil {
		t.Fatalf("cp -a: %v %s", err, out)
	}
	goldenTruth := map[string]*versionTruth{}
	for id, vt := range w.truth {
		goldenTruth[id] = vt
	}
	goldenState := w.state

	type dcase struct{ kind, glob, mutation string }
	var cases []dcase
	for i := 0; i < k.n; i++ {
		for _, sk := range storeKinds {
			for _, m := range mutations {
				cases = append(cases, dcase{sk.kind, sk.glob, m})
			}
		}
	}
	for i, dc := range cases {
		t.Run(fmt.Sprintf("%02d-%s-%s", i, dc.kind, dc.mutation), func(t *testing.T) {
			w.rng = rngFor(k.seed, t.Name()) // each case its own choices
			// A fresh copy of the golden store.
			if err := os.RemoveAll(w.store); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command("cp", "-a", golden, w.store).CombinedOutput(); err != nil {
				t.Fatalf("cp -a: %v %s", err, out)
			}
			w.truth, w.gone, w.state = map[string]*versionTruth{}, map[string]bool{}, goldenState
			for id, vt := range goldenTruth {
				w.truth[id] = vt
			}
			f := fault{kind: "damage", target: dc.kind, mutation: dc.mutation}
			c := newChecker(t, w, f, k.strict)
			defer c.finish()
			w.damageCase(c, dc.glob)
		})
	}
}

func (w *world) damageCase(c *checker, glob string) {
	files, _ := filepath.Glob(filepath.Join(w.store, glob))
	sort.Strings(files)
	if c.f.mutation == "flip" {
		var nonEmpty []string
		for _, f := range files {
			if fi, err := os.Stat(f); err == nil && fi.Size() > 0 {
				nonEmpty = append(nonEmpty, f)
			}
		}
		files = nonEmpty
	}
	if len(files) == 0 {
		c.t.Skipf("no %s file to %s", c.f.target, c.f.mutation)
	}
	victim := files[w.rng.IntN(len(files))]
	rel, _ := filepath.Rel(w.store, victim)
	var seg [2]int64
	var spansBefore map[string][2]int64
	if c.f.target == "journal" {
		parts := strings.Split(strings.TrimSuffix(filepath.Base(victim), ".seg"), "-")
		seg[0], _ = strconv.ParseInt(parts[0], 10, 64)
		seg[1], _ = strconv.ParseInt(parts[1], 10, 64)
		spansBefore = segmentSpans(c.t, w.store)
	}
	detail, err := damageFile(w.rng, victim, c.f.mutation)
	if err != nil {
		c.t.Fatal(err)
	}
	c.f.detail = rel + " " + detail

	exp := expect{}
	// None is version data: the check copy is scratch, the multi-pack
	// index a cache, and the rescue kit is rewritten by the next backup
	// (checkRescueKit), whether or not verify reports it.
	harmless := c.f.target == "tmp" || c.f.target == "rescue-kit" || c.f.target == "midx"
	switch {
	case c.f.target == "tmp", c.f.target == "midx":
		// The multi-pack index is a cache of the pack indexes: damage
		// there costs readers time (verify warns), never a version.
		exp.clean = true
	case harmless:
	case c.f.mutation != "delete":
		exp.detect = true // every byte of these is checksummed
	case c.f.target == "manifest":
		id := strings.TrimSuffix(filepath.Base(victim), ".manifest")
		exp.mayVanish = func(v string) bool { return v == id } // a deleted manifest is a deleted version
	case c.f.target == "config", c.f.target == "index", c.f.target == "pack":
		exp.detect = true // every version needs config.json; every pack's blobs are referenced
	case c.f.target == "journal":
		// A deleted segment that held revisions no other one holds, with
		// later ones, is a gap in the chain (the newest one gone just ends
		// the chain earlier). What a segment holds is what its content
		// says, (from, to]: a progress mark holds none though it is named
		// R-R like a segment holding revision R, and a merged segment and
		// the ones it replaced hold the same revisions while both are
		// there.
		spans := map[string][2]int64{}
		for name, sp := range spansBefore {
			if name != filepath.Base(victim) {
				spans[name] = sp
			}
		}
		if r, ok := newHole(spansBefore, spans); ok {
			exp.detect = true
			c.f.detail += fmt.Sprintf(", revision %d no other segment holds, before later ones", r)
		}
	}
	ar := w.audit(c, exp)

	if c.f.target == "journal" {
		w.checkJournalGap(c, seg, ar)
	} else if segments(w.store) != nil {
		w.checkPITR(c, ar)
	}
	w.nextBackup(c, !harmless)
	if c.f.target == "rescue-kit" {
		w.checkRescueKit(c)
	}
}

// checkJournalGap: etcd restored to the damaged segment's last revision,
// from the newest version taken before it, must be exact or refused,
// never an older state passed off as that revision.
func (w *world) checkJournalGap(c *checker, seg [2]int64, ar auditResult) {
	var base *versionTruth
	for _, id := range w.live() {
		vt := w.truth[id]
		if vt.etcdRev > 0 && vt.etcdRev < seg[0] && (base == nil || vt.etcdRev > base.etcdRev) {
			base = vt
		}
	}
	if base == nil {
		return
	}
	// Refusing is right whatever verify said: the deltas are damaged.
	say := "replaying the damaged segment"
	w.checkEtcd(c, base.id, seg[1], false, say, []string{"--revision", strconv.FormatInt(seg[1], 10)})
}

// checkRescueKit: after the next backup the store's kubekeep binary is
// the binary that wrote it, byte for byte.
func (w *world) checkRescueKit(c *checker) {
	want, err := os.ReadFile(w.bin)
	if err != nil {
		c.t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(w.store, "kubekeep"))
	if err != nil {
		c.fail("rescue-kit", "after %s and the next backup the store has no rescue kit binary: %v", c.f, err)
		return
	}
	if !bytes.Equal(got, want) {
		c.fail("rescue-kit", "after %s and the next backup, the store's rescue kit binary is not kubekeep (%d bytes, want %d)", c.f, len(got), len(want))
		return
	}
	w.sum.add(c.f.kind, "rescue kits intact after the next backup", 1)
}

// segmentSpans reads what every journal segment of store holds by its
// content, (fromRev, toRev], from the two formats' headers as they are
// documented (rsyncish/format: "KKJSEG01", first, last, time, length,
// then the data; etcdsnap/snapread's segment: "KKDS", version, flags,
// fromRev and toRev as uvarints), not through kubekeep's decoders.
func segmentSpans(t *testing.T, store string) map[string][2]int64 {
	t.Helper()
	paths, _ := filepath.Glob(filepath.Join(store, "journals", "*", "*.seg"))
	out := map[string][2]int64{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		const frame = 8 + 8 + 8 + 8 + 4
		if len(b) < frame+6 || string(b[:8]) != "KKJSEG01" || string(b[frame:frame+4]) != "KKDS" {
			t.Fatalf("journal segment %s: not in the documented format", p)
		}
		r := bytes.NewReader(b[frame+6:])
		from, err1 := binary.ReadUvarint(r)
		to, err2 := binary.ReadUvarint(r)
		if err1 != nil || err2 != nil || to < from {
			t.Fatalf("journal segment %s: header (%d, %d] %v %v", p, from, to, err1, err2)
		}
		out[filepath.Base(p)] = [2]int64{int64(from), int64(to)}
	}
	return out
}

// newHole returns a revision the segments of before held and those of
// after do not, below the newest revision after holds.
func newHole(before, after map[string][2]int64) (int64, bool) {
	held := func(spans map[string][2]int64) (map[int64]bool, int64) {
		m := map[int64]bool{}
		var top int64
		for _, sp := range spans {
			for r := sp[0] + 1; r <= sp[1]; r++ {
				m[r] = true
			}
			top = max(top, sp[1])
		}
		return m, top
	}
	was, _ := held(before)
	now, top := held(after)
	var hole int64
	for r := range was {
		if !now[r] && r < top && (hole == 0 || r < hole) {
			hole = r
		}
	}
	return hole, hole != 0
}
