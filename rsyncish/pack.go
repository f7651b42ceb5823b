package rsyncish

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"syscall"

	"github.com/kubekeep/kubekeep/rsyncish/format"
)

// packTarget is where a pack is closed: big enough that a store holds few
// files, small enough that pruning can rewrite a pack cheaply.
const packTarget = 16 << 20

// packer writes blobs into new packs and publishes each pack's index once
// the pack is durable. The version writer, prune's repack and repair's
// salvage all write through one. Only the lock holder writes packs.
type packer struct {
	s *Store
	x *index // every blob put is added to it
	// slack is kept free beyond each write (the batches still in flight).
	slack     int64
	spaceLeft int64 // bytes we may write before the next statfs
	cur       *packWriter
	// finished are the packs this packer published, for drop.
	finished []string

	bytesNew     int64 // blob bytes
	bytesWritten int64 // blob and index bytes
}

type packWriter struct {
	id      string
	num     uint32
	path    string
	f       *os.File
	bw      *bufio.Writer
	size    int64
	entries []format.IndexEntry
}

// current serves blob reads from the pack being written (blobReader's
// override): it is flushed first.
func (p *packer) current(num uint32) (*os.File, bool) {
	if p.cur == nil || p.cur.num != num {
		return nil, false
	}
	if err := p.cur.bw.Flush(); err != nil {
		return nil, false
	}
	return p.cur.f, true
}

func (p *packer) put(id format.ID, data []byte) error {
	if err := p.reserve(int64(len(data))); err != nil {
		return err
	}
	if p.cur != nil && p.cur.size+int64(len(data)) > packTarget {
		if err := p.finish(); err != nil {
			return err
		}
	}
	if p.cur == nil {
		id := randHex(16)
		path := p.s.path(packsDir, id+packExt)
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return noSpace(fmt.Errorf("creating pack: %w", err))
		}
		p.cur = &packWriter{id: id, num: p.x.addPack(id), path: path, f: f, bw: bufio.NewWriterSize(f, 1<<20)}
	}
	pw := p.cur
	if _, err := pw.bw.Write(data); err != nil {
		return noSpace(fmt.Errorf("writing pack %s: %w", pw.path, err))
	}
	pw.entries = append(pw.entries, format.IndexEntry{ID: id, Off: uint32(pw.size), Len: uint32(len(data))})
	p.x.put(id, loc{pack: pw.num, off: uint32(pw.size), len: uint32(len(data))})
	pw.size += int64(len(data))
	p.bytesNew += int64(len(data))
	p.bytesWritten += int64(len(data))
	return nil
}

// reserve keeps MinFree free: statfs every 8 MiB of writes is cheap and
// stops a backup before the disk is full rather than at ENOSPC.
func (p *packer) reserve(n int64) error {
	p.spaceLeft -= n
	if p.spaceLeft >= 0 {
		return nil
	}
	free, err := freeBytes(p.s.dir)
	if err != nil {
		return err
	}
	const step = 8 << 20
	if free-p.s.opts.MinFree < step+n+p.slack {
		return fmt.Errorf("%w: only %s free on the store's filesystem (%s) with minFree %s; this needs more: free space or prune", ErrNoSpace, human(free), p.s.dir, human(p.s.opts.MinFree))
	}
	p.spaceLeft = step
	return nil
}

// finish makes the current pack durable, then publishes its index: an
// index never names data that is not on disk.
func (p *packer) finish() error {
	pw := p.cur
	if pw == nil {
		return nil
	}
	p.cur = nil
	fail := func(err error) error {
		pw.f.Close()
		os.Remove(pw.path)
		return noSpace(err)
	}
	if err := pw.bw.Flush(); err != nil {
		return fail(fmt.Errorf("writing pack %s: %w", pw.path, err))
	}
	if err := pw.f.Sync(); err != nil {
		return fail(fmt.Errorf("fsync pack %s: %w", pw.path, err))
	}
	if err := pw.f.Close(); err != nil {
		os.Remove(pw.path)
		return err
	}
	if err := syncDir(p.s.path(packsDir)); err != nil {
		os.Remove(pw.path)
		return err
	}
	idx := format.EncodeIndex(pw.entries)
	if err := writeFileAtomic(p.s.path(indexDir, pw.id+indexExt), idx, 0o600); err != nil {
		os.Remove(pw.path)
		return noSpace(fmt.Errorf("writing index of pack %s: %w", pw.id, err))
	}
	p.finished = append(p.finished, pw.id)
	p.bytesWritten += int64(len(idx))
	return nil
}

// abort removes the pack being written, if any.
func (p *packer) abort() {
	if p.cur != nil {
		p.cur.f.Close()
		os.Remove(p.cur.path)
		p.cur = nil
	}
}

// drop removes every pack this packer wrote, finished or not (index first,
// then pack): what a failed backup leaves must not wait for the next prune
// on a disk that just ran full. Only blobs this packer stored live there
// (a blob already in the store is never stored again), so no version loses
// data. It returns the first error and keeps going.
func (p *packer) drop() error {
	p.abort()
	var first error
	for _, id := range p.finished {
		if err := p.s.removePack(id); err != nil && first == nil {
			first = err
		}
	}
	if len(p.finished) > 0 {
		p.s.log.Info("removed the packs of an unfinished write", "store", p.s.dir, "packs", len(p.finished))
	}
	p.finished = nil
	return first
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
