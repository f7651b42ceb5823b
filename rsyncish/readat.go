package rsyncish

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/kubekeep/kubekeep/rsyncish/format"
)

// StreamAt is random access into one stored stream: a read maps its range
// through the entry's extents and reads, and checks against its hash, only
// the blobs it touches (a zero extent costs nothing); the last few blobs
// read are kept, so neighbouring small reads cost one blob. It holds the
// store's read lock until closed, as OpenStream's reader does. Safe for
// concurrent use.
type StreamAt struct {
	id     string
	name   string
	size   int64
	exts   *rawEntry
	starts []int64 // stream offset of each extent
	shared *sharedBlobs

	bytesRead atomic.Int64 // stream bytes served
}

// sharedBlobs is what the streams of one OpenStreamsAt share: the read
// lock, the pack index (loaded at the first read), open pack files and a
// few recently read blobs.
type sharedBlobs struct {
	s       *Store
	release func()
	refs    atomic.Int32

	mu       sync.Mutex
	x        *readerIndex // loaded at the first read
	reloaded bool
	recent   []recentBlob
	unmaps   []func() // manifests' mappings lazy extents read from

	blobBytes atomic.Int64 // blob bytes read from packs
	blobs     atomic.Int64 // blobs read from packs
}

type recentBlob struct {
	id   format.ID
	data []byte
}

// recentBlobs bounds the blobs kept per OpenStreamsAt (64 KiB each by
// default).
const recentBlobs = 8

// OpenStreamAt opens stream name of version id for random access.
func (s *Store) OpenStreamAt(id, name string) (*StreamAt, error) {
	v, err := s.OpenVersion(id)
	if err != nil {
		return nil, err
	}
	defer v.Close()
	return v.Stream(name)
}

// VersionReader reads the entries of one version (and of others opened
// through it) with one read lock, one pack index and one set of open pack
// files between them: what a command that reads several streams and files
// (get: the key index, the snapshot, the apiserver's manifest and
// encryption config) pays once. The lock is released when the reader and
// every stream opened through it are closed.
type VersionReader struct {
	id string
	m  *lazyManifest
	sh *sharedBlobs
}

// OpenVersion opens version id for reading.
func (s *Store) OpenVersion(id string) (*VersionReader, error) {
	release, err := s.readLock(context.Background())
	if err != nil {
		return nil, err
	}
	sh := &sharedBlobs{s: s, release: release}
	sh.refs.Store(1)
	m, err := s.lazyManifest(id)
	if err != nil {
		release()
		return nil, err
	}
	return &VersionReader{id: id, m: m, sh: sh}, nil
}

// Version opens another version through the same lock and pack index.
func (v *VersionReader) Version(id string) (*VersionReader, error) {
	m, err := v.sh.s.lazyManifest(id)
	if err != nil {
		return nil, err
	}
	v.sh.refs.Add(1)
	return &VersionReader{id: id, m: m, sh: v.sh}, nil
}

// ID is the version's ID.
func (v *VersionReader) ID() string { return v.id }

// Stream opens stream name for random access.
func (v *VersionReader) Stream(name string) (*StreamAt, error) {
	return v.open(format.TypeStream, name, fmt.Sprintf("stream %q", name))
}

// File opens the content of the regular file stored for hostPath.
func (v *VersionReader) File(hostPath string) (*StreamAt, error) {
	hostPath = filepath.Clean(hostPath)
	return v.open(format.TypeFile, hostPath, "regular file "+hostPath)
}

func (v *VersionReader) open(typ, name, what string) (*StreamAt, error) {
	e, err := v.m.entry(typ, name, true)
	if err != nil {
		return nil, err
	}
	if e == nil {
		return nil, fmt.Errorf("version %s has no %s: %w", v.id, what, ErrNotFound)
	}
	if e.b64 != nil {
		// The extents are read out of the manifest's mapping: it stays
		// until the last stream goes.
		if u := v.m.lend(); u != nil {
			v.sh.mu.Lock()
			v.sh.unmaps = append(v.sh.unmaps, u)
			v.sh.mu.Unlock()
		}
	}
	r := &StreamAt{id: v.id, name: name, size: e.Size, exts: e, starts: e.offsets(), shared: v.sh}
	v.sh.refs.Add(1)
	return r, nil
}

// BlobBytesRead is how many bytes of blobs everything opened through v
// read from packs (each checked against its hash).
func (v *VersionReader) BlobBytesRead() int64 { return v.sh.blobBytes.Load() }

// Close releases v; the lock goes with the last reader or stream.
func (v *VersionReader) Close() error {
	if v.sh == nil {
		return nil
	}
	v.m.close()
	sh := v.sh
	v.sh = nil
	return sh.unref()
}

// Size is the stream's length in bytes.
func (r *StreamAt) Size() int64 { return r.size }

// BytesRead is how many stream bytes reads have returned.
func (r *StreamAt) BytesRead() int64 { return r.bytesRead.Load() }

// BlobBytesRead is how many bytes of blobs the streams opened together
// with this one have read from packs (and checked): the store I/O they
// cost, whatever the caches above the store kept.
func (r *StreamAt) BlobBytesRead() int64 { return r.shared.blobBytes.Load() }

// ReadAt implements io.ReaderAt.
func (r *StreamAt) ReadAt(p []byte, off int64) (int, error) {
	if r.shared == nil {
		return 0, fmt.Errorf("stream %q of version %s: read after Close", r.name, r.id)
	}
	if off < 0 {
		return 0, fmt.Errorf("stream %q of version %s: negative offset %d", r.name, r.id, off)
	}
	if off >= r.size {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	want := len(p)
	if int64(want) > r.size-off {
		p = p[:r.size-off]
	}
	// The extent holding off.
	i := sort.Search(len(r.starts), func(i int) bool { return r.starts[i] > off }) - 1
	n := 0
	for n < len(p) {
		if i < 0 || i >= len(r.starts) {
			return n, fmt.Errorf("stream %q of version %s: no extent at offset %d", r.name, r.id, off)
		}
		x, err := r.exts.extent(i)
		if err != nil {
			return n, fmt.Errorf("stream %q of version %s: %w", r.name, r.id, err)
		}
		in := off - r.starts[i]
		k := int(min(int64(len(p)-n), int64(x.Len)-in))
		if x.ID.IsZero() {
			clear(p[n : n+k])
		} else {
			blob, err := r.shared.blob(x.ID)
			if err != nil {
				return n, fmt.Errorf("stream %q of version %s at offset %d: %w", r.name, r.id, off, err)
			}
			if int64(x.Off)+int64(x.Len) > int64(len(blob)) {
				return n, fmt.Errorf("stream %q of version %s: extent %d+%d beyond blob %s of %d bytes", r.name, r.id, x.Off, x.Len, x.ID.Short(), len(blob))
			}
			copy(p[n:n+k], blob[int64(x.Off)+in:])
		}
		n += k
		off += int64(k)
		i++
	}
	r.bytesRead.Add(int64(n))
	if n < want {
		return n, io.EOF
	}
	return n, nil
}

// blob returns a checked blob, from the few kept or from its pack.
func (sh *sharedBlobs) blob(id format.ID) ([]byte, error) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	for i, b := range sh.recent {
		if b.id == id {
			// Most recent last.
			copy(sh.recent[i:], sh.recent[i+1:])
			sh.recent[len(sh.recent)-1] = b
			return b.data, nil
		}
	}
	if sh.x == nil {
		x, err := sh.s.loadReaderIndex()
		if err != nil {
			return nil, err
		}
		sh.x = x
	}
	data, err := sh.x.blob(sh.s, id)
	if errors.Is(err, ErrNotFound) && !sh.reloaded {
		// A backup may have published a pack since the index was read
		// (a version opened later through the same reader).
		sh.reloaded = true
		x, lerr := sh.s.loadReaderIndex()
		if lerr != nil {
			return nil, lerr
		}
		sh.x.close()
		sh.x = x
		data, err = sh.x.blob(sh.s, id)
	}
	if err != nil {
		return nil, err
	}
	sh.blobBytes.Add(int64(len(data)))
	sh.blobs.Add(1)
	if len(sh.recent) == recentBlobs {
		copy(sh.recent, sh.recent[1:])
		sh.recent = sh.recent[:recentBlobs-1]
	}
	sh.recent = append(sh.recent, recentBlob{id: id, data: data})
	return data, nil
}

// Close releases the stream; the last stream of an OpenStreamsAt closes
// the pack files and releases the read lock.
func (r *StreamAt) Close() error {
	sh := r.shared
	if sh == nil {
		return errors.New("stream already closed")
	}
	r.shared = nil
	return sh.unref()
}

// unref drops one reference; the last closes the pack files and releases
// the read lock.
func (sh *sharedBlobs) unref() error {
	if sh.refs.Add(-1) > 0 {
		return nil
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	var err error
	if sh.x != nil {
		err = sh.x.close()
	}
	sh.recent = nil
	for _, u := range sh.unmaps {
		u()
	}
	sh.unmaps = nil
	sh.release()
	return err
}
