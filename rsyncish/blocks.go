package rsyncish

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"runtime"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/kubekeep/kubekeep/rsyncish/format"
)

// maxBlockExtents bounds how fragmented one block may become through
// page-level reuse before it is stored whole again.
const maxBlockExtents = 8

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
		pi = newPrevIter(prev.Extents)
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

// zeroBlock is what allZero compares with: in the binary's zeroed data,
// so it costs nothing at start (a 16 MiB slice made at init did, in
// every command).
var zeroBlock [64 << 10]byte

// allZero says whether b holds only zero bytes.
func allZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeroBlock))
		if !bytes.Equal(b[:n], zeroBlock[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

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
				if !allZero(blk) {
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
			exts = appendZeros(exts, ln)
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
		if err := w.pk.put(id, data); err != nil {
			return nil, err
		}
		exts = append(exts, format.Extent{ID: id, Len: uint32(ln)})
	}
	return exts, nil
}

// prevIter walks the previous version's extents block by block. Data
// extents never cross block boundaries, so a block's data extents are a
// contiguous run; a run of zeros may span many blocks and is cut to the
// block asked for.
type prevIter struct {
	exts format.Extents
	size int64 // what the extents cover
	i    int
	pos  int64 // file offset of exts[i]
}

func newPrevIter(exts format.Extents) prevIter {
	return prevIter{exts: exts, size: exts.Total()}
}

func (p *prevIter) block(off int64, ln, bs int) format.Extents {
	if off >= p.size || min(int64(bs), p.size-off) != int64(ln) {
		return nil // the block changed size (file grew or shrank): store it whole
	}
	for p.i < len(p.exts) && p.pos+int64(p.exts[p.i].Len) <= off {
		p.pos += int64(p.exts[p.i].Len)
		p.i++
	}
	end := off + int64(ln)
	var out format.Extents
	for j, pos := p.i, p.pos; j < len(p.exts) && pos < end; j++ {
		x := p.exts[j]
		xa, xb := pos, pos+int64(x.Len)
		pos = xb
		if x.ID.IsZero() {
			out = append(out, format.Extent{ID: format.ZeroID, Len: uint32(min(xb, end) - max(xa, off))})
			continue
		}
		if xa < off || xb > end {
			return nil // a data extent across the block: not this store's making
		}
		out = append(out, x)
	}
	return out
}

// maxZeroRun bounds one extent of zeros (a multiple of every block size):
// a 10 GiB hole is 5 extents, not 163,840.
const maxZeroRun = 1 << 31

// appendZeros appends n zero bytes to exts, extending a run of zeros that
// ends it.
func appendZeros(exts format.Extents, n int) format.Extents {
	if k := len(exts) - 1; k >= 0 && exts[k].ID.IsZero() && int64(exts[k].Len)+int64(n) <= maxZeroRun {
		exts[k].Len += uint32(n)
		return exts
	}
	return append(exts, format.Extent{ID: format.ZeroID, Len: uint32(n)})
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
			if !w.x.has(x.ID) {
				return nil, false // its only copy is doubtful: never refer to it
			}
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
		if allZero(part) {
			res = append(res, format.Extent{ID: format.ZeroID, Len: uint32(len(part))})
			continue
		}
		id := format.Sum(part)
		if !w.x.has(id) {
			if err := w.pk.put(id, part); err != nil {
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
