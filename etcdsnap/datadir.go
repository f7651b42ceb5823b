package etcdsnap

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/kubekeep/kubekeep/etcdsnap/snapread"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/client/pkg/v3/fileutil"
	"go.etcd.io/etcd/client/pkg/v3/types"
	"go.etcd.io/etcd/server/v3/config"
	"go.etcd.io/etcd/server/v3/etcdserver"
	"go.etcd.io/etcd/server/v3/etcdserver/api/membership"
	"go.etcd.io/etcd/server/v3/etcdserver/api/snap"
	"go.etcd.io/etcd/server/v3/etcdserver/cindex"
	"go.etcd.io/etcd/server/v3/storage/backend"
	"go.etcd.io/etcd/server/v3/storage/mvcc"
	"go.etcd.io/etcd/server/v3/storage/schema"
	"go.etcd.io/etcd/server/v3/storage/wal"
	"go.etcd.io/etcd/server/v3/storage/wal/walpb"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// dataDirSpec is one new single-member data dir around a snapshot image.
type dataDirSpec struct {
	dataDir        string
	name           string
	peerURLs       []string
	initialCluster string
	token          string
	// image is read to its end: size bytes, the last TrailerSize of them
	// the sha256 trailer when size says there is one.
	image io.Reader
	size  int64
	// checkTrailer: compare the trailer with the data on the way in.
	checkTrailer bool
	bump         int64
	lg           *zap.Logger
}

// writeDataDir does what `etcdutl snapshot restore --bump-revision
// --mark-compacted` does (etcdutl/snapshot, v3.6), with the same etcd
// server packages: db into member/snap, revision bumped and marked
// compacted, the old membership replaced by the one member, consistent
// index at the new log's commit, a WAL and a raft snapshot holding the
// membership. It differs in cost only: the image is written once, hashed
// on the way in, and changed in one backend session, where etcdutl copies
// it, reads it back whole for the hash and opens the backend three times
// (about 3 s more for a 1 GiB image, measured by scripts/bench-restore.sh).
//
// It returns the image's sha256 (hex) when it checked the trailer.
func writeDataDir(s dataDirSpec) (sha string, err error) {
	peerURLs, err := types.NewURLs(s.peerURLs)
	if err != nil {
		return "", fmt.Errorf("peer URLs %q: %w", strings.Join(s.peerURLs, ","), err)
	}
	initial, err := types.NewURLsMap(s.initialCluster)
	if err != nil {
		return "", fmt.Errorf("initial cluster %q: %w", s.initialCluster, err)
	}
	srv := config.ServerConfig{Logger: s.lg, Name: s.name, PeerURLs: peerURLs, InitialPeerURLsMap: initial, InitialClusterToken: s.token}
	if err := srv.VerifyBootstrap(); err != nil {
		return "", err
	}
	cl, err := membership.NewClusterFromURLsMap(s.lg, s.token, initial)
	if err != nil {
		return "", err
	}
	self := cl.MemberByName(s.name)
	if self == nil {
		return "", fmt.Errorf("member %q is not in the initial cluster %q", s.name, s.initialCluster)
	}
	snapDir := filepath.Join(s.dataDir, "member", "snap")
	walDir := filepath.Join(s.dataDir, "member", "wal")
	if err := fileutil.CreateDirAll(s.lg, snapDir); err != nil {
		return "", err
	}
	dbPath := filepath.Join(snapDir, "db")
	if sha, err = writeImage(dbPath, s.image, s.size, s.checkTrailer); err != nil {
		return "", err
	}
	if err := checkShape(dbPath); err != nil {
		return "", err
	}

	// The new log: one ConfChangeAddNode per member, committed at term 1.
	ids := cl.MemberIDs()
	ents := make([]raftpb.Entry, len(ids))
	for i, id := range ids {
		ctx, err := json.Marshal(cl.Member(id))
		if err != nil {
			return "", err
		}
		cc := raftpb.ConfChange{Type: raftpb.ConfChangeAddNode, NodeID: uint64(id), Context: ctx}
		d, err := cc.Marshal()
		if err != nil {
			return "", err
		}
		ents[i] = raftpb.Entry{Type: raftpb.EntryConfChange, Term: 1, Index: uint64(i + 1), Data: d}
	}
	commit, term := uint64(len(ents)), uint64(1)

	if err := rewriteBackend(s, dbPath, cl, commit, term); err != nil {
		return "", err
	}

	md, err := (&etcdserverpb.Metadata{NodeID: uint64(self.ID), ClusterID: uint64(cl.ID())}).Marshal()
	if err != nil {
		return "", err
	}
	w, err := wal.Create(s.lg, walDir, md)
	if err != nil {
		return "", fmt.Errorf("create WAL: %w", err)
	}
	hs := raftpb.HardState{Term: term, Vote: uint64(ids[0]), Commit: commit}
	if err := w.Save(hs, ents); err != nil {
		w.Close()
		return "", fmt.Errorf("write WAL: %w", err)
	}
	voters := make([]uint64, len(ids))
	for i, id := range ids {
		voters[i] = uint64(id)
	}
	cs := raftpb.ConfState{Voters: voters}
	raftSnap := raftpb.Snapshot{
		Data:     etcdserver.GetMembershipInfoInV2Format(s.lg, cl),
		Metadata: raftpb.SnapshotMetadata{Index: commit, Term: term, ConfState: cs},
	}
	if err := snap.New(s.lg, snapDir).SaveSnap(raftSnap); err != nil {
		w.Close()
		return "", fmt.Errorf("write raft snapshot: %w", err)
	}
	if err := w.SaveSnapshot(walpb.Snapshot{Index: commit, Term: term, ConfState: &cs}); err != nil {
		w.Close()
		return "", fmt.Errorf("write WAL snapshot record: %w", err)
	}
	return sha, w.Close()
}

// rewriteBackend makes the image the backend of the new member, in one
// open of it: membership trimmed and re-added, revision bumped, marked
// compacted, consistent index set to the new log's commit.
func rewriteBackend(s dataDirSpec, dbPath string, cl *membership.RaftCluster, commit, term uint64) (err error) {
	// etcd's backend panics (through its logger) on a db bbolt cannot
	// open; a restore must fail with an error instead.
	defer func() {
		if r := recover(); r != nil {
			err = &snapread.Error{Op: "restore", File: dbPath, Kind: snapread.ErrCorruptDB, Err: fmt.Errorf("etcd's backend: %v", r)}
		}
	}()
	be := backend.NewDefaultBackend(s.lg, dbPath)
	defer func() {
		be.ForceCommit()
		if cerr := be.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("close backend: %w", cerr)
		}
	}()
	mb := schema.NewMembershipBackend(s.lg, be)
	if err := mb.TrimMembershipFromBackend(); err != nil {
		return fmt.Errorf("trim membership: %w", err)
	}
	if s.bump > 0 {
		if err := bumpRevision(be, s.bump); err != nil {
			return err
		}
	}
	cl.SetBackend(mb)
	for _, m := range cl.Members() {
		cl.AddMember(m, true)
	}
	cindex.UpdateConsistentIndexForce(be.BatchTx(), commit, term)
	return nil
}

// bumpRevision writes an empty entry at the newest revision plus bump and
// schedules a compaction there, so clients that remember revisions of the
// old cluster see them as compacted (etcd-io/etcd#16028).
func bumpRevision(be backend.Backend, bump int64) error {
	tx := be.BatchTx()
	tx.LockOutsideApply()
	defer tx.Unlock()
	var latest mvcc.Revision
	if err := tx.UnsafeForEach(schema.Key, func(k, _ []byte) error {
		if rev := mvcc.BytesToRev(k); rev.GreaterThan(latest) {
			latest = rev
		}
		return nil
	}); err != nil {
		return fmt.Errorf("read the newest revision: %w", err)
	}
	latest = mvcc.Revision{Main: latest.Main + bump}
	tx.UnsafePut(schema.Key, mvcc.RevToBytes(latest, mvcc.NewRevBytes()), []byte{})
	mvcc.UnsafeSetScheduledCompact(tx, latest.Main)
	return nil
}

// writeImage writes the image without its trailer to path and syncs it.
func writeImage(path string, image io.Reader, size int64, checkTrailer bool) (string, error) {
	trailer := size%512 == snapread.TrailerSize
	if checkTrailer && !trailer {
		return "", fmt.Errorf("snapshot of %d bytes has no sha256 trailer to check", size)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", err
	}
	defer f.Close()
	data := size
	if trailer {
		data -= snapread.TrailerSize
	}
	h := sha256.New()
	var src io.Reader = io.LimitReader(image, data)
	if checkTrailer {
		src = io.TeeReader(src, h)
	}
	n, err := io.CopyBuffer(&writeBehind{f: f, fd: int(f.Fd())}, src, make([]byte, 1<<20))
	if err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	if n != data {
		return "", fmt.Errorf("write %s: the snapshot ended after %d of %d bytes", path, n, data)
	}
	if trailer {
		want := make([]byte, snapread.TrailerSize)
		if _, err := io.ReadFull(image, want); err != nil {
			return "", fmt.Errorf("read the snapshot's sha256 trailer: %w", err)
		}
		if got := h.Sum(nil); checkTrailer && !bytes.Equal(got, want) {
			return "", &snapread.Error{Op: "restore", File: path, Kind: snapread.ErrBadTrailer,
				Err: fmt.Errorf("snapshot data hashes to %s, its trailer says %s", hex.EncodeToString(got), hex.EncodeToString(want))}
		}
	}
	if n, _ := image.Read(make([]byte, 1)); n > 0 {
		return "", errors.New("the snapshot is longer than its recorded size")
	}
	if err := f.Sync(); err != nil {
		return "", fmt.Errorf("sync %s: %w", path, err)
	}
	sum := ""
	if checkTrailer {
		sum = hex.EncodeToString(h.Sum(nil))
	}
	return sum, f.Close()
}

// writeBehind starts the disk writing each chunk as soon as it is in the
// page cache, so the fsync at the end waits for the last chunk only
// instead of the whole gigabyte: the disk works while the image is still
// being read and checked.
type writeBehind struct {
	f       *os.File
	fd      int
	off     int64 // written so far
	flushed int64 // writeback started up to here
}

const writeBehindChunk = 8 << 20

func (w *writeBehind) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.off += int64(n)
	if w.off-w.flushed >= writeBehindChunk {
		// Only a hint: a failure here surfaces in the final fsync.
		_ = unix.SyncFileRange(w.fd, w.flushed, w.off-w.flushed, unix.SYNC_FILE_RANGE_WRITE)
		w.flushed = w.off
	}
	return n, err
}

// bbolt's meta page (go.etcd.io/bbolt/internal/common): after a 16-byte
// page header, magic, version, page size and flags (uint32 each), the root
// bucket (two uint64), the freelist page, the high-water page id, the txid
// and an FNV-64a checksum of everything before it (uint64 each).
const (
	boltPageHeader = 16
	boltMagic      = 0xED0CDAED
	boltVersion    = 2
	boltMetaSum    = 56 // bytes the checksum covers
)

// checkShape refuses a db shorter than its newest valid meta page says it
// is. A truncated image must not reach etcd's backend: bbolt faults reading
// past the end of its mapping, in a goroutine no recover can reach. (Damage
// inside the pages is what the sha256 trailer, the store's block hashes and
// the bbolt check are for.)
func checkShape(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	fail := func(format string, args ...any) error {
		return &snapread.Error{Op: "restore", File: path, Kind: snapread.ErrCorruptDB, Err: fmt.Errorf(format, args...)}
	}
	readMeta := func(off int64) (pageSize uint32, highWater, txid uint64, ok bool) {
		b := make([]byte, boltPageHeader+boltMetaSum+8)
		if _, err := f.ReadAt(b, off); err != nil {
			return 0, 0, 0, false
		}
		m := b[boltPageHeader:]
		h := fnv.New64a()
		h.Write(m[:boltMetaSum])
		if binary.LittleEndian.Uint32(m[0:]) != boltMagic || binary.LittleEndian.Uint32(m[4:]) != boltVersion ||
			binary.LittleEndian.Uint64(m[boltMetaSum:]) != h.Sum64() {
			return 0, 0, 0, false
		}
		return binary.LittleEndian.Uint32(m[8:]), binary.LittleEndian.Uint64(m[40:]), binary.LittleEndian.Uint64(m[48:]), true
	}
	ps0, hw0, tx0, ok0 := readMeta(0)
	pageSize := ps0
	if !ok0 {
		pageSize = uint32(os.Getpagesize())
	}
	if pageSize < 512 || pageSize > 1<<20 {
		return fail("meta page gives a page size of %d", pageSize)
	}
	_, hw1, tx1, ok1 := readMeta(int64(pageSize))
	var highWater uint64
	switch {
	case ok0 && (!ok1 || tx0 >= tx1):
		highWater = hw0
	case ok1:
		highWater = hw1
	default:
		return fail("neither meta page is valid: not a bbolt database, or a damaged one")
	}
	if need := highWater * uint64(pageSize); uint64(fi.Size()) < need {
		return fail("the db is %d bytes, its meta page needs %d (%d pages of %d): the image is truncated", fi.Size(), need, highWater, pageSize)
	}
	return nil
}
