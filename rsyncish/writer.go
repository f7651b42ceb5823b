package rsyncish

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kubekeep/kubekeep/rsyncish/format"
)

// WriteOptions tune one version.
type WriteOptions struct {
	// Time of the version; zero means now. Stored in UTC.
	Time time.Time
	// Parent is the version whose file metadata lets unchanged files skip
	// reading and whose blocks changed blocks are compared against: ""
	// means the newest version, "none" means no parent.
	Parent string
}

// VersionWriter builds one version. It is not safe for concurrent use.
// Nothing it writes is visible as a version until Commit returns.
type VersionWriter struct {
	s     *Store
	ctx   context.Context
	id    string
	start time.Time
	t0    time.Time
	bs    int
	x     *index
	br    *blobReader

	parent      string
	prevFiles   map[string]*format.Entry
	prevStreams map[string]*format.Entry

	entries []format.Entry
	seen    map[string]bool
	paths   []string
	skipped []format.Skipped
	meta    map[string]json.RawMessage
	stats   format.Stats
	// requires is what Require recorded (require.go).
	requires []format.Requirement

	pk       packer
	storeDev uint64
	storeIno uint64
	done     bool

	pool sync.Pool
	old  []byte // previous content of the block being compared
	tmp  []byte
}

// StreamInfo describes a stored stream.
type StreamInfo struct {
	Name     string `json:"name"`
	Size     int64  `json:"size"`
	BytesNew int64  `json:"bytesNew"`
}

// NewVersion starts a version. The caller must hold the lock (Lock) until
// Commit or Abort returns.
func (s *Store) NewVersion(ctx context.Context, opts WriteOptions) (*VersionWriter, error) {
	if err := s.holdsLock(); err != nil {
		return nil, err
	}
	free, err := freeBytes(s.dir)
	if err != nil {
		return nil, err
	}
	if free < s.opts.MinFree {
		return nil, fmt.Errorf("%w: %s free on the store's filesystem (%s), below minFree %s", ErrNoSpace, human(free), s.dir, human(s.opts.MinFree))
	}
	var st syscall.Stat_t
	if err := syscall.Stat(s.dir, &st); err != nil {
		return nil, err
	}
	if err := s.upgradeFormat(); err != nil {
		return nil, err
	}
	x, err := s.index()
	if err != nil {
		return nil, err
	}
	t := opts.Time
	if t.IsZero() {
		t = time.Now()
	}
	t = t.UTC()
	w := &VersionWriter{
		s: s, ctx: ctx, start: t, t0: time.Now(), bs: s.opts.BlockSize, x: x,
		id:   t.Format("20060102T150405Z") + "-" + randHex(4),
		seen: map[string]bool{}, meta: map[string]json.RawMessage{},
		storeDev: uint64(st.Dev), storeIno: st.Ino,
		prevFiles: map[string]*format.Entry{}, prevStreams: map[string]*format.Entry{},
	}
	w.pk = packer{s: s, x: x, slack: int64(w.batchSize())}
	w.br = newBlobReader(s, x)
	w.br.override = w.pk.current
	if opts.Parent != "none" {
		if err := w.loadParent(opts.Parent); err != nil {
			return nil, err
		}
	}
	return w, nil
}

// ID is the ID the version will have once committed.
func (w *VersionWriter) ID() string { return w.id }

func (w *VersionWriter) loadParent(want string) error {
	id := want
	if id == "" {
		vs, err := w.s.Versions()
		if err != nil {
			return err
		}
		if len(vs) == 0 {
			return nil
		}
		id = vs[len(vs)-1].ID
	}
	m, err := w.s.manifest(id)
	if err != nil {
		if want == "" {
			// The newest manifest is damaged: back up without a parent
			// rather than not at all.
			w.s.log.Warn("cannot use the previous version as parent; reading every file", "version", id, "err", err)
			return nil
		}
		return fmt.Errorf("parent: %w", err)
	}
	if m.Header.BlockSize != w.bs {
		return nil // extents of another block size cannot be reused per block
	}
	w.parent = id
	for i := range m.Entries {
		e := &m.Entries[i]
		switch e.Type {
		case format.TypeFile:
			w.prevFiles[e.Path] = e
		case format.TypeStream:
			w.prevStreams[e.Path] = e
		}
	}
	return nil
}

// SetMeta stores v, as JSON, under key in the version's manifest.
func (w *VersionWriter) SetMeta(key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("meta %q: %w", key, err)
	}
	w.meta[key] = b
	return nil
}

// Warn records a path that was seen and not stored; it ends up in the
// manifest's skipped list and the log.
func (w *VersionWriter) skip(path, reason string) {
	w.s.log.Warn("not backed up", "path", path, "reason", reason)
	w.skipped = append(w.skipped, format.Skipped{Path: path, Reason: reason})
}

type walked struct {
	host string
	src  string
	info fs.FileInfo
	st   *syscall.Stat_t
}

// AddTree adds hostPaths, read from root+hostPath, with everything below
// them. Symlinks are stored as symlinks and never followed; sockets, devices
// and fifos are skipped with a warning; a missing path is skipped with a
// warning (kubeadm's DirectoryOrCreate paths need not exist). exclude holds
// host paths (excluding everything below them) or glob patterns matched
// against the host path and against the base name. It refuses, wrapping
// ErrSameFS, when a file sits on the store's filesystem, unless
// Options.AllowSameFilesystem.
func (w *VersionWriter) AddTree(root string, hostPaths []string, exclude []string) error {
	if w.done {
		return errors.New("version already committed or aborted")
	}
	if root == "" {
		root = "/"
	}
	realRoot, err := filepath.EvalSymlinks(root)
	if err != nil {
		return fmt.Errorf("root %s: %w", root, err)
	}
	var todo []walked
	for _, hp := range hostPaths {
		if !filepath.IsAbs(hp) {
			return fmt.Errorf("backup path %q is not absolute", hp)
		}
		hp = filepath.Clean(hp)
		src := filepath.Join(realRoot, hp)
		if parent, err := filepath.EvalSymlinks(filepath.Dir(src)); err == nil && !within(parent, realRoot) {
			w.skip(hp, "a parent directory is a symlink leading out of the root "+root)
			continue
		}
		if _, err := os.Lstat(src); errors.Is(err, fs.ErrNotExist) {
			w.skip(hp, "does not exist")
			continue
		}
		w.paths = append(w.paths, hp)
		err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
			host := hp + strings.TrimPrefix(p, src)
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil // vanished while walking
				}
				return fmt.Errorf("reading %s: %w", host, err)
			}
			if Excluded(host, exclude) {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			info, err := d.Info()
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("stat %s: %w", host, err)
			}
			st := info.Sys().(*syscall.Stat_t)
			if uint64(st.Dev) == w.storeDev && st.Ino == w.storeIno {
				return filepath.SkipDir // the store itself, when it sits inside a backed-up tree
			}
			if uint64(st.Dev) == w.storeDev && !w.s.opts.AllowSameFilesystem {
				return fmt.Errorf("%w: %s and the store %s share a filesystem, so one disk failure loses both; put the store on the second disk (or set store.allowSameFilesystem for a test)", ErrSameFS, host, w.s.dir)
			}
			if w.seen[host] {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			w.seen[host] = true
			todo = append(todo, walked{host: host, src: p, info: info, st: st})
			return nil
		})
		if err != nil {
			return err
		}
	}
	if err := w.checkEstimate(todo); err != nil {
		return err
	}
	for _, t := range todo {
		if err := w.ctx.Err(); err != nil {
			return err
		}
		if err := w.addOne(t); err != nil {
			return err
		}
	}
	return nil
}

func within(p, root string) bool {
	return p == root || root == "/" || strings.HasPrefix(p, root+"/")
}

// Excluded reports whether AddTree leaves host out for exclude: an entry
// is a host path (excluding everything below it) or a glob pattern
// (filepath.Match) matched against the host path and against its base
// name; empty entries are ignored. Lacks compares with the same rule.
func Excluded(host string, exclude []string) bool {
	for _, ex := range exclude {
		if ex == "" {
			continue
		}
		if strings.ContainsAny(ex, "*?[") {
			if ok, _ := filepath.Match(ex, host); ok {
				return true
			}
			if ok, _ := filepath.Match(ex, filepath.Base(host)); ok {
				return true
			}
			continue
		}
		ex = filepath.Clean(ex)
		if host == ex || strings.HasPrefix(host, ex+"/") {
			return true
		}
	}
	return false
}

func (w *VersionWriter) unchanged(t walked) *format.Entry {
	p := w.prevFiles[t.host]
	if p == nil || p.Size != t.info.Size() || p.Ino != t.st.Ino || p.CTime == 0 ||
		p.MTime != t.info.ModTime().UnixNano() || p.CTime != ctimeOf(t.st) {
		return nil
	}
	for _, x := range p.Extents {
		if !x.ID.IsZero() && !w.x.has(x.ID) {
			return nil // its blob is gone from the index (damaged): read again
		}
	}
	return p
}

// checkEstimate refuses before reading when the new files alone cannot fit:
// a changed file is likely to share most blocks with its previous version,
// so it is not counted; the running check in putBlob covers the rest.
func (w *VersionWriter) checkEstimate(todo []walked) error {
	var need int64
	for _, t := range todo {
		if t.info.Mode().IsRegular() && w.prevFiles[t.host] == nil {
			need += t.st.Blocks * 512
		}
	}
	free, err := freeBytes(w.s.dir)
	if err != nil {
		return err
	}
	if free < need+w.s.opts.MinFree {
		return fmt.Errorf("%w: new files need up to %s, %s free on %s, minFree %s", ErrNoSpace, human(need), human(free), w.s.dir, human(w.s.opts.MinFree))
	}
	return nil
}

func ctimeOf(st *syscall.Stat_t) int64 { return st.Ctim.Sec*1e9 + st.Ctim.Nsec }

func (w *VersionWriter) addOne(t walked) error {
	e := format.Entry{
		Path:  t.host,
		Mode:  uint32(t.st.Mode & 0o7777),
		UID:   t.st.Uid,
		GID:   t.st.Gid,
		MTime: t.info.ModTime().UnixNano(),
	}
	switch m := t.info.Mode(); {
	case m.IsDir():
		e.Type = format.TypeDir
	case m&fs.ModeSymlink != 0:
		target, err := os.Readlink(t.src)
		if err != nil {
			return fmt.Errorf("readlink %s: %w", t.host, err)
		}
		e.Type, e.Target = format.TypeSymlink, target
	case m.IsRegular():
		e.Type = format.TypeFile
		if p := w.unchanged(t); p != nil {
			e.Size, e.CTime, e.Ino, e.Extents = p.Size, p.CTime, p.Ino, p.Extents
			w.stats.FilesReused++
			break
		}
		if err := w.readFile(t, &e); err != nil {
			return err
		}
		if e.Type == "" {
			return nil
		}
	default:
		w.skip(t.host, "not a regular file, directory or symlink ("+m.Type().String()+")")
		return nil
	}
	w.entries = append(w.entries, e)
	return nil
}

func (w *VersionWriter) readFile(t walked, e *format.Entry) error {
	// O_NONBLOCK: a file swapped for a FIFO since the walk must not hang
	// the backup in open(2); the fstat below then skips it.
	f, err := os.OpenFile(t.src, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NOATIME|syscall.O_NONBLOCK, 0)
	if errors.Is(err, syscall.EPERM) {
		f, err = os.OpenFile(t.src, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	}
	if errors.Is(err, fs.ErrNotExist) {
		e.Type = "" // vanished since the walk
		return nil
	}
	if err != nil {
		return fmt.Errorf("open %s: %w", t.host, err)
	}
	defer f.Close()
	var before syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &before); err != nil {
		return fmt.Errorf("stat %s: %w", t.host, err)
	}
	if before.Mode&syscall.S_IFMT != syscall.S_IFREG {
		e.Type = "" // replaced by something else since the walk
		return nil
	}
	_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_SEQUENTIAL)
	exts, n, err := w.store(f, w.prevFiles[t.host], before.Size)
	if err != nil {
		return fmt.Errorf("backing up %s: %w", t.host, err)
	}
	var after syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &after); err != nil {
		return fmt.Errorf("stat %s: %w", t.host, err)
	}
	e.Mode, e.UID, e.GID = uint32(before.Mode&0o7777), before.Uid, before.Gid
	e.MTime = before.Mtim.Sec*1e9 + before.Mtim.Nsec
	e.CTime, e.Ino = ctimeOf(&before), before.Ino
	if after.Size != before.Size || after.Mtim != before.Mtim || after.Ctim != before.Ctim {
		// The copy may be torn; a zero ctime makes the next run read it again.
		w.s.log.Warn("file changed while it was read; this version holds a mix of old and new content", "path", t.host)
		e.CTime = 0
	}
	e.Size, e.Extents = n, exts
	w.stats.FilesRead++
	return nil
}

// AddStream stores a named stream (the etcd snapshot) straight from r into
// packs: no temp copy anywhere. Blocks are compared with the previous
// version's stream of the same name.
func (w *VersionWriter) AddStream(name string, r io.Reader) (StreamInfo, error) {
	if w.done {
		return StreamInfo{}, errors.New("version already committed or aborted")
	}
	if name == "" || strings.ContainsAny(name, "\n\x00") {
		return StreamInfo{}, fmt.Errorf("stream name %q is not allowed", name)
	}
	for _, e := range w.entries {
		if e.Type == format.TypeStream && e.Path == name {
			return StreamInfo{}, fmt.Errorf("stream %q added twice", name)
		}
	}
	before := w.pk.bytesNew
	exts, n, err := w.store(r, w.prevStreams[name], -1)
	if err != nil {
		return StreamInfo{}, fmt.Errorf("stream %s: %w", name, err)
	}
	w.entries = append(w.entries, format.Entry{Path: name, Type: format.TypeStream, Size: n, Extents: exts, MTime: time.Now().UnixNano()})
	return StreamInfo{Name: name, Size: n, BytesNew: w.pk.bytesNew - before}, nil
}

// Commit makes the version durable and visible: packs and indexes first,
// then the manifest under a temp name, fsync, rename, fsync the directory.
// A crash before the rename leaves no version, only leftovers; a failure
// (a full disk) removes the packs this version wrote, as Abort does.
func (w *VersionWriter) Commit() (VersionInfo, error) {
	if w.done {
		return VersionInfo{}, errors.New("version already committed or aborted")
	}
	if err := w.ctx.Err(); err != nil {
		w.Abort()
		return VersionInfo{}, err
	}
	if err := w.pk.finish(); err != nil {
		w.Abort()
		return VersionInfo{}, err
	}
	w.done = true
	defer w.br.Close()
	sort.SliceStable(w.entries, func(i, j int) bool {
		a, b := w.entries[i], w.entries[j]
		if (a.Type == format.TypeStream) != (b.Type == format.TypeStream) {
			return b.Type == format.TypeStream
		}
		return a.Path < b.Path
	})
	cfg := w.s.config()
	cfg.Format = format.StoreFormat // what this manifest is written in
	h := format.Header{ID: w.id, Time: w.start, BlockSize: w.bs, Parent: w.parent, Paths: w.paths, Skipped: w.skipped, Store: &cfg, Requires: w.requires}
	for _, e := range w.entries {
		switch e.Type {
		case format.TypeFile:
			h.Files++
			h.Size += e.Size
		case format.TypeDir:
			h.Dirs++
		case format.TypeSymlink:
			h.Symlinks++
		case format.TypeStream:
			h.Size += e.Size
			h.Streams = append(h.Streams, format.StreamHeader{Name: e.Path, Size: e.Size})
		}
	}
	if len(w.meta) > 0 {
		h.Meta = w.meta
	}
	w.stats.BytesNew, w.stats.BytesWritten = w.pk.bytesNew, w.pk.bytesWritten
	w.stats.Duration = time.Since(w.t0)
	h.Stats = w.stats
	m := &format.Manifest{Header: h, Entries: w.entries}
	n, published, err := w.writeManifest(m)
	if err != nil {
		if !published {
			w.forget()
		}
		return VersionInfo{}, err
	}
	w.s.refreshMidx()
	vi := infoFromHeader(&h)
	vi.Stats.BytesWritten += n
	vi.Stats.Duration = time.Since(w.t0)
	w.s.log.Info("version committed", "store", w.s.dir, "version", w.id, "files", h.Files, "size", h.Size,
		"bytesRead", vi.Stats.BytesRead, "bytesNew", vi.Stats.BytesNew, "duration", vi.Stats.Duration)
	return vi, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func (w *VersionWriter) writeManifest(m *format.Manifest) (n int64, published bool, err error) {
	final := w.s.path(versionsDir, w.id+manifestExt)
	tmp := tmpName(final)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return 0, false, noSpace(fmt.Errorf("writing manifest: %w", err))
	}
	cw := &countWriter{w: f}
	err = format.EncodeManifest(cw, m)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, final)
	}
	if err != nil {
		os.Remove(tmp)
		return 0, false, noSpace(fmt.Errorf("writing manifest of version %s: %w", w.id, err))
	}
	// Renamed: the version exists (a crash now would keep it), so its
	// packs stay whatever the directory sync says.
	if err := syncDir(w.s.path(versionsDir)); err != nil {
		return 0, true, err
	}
	return cw.n, true, nil
}

// Abort drops the version and removes every pack it wrote: no version
// refers to them, and a backup that failed because the disk is full must
// not keep the space until the next prune.
func (w *VersionWriter) Abort() {
	if w.done {
		return
	}
	w.done = true
	w.br.Close()
	w.forget()
}

// forget removes the packs of a version that will not be committed and
// the shared index that names their blobs, so a later version of this
// process does not refer to them.
func (w *VersionWriter) forget() {
	if err := w.pk.drop(); err != nil {
		w.s.log.Warn("could not remove the packs of an unfinished version; the next prune removes them", "version", w.id, "err", err)
	}
	w.s.mu.Lock()
	w.s.idx = nil
	w.s.mu.Unlock()
}
