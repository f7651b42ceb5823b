package rsyncish

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"sync"

	"github.com/kubekeep/kubekeep/rsyncish/format"
)

// Entries at least this long are read with prefetchReader. Below it the
// goroutines cost more than they save.
const prefetchMinSize = 8 << 20

// prefetchDepth is how many blobs are read and checked ahead of the
// consumer: enough to keep every core hashing while the consumer writes,
// small enough to stay at a couple of MiB.
const prefetchDepth = 32

// fetch is one run of consecutive extents of the same blob, read and
// checked by a worker; ready closes when data or err is set.
type fetch struct {
	id     format.ID
	ranges []format.Extent
	zeros  int64 // a hole: this many zero bytes, nothing to read
	ready  chan struct{}
	blob   []byte
	err    error
}

// prefetchReader streams an entry like extentReader, but reads and checks
// its blobs on every core, ahead of the consumer and in order. Restoring
// a 1 GiB etcd snapshot is bound by hashing each 64 KiB blob; one core
// doing it while the caller waits on its own writes left the other idle.
type prefetchReader struct {
	cancel context.CancelFunc
	order  chan *fetch
	// free holds the blob buffers: a fixed set, so a 1 GiB read makes
	// no garbage (with sync.Pool, a process with a large heap reallocated
	// them after every GC and spent seconds collecting).
	free   chan []byte
	closer io.Closer
	done   sync.WaitGroup

	cur   *fetch
	rest  []byte // unread bytes of the current range
	next  int    // next range of cur
	zeros int64
	err   error
}

func newPrefetchReader(br *blobReader, exts format.Extents, closer io.Closer) *prefetchReader {
	ctx, cancel := context.WithCancel(context.Background())
	r := &prefetchReader{
		cancel: cancel,
		order:  make(chan *fetch, prefetchDepth),
		closer: closer,
	}
	work := make(chan *fetch, prefetchDepth)
	workers := runtime.GOMAXPROCS(0)
	// Fetches holding a buffer: at most those queued in order, the one
	// the producer holds and the consumer's, plus one per worker.
	r.free = make(chan []byte, prefetchDepth+workers+2)
	for range cap(r.free) {
		r.free <- nil
	}
	r.done.Add(workers + 1)
	for range workers {
		go func() {
			defer r.done.Done()
			for f := range work {
				select {
				case buf := <-r.free:
					f.blob, f.err = br.blob(f.id, buf)
					if f.err != nil {
						r.free <- buf
					}
				case <-ctx.Done():
					f.err = ctx.Err()
				}
				close(f.ready)
			}
		}()
	}
	go func() {
		defer r.done.Done()
		defer close(r.order)
		defer close(work)
		for i := 0; i < len(exts); {
			f := &fetch{ready: make(chan struct{})}
			if x := exts[i]; x.ID.IsZero() {
				f.zeros = int64(x.Len)
				close(f.ready)
				i++
			} else {
				j := i + 1
				for j < len(exts) && exts[j].ID == x.ID {
					j++
				}
				f.id, f.ranges = x.ID, exts[i:j]
				i = j
			}
			select {
			case r.order <- f:
			case <-ctx.Done():
				return
			}
			if f.zeros > 0 || len(f.ranges) == 0 {
				continue
			}
			select {
			case work <- f:
			case <-ctx.Done():
				// Already queued in order: the consumer must not wait on it.
				f.err = ctx.Err()
				close(f.ready)
				return
			}
		}
	}()
	return r
}

func (r *prefetchReader) Read(p []byte) (int, error) {
	for len(r.rest) == 0 && r.zeros == 0 {
		if r.err != nil {
			return 0, r.err
		}
		if r.cur != nil && r.next < len(r.cur.ranges) {
			x := r.cur.ranges[r.next]
			r.next++
			if int(x.Off)+int(x.Len) > len(r.cur.blob) {
				r.err = fmt.Errorf("extent %d+%d beyond blob %s of %d bytes", x.Off, x.Len, x.ID.Short(), len(r.cur.blob))
				return 0, r.err
			}
			r.rest = r.cur.blob[x.Off : x.Off+x.Len]
			continue
		}
		r.release()
		f, ok := <-r.order
		if !ok {
			r.err = io.EOF
			return 0, io.EOF
		}
		<-f.ready
		if f.err != nil {
			r.err = f.err
			return 0, f.err
		}
		r.cur, r.next, r.zeros = f, 0, f.zeros
	}
	if r.zeros > 0 {
		n := int(min(int64(len(p)), r.zeros))
		clear(p[:n])
		r.zeros -= int64(n)
		return n, nil
	}
	n := copy(p, r.rest)
	r.rest = r.rest[n:]
	return n, nil
}

// release hands the current blob's buffer back to the workers.
func (r *prefetchReader) release() {
	if r.cur != nil && r.cur.blob != nil {
		r.free <- r.cur.blob
	}
	r.cur, r.rest = nil, nil
}

// Close stops the workers and waits for them, so no read of a pack file
// outlives the reader.
func (r *prefetchReader) Close() error {
	r.cancel()
	r.release()
	for f := range r.order {
		<-f.ready
	}
	r.done.Wait()
	r.release()
	if r.err == nil {
		r.err = io.ErrClosedPipe
	}
	if r.closer != nil {
		return r.closer.Close()
	}
	return nil
}
