package rsyncish

import (
	"io"
	"os"
	"sync/atomic"
)

// Progress hears how far a long read of the store got, for a progress bar:
// Bytes with the total a step will read when the store knows it (verify
// --read-data: every pack), Add as bytes are read. Callers that know the
// total themselves (a restore knows the size of what it restores) call
// Bytes on their own reporter. Implementations must be safe for use from
// several goroutines.
type Progress interface {
	Bytes(total int64)
	Add(n int64)
}

// SetProgress installs p (nil: none, the default) for the reads that move
// the bulk of the data: stored files and streams read out (OpenStream,
// OpenFile, RestoreFiles; the bytes handed to the reader, holes included)
// and the packs verify --read-data reads. It changes nothing else.
func (s *Store) SetProgress(p Progress) {
	if p == nil {
		s.prog.Store(nil)
		return
	}
	s.prog.Store(&p)
}

// progress is the installed Progress, or nil.
func (s *Store) progress() Progress {
	if p := s.prog.Load(); p != nil {
		return *p
	}
	return nil
}

type progressHolder = atomic.Pointer[Progress]

// countingReader reports what it reads to p.
type countingReader struct {
	io.ReadCloser
	p Progress
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.ReadCloser.Read(b)
	if n > 0 {
		c.p.Add(int64(n))
	}
	return n, err
}

// countReads wraps rc when a Progress is installed.
func (s *Store) countReads(rc io.ReadCloser) io.ReadCloser {
	if p := s.progress(); p != nil {
		return &countingReader{ReadCloser: rc, p: p}
	}
	return rc
}

// packBytes is the size of every pack file, the total verify --read-data
// reads (packs without index, which it does not read, included: close
// enough for a bar).
func (s *Store) packBytes() int64 {
	ents, err := readStoreDir(s.path(packsDir))
	if err != nil {
		return 0
	}
	var n int64
	for _, e := range ents {
		if fi, err := os.Lstat(s.path(packsDir, e.Name())); err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
	}
	return n
}
