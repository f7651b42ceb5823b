package rsyncish

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kubekeep/kubekeep/rsyncish/format"
)

// Journal is an append-only series of small durable segments beside the
// versions: the etcd watch deltas, flushed every couple of seconds. Appends
// do not take the store lock (a backup may hold it for minutes); each
// segment is published atomically, so a crash loses at most the segment
// being written. Segment names sort by first revision.
type Journal struct {
	s    *Store
	name string
	dir  string
	mu   sync.Mutex
}

// SegmentInfo describes one journal segment.
type SegmentInfo struct {
	First, Last uint64 // revisions
	Time        time.Time
	Size        int64
	File        string // name within the journal directory
}

const segExt = ".seg"

// Journal returns the journal called name (letters, digits, '-', '_', '.').
func (s *Store) Journal(name string) (*Journal, error) {
	if !validID(name) {
		return nil, fmt.Errorf("journal name %q is not allowed", name)
	}
	dir := s.path(journalsDir, name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("journal %s: %w", name, err)
	}
	return &Journal{s: s, name: name, dir: dir}, nil
}

// Journals lists the journal names in the store.
func (s *Store) Journals() ([]string, error) {
	ents, err := readStoreDir(s.path(journalsDir))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() && validID(e.Name()) {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

func segName(first, last uint64, t time.Time) string {
	return fmt.Sprintf("%020d-%020d-%d%s", first, last, t.UnixNano(), segExt)
}

func parseSegName(name string) (first, last uint64, ok bool) {
	base, isSeg := strings.CutSuffix(name, segExt)
	parts := strings.Split(base, "-")
	if !isSeg || len(parts) != 3 {
		return 0, 0, false
	}
	first, err1 := strconv.ParseUint(parts[0], 10, 64)
	last, err2 := strconv.ParseUint(parts[1], 10, 64)
	return first, last, err1 == nil && err2 == nil && last >= first
}

// Append durably adds a segment holding revisions first..last observed at t:
// checksummed, written to a temp name, fsynced, renamed, directory fsynced.
func (j *Journal) Append(seg []byte, first, last uint64, t time.Time) error {
	if last < first {
		return fmt.Errorf("journal %s: last revision %d before first %d", j.name, last, first)
	}
	if len(seg) > 1<<30 {
		return fmt.Errorf("journal %s: segment of %d bytes is too big", j.name, len(seg))
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	data := format.EncodeSegment(format.Segment{First: first, Last: last, Time: t, Data: seg})
	if free, err := freeBytes(j.dir); err == nil && free < int64(len(data))+j.s.opts.MinFree {
		return fmt.Errorf("journal %s: %w: %s free, minFree %s", j.name, ErrNoSpace, human(free), human(j.s.opts.MinFree))
	}
	if err := writeFileAtomic(filepath.Join(j.dir, segName(first, last, t)), data, 0o600); err != nil {
		return fmt.Errorf("journal %s: %w", j.name, err)
	}
	return nil
}

// List returns the segments ordered by first revision (then time).
func (j *Journal) List() ([]SegmentInfo, error) {
	ents, err := readStoreDir(j.dir)
	if err != nil {
		return nil, fmt.Errorf("journal %s: %w", j.name, err)
	}
	var out []SegmentInfo
	for _, e := range ents {
		first, last, ok := parseSegName(e.Name())
		if !ok {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue // trimmed meanwhile
		}
		var t time.Time
		if p := strings.Split(strings.TrimSuffix(e.Name(), segExt), "-"); len(p) == 3 {
			if ns, err := strconv.ParseInt(p[2], 10, 64); err == nil {
				t = time.Unix(0, ns).UTC()
			}
		}
		out = append(out, SegmentInfo{First: first, Last: last, Time: t, Size: info.Size(), File: e.Name()})
	}
	sort.Slice(out, func(a, b int) bool {
		if out[a].First != out[b].First {
			return out[a].First < out[b].First
		}
		return out[a].Time.Before(out[b].Time)
	})
	return out, nil
}

// Read returns a segment's data after checking its checksum and that its
// content matches its name.
func (j *Journal) Read(si SegmentInfo) ([]byte, error) {
	if si.File != filepath.Base(si.File) {
		return nil, fmt.Errorf("journal %s: bad segment name %q", j.name, si.File)
	}
	raw, err := readStoreFile(filepath.Join(j.dir, si.File))
	if err != nil {
		return nil, fmt.Errorf("journal %s: %w", j.name, err)
	}
	seg, err := format.DecodeSegment(raw)
	if err != nil {
		return nil, fmt.Errorf("journal %s segment %s: %w", j.name, si.File, err)
	}
	if first, last, ok := parseSegName(si.File); !ok || first != seg.First || last != seg.Last {
		return nil, fmt.Errorf("journal %s segment %s: holds revisions %d-%d, not what its name says", j.name, si.File, seg.First, seg.Last)
	}
	return seg.Data, nil
}

// Trim removes the segments whose revisions all lie before beforeRevision
// (the revision of the oldest snapshot still kept). It returns how many
// segments it removed.
func (j *Journal) Trim(beforeRevision uint64) (int, error) {
	segs, err := j.List()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, si := range segs {
		if si.Last >= beforeRevision {
			continue
		}
		if err := os.Remove(filepath.Join(j.dir, si.File)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return n, fmt.Errorf("journal %s: %w", j.name, err)
		}
		n++
	}
	if n > 0 {
		return n, syncDir(j.dir)
	}
	return n, nil
}
