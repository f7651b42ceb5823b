package tiers

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/kubekeep/kubekeep/backup/versionread"
	"github.com/kubekeep/kubekeep/rsyncish"
	"github.com/kubekeep/kubekeep/rsyncish/backend"
	"github.com/kubekeep/kubekeep/rsyncish/format"
)

// pullVersion is PullWith of one version: see "Pulling one version" in
// the package doc.
func pullVersion(ctx context.Context, src backend.Backend, dst *backend.Local, o PullOptions) (PullResult, error) {
	start := time.Now()
	tier := o.Tier
	res := PullResult{Tier: tier, Destination: dst.Location(), Versions: []string{}}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	listed, err := listTier(ctx, src, tier, backend.Types)
	if err != nil {
		return res, err
	}

	// Which version: the headers of the tier's manifests, read as the
	// store reads them to list its versions (only the first chunk of each
	// comes down).
	var vs []rsyncish.VersionInfo
	for _, fi := range listed[backend.ManifestFile] {
		id, ok := versionOf(backend.ManifestFile, fi.Name)
		if !ok {
			continue
		}
		h, err := readManifestHeader(ctx, src, fi.Name)
		if err == nil && h.ID != id {
			err = fmt.Errorf("the manifest names itself %q", h.ID)
		}
		if err != nil {
			log.Warn("unreadable version manifest in the tier; left out", "tier", tier, "version", id, "err", err)
			continue
		}
		vs = append(vs, rsyncish.VersionInfo{ID: h.ID, Time: h.Time.UTC(), Streams: h.Streams, Meta: h.Meta})
	}
	sort.Slice(vs, func(i, j int) bool {
		if !vs[i].Time.Equal(vs[j].Time) {
			return vs[i].Time.Before(vs[j].Time)
		}
		return vs[i].ID < vs[j].ID
	})
	chosen, err := resolveAmong(vs, o.Version, tier, log)
	if err != nil {
		return res, err
	}
	res.Version = chosen

	// The version and, transitively, every version it reads (a journal
	// version's base), whole: their blocks decide which packs come.
	inTier := map[string]bool{}
	for _, v := range vs {
		inTier[v.ID] = true
	}
	type pulledManifest struct {
		m    *format.Manifest
		data []byte
		size int64
	}
	manifests := map[string]pulledManifest{}
	queue, neededBy := []string{chosen}, map[string]string{}
	for len(queue) > 0 {
		id := queue[0]
		queue = queue[1:]
		if _, done := manifests[id]; done {
			continue
		}
		if !inTier[id] {
			return res, fmt.Errorf("tier %s: version %s reads version %s, which the tier does not hold (pruned, or its manifest is unreadable): pull another version, or everything (--all)", tier, neededBy[id], id)
		}
		h := backend.Handle{Type: backend.ManifestFile, Name: id + ".manifest"}
		data, err := backend.LoadAll(ctx, src, h)
		if err != nil {
			return res, fmt.Errorf("tier %s: %w", tier, err)
		}
		m, err := format.DecodeManifest(data)
		if err == nil && m.Header.ID != id {
			err = fmt.Errorf("the manifest names itself %q", m.Header.ID)
		}
		if err != nil {
			return res, fmt.Errorf("tier %s: version %s: %w", tier, id, err)
		}
		manifests[id] = pulledManifest{m: m, data: data, size: int64(len(data))}
		var reads []string
		for _, r := range m.Header.Requires {
			if r.Version != "" && r.Version != id {
				reads = append(reads, r.Version)
			}
		}
		if es, ok := versionread.EtcdSourceOf(headerInfo(&m.Header)); ok && es.Version != id {
			reads = append(reads, es.Version)
		}
		for _, r := range reads {
			if _, seen := neededBy[r]; !seen {
				neededBy[r] = id
			}
			queue = append(queue, r)
		}
	}
	var ids []string
	for _, v := range vs {
		if _, ok := manifests[v.ID]; ok {
			ids = append(ids, v.ID)
		}
	}
	res.Versions = ids

	// The blocks they name, and the packs holding them: every index is
	// read (an index lists its pack's blocks; nothing else maps a block
	// to its pack), only those of packs that hold a needed block come.
	need := map[format.ID]bool{}
	for _, pm := range manifests {
		for _, e := range pm.m.Entries {
			for _, x := range e.Extents {
				if !x.ID.IsZero() {
					need[x.ID] = true
				}
			}
		}
	}
	packSize := map[string]int64{}
	for _, fi := range listed[backend.PackFile] {
		if p, ok := packOf(backend.PackFile, fi.Name); ok {
			packSize[p] = fi.Size
		}
	}
	var packs, indexes []pullItem
	for _, fi := range sortedInfos(listed[backend.IndexFile]) {
		if len(need) == 0 {
			break
		}
		p, ok := packOf(backend.IndexFile, fi.Name)
		size, packThere := packSize[p]
		if !ok || !packThere {
			continue // an index whose pack the tier lacks holds nothing to pull
		}
		h := backend.Handle{Type: backend.IndexFile, Name: fi.Name}
		data, err := backend.LoadAll(ctx, src, h)
		if err != nil {
			return res, fmt.Errorf("tier %s: %w", tier, err)
		}
		entries, packLen, err := format.DecodeIndex(data)
		if err == nil && packLen != size {
			err = fmt.Errorf("it describes a pack of %d bytes; the tier's is %d", packLen, size)
		}
		if err != nil {
			log.Warn("unusable pack index in the tier; its pack is not pulled for it", "tier", tier, "index", h.String(), "err", err)
			continue
		}
		hit := false
		for _, e := range entries {
			hit = hit || need[e.ID]
		}
		if !hit {
			continue
		}
		for _, e := range entries {
			delete(need, e.ID)
		}
		packs = append(packs, pullItem{h: backend.Handle{Type: backend.PackFile, Name: p + ".pack"}, size: size})
		indexes = append(indexes, pullItem{h: h, size: fi.Size, data: data})
	}
	if res.BlocksMissing = len(need); res.BlocksMissing > 0 {
		log.Warn("blocks of the pulled versions are in no pack index the tier holds: what holds them will not restore (verify of the pulled store names it)",
			"tier", tier, "blocks", res.BlocksMissing, "versions", ids)
	}

	// The journal from each version's etcd snapshot revision (a journal
	// version's base's) on, to the tier's newest segment: the replay up
	// to the version, and a point-in-time restore after it. Journals no
	// pulled version reads do not come.
	cut := map[string]uint64{}
	lower := func(j string, rev uint64) {
		if c, ok := cut[j]; !ok || rev < c {
			cut[j] = rev
		}
	}
	for _, pm := range manifests {
		if es, ok := versionread.EtcdSourceOf(headerInfo(&pm.m.Header)); ok && es.SnapshotRevision >= 0 {
			lower(versionread.DeltaJournal, uint64(es.SnapshotRevision))
		}
		for _, r := range pm.m.Header.Requires {
			if r.Journal != "" {
				lower(r.Journal, r.After)
			}
		}
	}
	var journal []pullItem
	for _, fi := range listed[backend.JournalFile] {
		j, file, ok := strings.Cut(fi.Name, "/")
		c, needed := cut[j]
		if !ok || !needed {
			continue
		}
		if last, isSeg := segLast(file); isSeg && last <= c {
			continue // wholly in the snapshots the pull brings
		}
		journal = append(journal, pullItem{h: backend.Handle{Type: backend.JournalFile, Name: fi.Name}, size: fi.Size})
	}

	// In the order a store is written: data, then what names it.
	todo := append(packs, indexes...)
	todo = append(todo, sortItems(journal)...)
	for _, id := range ids {
		pm := manifests[id]
		todo = append(todo, pullItem{h: backend.Handle{Type: backend.ManifestFile, Name: id + ".manifest"}, size: pm.size, data: pm.data})
	}
	for _, fi := range listed[backend.VerifiedFile] {
		if _, ok := manifests[fi.Name]; ok {
			todo = append(todo, pullItem{h: backend.Handle{Type: backend.VerifiedFile, Name: fi.Name}, size: fi.Size})
		}
	}
	for _, fi := range listed[backend.ConfigFile] {
		todo = append(todo, pullItem{h: backend.Handle{Type: backend.ConfigFile, Name: fi.Name}, size: fi.Size})
	}
	taken := map[backend.Handle]bool{}
	for _, it := range todo {
		taken[it.h] = true
	}
	for t, fis := range listed {
		for _, fi := range fis {
			if !taken[backend.Handle{Type: t, Name: fi.Name}] {
				res.ObjectsLeft++
				res.BytesLeft += fi.Size
			}
		}
	}
	err = copyObjects(ctx, src, dst, tier, todo, &progress{fn: o.Progress}, &res)
	res.Duration = time.Since(start).Seconds()
	return res, err
}

// readManifestHeader reads the header of a manifest in src, and no more
// of it than the header takes.
func readManifestHeader(ctx context.Context, src backend.Backend, name string) (*format.Header, error) {
	var h *format.Header
	err := src.Load(ctx, backend.Handle{Type: backend.ManifestFile, Name: name}, 0, 0, func(r io.Reader) error {
		var err error
		h, err = format.ReadManifestHeader(r)
		return err
	})
	return h, err
}

// headerInfo is the part of a version's listing its header gives that
// versionread.EtcdSourceOf reads.
func headerInfo(h *format.Header) rsyncish.VersionInfo {
	return rsyncish.VersionInfo{ID: h.ID, Time: h.Time.UTC(), Streams: h.Streams, Meta: h.Meta}
}

// resolveAmong is rsyncish.Store.Resolve over the tier's versions vs
// (oldest first): "latest" or "" the newest good one, "newest" the
// newest, else an ID or a unique prefix of one.
func resolveAmong(vs []rsyncish.VersionInfo, name, tier string, log *slog.Logger) (string, error) {
	if len(vs) == 0 {
		return "", fmt.Errorf("tier %s holds no versions: %w", tier, rsyncish.ErrNotFound)
	}
	switch name {
	case "", rsyncish.Latest:
		v, ok := rsyncish.NewestGoodOf(vs)
		if !ok {
			n := vs[len(vs)-1]
			return "", fmt.Errorf("tier %s: %w among its %d versions (the newest, %s, is %s); name one by its ID, or %q for the newest whatever its status: %w",
				tier, rsyncish.ErrNoGoodVersion, len(vs), n.ID, n.Status(), rsyncish.Newest, rsyncish.ErrNotFound)
		}
		if n := vs[len(vs)-1]; n.ID != v.ID {
			var passed []string
			for i := len(vs) - 1; i >= 0 && vs[i].ID != v.ID; i-- {
				why := vs[i].Status()
				if vs[i].Origin() == rsyncish.OriginSafety {
					why += ", a restore's safety version"
				}
				passed = append(passed, vs[i].ID+" ("+why+")")
			}
			log.Warn("latest is the newest good version; newer versions are not good and were passed over", "tier", tier, "latest", v.ID, "passedOver", passed)
		}
		return v.ID, nil
	case rsyncish.Newest:
		return vs[len(vs)-1].ID, nil
	}
	var match []string
	for _, v := range vs {
		if v.ID == name {
			return v.ID, nil
		}
		if strings.HasPrefix(v.ID, name) {
			match = append(match, v.ID)
		}
	}
	switch len(match) {
	case 1:
		return match[0], nil
	case 0:
		return "", fmt.Errorf("version %q: %w in tier %s", name, rsyncish.ErrNotFound, tier)
	default:
		return "", fmt.Errorf("version %q is ambiguous in tier %s: %s", name, tier, strings.Join(match, ", "))
	}
}

// segLast is the last revision of a journal segment's file name
// ("<first>-<last>-<unixnano>.seg"); false for a journal's other files
// (its breaks and their record), which always come with the journal.
func segLast(file string) (uint64, bool) {
	base, ok := strings.CutSuffix(file, ".seg")
	parts := strings.Split(base, "-")
	if !ok || len(parts) != 3 {
		return 0, false
	}
	last, err := strconv.ParseUint(parts[1], 10, 64)
	return last, err == nil
}

func sortedInfos(fis []backend.FileInfo) []backend.FileInfo {
	out := append([]backend.FileInfo(nil), fis...)
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func sortItems(its []pullItem) []pullItem {
	sort.Slice(its, func(i, j int) bool { return its[i].h.Name < its[j].h.Name })
	return its
}
