package rsyncish

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kubekeep/kubekeep/rsyncish/format"
)

// packTarget is where a pack is closed: big enough that a store holds few
// files, small enough that pruning can rewrite a pack cheaply.
const packTarget = 16 << 20

// maxBlockExtents bounds how fragmented one block may become through
// page-level reuse before it is stored whole again.
const maxBlockExtents = 8

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

	pack      *packWriter
	storeDev  uint64
	storeIno  uint64
	spaceLeft int64 // bytes we may write before the next statfs
	done      bool

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
	w.br = newBlobReader(s, x)
	w.br.override = w.currentPack
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
			if excluded(host, exclude) {
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

func excluded(host string, exclude []string) bool {
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
	f, err := os.OpenFile(t.src, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NOATIME, 0)
	if errors.Is(err, syscall.EPERM) {
		f, err = os.OpenFile(t.src, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
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
	before := w.stats.BytesNew
	exts, n, err := w.store(r, w.prevStreams[name], -1)
	if err != nil {
		return StreamInfo{}, fmt.Errorf("stream %s: %w", name, err)
	}
	w.entries = append(w.entries, format.Entry{Path: name, Type: format.TypeStream, Size: n, Extents: exts, MTime: time.Now().UnixNano()})
	return StreamInfo{Name: name, Size: n, BytesNew: w.stats.BytesNew - before}, nil
}

// ---- the block pipeline ----

type batch struct {
	buf  []byte
	n    int
	hole bool // a hole in a sparse file: zeros, never read
	ids  []format.ID
	err  error
	done chan struct{}
}

func (w *VersionWriter) batchSize() int { return max(4<<20, w.bs) }

func (w *VersionWriter) getBuf() []byte {
	if b, ok := w.pool.Get().(*[]byte); ok {
		return *b
	}
	return make([]byte, w.batchSize())
}

// store reads r to EOF and returns its extents. Reading, hashing (on every
// core) and writing overlap; at most 4 batches are in flight, so memory
// stays at a few MiB whatever the size of the file. size >= 0 enables
// skipping holes of a regular file (preallocated WAL segments).
func (w *VersionWriter) store(r io.Reader, prev *format.Entry, size int64) (format.Extents, int64, error) {
	ctx, cancel := context.WithCancel(w.ctx)
	defer cancel()
	out := make(chan *batch, 3)
	go func() {
		defer close(out)
		f, _ := r.(*os.File)
		var off int64
		for ctx.Err() == nil {
			b := &batch{done: make(chan struct{})}
			bsz := w.batchSize()
			if f != nil && size >= 0 && off < size {
				if data, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA); (err == nil && data >= off+int64(bsz)) || errors.Is(err, syscall.ENXIO) {
					n := min(int64(bsz), size-off)
					b.hole, b.n = true, int(n)
					if _, err := f.Seek(off+n, io.SeekStart); err != nil {
						b.err = err
					}
					off += n
					close(b.done)
					select {
					case out <- b:
					case <-ctx.Done():
					}
					continue
				}
				if _, err := f.Seek(off, io.SeekStart); err != nil {
					b.err = err
					close(b.done)
					out <- b
					return
				}
			}
			b.buf = w.getBuf()
			n, err := io.ReadFull(r, b.buf)
			b.n = n
			off += int64(n)
			eof := err == io.EOF || err == io.ErrUnexpectedEOF
			if err != nil && !eof {
				b.err = err
			}
			if n > 0 {
				go w.hashBatch(b)
			} else {
				close(b.done)
			}
			select {
			case out <- b:
			case <-ctx.Done():
				return
			}
			if eof || b.err != nil {
				return
			}
		}
	}()
	var exts format.Extents
	var total int64
	var pi prevIter
	if prev != nil {
		pi = prevIter{exts: prev.Extents}
	}
	var err error
	for b := range out {
		<-b.done
		if err == nil {
			err = b.err
		}
		if err == nil {
			err = ctx.Err()
		}
		if err == nil {
			exts, err = w.consume(b, total, exts, &pi)
			total += int64(b.n)
		}
		if b.buf != nil {
			buf := b.buf
			w.pool.Put(&buf)
		}
		if err != nil {
			cancel()
		}
	}
	if err != nil {
		return nil, 0, err
	}
	w.stats.BytesRead += total
	return exts, total, nil
}

var zeros = make([]byte, 16<<20)

func (w *VersionWriter) hashBatch(b *batch) {
	defer close(b.done)
	nb := (b.n + w.bs - 1) / w.bs
	b.ids = make([]format.ID, nb)
	workers := min(runtime.GOMAXPROCS(0), nb)
	var wg sync.WaitGroup
	for k := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := k; i < nb; i += workers {
				blk := b.buf[i*w.bs : min((i+1)*w.bs, b.n)]
				if !bytes.Equal(blk, zeros[:len(blk)]) {
					b.ids[i] = format.Sum(blk)
				}
			}
		}()
	}
	wg.Wait()
}

func (w *VersionWriter) consume(b *batch, base int64, exts format.Extents, pi *prevIter) (format.Extents, error) {
	for i := 0; i*w.bs < b.n; i++ {
		ln := min(w.bs, b.n-i*w.bs)
		old := pi.block(base+int64(i*w.bs), ln, w.bs)
		if b.hole || b.ids[i].IsZero() {
			exts = append(exts, format.Extent{ID: format.ZeroID, Len: uint32(ln)})
			continue
		}
		id, data := b.ids[i], b.buf[i*w.bs:i*w.bs+ln]
		if w.x.has(id) {
			exts = append(exts, format.Extent{ID: id, Len: uint32(ln)})
			continue
		}
		if len(old) > 0 {
			if d, ok := w.delta(data, old); ok {
				exts = append(exts, d...)
				continue
			}
		}
		if err := w.putBlob(id, data); err != nil {
			return nil, err
		}
		exts = append(exts, format.Extent{ID: id, Len: uint32(ln)})
	}
	return exts, nil
}

// prevIter walks the previous version's extents block by block; extents
// never cross block boundaries, so each block's extents are a contiguous run.
type prevIter struct {
	exts format.Extents
	i    int
	pos  int64
}

func (p *prevIter) block(off int64, ln, bs int) format.Extents {
	for p.i < len(p.exts) && p.pos < off {
		p.pos += int64(p.exts[p.i].Len)
		p.i++
	}
	if p.pos != off {
		return nil
	}
	j, end := p.i, p.pos
	for j < len(p.exts) && end < off+int64(bs) {
		end += int64(p.exts[j].Len)
		j++
	}
	if end-off != int64(ln) {
		return nil // the block changed size (file grew or shrank): store it whole
	}
	return p.exts[p.i:j]
}

// delta compares a changed block with its previous content page by page and
// describes it as the unchanged pages of the old extents plus new blobs for
// runs of changed pages. ok is false when that would not pay (more than half
// the block changed or it gets too fragmented) or the old content cannot be
// read; the caller then stores the block whole.
func (w *VersionWriter) delta(data []byte, old format.Extents) (format.Extents, bool) {
	if cap(w.old) < w.bs {
		w.old = make([]byte, w.bs)
	}
	prev := w.old[:len(data)]
	pos := 0
	for _, x := range old {
		if x.ID.IsZero() {
			clear(prev[pos : pos+int(x.Len)])
		} else {
			blob, err := w.br.blob(x.ID, w.tmp)
			if err != nil || int(x.Off)+int(x.Len) > len(blob) {
				return nil, false
			}
			w.tmp = blob
			copy(prev[pos:], blob[x.Off:x.Off+x.Len])
		}
		pos += int(x.Len)
	}
	type run struct {
		a, b int
		same bool
	}
	var runs []run
	changed := 0
	for a := 0; a < len(data); a += PageSize {
		b := min(a+PageSize, len(data))
		same := bytes.Equal(data[a:b], prev[a:b])
		if !same {
			changed += b - a
		}
		if n := len(runs); n > 0 && runs[n-1].same == same {
			runs[n-1].b = b
		} else {
			runs = append(runs, run{a, b, same})
		}
	}
	if changed*2 > len(data) {
		return nil, false
	}
	var out format.Extents
	for _, r := range runs {
		if r.same {
			out = append(out, sliceExtents(old, r.a, r.b)...)
		} else {
			out = append(out, format.Extent{Len: uint32(r.b - r.a)})
		}
	}
	if len(out) > maxBlockExtents {
		return nil, false
	}
	// Only now write the changed runs, once the block is known to pay off.
	var res format.Extents
	for _, r := range runs {
		if r.same {
			res = append(res, sliceExtents(old, r.a, r.b)...)
			continue
		}
		part := data[r.a:r.b]
		if bytes.Equal(part, zeros[:len(part)]) {
			res = append(res, format.Extent{ID: format.ZeroID, Len: uint32(len(part))})
			continue
		}
		id := format.Sum(part)
		if !w.x.has(id) {
			if err := w.putBlob(id, part); err != nil {
				return nil, false
			}
		}
		res = append(res, format.Extent{ID: id, Len: uint32(len(part))})
	}
	return res, true
}

// sliceExtents returns the extents covering bytes [a,b) of the run xs.
func sliceExtents(xs format.Extents, a, b int) format.Extents {
	var out format.Extents
	pos := 0
	for _, x := range xs {
		xa, xb := pos, pos+int(x.Len)
		pos = xb
		lo, hi := max(a, xa), min(b, xb)
		if lo >= hi {
			continue
		}
		off := x.Off + uint32(lo-xa)
		if x.ID.IsZero() {
			off = 0
		}
		out = append(out, format.Extent{ID: x.ID, Off: off, Len: uint32(hi - lo)})
	}
	return out
}

// ---- packs ----

type packWriter struct {
	id      string
	num     uint32
	path    string
	f       *os.File
	bw      *bufio.Writer
	size    int64
	entries []format.IndexEntry
}

// currentPack serves blob reads from the pack being written.
func (w *VersionWriter) currentPack(p uint32) (*os.File, bool) {
	if w.pack == nil || w.pack.num != p {
		return nil, false
	}
	if err := w.pack.bw.Flush(); err != nil {
		return nil, false
	}
	return w.pack.f, true
}

func (w *VersionWriter) putBlob(id format.ID, data []byte) error {
	if err := w.reserve(int64(len(data))); err != nil {
		return err
	}
	if w.pack != nil && w.pack.size+int64(len(data)) > packTarget {
		if err := w.finishPack(); err != nil {
			return err
		}
	}
	if w.pack == nil {
		id := randHex(16)
		path := w.s.path(packsDir, id+packExt)
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return fmt.Errorf("creating pack: %w", err)
		}
		w.pack = &packWriter{id: id, num: w.x.addPack(id), path: path, f: f, bw: bufio.NewWriterSize(f, 1<<20)}
	}
	p := w.pack
	if _, err := p.bw.Write(data); err != nil {
		return noSpace(fmt.Errorf("writing pack %s: %w", p.path, err))
	}
	p.entries = append(p.entries, format.IndexEntry{ID: id, Off: uint32(p.size), Len: uint32(len(data))})
	w.x.put(id, loc{pack: p.num, off: uint32(p.size), len: uint32(len(data))})
	p.size += int64(len(data))
	w.stats.BytesNew += int64(len(data))
	w.stats.BytesWritten += int64(len(data))
	return nil
}

// reserve keeps MinFree free: statfs every 8 MiB of writes is cheap and
// stops a backup before the disk is full rather than at ENOSPC.
func (w *VersionWriter) reserve(n int64) error {
	w.spaceLeft -= n
	if w.spaceLeft >= 0 {
		return nil
	}
	free, err := freeBytes(w.s.dir)
	if err != nil {
		return err
	}
	const step = 8 << 20
	if free-w.s.opts.MinFree < step+n+int64(w.batchSize()) {
		return fmt.Errorf("%w: only %s free on the store's filesystem (%s) with minFree %s; this version needs more: free space or prune", ErrNoSpace, human(free), w.s.dir, human(w.s.opts.MinFree))
	}
	w.spaceLeft = step
	return nil
}

// finishPack makes the pack durable, then publishes its index: an index
// never names data that is not on disk.
func (w *VersionWriter) finishPack() error {
	p := w.pack
	if p == nil {
		return nil
	}
	w.pack = nil
	if err := p.bw.Flush(); err != nil {
		p.f.Close()
		return noSpace(fmt.Errorf("writing pack %s: %w", p.path, err))
	}
	if err := p.f.Sync(); err != nil {
		p.f.Close()
		return noSpace(fmt.Errorf("fsync pack %s: %w", p.path, err))
	}
	if err := p.f.Close(); err != nil {
		return err
	}
	if err := syncDir(w.s.path(packsDir)); err != nil {
		return err
	}
	idx := format.EncodeIndex(p.entries)
	if err := writeFileAtomic(w.s.path(indexDir, p.id+indexExt), idx, 0o600); err != nil {
		return noSpace(fmt.Errorf("writing index of pack %s: %w", p.id, err))
	}
	w.stats.BytesWritten += int64(len(idx))
	return nil
}

// Commit makes the version durable and visible: packs and indexes first,
// then the manifest under a temp name, fsync, rename, fsync the directory.
// A crash before the rename leaves no version, only leftovers.
func (w *VersionWriter) Commit() (VersionInfo, error) {
	if w.done {
		return VersionInfo{}, errors.New("version already committed or aborted")
	}
	if err := w.ctx.Err(); err != nil {
		w.Abort()
		return VersionInfo{}, err
	}
	w.done = true
	defer w.br.Close()
	if err := w.finishPack(); err != nil {
		w.abortPack()
		return VersionInfo{}, err
	}
	sort.SliceStable(w.entries, func(i, j int) bool {
		a, b := w.entries[i], w.entries[j]
		if (a.Type == format.TypeStream) != (b.Type == format.TypeStream) {
			return b.Type == format.TypeStream
		}
		return a.Path < b.Path
	})
	h := format.Header{ID: w.id, Time: w.start, BlockSize: w.bs, Parent: w.parent, Paths: w.paths, Skipped: w.skipped}
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
	w.stats.Duration = time.Since(w.t0)
	h.Stats = w.stats
	m := &format.Manifest{Header: h, Entries: w.entries}
	n, err := w.writeManifest(m)
	if err != nil {
		return VersionInfo{}, err
	}
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

func (w *VersionWriter) writeManifest(m *format.Manifest) (int64, error) {
	final := w.s.path(versionsDir, w.id+manifestExt)
	tmp := tmpName(final)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return 0, fmt.Errorf("writing manifest: %w", err)
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
		return 0, noSpace(fmt.Errorf("writing manifest of version %s: %w", w.id, err))
	}
	if err := syncDir(w.s.path(versionsDir)); err != nil {
		return 0, err
	}
	return cw.n, nil
}

func (w *VersionWriter) abortPack() {
	if w.pack != nil {
		w.pack.f.Close()
		os.Remove(w.pack.path)
		w.pack = nil
	}
}

// Abort drops the version. Packs already finished stay until prune removes
// them as unreferenced; the unfinished one goes now.
func (w *VersionWriter) Abort() {
	if w.done {
		return
	}
	w.done = true
	w.abortPack()
	w.br.Close()
	// Blobs of the dropped pack are in the shared index: forget it so a
	// later version of this process does not refer to them.
	w.s.mu.Lock()
	w.s.idx = nil
	w.s.mu.Unlock()
}

// noSpace makes a full disk say so in words and match ErrNoSpace.
func noSpace(err error) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fmt.Errorf("%w: the store's filesystem is full; free space or prune: %w", ErrNoSpace, err)
	}
	return err
}

func human(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
