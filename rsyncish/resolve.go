package rsyncish

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/kubekeep/kubekeep/rsyncish/format"
)

// Which version "latest" is.
//
// A version may record how good it is: its writer stores a JSON string
// under Meta[MetaStatus]. The store reads one rule out of it and no more: a
// version is good when it records no status at all or records StatusOK.
// Anything else (kubekeep's "etcd-failed", "degraded", "files-only") is
// kept, listed and readable by its ID like any version, but "latest" never
// resolves to it: a restore or a `get --version latest` must not land on
// the broken state a backup captured seconds after the failure it is meant
// to undo (or on the safety version a restore took of that state).
//
// A version may also record who took it under Meta[MetaOrigin]. One origin
// changes what "latest" means: OriginSafety, the copy a restore takes of
// the state it is about to replace. It is never "latest", good or not: a
// re-run of a restore phase with --version latest must land on what the
// restore restored from, not on the state it was undoing.
const (
	// MetaStatus is the meta key of a version's status (a JSON string).
	MetaStatus = "status"
	// MetaOrigin is the meta key of who took a version (a JSON string).
	MetaOrigin = "origin"
	// OriginSafety is the origin of a restore's safety version.
	OriginSafety = "restore-safety"
	// StatusOK is the status of a good version.
	StatusOK = "ok"
	// Latest resolves to the newest good version ("" means the same).
	Latest = "latest"
	// Newest resolves to the newest version, good or not.
	Newest = "newest"
)

// ErrNoGoodVersion is returned (wrapped, together with ErrNotFound) when
// "latest" is asked of a store whose versions are all not good.
var ErrNoGoodVersion = errors.New("no good version")

// Status is the status the version recorded under Meta[MetaStatus], "" when
// it recorded none (or something that is not a JSON string).
func (v VersionInfo) Status() string {
	raw, ok := v.Meta[MetaStatus]
	if !ok {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return ""
	}
	return s
}

// Good reports whether v is a good version: it recorded no status, or
// StatusOK.
func (v VersionInfo) Good() bool {
	st := v.Status()
	return st == "" || st == StatusOK
}

// Origin is who took the version (Meta[MetaOrigin]), "" when unrecorded.
func (v VersionInfo) Origin() string {
	raw, ok := v.Meta[MetaOrigin]
	if !ok {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return ""
	}
	return s
}

// Latest reports whether "latest" may resolve to v: it is good and not a
// restore's safety version.
func (v VersionInfo) Latest() bool { return v.Good() && v.Origin() != OriginSafety }

// Resolve turns a version name into an ID:
//
//   - "latest" or "": the newest good version (see VersionInfo.Good); the
//     newer versions it passes over are logged with their status;
//   - "newest": the newest version, good or not;
//   - an ID, or a unique prefix of one: that version, whatever its status
//     (naming a version is a choice the caller made).
func (s *Store) Resolve(name string) (string, error) {
	switch name {
	case "", Latest:
		v, err := s.NewestGood()
		if err != nil {
			return "", err
		}
		return v.ID, nil
	case Newest:
		v, err := s.Newest()
		if err != nil {
			return "", err
		}
		return v.ID, nil
	}
	if s.versionExists(name) {
		return name, nil // a whole ID: no listing needed
	}
	vs, err := s.Versions()
	if err != nil {
		return "", err
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
		return "", fmt.Errorf("version %q: %w in store %s", name, ErrNotFound, s.dir)
	default:
		return "", fmt.Errorf("version %q is ambiguous: %s", name, strings.Join(match, ", "))
	}
}

// Newest returns the newest version, good or not; it wraps ErrNotFound
// when the store has none. Listings and status use it; a restore wants
// NewestGood (what "latest" means).
func (s *Store) Newest() (VersionInfo, error) {
	var v VersionInfo
	found := false
	if err := s.NewestFirst(func(vi VersionInfo) bool {
		v, found = vi, true
		return false
	}); err != nil {
		return VersionInfo{}, err
	}
	if !found {
		return VersionInfo{}, fmt.Errorf("store %s has no versions: %w", s.dir, ErrNotFound)
	}
	return v, nil
}

// NewestGood returns the version "latest" resolves to: the newest good one.
// With no good version it wraps ErrNoGoodVersion and ErrNotFound and names
// the newest version and its status, so the caller can pick one by ID.
func (s *Store) NewestGood() (VersionInfo, error) {
	v, _, err := s.NewestGoodWhere(nil)
	return v, err
}

// NewestGoodWhere is NewestGood passing over the good versions accept
// refuses too (nil: none), and returning why it refused each (newest
// first): one walk newest first, reading only the versions walked past.
// The versions passed over for their status are logged, as NewestGood
// logs them, when accept refused none; with no version left the error is
// NewestGood's, or when accept refused some, ErrNotFound naming them.
func (s *Store) NewestGoodWhere(accept func(VersionInfo) error) (VersionInfo, []string, error) {
	var newer []VersionInfo // not good, newest first
	var refused []string
	var v VersionInfo
	found := false
	if err := s.NewestFirst(func(vi VersionInfo) bool {
		if !vi.Latest() {
			newer = append(newer, vi)
			return true
		}
		if accept != nil {
			if err := accept(vi); err != nil {
				refused = append(refused, err.Error())
				return true
			}
		}
		v, found = vi, true
		return false
	}); err != nil {
		return VersionInfo{}, nil, err
	}
	switch {
	case found && len(refused) > 0:
		return v, refused, nil
	case len(refused) > 0:
		return VersionInfo{}, refused, fmt.Errorf("store %s: no good version whose state can be read: %s: %w", s.dir, strings.Join(refused, "; "), ErrNotFound)
	case !found:
		vs, err := s.Versions()
		if err != nil {
			return VersionInfo{}, nil, err
		}
		v, err := s.newestGood(vs)
		return v, nil, err
	}
	// Oldest first from v on, as newestGood takes a listing: it names
	// the versions it passed over.
	vs := append([]VersionInfo{v}, newer...)
	slices.Reverse(vs[1:])
	v, err := s.newestGood(vs)
	return v, nil, err
}

// NewestGoodOf is NewestGood over a listing the caller already holds
// (oldest first, as Versions returns it): the newest version "latest" may
// resolve to (VersionInfo.Latest); ok is false when there is none.
func NewestGoodOf(vs []VersionInfo) (v VersionInfo, ok bool) {
	for i := len(vs) - 1; i >= 0; i-- {
		if vs[i].Latest() {
			return vs[i], true
		}
	}
	return VersionInfo{}, false
}

func (s *Store) newestGood(vs []VersionInfo) (VersionInfo, error) {
	if len(vs) == 0 {
		return VersionInfo{}, fmt.Errorf("store %s has no versions: %w", s.dir, ErrNotFound)
	}
	v, ok := NewestGoodOf(vs)
	if !ok {
		n := vs[len(vs)-1]
		return VersionInfo{}, fmt.Errorf("store %s: %w among its %d versions (the newest, %s, is %s); name one by its ID, or %q for the newest whatever its status: %w",
			s.dir, ErrNoGoodVersion, len(vs), n.ID, n.Status(), Newest, ErrNotFound)
	}
	if n := vs[len(vs)-1]; n.ID != v.ID {
		var passed []string
		for i := len(vs) - 1; i >= 0 && vs[i].ID != v.ID; i-- {
			why := vs[i].Status()
			if vs[i].Origin() == OriginSafety {
				why += ", a restore's safety version"
			}
			passed = append(passed, vs[i].ID+" ("+why+")")
		}
		s.log.Warn("latest is the newest good version; newer versions are not good and were passed over",
			"latest", v.ID, "passedOver", passed)
	}
	return v, nil
}

// Loss is what a version being written lacks compared with an earlier
// version (VersionWriter.Lacks).
type Loss struct {
	// Ref is the version compared with.
	Ref string `json:"ref"`
	// Files is how many regular files Ref holds that were compared (those
	// not excluded); Missing are those this version does not hold as
	// regular files, sorted.
	Files   int      `json:"files"`
	Missing []string `json:"missing,omitempty"`
	// Paths breaks it down by Ref's top-level paths, in Ref's order.
	Paths []PathLoss `json:"paths,omitempty"`
}

// PathLoss is Loss for the files below one top-level path of Ref.
type PathLoss struct {
	Path    string `json:"path"`
	Files   int    `json:"files"`
	Missing int    `json:"missing"`
}

// Lacks compares the regular files added so far (call it after AddTree,
// before Commit) with those of version ref. Files of ref that exclude
// matches (AddTree's syntax) are left out of the comparison, so a path
// the configuration now excludes is not a loss. Streams are not compared.
func (w *VersionWriter) Lacks(ref string, exclude []string) (*Loss, error) {
	if w.done {
		return nil, errors.New("version already committed or aborted")
	}
	// The parent's files are in memory already (the common case: the
	// reference is the previous version); another version's manifest is
	// read.
	var refPaths, refFiles []string
	if ref != "" && ref == w.parent {
		h, err := w.s.readHeader(ref)
		if err != nil {
			return nil, fmt.Errorf("version %s: %w", ref, err)
		}
		refPaths = h.Paths
		for p := range w.prevFiles {
			refFiles = append(refFiles, p)
		}
	} else {
		m, err := w.s.manifest(ref)
		if err != nil {
			return nil, err
		}
		refPaths = m.Header.Paths
		for _, e := range m.Entries {
			if e.Type == format.TypeFile {
				refFiles = append(refFiles, e.Path)
			}
		}
	}
	have := make(map[string]bool, len(w.entries))
	for _, e := range w.entries {
		if e.Type == format.TypeFile {
			have[e.Path] = true
		}
	}
	loss := &Loss{Ref: ref}
	byPath := make([]PathLoss, len(refPaths))
	for i, p := range refPaths {
		byPath[i].Path = p
	}
	for _, f := range refFiles {
		if Excluded(f, exclude) {
			continue
		}
		loss.Files++
		gone := !have[f]
		if gone {
			loss.Missing = append(loss.Missing, f)
		}
		// The longest top-level path holding the file (they do not nest
		// in a version AddTree wrote, but an older one may).
		best := -1
		for i, p := range refPaths {
			if within(f, p) && (best < 0 || len(p) > len(refPaths[best])) {
				best = i
			}
		}
		if best >= 0 {
			byPath[best].Files++
			if gone {
				byPath[best].Missing++
			}
		}
	}
	for _, pl := range byPath {
		if pl.Files > 0 {
			loss.Paths = append(loss.Paths, pl)
		}
	}
	sort.Strings(loss.Missing)
	return loss, nil
}
