package tiers

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"github.com/kubekeep/kubekeep/backup/versionread"
	"github.com/kubekeep/kubekeep/rsyncish"
	"github.com/kubekeep/kubekeep/rsyncish/backend"
	"github.com/kubekeep/kubekeep/rsyncish/format"
)

// versionOf is the version a manifest or a drill mark belongs to.
func versionOf(t backend.FileType, name string) (string, bool) {
	switch t {
	case backend.ManifestFile:
		return strings.CutSuffix(name, ".manifest")
	case backend.VerifiedFile:
		return name, !strings.Contains(name, "/")
	}
	return "", false
}

// packOf is the pack an index or pack object belongs to.
func packOf(t backend.FileType, name string) (string, bool) {
	switch t {
	case backend.PackFile:
		return strings.CutSuffix(name, ".pack")
	case backend.IndexFile:
		return strings.CutSuffix(name, ".idx")
	}
	return "", false
}

// blobPacks maps blocks to the packs that hold them.
type blobPacks map[format.ID][]string

// readBlobPacks reads every index of b (a store or a tier opened with an
// identity); keep says which packs count.
func readBlobPacks(ctx context.Context, b backend.Backend, keep func(pack string) bool) (blobPacks, error) {
	var names []string
	if err := b.List(ctx, backend.IndexFile, func(fi backend.FileInfo) error {
		names = append(names, fi.Name)
		return nil
	}); err != nil {
		return nil, err
	}
	out := blobPacks{}
	for _, n := range names {
		pack, ok := packOf(backend.IndexFile, n)
		if !ok || !keep(pack) {
			continue
		}
		data, err := backend.LoadAll(ctx, b, backend.Handle{Type: backend.IndexFile, Name: n})
		if errors.Is(err, backend.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		entries, _, err := format.DecodeIndex(data)
		if err != nil {
			continue // a damaged index names nothing (verify reports it)
		}
		for _, e := range entries {
			out[e.ID] = append(out[e.ID], pack)
		}
	}
	return out, nil
}

// refsOf works out what the version in manifest data needs, with bp
// mapping its blocks to packs.
func refsOf(data []byte, bp blobPacks) (VersionRefs, error) {
	m, err := format.DecodeManifest(data)
	if err != nil {
		return VersionRefs{}, err
	}
	h := m.Header
	r := VersionRefs{Version: h.ID, Time: h.Time.UTC()}
	seen := map[format.ID]bool{}
	for _, e := range m.Entries {
		for _, x := range e.Extents {
			if x.ID.IsZero() || seen[x.ID] {
				continue
			}
			seen[x.ID] = true
			packs := bp[x.ID]
			if len(packs) == 0 {
				r.Incomplete = true
			}
			r.Packs = append(r.Packs, packs...)
		}
	}
	for _, q := range h.Requires {
		if q.Version != "" && q.Version != h.ID {
			r.Requires = append(r.Requires, q.Version)
		}
	}
	if src, ok := versionread.EtcdSourceOf(rsyncish.VersionInfo{ID: h.ID, Time: h.Time, Streams: h.Streams, Meta: h.Meta}); ok {
		r.SnapshotRevision = src.SnapshotRevision
	}
	return r, nil
}

// refsMaker records, during a sync, the references of each manifest
// before it goes up, with the store's indexes read once.
type refsMaker struct {
	src  *backend.Local
	cat  *Catalogue
	todo map[backend.FileType][]backend.FileInfo
	bp   blobPacks
}

func (m *refsMaker) record(ctx context.Context, manifest string) error {
	id, _ := versionOf(backend.ManifestFile, manifest)
	if m.cat.Refs(id) != nil {
		return nil
	}
	data, err := backend.LoadAll(ctx, m.src, backend.Handle{Type: backend.ManifestFile, Name: manifest})
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, backend.ErrNotFound) {
		return nil // pruned since the list: it does not go up
	}
	if err != nil {
		return err
	}
	if m.bp == nil {
		going := map[string]bool{}
		for _, fi := range m.todo[backend.PackFile] {
			p, _ := packOf(backend.PackFile, fi.Name)
			going[p] = true
		}
		// Packs the tier holds or that this sync uploads.
		if m.bp, err = readBlobPacks(ctx, m.src, func(p string) bool {
			return going[p] || m.cat.Has(backend.Handle{Type: backend.PackFile, Name: p + ".pack"})
		}); err != nil {
			return fmt.Errorf("read the store's indexes: %w", err)
		}
	}
	r, err := refsOf(data, m.bp)
	if err != nil {
		return fmt.Errorf("version %s: %w", id, err)
	}
	return m.cat.AddRefs(r)
}
