// Package tailbuf is a bounded in-memory log: the tail of what a test's
// child process (an etcd, a kube-apiserver) printed.
package tailbuf

import (
	"bytes"
	"sync"
)

// Buffer keeps the last Max bytes written to it (a child process's log a
// test prints when it fails); Mark and SinceMark cut out one start's
// output. It is safe for concurrent use.
type Buffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	Max     int
	dropped int64 // bytes discarded from the front
	markAt  int64 // absolute offset of the mark
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Write(p)
	if over := b.buf.Len() - b.Max; over > 0 {
		b.buf.Next(over)
		b.dropped += int64(over)
		// Compact now and then so the buffer does not grow forever.
		if b.buf.Cap() > 4*b.Max {
			rest := append([]byte(nil), b.buf.Bytes()...)
			b.buf.Reset()
			b.buf.Write(rest)
		}
	}
	return len(p), nil
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Mark remembers the current end; SinceMark returns what came after it.
func (b *Buffer) Mark() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.markAt = b.dropped + int64(b.buf.Len())
}

func (b *Buffer) SinceMark() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	off := b.markAt - b.dropped
	if off < 0 {
		off = 0
	}
	return b.buf.String()[off:]
}
