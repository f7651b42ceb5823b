package versionread

import (
	"encoding/json"
	"fmt"

	"github.com/kubekeep/kubekeep/rsyncish"
)

// Stream names inside a version. Restore and `kubekeep get` read them back.
const (
	EtcdSnapshotStream = "etcd/snapshot.db"
	// EtcdKeyIndexStream is the snapshot's key index (etcdsnap's check
	// writes it): key -> revisions and where its value sits in the image,
	// so one object is read without materialising the snapshot.
	EtcdKeyIndexStream         = "etcd/keys.idx"
	ClusterConfigurationStream = "kubeadm/ClusterConfiguration.yaml"
	// The kubelet's and kube-proxy's cluster-wide configurations
	// (ConfigMaps kube-system/kubelet-config and kube-proxy): kubeadm init
	// rewrites both with defaults unless its config carries them.
	KubeletConfigurationStream   = "kubeadm/KubeletConfiguration.yaml"
	KubeProxyConfigurationStream = "kubeadm/KubeProxyConfiguration.yaml"
)

// Meta keys of a version's manifest (more in state.go).
const (
	MetaEtcd   = "etcd"              // snapread.Info
	MetaLayout = "layout"            // layout.Set, as discovered for this version
	MetaStatus = rsyncish.MetaStatus // Status; the store reads it to resolve "latest"
)

// Status says what a committed version holds. A version whose etcd part
// failed, or whose file set is degraded, is still committed, because its
// files (PKI, kubeconfigs) are worth keeping; it never counts as a good
// backup, is never verified and is never what "latest" means (state.go).
type Status string

const (
	StatusOK         Status = rsyncish.StatusOK // files complete and a verified etcd snapshot
	StatusEtcdFailed Status = "etcd-failed"     // files only; the etcd snapshot failed
	StatusFilesOnly  Status = "files-only"      // no etcd to back up (--no-discover without endpoints)
	StatusDegraded   Status = "degraded"        // a verified etcd snapshot, but the file set has problems
)

// MetaJournal is the meta key of a journal version's JournalProof.
const MetaJournal = "etcdJournal"

// Kinds of a version's etcd part (Result.EtcdKind, metrics, status).
const (
	EtcdKindFull    = "full"
	EtcdKindJournal = "journal"
)

// DeltaJournal is the store journal that holds the etcd watch-delta
// segments streamed between versions.
const DeltaJournal = "etcd-deltas"

// Meta keys of a version's manifest, beside MetaEtcd, MetaLayout and
// MetaStatus.
const (
	MetaProblems = "problems"          // []string: why the version is degraded
	MetaOrigin   = rsyncish.MetaOrigin // who took it: OriginAgent, OriginCLI, OriginSafety
	MetaAccepted = "acceptedLoss"      // rsyncish.Loss accepted with AcceptMissing
)

// Origins of a version (Options.Origin).
const (
	OriginAgent = "agent"
	OriginCLI   = "cli"
	// OriginSafety is the version a restore takes of the node's current
	// state before it overwrites anything. It is never "latest", good or
	// not (rsyncish.OriginSafety): a re-run of a restore phase with
	// --version latest lands on what the restore restored from.
	OriginSafety = rsyncish.OriginSafety
)

// State is what a committed version says about itself.
type State struct {
	// Status as recorded ("" for a version that recorded none).
	Status Status `json:"status"`
	// Degraded: the version has problems (Problems says which).
	Degraded bool     `json:"degraded"`
	Problems []string `json:"problems,omitempty"`
	Origin   string   `json:"origin,omitempty"`
	// Good: "latest" may resolve to it (rsyncish.VersionInfo.Good).
	Good bool `json:"good"`
}

// VersionState reads a version's State from its meta.
func VersionState(v rsyncish.VersionInfo) State {
	st := State{Status: Status(v.Status()), Good: v.Good()}
	if raw, ok := v.Meta[MetaProblems]; ok {
		_ = json.Unmarshal(raw, &st.Problems)
	}
	if raw, ok := v.Meta[MetaOrigin]; ok {
		_ = json.Unmarshal(raw, &st.Origin)
	}
	st.Degraded = len(st.Problems) > 0 || st.Status == StatusDegraded
	return st
}

// String is the status as shown in tables: "ok", "etcd-failed",
// "degraded", "etcd-failed,degraded"; "-" when none was recorded.
func (s State) String() string {
	out := string(s.Status)
	if out == "" {
		out = "-"
	}
	if s.Degraded && s.Status != StatusDegraded {
		out += "," + string(StatusDegraded)
	}
	return out
}

// ChainIntact checks the journal's segment names cover (from, to] with
// no hole and no declared break (a restarted chain). A damaged segment
// is found when it is read.
func ChainIntact(j *rsyncish.Journal, from, to int64) error {
	if to <= from {
		return nil
	}
	segs, breaks, err := j.ListChain()
	if err != nil {
		return fmt.Errorf("delta journal: %w", err)
	}
	_, err = ChainSegments(segs, breaks, from, to)
	return TrimmedChain(j, from, to, err) // a hole prune made says so
}

// ChainSegments is ChainIntact over a listing (ordered by first revision);
// it returns the segments a replay from from to to reads, in order: those
// holding a revision in (from, to], up to the first that reaches to (as
// Journal.Needed picks them).
func ChainSegments(segs []rsyncish.SegmentInfo, breaks []rsyncish.Break, from, to int64) ([]rsyncish.SegmentInfo, error) {
	for _, b := range breaks {
		if int64(b.To) > from && int64(b.From) <= to {
			return nil, fmt.Errorf("the delta journal restarted after a break: revisions %d to %d were never recorded", b.From, b.To)
		}
	}
	if to <= from {
		return nil, nil
	}
	var needed []rsyncish.SegmentInfo
	covered := from
	for _, si := range segs {
		if int64(si.Last) <= from {
			continue
		}
		// A segment is named by the first revision it holds (a progress
		// mark by the revision it vouches for): one past what is covered
		// at most. What the names cannot show (a mark past a lost change)
		// the replay and the density check do.
		if int64(si.First) > covered+1 {
			return nil, fmt.Errorf("the delta journal misses revisions %d to %d", covered+1, si.First-1)
		}
		needed = append(needed, si)
		covered = max(covered, int64(si.Last))
		if covered >= to {
			return needed, nil
		}
	}
	return nil, fmt.Errorf("the delta journal ends at revision %d, not %d", covered, to)
}
