package rsyncish

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
)

// NewestFirst calls fn with the store's versions in the reverse of the
// order Versions lists them (newest first), reading each manifest's header
// only when the walk reaches it, and stops when fn returns false. What
// "latest" costs is then the versions it passes over, not the store's
// whole listing: a kept store holds dozens of versions and `kubekeep get`
// resolves one on every call.
//
// A version's ID starts with the second its header's Time falls in (the
// writer makes both from one clock reading), so versions are walked a
// second at a time: the IDs of one second, newest second first, each
// second's versions ordered as Versions orders them. A store holding an ID
// of another shape, or a header whose Time is not in its ID's second
// (written by something else), is walked from the whole listing instead:
// the order is always Versions'.
func (s *Store) NewestFirst(fn func(VersionInfo) bool) error {
	ents, err := readStoreDir(s.path(versionsDir))
	if err != nil {
		return fmt.Errorf("listing versions: %w", err)
	}
	var ids []string
	for _, e := range ents {
		if id, ok := strings.CutSuffix(e.Name(), manifestExt); ok {
			if _, ok := idSecond(id); !ok {
				return s.newestFirstListed(fn)
			}
			ids = append(ids, id)
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(ids)))
	for len(ids) > 0 {
		sec, _ := idSecond(ids[0])
		n := 1
		for n < len(ids) && strings.HasPrefix(ids[n], sec) {
			n++
		}
		group := make([]VersionInfo, 0, n)
		for _, id := range ids[:n] {
			vi, err := s.Version(id)
			if errors.Is(err, ErrNotFound) {
				continue // pruned meanwhile
			}
			if err != nil {
				s.log.Warn("unreadable version manifest", "version", id, "err", err)
				continue
			}
			if vi.Time.UTC().Format(idTimeLayout) != sec {
				return s.newestFirstListed(fn)
			}
			group = append(group, vi)
		}
		sortVersions(group)
		for i := len(group) - 1; i >= 0; i-- {
			if !fn(group[i]) {
				return nil
			}
		}
		ids = ids[n:]
	}
	return nil
}

// newestFirstListed is NewestFirst over the whole listing.
func (s *Store) newestFirstListed(fn func(VersionInfo) bool) error {
	vs, err := s.Versions()
	if err != nil {
		return err
	}
	for i := len(vs) - 1; i >= 0; i-- {
		if !fn(vs[i]) {
			return nil
		}
	}
	return nil
}

// idTimeLayout is the time at the start of a version ID.
const idTimeLayout = "20060102T150405Z"

// idSecond is the time part of a version ID ("20261123T112831Z" of
// "20261123T112831Z-3f2a9c1b").
func idSecond(id string) (string, bool) {
	sec, _, ok := strings.Cut(id, "-")
	if !ok || len(sec) != len(idTimeLayout) {
		return "", false
	}
	if _, err := time.Parse(idTimeLayout, sec); err != nil {
		return "", false
	}
	return sec, true
}

// versionExists reports whether id names a version whose header reads
// (what Versions would list).
func (s *Store) versionExists(id string) bool {
	if !validID(id) {
		return false
	}
	_, err := s.readHeader(id)
	return err == nil
}
