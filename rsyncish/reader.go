package rsyncish

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"sync"

	"github.com/kubekeep/kubekeep/rsyncish/format"
)

// extentReader streams a file's content from its extents, checking every
// blob against its ID as it goes.
type extentReader struct {
	br    *blobReader
	own   bool
	done  func() // releases the read lock
	exts  format.Extents
	cur   []byte // rest of the current extent
	buf   []byte
	zeros int // zero bytes still to return for the current extent
	err   error
}

func (r *extentReader) Read(p []byte) (int, error) {
	for len(r.cur) == 0 && r.zeros == 0 {
		if r.err != nil {
			return 0, r.err
		}
		if len(r.exts) == 0 {
			return 0, io.EOF
		}
		x := r.exts[0]
		r.exts = r.exts[1:]
		if x.ID.IsZero() {
			r.zeros = int(x.Len)
			continue
		}
		blob, err := r.br.blob(x.ID, r.buf)
		if err != nil {
			r.err = err
			return 0, err
		}
		r.buf = blob
		if int(x.Off)+int(x.Len) > len(blob) {
			r.err = fmt.Errorf("extent %d+%d beyond blob %s of %d bytes", x.Off, x.Len, x.ID.Short(), len(blob))
			return 0, r.err
		}
		r.cur = blob[x.Off : x.Off+x.Len]
	}
	if r.zeros > 0 {
		n := min(len(p), r.zeros)
		clear(p[:n])
		r.zeros -= n
		return n, nil
	}
	n := copy(p, r.cur)
	r.cur = r.cur[n:]
	return n, nil
}

func (r *extentReader) Close() error {
	if r.done != nil {
		defer r.done()
		r.done = nil
	}
	if r.own {
		return r.br.Close()
	}
	return nil
}

// releaser closes c, then releases the read lock, once.
type releaser struct {
	c    io.Closer
	once sync.Once
	done func()
}

func (r *releaser) Close() error {
	err := r.c.Close()
	r.once.Do(r.done)
	return err
}

// openEntry opens one entry of version id under the read lock, which the
// returned reader holds until it is closed: a prune waits for it.
func (s *Store) openEntry(id, typ, path, what string) (rc io.ReadCloser, size int64, err error) {
	release, err := s.readLock(context.Background())
	if err != nil {
		return nil, 0, err
	}
	defer func() {
		if err != nil {
			release()
		}
	}()
	e, err := s.findEntry(id, typ, path)
	if err != nil {
		return nil, 0, err
	}
	if e == nil {
		return nil, 0, fmt.Errorf("version %s has no %s: %w", id, what, ErrNotFound)
	}
	exts := make(format.Extents, e.n())
	for i := range exts {
		exts[i] = e.mustExtent(i)
	}
	x, err := s.index()
	if err != nil {
		return nil, 0, err
	}
	br := newBlobReader(s, x)
	if e.Size >= prefetchMinSize {
		return s.countReads(newPrefetchReader(br, exts, &releaser{c: br, done: release})), e.Size, nil
	}
	return s.countReads(&extentReader{br: br, own: true, exts: exts, done: release}), e.Size, nil
}

// findEntry is the entry of type typ at path in version id's manifest, nil
// when it has none. Only that entry's line is decoded (a version's
// manifest can list a snapshot of gigabytes: reading one small file or a
// base's stream map out of it must not decode every extent of every
// entry); when the quick scan finds nothing, the whole manifest is decoded
// to be sure (an entry the scan does not recognise, e.g. a name that is
// not UTF-8).
func (s *Store) findEntry(id, typ, path string) (*rawEntry, error) {
	lm, err := s.lazyManifest(id)
	if err != nil {
		return nil, err
	}
	defer lm.close()
	e, err := lm.entry(typ, path, false)
	if err != nil || e != nil || plainName(path) {
		// A plain name is written as the scan looks for it: its absence
		// there is its absence (the full decode of an 8 GiB etcd's base
		// manifest, ~6 MB, cost a fifth of every journal version that
		// looked for an export stream the base does not hold).
		return e, err
	}
	m, err := s.manifest(id)
	if err != nil {
		return nil, err
	}
	for i := range m.Entries {
		if fe := &m.Entries[i]; fe.Type == typ && fe.Path == path {
			return rawOf(fe), nil
		}
	}
	return nil, nil
}

// plainName: printable ASCII that JSON writes as it is (no quote,
// backslash or HTML-escaped character), so the lazy scan's prefix is the
// manifest's own bytes for it.
func plainName(p string) bool {
	for i := 0; i < len(p); i++ {
		if c := p[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}

// OpenStream opens a stored stream of version id. Reads fail (never return
// wrong bytes) when a block does not match its hash.
func (s *Store) OpenStream(id, name string) (io.ReadCloser, int64, error) {
	return s.openEntry(id, format.TypeStream, name, fmt.Sprintf("stream %q", name))
}

// OpenFile opens the content of one stored regular file of version id by
// its host path (e.g. /etc/kubernetes/pki/ca.crt).
func (s *Store) OpenFile(id, hostPath string) (io.ReadCloser, int64, error) {
	hostPath = filepath.Clean(hostPath)
	return s.openEntry(id, format.TypeFile, hostPath, fmt.Sprintf("regular file %s", hostPath))
}

// Entry is one stored item as callers see it.
type Entry struct {
	Path   string `json:"path"`
	Type   string `json:"type"` // file, dir, symlink, stream
	Mode   uint32 `json:"mode"`
	UID    uint32 `json:"uid"`
	GID    uint32 `json:"gid"`
	MTime  int64  `json:"mtime"` // Unix ns
	Size   int64  `json:"size"`
	Target string `json:"target,omitempty"`
}

var typeNames = map[string]string{format.TypeFile: "file", format.TypeDir: "dir", format.TypeSymlink: "symlink", format.TypeStream: "stream"}

// List returns the entries of version id, sorted by path (streams last).
func (s *Store) List(id string) ([]Entry, error) {
	m, err := s.manifest(id)
	if err != nil {
		return nil, err
	}
	out := make([]Entry, 0, len(m.Entries))
	for _, e := range m.Entries {
		out = append(out, Entry{Path: e.Path, Type: typeNames[e.Type], Mode: e.Mode, UID: e.UID, GID: e.GID, MTime: e.MTime, Size: e.Size, Target: e.Target})
	}
	return out, nil
}
