package backup

import (
	"bytes"
	"fmt"
	"io"
	"os"

	"github.com/kubekeep/kubekeep/rsyncish"
)

// checkCopyName is the store scratch file that holds the newest etcd
// snapshot image for the bbolt check (bbolt needs a file to map).
const checkCopyName = "etcd-snapshot-check.db"

// checkCopyChunk is the unit compared and rewritten: the store's block
// size, so a changed bbolt page costs one such write.
const checkCopyChunk = 64 << 10

// checkCopy makes a file's content equal the bytes written to it while
// writing only where they differ from what the file already holds.
// Successive snapshots of one etcd keep bbolt's page layout, so nearly all
// of a new image equals the previous one: rewriting the whole image every
// five minutes would cost about a second of kernel CPU per GiB and a GiB of
// writeback on the second disk for nothing. Nothing in the old content is
// trusted: every chunk is compared before a write is skipped.
type checkCopy struct {
	f       *os.File
	oldSize int64
	off     int64
	buf     []byte
	// written counts the bytes that differed and were written.
	written int64
	err     error
}

func openCheckCopy(store *rsyncish.Store) (*checkCopy, error) {
	f, err := store.OpenScratch(checkCopyName)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("snapshot check copy: %w", err)
	}
	return &checkCopy{f: f, oldSize: st.Size(), buf: make([]byte, 1<<20)}, nil
}

func (c *checkCopy) Name() string { return c.f.Name() }

func (c *checkCopy) Write(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n := len(p)
	for len(p) > 0 {
		span := p[:min(len(p), len(c.buf))]
		// What the file holds for this span, read in one call; chunks of
		// it are compared and only differing ones written.
		var old []byte
		if c.off < c.oldSize {
			old = c.buf[:min(int64(len(span)), c.oldSize-c.off)]
			if m, _ := c.f.ReadAt(old, c.off); m < len(old) {
				old = old[:m]
			}
		}
		for len(span) > 0 {
			chunk := span[:min(len(span), checkCopyChunk)]
			same := len(old) >= len(chunk) && bytes.Equal(old[:len(chunk)], chunk)
			if !same {
				if _, err := c.f.WriteAt(chunk, c.off); err != nil {
					c.err = fmt.Errorf("snapshot check copy: %w", err)
					return n - len(p), c.err
				}
				c.written += int64(len(chunk))
			}
			old = old[min(len(old), len(chunk)):]
			c.off += int64(len(chunk))
			span, p = span[len(chunk):], p[len(chunk):]
		}
	}
	return n, nil
}

// finish cuts what the previous, longer image left past the end.
func (c *checkCopy) finish() error {
	if c.err == nil && c.off < c.oldSize {
		if err := c.f.Truncate(c.off); err != nil {
			c.err = fmt.Errorf("snapshot check copy: %w", err)
		}
	}
	return c.err
}

func (c *checkCopy) Close() error {
	if err := c.f.Close(); err != nil && c.err == nil {
		c.err = fmt.Errorf("snapshot check copy: %w", err)
	}
	return c.err
}

var _ io.Writer = (*checkCopy)(nil)
