package rsyncish

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/kubekeep/kubekeep/rsyncish/format"
)

// Problem is one piece of damage, with what it damages.
type Problem struct {
	// Kind: manifest, index, pack, blob, path, verified, journal, config,
	// damage (the damage record), aux (the rescue kit).
	Kind string `json:"kind"`
	// Object is the store file at fault (relative to the store).
	Object string `json:"object,omitempty"`
	Detail string `json:"detail"`
	// Versions and Paths are the versions and host paths (or stream names)
	// whose content is lost or unreliable because of it.
	Versions []string `json:"versions,omitempty"`
	Paths    []string `json:"paths,omitempty"`
}

func (p Problem) String() string {
	var b strings.Builder
	if p.Object != "" {
		fmt.Fprintf(&b, "%s %s: %s", p.Kind, p.Object, p.Detail)
	} else {
		fmt.Fprintf(&b, "%s: %s", p.Kind, p.Detail)
	}
	if len(p.Versions) > 0 {
		fmt.Fprintf(&b, "; damages version(s) %s", strings.Join(p.Versions, ", "))
	}
	if len(p.Paths) > 0 {
		const maxPaths = 10
		ps := p.Paths
		more := ""
		if len(ps) > maxPaths {
			more = fmt.Sprintf(" and %d more", len(ps)-maxPaths)
			ps = ps[:maxPaths]
		}
		fmt.Fprintf(&b, " at %s%s", strings.Join(ps, ", "), more)
	}
	return b.String()
}

// Report is the outcome of Verify.
type Report struct {
	Versions  int       `json:"versions"`
	Packs     int       `json:"packs"`
	Blobs     int       `json:"blobs"`
	Segments  int       `json:"segments"`
	BytesRead int64     `json:"bytesRead"`
	ReadData  bool      `json:"readData"`
	Problems  []Problem `json:"problems"`
	// Warnings are harmless findings (leftovers a Lock will clean).
	Warnings []string `json:"warnings,omitempty"`
}

// Clean reports whether no problem was found.
func (r *Report) Clean() bool { return len(r.Problems) == 0 }

// Verify checks the store: config.json, every index, manifest,
// verification mark and journal segment against its checksum; every pack
// against its index's size; every referenced blob for presence; every
// journal for gaps; every version's requirements (Require: the streams
// of other versions and journal revisions it needs, a version being
// named damaged when they are); the rescue kit against its recorded
// hashes; with readData, every blob of every pack against its hash.
// Holding the lock gives a consistent view (a concurrent prune could
// otherwise remove what it is looking at), and lets Verify record the
// rotten blobs and damaged journal segments it found in the damage
// record, which keeps every later backup from referring to them and every
// later verify reporting them until repair. A non-nil error means the
// check itself could not run.
func (s *Store) Verify(ctx context.Context, readData bool) (*Report, error) {
	v := &verifier{s: s, ctx: ctx, r: &Report{ReadData: readData, Problems: []Problem{}},
		blobs: map[format.ID]*blobState{}, hits: map[format.ID]*hit{}, rot: rotten{}}
	v.config()
	if p := s.progress(); p != nil && readData {
		p.Bytes(s.packBytes())
	}
	if err := v.packs(); err != nil {
		return nil, err
	}
	if err := v.manifests(); err != nil {
		return nil, err
	}
	v.blobProblems()
	if err := v.marks(); err != nil {
		return nil, err
	}
	if err := v.journals(); err != nil {
		return nil, err
	}
	v.requirements()
	v.aux()
	if w := s.checkMidx(); w != "" {
		v.r.Warnings = append(v.r.Warnings, w)
	}
	if s.holdsLock() == nil {
		if err := s.writeDamageRecord(v.rot, v.auxBad, v.badSegments()); err != nil {
			v.r.Warnings = append(v.r.Warnings, "could not record the damage found: "+err.Error())
		}
	}
	return v.r, nil
}

// verifier is the state of one Verify.
type verifier struct {
	s   *Store
	ctx context.Context
	r   *Report
	// blobs holds, per blob, its good copies and why a copy is bad.
	blobs map[format.ID]*blobState
	hits  map[format.ID]*hit
	// rot and auxBad are the damage record as it stands after this run.
	rot      rotten
	auxBad   []string
	versions map[string]bool
	// What requirements (require.go) are judged by: each version's
	// requirements, the streams it holds, the store file at fault for a
	// stream that lost a block, the versions whose manifest is damaged,
	// and what journals found of each journal.
	requires     map[string][]Requirement
	streams      map[string]map[string]bool
	badStreams   map[string]map[string]string
	badManifest  map[string]bool
	journalState map[string]*journalCheck
}

type blobState struct {
	good int    // copies in packs that are whole and not known rotten
	len  uint32 // length of a good copy
	why  string // what is wrong with a bad copy
	obj  string // the store file holding the bad copy
}

// hit is what a blob without a good copy damages.
type hit struct{ versions, paths map[string]bool }

func (v *verifier) blob(id format.ID) *blobState {
	b := v.blobs[id]
	if b == nil {
		b = &blobState{}
		v.blobs[id] = b
	}
	return b
}

func (v *verifier) problem(p Problem) { v.r.Problems = append(v.r.Problems, p) }

func (v *verifier) config() {
	const hint = " (every version is still readable; kubekeep repair rebuilds it from what the manifests record)"
	var cfg format.Config
	if data, err := readStoreFile(v.s.path(configFile)); err != nil {
		v.problem(Problem{Kind: "config", Object: configFile, Detail: err.Error() + hint})
	} else if err := format.UnsealJSON(data, &cfg); err != nil {
		v.problem(Problem{Kind: "config", Object: configFile, Detail: err.Error() + hint})
	}
}

// packs checks every index and its pack.
func (v *verifier) packs() error {
	s, r := v.s, v.r
	known, recorded, err := s.readDamage()
	if err != nil {
		v.problem(Problem{Kind: "damage", Object: damageFile, Detail: err.Error() + " (verify --read-data writes it anew)"})
	}
	idxEnts, err := readStoreDir(s.path(indexDir))
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	indexed := map[string]bool{}
	for _, e := range idxEnts {
		if err := v.ctx.Err(); err != nil {
			return err
		}
		id, ok := strings.CutSuffix(e.Name(), indexExt)
		if !ok {
			if _, tmp := tmpOwner(e.Name()); tmp {
				r.Warnings = append(r.Warnings, "leftover temp file "+indexDir+"/"+e.Name())
			}
			continue
		}
		indexed[id] = true
		obj := indexDir + "/" + e.Name()
		data, err := readStoreFile(s.path(indexDir, e.Name()))
		if err != nil {
			v.problem(Problem{Kind: "index", Object: obj, Detail: err.Error()})
			continue
		}
		entries, size, err := format.DecodeIndex(data)
		if err != nil {
			// Its blobs count as missing; the manifests that need them
			// are named below.
			v.problem(Problem{Kind: "index", Object: obj, Detail: err.Error()})
			continue
		}
		r.Packs++
		pobj := packsDir + "/" + id + packExt
		fi, err := os.Lstat(s.path(packsDir, id+packExt))
		if err != nil || !fi.Mode().IsRegular() || fi.Size() != size {
			detail := "missing"
			switch {
			case err == nil && !fi.Mode().IsRegular():
				detail = "not a regular file (" + fileKind(fi.Mode()) + ")"
			case err == nil:
				detail = fmt.Sprintf("%d bytes, its index says %d", fi.Size(), size)
			case !errors.Is(err, fs.ErrNotExist):
				detail = err.Error()
			}
			v.problem(Problem{Kind: "pack", Object: pobj, Detail: detail})
			for _, b := range entries {
				if st := v.blob(b.ID); st.why == "" {
					st.why, st.obj = "pack "+detail, pobj
				}
			}
			continue
		}
		r.Blobs += len(entries)
		var rot map[format.ID]string
		if r.ReadData {
			rot, err = v.checkPack(id, entries)
			if err != nil {
				return err
			}
		} else if known[id] != nil {
			rot = map[format.ID]string{}
			for bid := range known[id] {
				rot[bid] = "found rotten by verify --read-data on " + recorded.Format(time.RFC3339)
			}
		}
		for _, b := range entries {
			st := v.blob(b.ID)
			if why, bad := rot[b.ID]; bad {
				st.why, st.obj = why, pobj
				if v.rot[id] == nil {
					v.rot[id] = map[format.ID]bool{}
				}
				v.rot[id][b.ID] = true
				continue
			}
			st.good++
			st.len = b.Len
		}
	}
	packEnts, err := readStoreDir(s.path(packsDir))
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	for _, e := range packEnts {
		if id, ok := strings.CutSuffix(e.Name(), packExt); ok && !indexed[id] {
			r.Warnings = append(r.Warnings, "pack without index (leftover of an interrupted run, removed by the next backup or prune): "+packsDir+"/"+e.Name())
		}
	}
	return nil
}

// manifests checks every manifest: structure, safe paths, references.
func (v *verifier) manifests() error {
	s, r := v.s, v.r
	verEnts, err := readStoreDir(s.path(versionsDir))
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	v.versions = map[string]bool{}
	v.requires, v.streams, v.badStreams, v.badManifest = map[string][]Requirement{}, map[string]map[string]bool{}, map[string]map[string]string{}, map[string]bool{}
	for _, e := range verEnts {
		if err := v.ctx.Err(); err != nil {
			return err
		}
		vid, ok := strings.CutSuffix(e.Name(), manifestExt)
		if !ok {
			if _, tmp := tmpOwner(e.Name()); tmp {
				r.Warnings = append(r.Warnings, "leftover temp file "+versionsDir+"/"+e.Name())
			}
			continue
		}
		v.versions[vid] = true
		obj := versionsDir + "/" + e.Name()
		m, err := s.manifest(vid)
		if errors.Is(err, ErrNotFound) {
			continue // pruned while we looked
		}
		if err != nil {
			v.problem(Problem{Kind: "manifest", Object: obj, Detail: err.Error(), Versions: []string{vid}})
			v.badManifest[vid] = true
			continue
		}
		r.Versions++
		if len(m.Header.Requires) > 0 {
			v.requires[vid] = m.Header.Requires
		}
		for _, ent := range m.Entries {
			if ent.Type != format.TypeStream && !SafePath(ent.Path) {
				v.problem(Problem{Kind: "path", Object: obj, Detail: fmt.Sprintf("unsafe path %q (restore refuses it)", ent.Path), Versions: []string{vid}, Paths: []string{ent.Path}})
			}
			badObj := ""
			for _, x := range ent.Extents {
				if x.ID.IsZero() {
					continue
				}
				st := v.blobs[x.ID]
				if st != nil && st.good > 0 && uint64(x.Off)+uint64(x.Len) <= uint64(st.len) {
					continue
				}
				st = v.blob(x.ID)
				switch {
				case st.good > 0:
					st.why, st.obj = fmt.Sprintf("referenced at %d+%d beyond its %d bytes", x.Off, x.Len, st.len), ""
				case st.why == "":
					st.why = "referenced but in no pack index"
				}
				h := v.hits[x.ID]
				if h == nil {
					h = &hit{versions: map[string]bool{}, paths: map[string]bool{}}
					v.hits[x.ID] = h
				}
				h.versions[vid] = true
				h.paths[ent.Path] = true
				if badObj == "" {
					badObj = st.obj
					if badObj == "" {
						badObj = obj
					}
				}
			}
			if ent.Type == format.TypeStream {
				v.noteStream(vid, ent.Path, badObj)
			}
		}
	}
	return nil
}

// blobProblems reports bad blobs: one problem per damaged store object and
// kind of damage, not per blob (a lost pack holds hundreds of blobs), with
// the versions and paths that lose data because no good copy is left.
func (v *verifier) blobProblems() {
	ids := make([]format.ID, 0, len(v.blobs))
	for id, st := range v.blobs {
		if st.why != "" {
			ids = append(ids, id)
		}
	}
	sort.Slice(ids, func(a, b int) bool { return ids[a].String() < ids[b].String() })
	type group struct {
		p               *Problem
		n, spare        int
		versions, paths map[string]bool
	}
	groups := map[string]*group{}
	var order []string
	for _, id := range ids {
		st, h := v.blobs[id], v.hits[id]
		if h == nil && strings.HasPrefix(st.why, "pack ") {
			continue // already reported per pack, and no version lacks it
		}
		kind, _, _ := strings.Cut(st.why, " at offset")
		key := st.obj + "\x00" + kind
		g := groups[key]
		if g == nil {
			g = &group{p: &Problem{Kind: "blob", Object: st.obj}, versions: map[string]bool{}, paths: map[string]bool{}}
			groups[key] = g
			order = append(order, key)
		}
		g.n++
		if g.n == 1 {
			g.p.Detail = "blob " + id.Short() + ": " + st.why
		}
		if h == nil {
			g.spare++
			continue
		}
		for ver := range h.versions {
			g.versions[ver] = true
		}
		for p := range h.paths {
			g.paths[p] = true
		}
	}
	for _, key := range order {
		g := groups[key]
		if g.n > 1 {
			g.p.Detail = fmt.Sprintf("%d blobs, e.g. %s", g.n, g.p.Detail)
		}
		if g.spare == g.n {
			g.p.Detail += " (no version loses data: each has a good copy elsewhere or none refers to it; kubekeep repair rewrites the pack without it)"
		}
		g.p.Versions, g.p.Paths = sortedKeys(g.versions), sortedKeys(g.paths)
		if len(g.p.Versions) == 0 {
			g.p.Versions, g.p.Paths = nil, nil
		}
		v.problem(*g.p)
	}
}

// marks checks the verification marks.
func (v *verifier) marks() error {
	s, r := v.s, v.r
	marks, err := readStoreDir(s.path(verifiedDir))
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	for _, e := range marks {
		if _, tmp := tmpOwner(e.Name()); tmp {
			continue
		}
		if _, err := s.readVerification(e.Name()); err != nil {
			v.problem(Problem{Kind: "verified", Object: verifiedDir + "/" + e.Name(), Detail: err.Error(), Versions: []string{e.Name()}})
		} else if !v.versions[e.Name()] {
			r.Warnings = append(r.Warnings, "verification mark of a pruned version: "+verifiedDir+"/"+e.Name())
		}
	}
	return nil
}

// journals checks every journal segment.
func (v *verifier) journals() error {
	s, r := v.s, v.r
	names, err := s.Journals()
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	v.journalState = map[string]*journalCheck{}
	for _, name := range names {
		j, err := s.Journal(name)
		if err != nil {
			return err
		}
		segs, err := j.List()
		if err != nil {
			return err
		}
		jc := &journalCheck{segs: segs, bad: map[string]string{}, spans: map[string]segSpan{}}
		v.journalState[name] = jc
		jc.breaks, _ = j.Breaks() // the good ones; a damaged one is reported below
		span := s.opts.SegmentSpan
		for _, si := range segs {
			r.Segments++
			data, err := j.Read(si)
			r.BytesRead += int64(len(data))
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				jc.bad[si.File] = err.Error()
			}
			if err == nil && span != nil {
				a, t, serr := span(name, data)
				if errors.Is(serr, ErrSpanUnknown) {
					// judged by its name
				} else if serr != nil {
					err = fmt.Errorf("journal %s segment %s: %w", name, si.File, serr)
					jc.bad[si.File] = err.Error()
				} else if a > t || t != si.Last || a+1 < si.First || a > si.First {
					err = fmt.Errorf("journal %s segment %s: holds revisions after %d up to %d, not what its name says", name, si.File, a, t)
					jc.bad[si.File] = err.Error()
				} else {
					jc.spans[si.File] = segSpan{after: a, through: t, ok: true}
				}
			}
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				v.problem(Problem{Kind: "journal", Object: journalsDir + "/" + name + "/" + si.File,
					Detail: err.Error() + " (a point-in-time restore to an earlier revision still works)",
					Paths:  []string{fmt.Sprintf("%s revisions %d-%d", name, si.First, si.Last)}})
			}
		}
		if _, err := j.Breaks(); err != nil {
			v.problem(Problem{Kind: "journal", Object: journalsDir + "/" + name, Detail: err.Error()})
		}
		if _, _, err := j.since(); err != nil {
			v.problem(Problem{Kind: "journal", Object: journalsDir + "/" + name + "/" + sinceFile, Detail: err.Error()})
		}
		// A hole prune made (TrimExcept: no kept version needed it) is
		// recorded: not damage, and not a warning either.
		trims, err := j.Trimmed()
		if err != nil {
			v.problem(Problem{Kind: "journal", Object: journalsDir + "/" + name, Detail: err.Error()})
		}
		gaps, err := j.Gaps()
		if err != nil {
			return err
		}
		if span != nil {
			spans := jc.spanList()
			for _, g := range contentHoles(segs, spans) {
				if TrimCovers(trims, jc.breaks, g.From, g.To) {
					continue
				}
				h := contentHole{Gap: g, detail: holeDetail(g, segs, spans)}
				jc.holes = append(jc.holes, h)
				v.problem(Problem{Kind: "journal", Object: journalsDir + "/" + name, Detail: h.detail,
					Paths: []string{fmt.Sprintf("%s revisions %d-%d", name, g.From, g.To)}})
			}
		}
		for _, g := range gaps {
			if TrimCovers(trims, jc.breaks, g.From, g.To) {
				continue
			}
			if t, ok := TrimmedOverlapping(trims, g.From, g.To); ok {
				v.problem(Problem{Kind: "journal", Object: journalsDir + "/" + name,
					Detail: fmt.Sprintf("gap: no segment holds revisions %d-%d; prune trimmed only %d-%d of it (a segment was lost besides); a point-in-time restore cannot reach past revision %d from a snapshot before it", g.From, g.To, t.From, t.To, g.From-1),
					Paths:  []string{fmt.Sprintf("%s revisions %d-%d", name, g.From, g.To)}})
				continue
			}
			if g.Undeclared {
				r.Warnings = append(r.Warnings, fmt.Sprintf("journal %s: no segment holds revisions %d-%d, from before kubekeep recorded chain restarts (a restart after compaction, or a lost segment); a point-in-time restore cannot pass them", name, g.From, g.To))
				continue
			}
			v.problem(Problem{Kind: "journal", Object: journalsDir + "/" + name,
				Detail: fmt.Sprintf("gap: no segment holds revisions %d-%d (a segment was lost); a point-in-time restore cannot reach past revision %d from a snapshot before it", g.From, g.To, g.From-1),
				Paths:  []string{fmt.Sprintf("%s revisions %d-%d", name, g.From, g.To)}})
		}
	}
	return nil
}

// checkPack re-hashes every blob of a pack, reading it sequentially, and
// returns the blobs that do not match (or could not be read), with why.
func (v *verifier) checkPack(id string, entries []format.IndexEntry) (map[format.ID]string, error) {
	bad := map[format.ID]string{}
	f, err := openStoreFile(v.s.path(packsDir, id+packExt))
	if err != nil {
		for _, b := range entries {
			bad[b.ID] = "pack unreadable: " + err.Error()
		}
		return bad, nil
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 1<<20)
	var buf []byte
	prog := v.s.progress()
	for _, b := range entries {
		if err := v.ctx.Err(); err != nil {
			return nil, err
		}
		if cap(buf) < int(b.Len) {
			buf = make([]byte, b.Len)
		}
		buf = buf[:b.Len]
		if _, err := io.ReadFull(br, buf); err != nil {
			bad[b.ID] = "pack unreadable: " + err.Error()
			continue
		}
		v.r.BytesRead += int64(b.Len)
		if prog != nil {
			prog.Add(int64(b.Len))
		}
		if format.Sum(buf) != b.ID {
			bad[b.ID] = fmt.Sprintf("hash mismatch at offset %d of pack %s (bit rot)", b.Off, id)
		}
	}
	return bad, nil
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
