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
func (s *Store) openEntry(id string, match func(*format.Entry) bool, what string) (rc io.ReadCloser, size int64, err error) {
	release, err := s.readLock(context.Background())
	if err != nil {
		return nil, 0, err
	}
	defer func() {
		if err != nil {
			release()
		}
	}()
	m, err := s.manifest(id)
	if err != nil {
		return nil, 0, err
	}
	for i := range m.Entries {
		e := &m.Entries[i]
		if !match(e) {
			continue
		}
		x, err := s.index()
		if err != nil {
			return nil, 0, err
		}
		br := newBlobReader(s, x)
		if e.Size >= prefetchMinSize {
			return s.countReads(newPrefetchReader(br, e.Extents, &releaser{c: br, done: release})), e.Size, nil
		}
		return s.countReads(&extentReader{br: br, own: true, exts: e.Extents, done: release}), e.Size, nil
	}
	return nil, 0, fmt.Errorf("version %s has no %s: %w", id, what, ErrNotFound)
}

// OpenStream opens a stored stream of version id. Reads fail (never return
// wrong bytes) when a block does not match its hash.
func (s *Store) OpenStream(id, name string) (io.ReadCloser, int64, error) {
	return s.openEntry(id, func(e *format.Entry) bool {
		return e.Type == format.TypeStream && e.Path == name
	}, fmt.Sprintf("stream %q", name))
}

// OpenFile opens the content of one stored regular file of version id by
// its host path (e.g. /etc/kubernetes/pki/ca.crt).
func (s *Store) OpenFile(id, hostPath string) (io.ReadCloser, int64, error) {
	hostPath = filepath.Clean(hostPath)
	return s.openEntry(id, func(e *format.Entry) bool {
		return e.Type == format.TypeFile && e.Path == hostPath
	}, fmt.Sprintf("regular file %s", hostPath))
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
