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
	// tail is the highest revision appended, once known (loaded from the
	// directory at the first Append).
	tail    uint64
	hasTail bool
	// lastMark is the file of the segment this Journal appended last if
	// it held no revision after the tail (a progress mark), else "".
	lastMark string
	// markSync (SetMarkSync) is how often at most a progress mark is made
	// durable; 0: every one. While lastMark is pending (written, not
	// fsynced), durableMark is the newest durable mark it follows, kept
	// until a durable segment replaces it; markSynced is when a mark was
	// last made durable (monotonic).
	markSync    time.Duration
	pending     bool
	durableMark string
	markSynced  time.Time
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

// SetMarkSync makes progress marks pending while the last durable mark is
// less than every old: written and renamed into place (every process
// reading the journal sees each at once) but not fsynced, so an idle
// stream pays no fsync per heartbeat (issue 14: a file and a directory
// fsync every 2 s were most of an idle agent's disk work). The first mark
// after a change, and the first one every or more after the last durable
// mark, are durable; so is a pending mark as soon as anything else is
// appended after it, so only the journal's last mark can ever be pending.
// The durable mark a pending one follows stays until a durable one
// replaces it. A crash can lose only the pending mark: the time coverage
// since the last durable mark, never a change (a mark holds none). A mark
// at the journal's end that does not read back whole (a pending one the
// crash tore: empty, or not what its checksum says) is left out of List,
// and the next Journal to Append removes it. 0 (the default): every mark
// is durable.
func (j *Journal) SetMarkSync(every time.Duration) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.markSync = max(every, 0)
}

// Append durably adds a segment holding revisions first..last observed at t:
// checksummed, written to a temp name, fsynced, renamed, directory fsynced.
//
// A segment that holds no revision after the tail (first == last == tail:
// a progress mark, "nothing changed up to here by t") replaces the mark
// this Journal appended just before it, if any: its writer makes it cover
// what that one covered (etcdsnap.DeltaStreamer), so an idle stream keeps
// one mark file instead of one per heartbeat. The previous mark is removed
// only after the new one is durable; a crash in between leaves both. With
// SetMarkSync, most marks are pending (not fsynced) instead; see there.
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
	if !j.hasTail {
		segs, torn, err := j.list()
		if err != nil {
			return err
		}
		if err := j.settleTail(segs, torn); err != nil {
			return err
		}
		for _, si := range segs {
			j.tail, j.hasTail = max(j.tail, si.Last), true
		}
		if err := j.markSince(); err != nil {
			return err
		}
	}
	isMark := j.hasTail && first == j.tail && last == j.tail
	name := segName(first, last, t)
	if isMark && j.markSync > 0 && j.lastMark != "" && time.Since(j.markSynced) < j.markSync {
		return j.appendPendingMark(name, data)
	}
	if free, err := freeBytes(j.dir); err == nil && free < int64(len(data))+j.s.opts.MinFree {
		return fmt.Errorf("journal %s: %w: %s free, minFree %s", j.name, ErrNoSpace, human(free), human(j.s.opts.MinFree))
	}
	if j.pending && !isMark {
		// The pending mark stays in the journal, before this segment:
		// durable first (this segment's directory fsync makes its name
		// durable), so a crash cannot leave it torn mid-chain.
		// (Gone already: a trim or a compaction took it, durably.)
		if err := syncFile(filepath.Join(j.dir, j.lastMark)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("journal %s: progress mark %s: %w", j.name, j.lastMark, err)
		}
	}
	if j.hasTail && first > j.tail+1 {
		// The chain restarts after a gap (a new snapshot after
		// compaction or a broken watch): say so durably, so that verify
		// tells this gap from a segment lost later.
		if err := j.markBreak(j.tail+1, first-1, t); err != nil {
			return err
		}
	}
	if err := writeFileAtomic(filepath.Join(j.dir, name), data, 0o600); err != nil {
		return fmt.Errorf("journal %s: %w", j.name, err)
	}
	// Marks this one replaces (it covers what they covered), or, after
	// a change, the durable mark a pending one (now durable) replaced.
	var old []string
	if isMark && j.lastMark != name {
		old = append(old, j.lastMark)
	}
	if j.pending {
		old = append(old, j.durableMark)
	}
	for _, prev := range old {
		if prev == "" {
			continue
		}
		if err := os.Remove(filepath.Join(j.dir, prev)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("journal %s: replacing progress mark %s: %w", j.name, prev, err)
		}
	}
	j.lastMark, j.pending, j.durableMark = "", false, ""
	if isMark {
		j.lastMark, j.markSynced = name, time.Now()
	}
	j.tail, j.hasTail = max(j.tail, last), true
	return nil
}

// appendPendingMark writes a progress mark without fsync (SetMarkSync):
// temp name, write, rename, so a reader sees the whole mark or none. The
// mark it replaces goes at once when that one was pending too; a durable
// one stays until a durable segment replaces it. The caller holds j.mu.
func (j *Journal) appendPendingMark(name string, data []byte) error {
	path := filepath.Join(j.dir, name)
	tmp := tmpName(path)
	err := os.WriteFile(tmp, data, 0o600)
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("journal %s: progress mark: %w", j.name, err)
	}
	if j.pending {
		if prev := j.lastMark; prev != name {
			if err := os.Remove(filepath.Join(j.dir, prev)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("journal %s: replacing progress mark %s: %w", j.name, prev, err)
			}
		}
	} else {
		j.durableMark = j.lastMark
	}
	j.lastMark, j.pending = name, true
	return nil
}

// settleTail is what a Journal does with the tail it finds before its
// first Append: a mark another Journal left pending (a stream that
// restarted in this process, or a process that ended) is made durable,
// and one a crash tore (list's torn) is removed: it held no change. The
// caller holds j.mu.
func (j *Journal) settleTail(segs []SegmentInfo, torn string) error {
	if torn != "" {
		if err := os.Remove(filepath.Join(j.dir, torn)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("journal %s: removing progress mark %s a crash tore: %w", j.name, torn, err)
		}
		j.s.log.Warn("removed a progress mark a crash left torn (it held no change: only the time coverage since the mark before it is lost)",
			"journal", j.name, "file", torn)
	}
	if n := len(segs); n > 0 && isTailMark(segs) {
		if err := syncFile(filepath.Join(j.dir, segs[n-1].File)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("journal %s: progress mark %s: %w", j.name, segs[n-1].File, err)
		}
		if err := syncDir(j.dir); err != nil {
			return fmt.Errorf("journal %s: %w", j.name, err)
		}
	}
	return nil
}

// isTailMark: the last of segs (in List order) adds no revision to those
// before it, so it is a progress mark, whatever its content.
func isTailMark(segs []SegmentInfo) bool {
	n := len(segs)
	if n < 2 || segs[n-1].First != segs[n-1].Last {
		return false
	}
	var covered uint64
	for _, si := range segs[:n-1] {
		covered = max(covered, si.Last)
	}
	return segs[n-1].Last <= covered
}

// syncFile fsyncs the file at path.
func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// List returns the segments ordered by first revision (then time). A
// progress mark at the journal's end that does not read back whole (a
// pending mark a crash tore, SetMarkSync) is left out: it held no change.
func (j *Journal) List() ([]SegmentInfo, error) {
	segs, _, err := j.list()
	return segs, err
}

// list is List, and the file of the torn mark it left out ("" if none).
func (j *Journal) list() ([]SegmentInfo, string, error) {
	ents, err := readStoreDir(j.dir)
	if err != nil {
		return nil, "", fmt.Errorf("journal %s: %w", j.name, err)
	}
	return j.untorn(j.segmentsIn(ents, true))
}

// ListChain is List and Breaks from one read of the directory and no
// stat of each segment (Size is 0): what a check that the chain is whole
// needs, at a fraction of the cost on a journal of thousands of files.
func (j *Journal) ListChain() ([]SegmentInfo, []Break, error) {
	ents, err := readStoreDir(j.dir)
	if err != nil {
		return nil, nil, fmt.Errorf("journal %s: %w", j.name, err)
	}
	segs, _, err := j.untorn(j.segmentsIn(ents, false))
	if err != nil {
		return nil, nil, err
	}
	recs, err := j.rangeRecordsIn(ents, breakExt, "break")
	breaks := make([]Break, len(recs))
	for i, r := range recs {
		breaks[i] = Break(r)
	}
	return segs, breaks, err
}

// untorn leaves out a progress mark at the end of out that does not read
// back whole, and names it.
func (j *Journal) untorn(out []SegmentInfo) ([]SegmentInfo, string, error) {
	if !isTailMark(out) {
		return out, "", nil
	}
	last := out[len(out)-1]
	raw, err := readStoreFile(filepath.Join(j.dir, last.File))
	if errors.Is(err, fs.ErrNotExist) {
		return out[:len(out)-1], "", nil // replaced meanwhile
	}
	if err != nil {
		return nil, "", fmt.Errorf("journal %s: %w", j.name, err)
	}
	if seg, derr := format.DecodeSegment(raw); derr != nil || seg.First != last.First || seg.Last != last.Last {
		return out[:len(out)-1], last.File, nil
	}
	return out, "", nil
}

// segmentsIn are the segments among a directory's entries, ordered by
// first revision (then time); withSize stats each for its size (a file
// trimmed meanwhile is then left out).
func (j *Journal) segmentsIn(ents []fs.DirEntry, withSize bool) []SegmentInfo {
	var out []SegmentInfo
	for _, e := range ents {
		first, last, ok := parseSegName(e.Name())
		if !ok {
			continue
		}
		var size int64
		if withSize {
			info, err := e.Info()
			if err != nil {
				continue // trimmed meanwhile
			}
			size = info.Size()
		}
		var t time.Time
		if p := strings.Split(strings.TrimSuffix(e.Name(), segExt), "-"); len(p) == 3 {
			if ns, err := strconv.ParseInt(p[2], 10, 64); err == nil {
				t = time.Unix(0, ns).UTC()
			}
		}
		out = append(out, SegmentInfo{First: first, Last: last, Time: t, Size: size, File: e.Name()})
	}
	sort.Slice(out, func(a, b int) bool {
		if out[a].First != out[b].First {
			return out[a].First < out[b].First
		}
		return out[a].Time.Before(out[b].Time)
	})
	return out
}

// Read returns a segment's data after checking its checksum and that its
// content matches its name.
func (j *Journal) Read(si SegmentInfo) ([]byte, error) {
	path, err := j.segmentPath(si)
	if err != nil {
		return nil, err
	}
	raw, err := readStoreFile(path)
	if err != nil {
		return nil, fmt.Errorf("journal %s: %w", j.name, err)
	}
	return j.segmentData(si, raw)
}

// segmentPath is where segment si is, refusing a name that is not one.
func (j *Journal) segmentPath(si SegmentInfo) (string, error) {
	if si.File != filepath.Base(si.File) {
		return "", fmt.Errorf("journal %s: bad segment name %q", j.name, si.File)
	}
	return filepath.Join(j.dir, si.File), nil
}

// segmentData checks segment si's file content raw (its checksum, and
// that it holds what its name says) and returns the data it frames.
func (j *Journal) segmentData(si SegmentInfo, raw []byte) ([]byte, error) {
	seg, err := format.DecodeSegment(raw)
	if err != nil {
		return nil, fmt.Errorf("journal %s segment %s: %w", j.name, si.File, err)
	}
	if first, last, ok := parseSegName(si.File); !ok || first != seg.First || last != seg.Last {
		return nil, fmt.Errorf("journal %s segment %s: holds revisions %d-%d, not what its name says", j.name, si.File, seg.First, seg.Last)
	}
	return seg.Data, nil
}

// Break is a declared hole in a journal: revisions From..To were never
// recorded because the chain restarted after them (Append writes it when a
// segment does not follow the journal's tail).
type Break struct {
	From, To uint64
	Time     time.Time
	File     string
}

const breakExt = ".break"

func breakName(from, to uint64) string { return rangeRecordName(from, to, breakExt) }

func (j *Journal) markBreak(from, to uint64, t time.Time) error {
	if err := j.writeRangeRecord(breakExt, from, to, t); err != nil {
		return fmt.Errorf("journal %s: recording the break before revision %d: %w", j.name, to+1, err)
	}
	return nil
}

// Breaks lists the declared holes, each checked against its checksum and
// its name (a damaged one is returned as an error naming it, after the
// good ones).
func (j *Journal) Breaks() ([]Break, error) {
	recs, err := j.rangeRecords(breakExt, "break")
	out := make([]Break, len(recs))
	for i, r := range recs {
		out[i] = Break(r)
	}
	return out, err
}

// sinceFile records the revision from which the journal's chain restarts
// are declared: segments appended by a kubekeep that wrote no breaks leave
// holes nobody can tell from lost segments.
const sinceFile = "breaks-since"

func (j *Journal) markSince() error {
	if _, err := os.Lstat(filepath.Join(j.dir, sinceFile)); err == nil {
		return nil
	}
	data, err := format.SealJSON(map[string]uint64{"revision": j.tail})
	if err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(j.dir, sinceFile), data, 0o600); err != nil {
		return fmt.Errorf("journal %s: %w", j.name, err)
	}
	return nil
}

// since returns the revision from which breaks are declared; ok is false
// when no kubekeep that declares them has appended yet.
func (j *Journal) since() (rev uint64, ok bool, err error) {
	data, err := readStoreFile(filepath.Join(j.dir, sinceFile))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, false, nil
	}
	var v struct{ Revision uint64 }
	if err == nil {
		err = format.UnsealJSON(data, &v)
	}
	if err != nil {
		return 0, false, fmt.Errorf("journal %s: %s: %w", j.name, sinceFile, err)
	}
	return v.Revision, true, nil
}

// Gap is a run of revisions no segment holds and no break declares: a
// segment that was lost (deleted, or never made it to disk). Undeclared is
// set for a gap from before the journal declared its chain restarts: it
// may be a restart as well as a loss.
type Gap struct {
	From, To   uint64
	Undeclared bool
}

// Gaps returns the undeclared holes between the journal's segments (in
// the revision ranges their names give, so a damaged segment is not a
// gap; Verify reports it by itself).
func (j *Journal) Gaps() ([]Gap, error) {
	since, sinceOK, _ := j.since() // damaged: every gap is undeclared; verify reports it
	segs, err := j.List()
	if err != nil {
		return nil, err
	}
	breaks, _ := j.Breaks()
	declared := func(from, to uint64) bool {
		for _, b := range breaks {
			if b.From <= from && b.To >= to {
				return true
			}
		}
		return false
	}
	var out []Gap
	for _, g := range nameHoles(segs) {
		if !declared(g.From, g.To) {
			g.Undeclared = !sinceOK || g.To <= since
			out = append(out, g)
		}
	}
	return out, nil
}

// nameHoles returns the runs of revisions no segment of segs (a listing)
// holds by its name, declared or not.
func nameHoles(segs []SegmentInfo) []Gap {
	var out []Gap
	var covered uint64
	for i, si := range segs {
		if i > 0 && si.First > covered+1 {
			out = append(out, Gap{From: covered + 1, To: si.First - 1})
		}
		covered = max(covered, si.Last)
	}
	return out
}

// Needed returns the segments a replay from a snapshot at afterRev needs to
// reach untilRev (0: no revision target) or untilTime (zero: no time
// target), in order: those holding a revision after afterRev, up to and
// including the first that reaches the target (all of them without a
// target). A restore that reads only these is not blocked by damage in
// segments after its target.
func (j *Journal) Needed(afterRev, untilRev uint64, untilTime time.Time) ([]SegmentInfo, error) {
	segs, err := j.List()
	if err != nil {
		return nil, err
	}
	var out []SegmentInfo
	for _, si := range segs {
		if si.Last <= afterRev {
			continue
		}
		if untilRev > 0 && si.First > untilRev {
			break
		}
		out = append(out, si)
		if untilRev > 0 && si.Last >= untilRev {
			break
		}
		if !untilTime.IsZero() && !si.Time.Before(untilTime) {
			break
		}
	}
	return out, nil
}

// ReadNeeded reads the segments Needed returns, each checked.
func (j *Journal) ReadNeeded(afterRev, untilRev uint64, untilTime time.Time) ([][]byte, []SegmentInfo, error) {
	segs, err := j.Needed(afterRev, untilRev, untilTime)
	if err != nil {
		return nil, nil, err
	}
	out := make([][]byte, 0, len(segs))
	for _, si := range segs {
		data, err := j.Read(si)
		if err != nil {
			return nil, nil, err
		}
		out = append(out, data)
	}
	return out, segs, nil
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
	// Breaks before what is kept declare nothing any more.
	breaks, _ := j.Breaks()
	for _, b := range breaks {
		if b.To < beforeRevision {
			if err := os.Remove(filepath.Join(j.dir, b.File)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return n, fmt.Errorf("journal %s: %w", j.name, err)
			}
		}
	}
	if n > 0 {
		return n, syncDir(j.dir)
	}
	return n, nil
}
