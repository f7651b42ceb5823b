package restore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"go.etcd.io/etcd/api/v3/version"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/storage/wal"
	"go.uber.org/zap"

	"github.com/kubekeep/kubekeep/backup"
	"github.com/kubekeep/kubekeep/backup/versionread"
	"github.com/kubekeep/kubekeep/etcdsnap"
	"github.com/kubekeep/kubekeep/etcdsnap/snapread"
	"github.com/kubekeep/kubekeep/rsyncish"
)

// DrillMethod is the Verification.Method a successful drill records.
const DrillMethod = "restore-drill"

// DrillResult is what a restore drill found. Its JSON form is what
// `kubekeep drill -o json` prints.
type DrillResult struct {
	Version string `json:"version"`
	// Recorded* are what the backup wrote into the version's meta.
	RecordedRevision int64  `json:"recordedRevision"`
	RecordedKeys     int64  `json:"recordedKeys"`
	RecordedSHA256   string `json:"recordedSha256,omitempty"`
	// SnapshotSHA256 is the stored stream's own sha256 (trailer checked).
	SnapshotSHA256 string `json:"snapshotSha256,omitempty"`
	// Served* are what an etcd started on the restored data dir served.
	ServedRevision int64  `json:"servedRevision"`
	ServedKeys     int64  `json:"servedKeys"`
	EtcdVersion    string `json:"etcdVersion"`
	// KVHash is a sha256 over every served key and its value's sha256, in key order;
	// SnapshotKVHash the same over the key/values of the restored db, read
	// before etcd starts (the image's, the bump marker aside). They must match.
	KVHash         string `json:"kvHash"`
	SnapshotKVHash string `json:"snapshotKvHash"`
	// Base and BaseRevision: a journal version's base. ChangedKeys and
	// ChangedSHA256: the keys the journal changed since the base and the
	// digest of their served values (backup.TouchedDigest), which must be
	// what the backup read from etcd at the version's revision.
	Base          string `json:"base,omitempty"`
	BaseRevision  int64  `json:"baseRevision,omitempty"`
	ChangedKeys   int    `json:"changedKeys,omitempty"`
	ChangedSHA256 string `json:"changedSha256,omitempty"`
	// JournalIndexRecords: a journal version's journal key index
	// (versionread.EtcdJournalKeysStream) holds this many records, each as the
	// replay left its key (0: the version has no such index).
	JournalIndexRecords int     `json:"journalIndexRecords,omitempty"`
	Seconds             float64 `json:"seconds"`
	Verified            bool    `json:"verified"`
	// NeedBytes is what the drill needs free on the store's filesystem
	// (DrillSpace), FreeBytes what was free when it started.
	NeedBytes int64 `json:"needBytes,omitempty"`
	FreeBytes int64 `json:"freeBytes,omitempty"`
}

// ErrDrillSpace: the store's filesystem has too little free space for the
// restore drill's scratch data dir. The drill fails before it writes
// anything; backups go on, but no version is verified until there is
// room. A *DrillSpaceError carries the numbers.
var ErrDrillSpace = errors.New("not enough free space on the store's filesystem for the restore drill")

// DrillSpaceError is the ErrDrillSpace a drill returns (errors.As), with
// what it needed and what was free where.
type DrillSpaceError struct {
	Dir        string // where the scratch data dir goes
	Need, Free int64
	Detail     string // what Need is made of
}

func (e *DrillSpaceError) Error() string {
	return fmt.Sprintf("%v: the drill needs %s free on the filesystem of %s (%s), %s is free: free %s more (kubekeep prune, or a bigger second disk); backups go on, but no version is verified until then",
		ErrDrillSpace, mib(e.Need), e.Dir, e.Detail, mib(e.Free), mib(e.Need-e.Free))
}

func (e *DrillSpaceError) Unwrap() error { return ErrDrillSpace }

// drillMargin is room for what etcd writes when it starts on the restored
// data dir (bbolt grows its file in steps of up to 16 MiB) and a raft
// snapshot.
const drillMargin = 32 << 20

// DrillSpace is what a drill of a version with a snapshot of snapshotBytes
// needs free on the store's filesystem: the restored db, the WAL segment
// etcd preallocates plus the spare one its file pipeline preallocates
// beside it (wal.SegmentSizeBytes each), a margin, and, when the snapshot
// cannot be streamed straight into the data dir, a checked copy of it.
func DrillSpace(snapshotBytes int64, copied bool) (need int64, detail string) {
	need = snapshotBytes + 2*wal.SegmentSizeBytes + drillMargin
	detail = fmt.Sprintf("db %s + 2 WAL segments of %s that etcd preallocates + %s margin", mib(snapshotBytes), mib(wal.SegmentSizeBytes), mib(drillMargin))
	if copied {
		need += snapshotBytes
		detail += fmt.Sprintf(" + a checked copy of the snapshot %s", mib(snapshotBytes))
	}
	return need, detail
}

func mib(n int64) string {
	return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64) + " MiB"
}

// Drill proves that version versionID ("" or "latest" = newest) restores:
// its etcd snapshot goes into a scratch data dir on the store's own
// filesystem, an embedded etcd serves it on loopback ports, and revision,
// key count and a hash of every key/value are compared with what the
// backup recorded and what the image holds. On success the version is
// marked verified (store.MarkVerified). Everything scratch is removed.
//
// The agent runs it daily; it takes the store's writer lock only for the
// moment of marking, retrying while a backup holds it.
func Drill(ctx context.Context, store *rsyncish.Store, versionID string, logger *slog.Logger) (DrillResult, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	started := time.Now()
	src, err := loadSource(store, versionID)
	if err != nil {
		return DrillResult{}, fmt.Errorf("drill: %w", err)
	}
	res := DrillResult{Version: src.id, EtcdVersion: version.Version}
	fail := func(err error) (DrillResult, error) {
		res.Seconds = time.Since(started).Seconds()
		logger.Error("restore drill failed", "version", src.id, "err", err)
		return res, fmt.Errorf("drill of version %s: %w", src.id, err)
	}
	if src.etcd == nil || src.status != versionread.StatusOK {
		return fail(fmt.Errorf("no good etcd snapshot to drill (status %s)", orDash(string(src.status))))
	}
	if src.chainErr != nil {
		return fail(src.chainErr)
	}
	res.RecordedRevision, res.RecordedKeys, res.RecordedSHA256 = src.etcdRevision(), src.etcdKeys(), src.etcd.SHA256
	// A journal version: its base's snapshot plus the journal up to its
	// revision, checked against what the backup read from etcd there.
	var jr *journalReplay
	if src.journal != nil {
		if jr, err = loadJournalReplay(store, src); err != nil {
			return fail(err)
		}
		res.Base, res.BaseRevision = src.snapID, src.etcd.Revision
	}

	// The scratch dir sits beside the store's temp files, on the second
	// disk, so a drill never fills the root disk it protects; there must
	// be room for it first, or etcd fails half-way ("create WAL: no space
	// left on device") and nothing says how much is missing.
	need, spaceDetail := DrillSpace(src.snapshotSize, !streamsImage(src, nil))
	res.NeedBytes = need
	if free, err := freeAt(store.Dir()); err == nil {
		res.FreeBytes = free
		if free < need {
			return fail(&DrillSpaceError{Dir: store.Dir(), Need: need, Free: free, Detail: spaceDetail})
		}
	}
	// The marker and the scratch dir beside it carry this process's pid
	// in their names (rsyncish temp names): when a drill is killed, the
	// next store Lock removes both, the dir with all it holds.
	marker, err := store.CreateTemp("drill-*")
	if err != nil {
		return fail(err)
	}
	marker.Close()
	scratch := marker.Name() + ".d"
	defer func() {
		if err := os.RemoveAll(scratch); err != nil {
			logger.Warn("drill: removing the scratch data dir", "dir", scratch, "err", err)
		}
		_ = os.Remove(marker.Name())
	}()
	dataDir := filepath.Join(scratch, "etcd")
	peer, err := freeLoopbackURL()
	if err != nil {
		return fail(err)
	}
	client, err := freeLoopbackURL()
	if err != nil {
		return fail(err)
	}

	// The image goes into the scratch data dir the way a real restore
	// reads it (etcdImage: straight from the store when the backup vouched
	// for it), with the sha256 trailer checked again on the way. Then the
	// restored db gets the full bbolt check, and the key/values it holds
	// are what etcd must serve.
	const name = "kubekeep-drill"
	cfg := etcdsnap.RestoreConfig{
		DataDir: dataDir, Name: name, InitialCluster: name + "=" + peer.String(), InitialAdvertisePeerURLs: peer.String(),
	}
	if jr != nil {
		cfg.Segments, cfg.UntilRevision = jr.readers(), src.journal.Revision
	}
	release, err := etcdImage(ctx, store, src, nil, &cfg, true)
	if err != nil {
		return fail(err)
	}
	defer release()
	raw := src.etcd.Source == snapread.SourceRaw
	rr, err := etcdsnap.RestoreDataDir(ctx, cfg)
	if err != nil {
		return fail(err)
	}
	res.SnapshotSHA256 = rr.SHA256
	if !raw && src.etcd.SHA256 != "" && rr.SHA256 != src.etcd.SHA256 {
		return fail(fmt.Errorf("the stored snapshot hashes to %s, the backup recorded %s", rr.SHA256, src.etcd.SHA256))
	}
	// Etcd revisions are dense: a replay of every revision up to the
	// version's lands exactly on it (a lost one leaves it short).
	recorded, wantKeys := src.etcdRevision(), src.etcdKeys()
	wantRev := recorded + etcdsnap.RevisionBump
	st, err := snapread.CheckDB(etcdsnap.DBPath(dataDir))
	if err != nil {
		return fail(fmt.Errorf("the restored db fails its consistency check: %w", err))
	}
	switch {
	case st.Revision != wantRev:
		return fail(fmt.Errorf("the restored data dir is at revision %d, want %d (recorded %d + bump)", st.Revision, wantRev, recorded))
	case st.Keys != wantKeys:
		return fail(fmt.Errorf("the restored db holds %d keys, the backup recorded %d", st.Keys, wantKeys))
	}
	if res.SnapshotKVHash, err = imageKVHash(etcdsnap.DBPath(dataDir)); err != nil {
		return fail(err)
	}
	var touched []string
	if jr != nil {
		touched = jr.touched
	}
	served, err := serveAndHash(ctx, dataDir, name, peer, client, jr)
	if err != nil {
		return fail(err)
	}
	res.ServedRevision, res.ServedKeys, res.KVHash = served.rev, served.keys, served.hash
	switch {
	case served.rev != wantRev:
		return fail(fmt.Errorf("etcd on the restored data serves revision %d, want %d", served.rev, wantRev))
	case served.keys != wantKeys:
		return fail(fmt.Errorf("etcd on the restored data serves %d keys, the backup recorded %d", served.keys, wantKeys))
	case served.hash != res.SnapshotKVHash:
		return fail(fmt.Errorf("served key/values hash to %s, the snapshot's to %s", served.hash, res.SnapshotKVHash))
	}
	if jr != nil {
		// What get, objects and diff read the version through must say
		// what the replay says.
		if res.JournalIndexRecords, err = checkJournalIndex(store, src.id, src.snapID, jr); err != nil {
			return fail(err)
		}
		p := jr.proof
		res.ChangedKeys, res.ChangedSHA256 = len(touched), served.touched
		switch {
		case len(touched) != p.Touched:
			return fail(fmt.Errorf("the journal from revision %d to %d changes %d keys, the backup saw %d", src.etcd.Revision, recorded, len(touched), p.Touched))
		case served.touched != p.TouchedSHA256:
			return fail(fmt.Errorf("the %d keys the journal changed since the base are not as etcd held them at revision %d (presence, revision of the last change, version): %s after the replay, %s recorded",
				len(touched), recorded, served.touched, p.TouchedSHA256))
		case len(jr.changed) != p.Changed:
			return fail(fmt.Errorf("the journal from revision %d to %d changes %d keys, the backup saw %d", p.ValuesFrom, recorded, len(jr.changed), p.Changed))
		case served.values != p.ValuesSHA256:
			return fail(fmt.Errorf("the values of the %d keys the journal changed since revision %d hash to %s after the replay, etcd's at revision %d to %s",
				len(jr.changed), p.ValuesFrom, served.values, recorded, p.ValuesSHA256))
		}
	}
	detail := fmt.Sprintf("etcd %s served revision %d (recorded %d + %d), %d keys, key/value sha256 %s; snapshot sha256 %s",
		version.Version, served.rev, recorded, etcdsnap.RevisionBump, served.keys, served.hash, orDash(rr.SHA256))
	if jr != nil {
		detail += fmt.Sprintf("; journal version on base %s (revision %d): %d segments replayed, %d changed keys match etcd's values at revision %d (sha256 %s)",
			src.snapID, src.etcd.Revision, len(jr.datas), len(touched), recorded, served.touched)
		if res.JournalIndexRecords > 0 {
			detail += fmt.Sprintf("; its journal key index agrees with the replay (%d records)", res.JournalIndexRecords)
		}
	}
	if err := markVerified(ctx, store, src.id, rsyncish.Verification{Time: time.Now(), Method: DrillMethod, Detail: detail}); err != nil {
		return fail(err)
	}
	res.Verified = true
	res.Seconds = time.Since(started).Seconds()
	logger.Info("restore drill passed; version marked verified", "version", src.id, "revision", served.rev, "keys", served.keys,
		"kvHash", served.hash, "seconds", res.Seconds)
	return res, nil
}

// markVerified takes the writer lock for the mark, waiting for a backup or
// prune that holds it (they are short) up to two minutes.
func markVerified(ctx context.Context, store *rsyncish.Store, id string, v rsyncish.Verification) error {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		unlock, err := store.Lock(ctx)
		if err == nil {
			err = store.MarkVerified(id, v)
			if uerr := unlock(); err == nil && uerr != nil {
				err = fmt.Errorf("release store lock: %w", uerr)
			}
			return err
		}
		if !errors.Is(err, rsyncish.ErrLocked) || time.Now().After(deadline) {
			return fmt.Errorf("mark verified: %w", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func freeLoopbackURL() (url.URL, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return url.URL{}, fmt.Errorf("free loopback port: %w", err)
	}
	defer l.Close()
	return url.URL{Scheme: "http", Host: "127.0.0.1:" + strconv.Itoa(l.Addr().(*net.TCPAddr).Port)}, nil
}

// kvHasher hashes key/value pairs given in key order: each key
// length-prefixed, followed by its value's sha256, so that no two
// different sequences hash alike and a side that cannot hold every value
// (a 1 GiB image) can fold digests instead.
type kvHasher struct {
	h hash.Hash
	n [8]byte
}

func newKVHasher() *kvHasher { return &kvHasher{h: sha256.New()} }

func (k *kvHasher) add(key, value []byte) { k.addDigest(key, sha256.Sum256(value)) }

func (k *kvHasher) addDigest(key []byte, valueDigest [sha256.Size]byte) {
	binary.BigEndian.PutUint64(k.n[:], uint64(len(key)))
	k.h.Write(k.n[:])
	k.h.Write(key)
	k.h.Write(valueDigest[:])
}

func (k *kvHasher) sum() string { return hex.EncodeToString(k.h.Sum(nil)) }

// imageKVHash folds the image's live keys at its newest revision, holding
// one digest per key rather than every value.
func imageKVHash(dbPath string) (string, error) {
	live := make(map[string][sha256.Size]byte)
	err := snapread.Scan(dbPath, func(key, value []byte, tomb bool) bool {
		if tomb {
			delete(live, string(key))
		} else if len(key) > 0 {
			live[string(key)] = sha256.Sum256(value)
		}
		return true
	})
	if err != nil {
		return "", fmt.Errorf("read the snapshot image: %w", err)
	}
	h := newKVHasher()
	for _, k := range slices.Sorted(maps.Keys(live)) {
		h.addDigest([]byte(k), live[k])
	}
	return h.sum(), nil
}

type servedState struct {
	rev, keys int64
	hash      string
	// touched and values are backup.TouchedDigest and ValuesDigest of a
	// journal replay's keys.
	touched, values string
}

// journalReplay is what a journal version's drill replays: the journal
// from the base to the version's revision, the keys it changes, and the
// evidence the backup recorded.
type journalReplay struct {
	datas   [][]byte
	segs    []rsyncish.SegmentInfo // of datas
	events  []snapread.Event       // the replay
	touched []string
	// changed are the keys changed after proof.ValuesFrom.
	changed []string
	proof   *backup.JournalProof
}

func (j *journalReplay) readers() []io.Reader {
	out := make([]io.Reader, len(j.datas))
	for i, d := range j.datas {
		out[i] = bytes.NewReader(d)
	}
	return out
}

func loadJournalReplay(store *rsyncish.Store, src *source) (*journalReplay, error) {
	proof := backup.VersionJournalProof(src.info)
	if proof == nil {
		return nil, fmt.Errorf("journal version %s records no evidence from etcd (%s meta) to check its replay against", src.id, versionread.MetaJournal)
	}
	j, err := store.Journal(DefaultDeltaJournal)
	if err != nil {
		return nil, err
	}
	datas, segs, err := j.ReadNeeded(uint64(src.etcd.Revision), uint64(src.journal.Revision), time.Time{})
	if err != nil {
		return nil, fmt.Errorf("etcd delta journal: %w", err)
	}
	jr := &journalReplay{datas: datas, segs: segs, proof: proof}
	events, err := snapread.ReplayEvents(jr.readers(), src.etcd.Revision, src.journal.Revision, time.Time{})
	if err != nil {
		return nil, fmt.Errorf("etcd delta journal from revision %d to %d: %w", src.etcd.Revision, src.journal.Revision, err)
	}
	jr.events = events
	seen := map[string]bool{}
	for _, e := range events {
		if !seen[e.Key] {
			seen[e.Key] = true
			jr.touched = append(jr.touched, e.Key)
		}
	}
	slices.Sort(jr.touched)
	jr.changed = backup.ChangedSince(events, proof.ValuesFrom)
	return jr, nil
}

// serveAndHash starts an embedded etcd on dataDir and reads every key
// through its API, in pages at one revision, and the touched keys'
// digest.
func serveAndHash(ctx context.Context, dataDir, name string, peer, client url.URL, jr *journalReplay) (servedState, error) {
	var st servedState
	cfg := embed.NewConfig()
	cfg.Name = name
	cfg.Dir = dataDir
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	cfg.InitialCluster = name + "=" + peer.String()
	cfg.ListenMetricsUrls = nil
	cfg.LogLevel = "error"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return st, fmt.Errorf("start etcd on the restored data dir: %w", err)
	}
	defer func() {
		e.Close()
		<-e.Server.StopNotify()
	}()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		return st, fmt.Errorf("etcd on the restored data dir failed: %w", err)
	case <-ctx.Done():
		return st, ctx.Err()
	case <-time.After(time.Minute):
		return st, errors.New("etcd on the restored data dir not ready after a minute")
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{client.String()}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return st, err
	}
	defer cli.Close()
	h := newKVHasher()
	key := "\x00"
	var rev int64
	// Pages are sized by bytes, not keys: a thousand 1 MiB values in one
	// response would be a GiB in the agent's memory.
	const pageBytes = 16 << 20
	page := int64(16)
	for {
		opts := []clientv3.OpOption{clientv3.WithFromKey(), clientv3.WithLimit(page), clientv3.WithSerializable()}
		if rev > 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := cli.Get(ctx, key, opts...)
		if err != nil {
			return st, fmt.Errorf("read restored keys: %w", err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		var size int64
		for _, kv := range resp.Kvs {
			h.add(kv.Key, kv.Value)
			st.keys++
			size += int64(len(kv.Key) + len(kv.Value))
		}
		page = max(1, min(1000, page*pageBytes/max(size, 1)))
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	st.rev, st.hash = rev, h.sum()
	if jr != nil {
		if st.touched, err = backup.TouchedDigest(ctx, cli, jr.touched, rev, etcdsnap.RevisionBump); err != nil {
			return st, fmt.Errorf("read the changed keys: %w", err)
		}
		sizes := make(map[string]int, len(jr.changed))
		for _, e := range jr.events {
			sizes[e.Key] = len(e.Key) + len(e.Value)
		}
		if st.values, err = backup.ValuesDigestSized(ctx, cli, jr.changed, rev, func(k string) int { return sizes[k] }); err != nil {
			return st, fmt.Errorf("read the changed values: %w", err)
		}
	}
	return st, nil
}

func readFileLimited(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, 16<<20))
}
