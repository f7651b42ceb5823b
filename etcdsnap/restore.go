package etcdsnap

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/kubekeep/kubekeep/etcdsnap/snapread"
	"go.uber.org/zap"
)

// RevisionBump is added to the restored revision, with the new revision
// marked compacted, so Kubernetes informers relist instead of waiting for
// revisions they believe they have seen (etcd-io/etcd#16028).
const RevisionBump = 1_000_000_000

// RestoreConfig describes one restore into a new data dir.
type RestoreConfig struct {
	// SnapshotPath is a snapshot image: an API stream with its sha256
	// trailer, or a raw member/snap/db copy with SkipHashCheck.
	SnapshotPath  string
	SkipHashCheck bool
	// Snapshot, with SnapshotSize, is read instead of SnapshotPath and
	// written straight into the new data dir: a stored version's image
	// needs no scratch copy first. It requires Verified, since nothing
	// can be checked before the data dir is written.
	Snapshot     io.Reader
	SnapshotSize int64
	// Segments are delta segments of the chain that starts at the
	// snapshot, in any order; replay needs them to cover the snapshot
	// revision without gaps up to the target.
	Segments []io.Reader
	// UntilRevision and UntilTime pick the point in time (both zero: all
	// the deltas). Revisions are the original cluster's, before the bump.
	UntilRevision int64
	UntilTime     time.Time
	// LeaseTTL is the TTL a replay grants a lease that replayed keys were
	// put under but the snapshot does not hold: one granted after it (a
	// watch sees keys put under a lease, never the grant). Zero: the
	// longest TTL among the snapshot's leases, which in a Kubernetes etcd
	// is an Event lease (the apiserver's --event-ttl plus its reuse
	// minute), and at least DefaultReplayLeaseTTL (--event-ttl's default
	// plus that minute): a key kept too long costs little, one expired
	// early is lost. The
	// snapshot's own leases keep their IDs and TTLs, and replayed keys
	// keep the lease ID they had, so Events and /registry/masterleases
	// keys expire in the restored etcd as they would have in the original.
	LeaseTTL time.Duration

	// DataDir must not exist or be empty.
	DataDir string
	// Name, InitialCluster and InitialAdvertisePeerURLs come from the
	// etcd manifest (--name, --initial-cluster,
	// --initial-advertise-peer-urls) so the member the restored data
	// dir describes is the one the static pod will run.
	Name                     string
	InitialCluster           string
	InitialAdvertisePeerURLs string
	// InitialClusterToken defaults to etcd's default, "etcd-cluster",
	// which kubeadm does not override.
	InitialClusterToken string
	// Logger receives the restore's and the replay etcd's logs; default none.
	Logger *zap.Logger

	// Verified vouches that the image is, byte for byte, one that already
	// passed CheckDB: a drill's fresh check of the same file, or a stored
	// version the backup checked, read back through its content hashes.
	// RestoreDataDir then skips its own check before and after, and, with
	// Trailer, the sha256 pass: on a 1 GiB image they cost seconds and
	// prove nothing new. The restored db must still open and be at
	// Revision plus the bump. After a replay it is checked whole.
	Verified *VerifiedImage
}

// VerifiedImage is what a caller vouches for about a snapshot image.
type VerifiedImage struct {
	// Revision and Keys are the image's as the earlier check read them.
	Revision int64
	Keys     int64
	// Trailer: the image's sha256 trailer was checked against its data.
	Trailer bool
}

// RestoreResult describes the data dir a restore produced.
type RestoreResult struct {
	DataDir          string `json:"dataDir"`
	SnapshotRevision int64  `json:"snapshotRevision"`
	// ReplayedToRevision is the original revision the data dir now
	// reflects (the snapshot's when no deltas were replayed).
	ReplayedToRevision int64     `json:"replayedToRevision"`
	ReplayedToTime     time.Time `json:"replayedToTime,omitzero"`
	ReplayedEvents     int       `json:"replayedEvents"`
	ReplayedRevisions  int       `json:"replayedRevisions"`
	// GrantedLeases counts the leases the replay granted again (with
	// their IDs and RestoreConfig.LeaseTTL) because replayed keys were put
	// under them after the snapshot.
	GrantedLeases int `json:"grantedLeases,omitempty"`
	// Revision is the restored etcd's own revision (bumped).
	Revision int64 `json:"revision"`
	Keys     int64 `json:"keys"`
	// SHA256 is the image's sha256 (hex) when the restore checked its
	// trailer on the way in; empty when something vouched for it.
	SHA256 string `json:"sha256,omitempty"`
}

// RestoreDataDir writes a new etcd data dir from a snapshot (etcdutl's
// snapshot restore with revision bump and mark-compacted, see
// writeDataDir), then replays delta segments up to the target with an
// embedded etcd on loopback ephemeral ports, and stops it cleanly. A
// snapshot file nobody vouched for is checked whole before DataDir is
// touched; a vouched stream is checked on its way in (trailer unless
// vouched for, length, meta pages) and refused before etcd opens it.
//
// Leases survive: the data dir keeps the snapshot's lease bucket (as
// etcdutl's restore does), so its leases come back with their IDs and
// TTLs, and each replayed put keeps the lease it was made under, granted
// again with its ID when it came after the snapshot (RestoreConfig.LeaseTTL).
// Events and /registry/masterleases keys expire in the restored etcd a TTL
// after it starts, unless their owners renew them.
func RestoreDataDir(ctx context.Context, cfg RestoreConfig) (RestoreResult, error) {
	res := RestoreResult{DataDir: cfg.DataDir}
	if cfg.DataDir == "" || cfg.Name == "" || cfg.InitialCluster == "" || cfg.InitialAdvertisePeerURLs == "" {
		return res, errors.New("restore etcd: DataDir, Name, InitialCluster and InitialAdvertisePeerURLs are required")
	}
	if err := checkEmptyDataDir(cfg.DataDir); err != nil {
		return res, err
	}
	image, size := cfg.Snapshot, cfg.SnapshotSize
	what := "the stored snapshot"
	if image == nil {
		f, err := os.Open(cfg.SnapshotPath)
		if err != nil {
			return res, fmt.Errorf("restore etcd: %w", err)
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return res, fmt.Errorf("restore etcd: %w", err)
		}
		image, size, what = f, fi.Size(), cfg.SnapshotPath
	}
	if cfg.SkipHashCheck && size%512 == snapread.TrailerSize {
		// A raw db is whole pages: this one ends in an API stream's trailer,
		// which would otherwise be taken for db pages.
		return res, fmt.Errorf("restore etcd: %s has a sha256 trailer; it is an API snapshot, do not skip the hash check", what)
	}
	skipHash := cfg.SkipHashCheck
	if v := cfg.Verified; v != nil && v.Revision > 0 {
		res.SnapshotRevision = v.Revision
		skipHash = skipHash || v.Trailer
	} else if cfg.Snapshot != nil {
		return res, errors.New("restore etcd: a snapshot stream must come with what vouches for it (Verified); pass a file to have it checked")
	} else {
		st, err := snapread.CheckDB(cfg.SnapshotPath)
		if err != nil {
			return res, fmt.Errorf("restore etcd: %w", err)
		}
		res.SnapshotRevision = st.Revision
	}
	res.ReplayedToRevision = res.SnapshotRevision

	events, err := snapread.ReplayEvents(cfg.Segments, res.SnapshotRevision, cfg.UntilRevision, cfg.UntilTime)
	if err != nil {
		return res, fmt.Errorf("restore etcd: %w", err)
	}

	lg := cfg.Logger
	if lg == nil {
		lg = zap.NewNop()
	}
	token := cfg.InitialClusterToken
	if token == "" {
		token = "etcd-cluster"
	}
	// Everything is built in a staging dir inside DataDir and moved into
	// place as the last step: a restore killed at any moment leaves no
	// member dir at DataDir that etcd would start on with half a state.
	target, staged, cleanup, err := stageDataDir(cfg.DataDir)
	if err != nil {
		return res, err
	}
	defer cleanup()
	cfg.DataDir = staged
	res.SHA256, err = writeDataDir(dataDirSpec{
		dataDir: cfg.DataDir, name: cfg.Name, peerURLs: strings.Split(cfg.InitialAdvertisePeerURLs, ","),
		initialCluster: cfg.InitialCluster, token: token,
		image: image, size: size, checkTrailer: !skipHash, bump: RevisionBump, lg: lg,
	})
	if err != nil {
		return res, fmt.Errorf("restore etcd: %s into %s: %w", what, target, err)
	}

	if len(events) > 0 {
		revs, granted, err := replay(ctx, cfg, lg, events)
		if err != nil {
			return res, fmt.Errorf("restore etcd: replay deltas into %s: %w", target, err)
		}
		res.ReplayedEvents, res.ReplayedRevisions, res.GrantedLeases = len(events), revs, granted
		last := events[len(events)-1]
		res.ReplayedToRevision, res.ReplayedToTime = last.ModRevision, last.Time
	}
	var final snapread.DBStats
	if v := cfg.Verified; v != nil && len(events) == 0 {
		// The image passed a full check before; what was written since
		// went through etcd's backend. Reading the revision back proves
		// the db opens and is the image it was taken for.
		final.Revision, err = snapread.NewestRevision(DBPath(cfg.DataDir))
		final.Keys = v.Keys
	} else {
		final, err = snapread.CheckDB(DBPath(cfg.DataDir))
	}
	if err != nil {
		return res, fmt.Errorf("restore etcd: check restored db: %w", err)
	}
	res.Revision, res.Keys = final.Revision, final.Keys
	// The bump marker sits at the image's newest revision plus the bump:
	// anything else means the image was not what it was taken for.
	if len(events) == 0 && final.Revision != res.SnapshotRevision+RevisionBump {
		return res, fmt.Errorf("restore etcd: the restored db is at revision %d, want %d (snapshot revision %d + %d): the snapshot is not the image it was taken for",
			final.Revision, res.SnapshotRevision+RevisionBump, res.SnapshotRevision, RevisionBump)
	}
	if err := publishDataDir(staged, target); err != nil {
		return res, fmt.Errorf("restore etcd: %w", err)
	}
	return res, nil
}
