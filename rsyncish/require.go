package rsyncish

import (
	"errors"
	"fmt"
	"sort"

	"github.com/kubekeep/kubekeep/rsyncish/format"
)

// Requirement is data outside a version's own manifest that the version
// needs to be restored whole: Stream of another Version, or the revisions
// (After, Through] of Journal (IfHeld: the stream only if that version
// holds it). A journal version of etcd requires its
// base's snapshot and key index streams and the delta journal from the
// base's revision to its own.
type Requirement = format.Requirement

// Require records that the version being written needs reqs, after
// checking that the store holds them now as far as that is known without
// reading data: the required version's manifest and stream, every block
// of that stream in a pack that is present, of its recorded size and not
// named rotten by the damage record; the journal's segments covering the
// revisions with no hole and no break (their checksums are checked when
// they are read, by the caller that replays them and by Verify). On error
// nothing is recorded, and the caller should not build on that data (a
// backup takes a full copy instead). What is recorded goes into the
// manifest's header at Commit; Verify then names the version damaged
// whenever what it requires is, Repair lists it, Prune keeps what it
// requires.
func (w *VersionWriter) Require(reqs ...Requirement) error {
	var add []Requirement
	for _, r := range reqs {
		if err := r.Check(); err != nil {
			return err
		}
		var err error
		if r.Journal != "" {
			err = w.s.journalHolds(r)
		} else {
			err = w.streamHeld(r)
		}
		if errors.Is(err, errNoStream) && r.IfHeld {
			continue
		}
		if err != nil {
			return fmt.Errorf("requires %s: %w", r, err)
		}
		r.IfHeld = false
		add = append(add, r)
	}
	w.requires = append(w.requires, add...)
	return nil
}

var errNoStream = errors.New("no such stream")

// streamHeld checks that r.Stream of r.Version is whole as far as the
// index knows.
func (w *VersionWriter) streamHeld(r Requirement) error {
	if r.Version == w.id {
		return errors.New("a version cannot require itself")
	}
	// Only the one entry is decoded: a base's manifest lists its whole
	// snapshot (8 GiB: 131,072 extents, ~6 MB of JSON), and every journal
	// version built on it requires it.
	e, err := w.s.findEntry(r.Version, format.TypeStream, r.Stream)
	if err != nil {
		return err
	}
	if e == nil {
		return fmt.Errorf("version %s: %w", r.Version, errNoStream)
	}
	for i := range e.n() {
		x := e.mustExtent(i)
		if x.ID.IsZero() {
			continue
		}
		l, ok := w.x.get(x.ID)
		if !ok || l.bad || uint64(x.Off)+uint64(x.Len) > uint64(l.len) {
			return fmt.Errorf("block %s is not held whole (missing, in a missing or damaged pack, or found rotten)", x.ID.Short())
		}
	}
	return nil
}

// journalHolds checks that the journal's segment names cover r's
// revisions with no hole and no break.
func (s *Store) journalHolds(r Requirement) error {
	if r.Through == r.After {
		return nil
	}
	j, err := s.Journal(r.Journal)
	if err != nil {
		return err
	}
	segs, err := j.List()
	if err != nil {
		return err
	}
	breaks, err := j.Breaks()
	if err != nil {
		return err
	}
	needed, err := chain(segs, breaks, r.After, r.Through)
	if err != nil {
		return err
	}
	bad := s.damagedSegments()[r.Journal]
	for _, si := range needed {
		if bad[si.File] {
			return fmt.Errorf("segment %s (revisions %d-%d) was found damaged by verify", si.File, si.First, si.Last)
		}
	}
	return nil
}

// badSegments is what journals found damaged, for the damage record.
func (v *verifier) badSegments() map[string]map[string]bool {
	out := map[string]map[string]bool{}
	for name, jc := range v.journalState {
		for f := range jc.bad {
			if out[name] == nil {
				out[name] = map[string]bool{}
			}
			out[name][f] = true
		}
	}
	return out
}

// journalReadable checks that the journal's segments cover r's revisions
// and that every segment a replay reads is whole (read and checked).
func (s *Store) journalReadable(r Requirement) error {
	if r.Through == r.After {
		return nil
	}
	j, err := s.Journal(r.Journal)
	if err != nil {
		return err
	}
	segs, err := j.List()
	if err != nil {
		return err
	}
	breaks, _ := j.Breaks()
	needed, err := chain(segs, breaks, r.After, r.Through)
	if err != nil {
		return err
	}
	for _, si := range needed {
		if _, err := j.Read(si); err != nil {
			return err
		}
	}
	return nil
}

// chain returns the segments of segs (ordered by first revision) a replay
// from after to through reads, as Journal.Needed picks them, or why their
// names do not cover (after, through]: a hole, or a declared break in it.
func chain(segs []SegmentInfo, breaks []Break, after, through uint64) ([]SegmentInfo, error) {
	if through <= after {
		return nil, nil
	}
	for _, b := range breaks {
		if b.To > after && b.From <= through {
			return nil, fmt.Errorf("the journal restarted after a break: revisions %d to %d were never recorded", b.From, b.To)
		}
	}
	var needed []SegmentInfo
	covered := after
	for _, si := range segs {
		if si.Last <= after {
			continue
		}
		if si.First > covered+1 {
			return nil, fmt.Errorf("no segment holds revisions %d to %d", covered+1, si.First-1)
		}
		needed = append(needed, si)
		covered = max(covered, si.Last)
		if covered >= through {
			return needed, nil
		}
	}
	return nil, fmt.Errorf("the journal ends at revision %d, not %d", covered, through)
}

// requirements names the versions whose requirements are not met: a
// required version missing, its manifest damaged, the required stream
// absent or referring to blocks without a good copy; a required journal
// missing, its segments not covering the revisions, or one of the
// segments a replay reads damaged. One problem per cause, naming every
// version it damages.
func (v *verifier) requirements() {
	type group struct {
		p        Problem
		versions map[string]bool
	}
	groups := map[string]*group{}
	var order []string
	add := func(vid, object, detail string) {
		key := object + "\x00" + detail
		g := groups[key]
		if g == nil {
			g = &group{p: Problem{Kind: "requires", Object: object, Detail: detail}, versions: map[string]bool{}}
			groups[key] = g
			order = append(order, key)
		}
		g.versions[vid] = true
	}
	vids := make([]string, 0, len(v.requires))
	for vid := range v.requires {
		vids = append(vids, vid)
	}
	sort.Strings(vids)
	for _, vid := range vids {
		for _, r := range v.requires[vid] {
			if r.Journal != "" {
				v.journalRequirement(vid, r, add)
				continue
			}
			obj := versionsDir + "/" + r.Version + manifestExt
			switch {
			case !v.versions[r.Version]:
				add(vid, obj, fmt.Sprintf("requires %s, which is not in the store", r))
			case v.badManifest[r.Version]:
				add(vid, obj, fmt.Sprintf("requires %s, whose manifest is damaged", r))
			case !v.streams[r.Version][r.Stream]:
				add(vid, obj, fmt.Sprintf("requires %s, which that version does not hold", r))
			case v.badStreams[r.Version][r.Stream] != "":
				add(vid, v.badStreams[r.Version][r.Stream], fmt.Sprintf("requires %s, which lost data (see the problem of that store file)", r))
			}
		}
	}
	for _, key := range order {
		g := groups[key]
		g.p.Versions = sortedKeys(g.versions)
		v.problem(g.p)
	}
}

// journalRequirement checks one required journal range against what
// journals found.
func (v *verifier) journalRequirement(vid string, r Requirement, add func(vid, object, detail string)) {
	if r.Through == r.After {
		return
	}
	obj := journalsDir + "/" + r.Journal
	jc := v.journalState[r.Journal]
	if jc == nil {
		add(vid, obj, fmt.Sprintf("requires %s; the store holds no such journal", r))
		return
	}
	needed, err := chain(jc.segs, jc.breaks, r.After, r.Through)
	if err != nil {
		add(vid, obj, fmt.Sprintf("requires %s: %v", r, err))
		return
	}
	for _, si := range needed {
		if why, bad := jc.bad[si.File]; bad {
			add(vid, obj+"/"+si.File, fmt.Sprintf("requires %s; segment %s (revisions %d-%d) is damaged: %s", r, si.File, si.First, si.Last, why))
			return
		}
	}
	for _, h := range jc.holes {
		if h.From <= r.Through && h.To > r.After {
			add(vid, obj, fmt.Sprintf("requires %s; %s", r, h.detail))
			return
		}
	}
	// By content from r.After: the chain's first segment may be a mark
	// whose one-revision segment before it was lost (no hole between
	// segments shows that).
	covered := r.After
	for _, si := range needed {
		sp, ok := jc.spans[si.File]
		if !ok {
			covered = max(covered, si.Last)
			continue
		}
		if sp.after > covered {
			g := Gap{From: covered + 1, To: sp.after}
			add(vid, obj, fmt.Sprintf("requires %s; %s", r, holeDetail(g, jc.segs, jc.spanList())))
			return
		}
		covered = max(covered, sp.through)
	}
}

// journalCheck is what journals found of one journal, for requirements.
type journalCheck struct {
	segs   []SegmentInfo
	breaks []Break
	bad    map[string]string // segment file -> what is wrong with it
	// holes are revisions no segment holds by content that the names say
	// are held (journal_span.go), each with its problem's detail.
	holes []contentHole
	spans map[string]segSpan // by segment file, those read and understood
}

func (jc *journalCheck) spanList() []segSpan {
	out := make([]segSpan, len(jc.segs))
	for i, si := range jc.segs {
		out[i] = jc.spans[si.File]
	}
	return out
}

type contentHole struct {
	Gap
	detail string
}

// noteStream records, while manifests checks version vid, that it holds
// stream name and, when bad is not "", the store file at fault for a block
// of it that has no good copy.
func (v *verifier) noteStream(vid, name, bad string) {
	if v.streams[vid] == nil {
		v.streams[vid] = map[string]bool{}
	}
	v.streams[vid][name] = true
	if bad == "" {
		return
	}
	if v.badStreams[vid] == nil {
		v.badStreams[vid] = map[string]string{}
	}
	if v.badStreams[vid][name] == "" {
		v.badStreams[vid][name] = bad
	}
}

// dependents returns, for the damaged versions given, every version that
// requires a stream of one of them (repair's list): reqs is each version's
// requirements.
func dependents(damaged map[string][]string, reqs map[string][]Requirement) map[string][]string {
	out := map[string][]string{}
	for vid, rs := range reqs {
		for _, r := range rs {
			if r.Journal != "" {
				continue
			}
			paths, bad := damaged[r.Version]
			if !bad {
				continue
			}
			lost := paths == nil // the manifest itself
			for _, p := range paths {
				lost = lost || p == r.Stream
			}
			if lost {
				out[vid] = append(out[vid], r.String())
			}
		}
	}
	for vid := range out {
		sort.Strings(out[vid])
		out[vid] = compactStrings(out[vid])
	}
	return out
}

func compactStrings(s []string) []string {
	var out []string
	for i, x := range s {
		if i == 0 || x != s[i-1] {
			out = append(out, x)
		}
	}
	return out
}
