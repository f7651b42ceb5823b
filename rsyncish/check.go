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

	"github.com/kubekeep/kubekeep/rsyncish/format"
)

// Problem is one piece of damage, with what it damages.
type Problem struct {
	// Kind: manifest, index, pack, blob, path, verified, journal, config.
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

// Verify checks the store: every index, manifest, verification mark and
// journal segment against its checksum; every pack against its index's
// size; every referenced blob for presence; with readData, every blob of
// every pack against its hash. It reads only, and holding the lock gives a
// consistent view (a concurrent prune could otherwise remove what it is
// looking at). A non-nil error means the check itself could not run.
func (s *Store) Verify(ctx context.Context, readData bool) (*Report, error) {
	r := &Report{ReadData: readData, Problems: []Problem{}}
	var cfg format.Config
	if data, err := os.ReadFile(s.path(configFile)); err != nil {
		r.Problems = append(r.Problems, Problem{Kind: "config", Object: configFile, Detail: err.Error()})
	} else if err := format.UnsealJSON(data, &cfg); err != nil {
		r.Problems = append(r.Problems, Problem{Kind: "config", Object: configFile, Detail: err.Error()})
	}

	// Indexes and packs. bad maps a blob to why it cannot be read.
	bad := map[format.ID]string{}
	badObj := map[format.ID]string{}
	have := map[format.ID]uint32{} // blob -> length
	idxEnts, err := os.ReadDir(s.path(indexDir))
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	indexed := map[string]bool{}
	for _, e := range idxEnts {
		if err := ctx.Err(); err != nil {
			return nil, err
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
		data, err := os.ReadFile(s.path(indexDir, e.Name()))
		if err != nil {
			r.Problems = append(r.Problems, Problem{Kind: "index", Object: obj, Detail: err.Error()})
			continue
		}
		entries, size, err := format.DecodeIndex(data)
		if err != nil {
			// Its blobs count as missing; the manifests that need them
			// are named below.
			r.Problems = append(r.Problems, Problem{Kind: "index", Object: obj, Detail: err.Error()})
			continue
		}
		r.Packs++
		pobj := packsDir + "/" + id + packExt
		fi, err := os.Stat(s.path(packsDir, id+packExt))
		if err != nil || fi.Size() != size {
			detail := "missing"
			if err == nil {
				detail = fmt.Sprintf("%d bytes, its index says %d", fi.Size(), size)
			} else if !errors.Is(err, fs.ErrNotExist) {
				detail = err.Error()
			}
			r.Problems = append(r.Problems, Problem{Kind: "pack", Object: pobj, Detail: detail})
			for _, b := range entries {
				bad[b.ID], badObj[b.ID] = "pack "+detail, pobj
			}
			continue
		}
		for _, b := range entries {
			have[b.ID] = b.Len
			r.Blobs++
		}
		if readData {
			if err := s.checkPack(ctx, id, entries, bad, r); err != nil {
				return nil, err
			}
			for _, b := range entries {
				if _, isBad := bad[b.ID]; isBad && badObj[b.ID] == "" {
					badObj[b.ID] = pobj
				}
			}
		}
	}
	// A blob stored twice (a repack interrupted by a crash) is fine if one
	// copy is good.
	for id := range bad {
		if have[id] > 0 && !strings.HasPrefix(bad[id], "hash") {
			delete(bad, id)
		}
	}
	packEnts, err := os.ReadDir(s.path(packsDir))
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	for _, e := range packEnts {
		if id, ok := strings.CutSuffix(e.Name(), packExt); ok && !indexed[id] {
			r.Warnings = append(r.Warnings, "pack without index (leftover of an interrupted run, removed by the next backup or prune): "+packsDir+"/"+e.Name())
		}
	}

	// Manifests: structure, safe paths, references.
	type hit struct{ versions, paths map[string]bool }
	hits := map[format.ID]*hit{}
	verEnts, err := os.ReadDir(s.path(versionsDir))
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	versions := map[string]bool{}
	for _, e := range verEnts {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		vid, ok := strings.CutSuffix(e.Name(), manifestExt)
		if !ok {
			if _, tmp := tmpOwner(e.Name()); tmp {
				r.Warnings = append(r.Warnings, "leftover temp file "+versionsDir+"/"+e.Name())
			}
			continue
		}
		versions[vid] = true
		obj := versionsDir + "/" + e.Name()
		m, err := s.manifest(vid)
		if errors.Is(err, ErrNotFound) {
			continue // pruned while we looked
		}
		if err != nil {
			r.Problems = append(r.Problems, Problem{Kind: "manifest", Object: obj, Detail: err.Error(), Versions: []string{vid}})
			continue
		}
		r.Versions++
		for _, ent := range m.Entries {
			if ent.Type != format.TypeStream && !SafePath(ent.Path) {
				r.Problems = append(r.Problems, Problem{Kind: "path", Object: obj, Detail: fmt.Sprintf("unsafe path %q (restore refuses it)", ent.Path), Versions: []string{vid}, Paths: []string{ent.Path}})
			}
			for _, x := range ent.Extents {
				if x.ID.IsZero() {
					continue
				}
				_, isBad := bad[x.ID]
				n, ok := have[x.ID]
				if ok && !isBad && uint64(x.Off)+uint64(x.Len) <= uint64(n) {
					continue
				}
				if !isBad {
					bad[x.ID] = "referenced but in no pack index"
					if ok {
						bad[x.ID] = fmt.Sprintf("referenced at %d+%d beyond its %d bytes", x.Off, x.Len, n)
					}
				}
				h := hits[x.ID]
				if h == nil {
					h = &hit{versions: map[string]bool{}, paths: map[string]bool{}}
					hits[x.ID] = h
				}
				h.versions[vid] = true
				h.paths[ent.Path] = true
			}
		}
	}
	// One problem per damaged store object and kind of damage, not per
	// blob: a lost pack holds hundreds of blobs.
	ids := make([]format.ID, 0, len(bad))
	for id := range bad {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(a, b int) bool { return ids[a].String() < ids[b].String() })
	type group struct {
		p               *Problem
		n               int
		versions, paths map[string]bool
	}
	groups := map[string]*group{}
	var order []string
	for _, id := range ids {
		h := hits[id]
		if h == nil && strings.HasPrefix(bad[id], "pack") {
			continue // already reported per pack, and referenced by nothing
		}
		kind, _, _ := strings.Cut(bad[id], " at offset")
		key := badObj[id] + "\x00" + kind
		g := groups[key]
		if g == nil {
			g = &group{p: &Problem{Kind: "blob", Object: badObj[id]}, versions: map[string]bool{}, paths: map[string]bool{}}
			groups[key] = g
			order = append(order, key)
		}
		g.n++
		if g.n == 1 {
			g.p.Detail = "blob " + id.Short() + ": " + bad[id]
		}
		if h != nil {
			for v := range h.versions {
				g.versions[v] = true
			}
			for p := range h.paths {
				g.paths[p] = true
			}
		}
	}
	for _, key := range order {
		g := groups[key]
		if g.n > 1 {
			g.p.Detail = fmt.Sprintf("%d blobs, e.g. %s", g.n, g.p.Detail)
		}
		g.p.Versions, g.p.Paths = sortedKeys(g.versions), sortedKeys(g.paths)
		if len(g.p.Versions) == 0 {
			g.p.Versions, g.p.Paths = nil, nil
		}
		r.Problems = append(r.Problems, *g.p)
	}

	// Verification marks and journals.
	marks, err := os.ReadDir(s.path(verifiedDir))
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	for _, e := range marks {
		if _, tmp := tmpOwner(e.Name()); tmp {
			continue
		}
		if _, err := s.readVerification(e.Name()); err != nil {
			r.Problems = append(r.Problems, Problem{Kind: "verified", Object: verifiedDir + "/" + e.Name(), Detail: err.Error(), Versions: []string{e.Name()}})
		} else if !versions[e.Name()] {
			r.Warnings = append(r.Warnings, "verification mark of a pruned version: "+verifiedDir+"/"+e.Name())
		}
	}
	names, err := s.Journals()
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	for _, name := range names {
		j, err := s.Journal(name)
		if err != nil {
			return nil, err
		}
		segs, err := j.List()
		if err != nil {
			return nil, err
		}
		for _, si := range segs {
			r.Segments++
			data, err := j.Read(si)
			r.BytesRead += int64(len(data))
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				r.Problems = append(r.Problems, Problem{Kind: "journal", Object: journalsDir + "/" + name + "/" + si.File,
					Detail: err.Error(), Paths: []string{fmt.Sprintf("%s revisions %d-%d", name, si.First, si.Last)}})
			}
		}
	}
	return r, nil
}

// checkPack re-hashes every blob of a pack, reading it sequentially.
func (s *Store) checkPack(ctx context.Context, id string, entries []format.IndexEntry, bad map[format.ID]string, r *Report) error {
	f, err := os.Open(s.path(packsDir, id+packExt))
	if err != nil {
		for _, b := range entries {
			bad[b.ID] = "pack unreadable: " + err.Error()
		}
		return nil
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 1<<20)
	var buf []byte
	for _, b := range entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		if cap(buf) < int(b.Len) {
			buf = make([]byte, b.Len)
		}
		buf = buf[:b.Len]
		if _, err := io.ReadFull(br, buf); err != nil {
			bad[b.ID] = "pack unreadable: " + err.Error()
			continue
		}
		r.BytesRead += int64(b.Len)
		if format.Sum(buf) != b.ID {
			bad[b.ID] = fmt.Sprintf("hash mismatch at offset %d of pack %s (bit rot)", b.Off, id)
		}
	}
	return nil
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
