package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"time"

	"github.com/kubekeep/kubekeep/backup/versionread"
	"github.com/kubekeep/kubekeep/rsyncish"
)

// StatusFile is the agent's state file at the top of the store
// (rsyncish.AgentStatusFile, read and written through
// rsyncish.AgentFiles). It sits on the second disk beside the versions so
// that `kubekeep status` can read it with or without a running agent, and
// so it survives the root disk.
const StatusFile = rsyncish.AgentStatusFile

// Job names, used as status keys and as the "job" metric label.
const (
	JobBackup        = "backup"
	JobCloudSnapshot = "cloud-snapshot"
	JobPrune         = "prune"
	JobVerify        = "verify"
	JobDrill         = "drill"
	// JobEtcdDeltas is the continuous watch stream, not a scheduled job:
	// its success time is the last durable segment, its failure the last
	// break of the chain.
	JobEtcdDeltas = "etcd-deltas"
	// JobEtcdSnapshot records the etcd part of each backup on its own, so
	// that a backup whose files committed but whose etcd snapshot failed
	// is visible as an etcd failure.
	JobEtcdSnapshot = "etcd-snapshot"
)

// JobState is one job's record. Times are UTC; nil means never.
type JobState struct {
	LastSuccess  *time.Time `json:"lastSuccess"`
	LastFailure  *time.Time `json:"lastFailure"`
	LastError    string     `json:"lastError"`
	NextRun      *time.Time `json:"nextRun"`
	LastDuration float64    `json:"lastDurationSeconds,omitempty"`
	// LastCPU: CPU the agent used during the last run (all its goroutines).
	LastCPU  float64 `json:"lastCPUSeconds,omitempty"`
	Failures int     `json:"consecutiveFailures,omitempty"`
	Disabled string  `json:"disabled,omitempty"`
}

// FileState is what the agent writes to StatusFile.
type FileState struct {
	PID     int                  `json:"pid"`
	Started time.Time            `json:"started"`
	Updated time.Time            `json:"updated"`
	Jobs    map[string]*JobState `json:"jobs"`
	Etcd    EtcdState            `json:"etcd"`
	// StoreError is why the agent currently does not write (second disk
	// missing or read-only); empty when it writes.
	StoreError string `json:"storeError,omitempty"`
	// Offsite is what the agent knows of each tier, by name.
	Offsite map[string]*OffsiteState `json:"offsite,omitempty"`
}

// EtcdState is the agent's view of etcd.
type EtcdState struct {
	// Source of the newest snapshot: "api" or "raw" (the data dir was
	// copied because the API did not answer and nothing held the db).
	// ("journal": the newest version recorded the delta journal on a base
	// instead of a snapshot of its own).
	Source   string    `json:"source,omitempty"`
	Revision int64     `json:"revision,omitempty"`
	Time     time.Time `json:"time,omitzero"`
	// Kind of the newest version's etcd part, "full" or "journal"; Base
	// is a journal version's base and FullReason why the newest full
	// snapshot was taken. FullVersions and JournalVersions count this
	// agent's versions of each kind.
	Kind            string `json:"kind,omitempty"`
	Base            string `json:"base,omitempty"`
	FullReason      string `json:"fullReason,omitempty"`
	FullVersions    int    `json:"fullVersions,omitempty"`
	JournalVersions int    `json:"journalVersions,omitempty"`
	// APIUp: the last snapshot or delta connection reached the etcd API.
	APIUp bool   `json:"apiUp"`
	Error string `json:"error,omitempty"`
	// DeltaRevision and DeltaTime: how far the watch deltas are durable
	// (a progress mark's time when etcd was quiet after the last change).
	DeltaRevision int64     `json:"deltaRevision,omitempty"`
	DeltaTime     time.Time `json:"deltaTime,omitzero"`
	// DeltaGaps counts the gaps the agent left in the delta journal
	// (kubekeep_etcd_delta_gaps_total); LastDeltaGap is the newest.
	DeltaGaps    int       `json:"deltaGaps,omitempty"`
	LastDeltaGap *DeltaGap `json:"lastDeltaGap,omitempty"`
}

// Status is the `kubekeep status -o json` document. The keys jobs,
// newestVersion, newestVerified, etcdDeltaLagSeconds and store are a
// contract scripts depend on; keys are added, never renamed.
type Status struct {
	Jobs           map[string]JobState `json:"jobs"`
	NewestVersion  *VersionRef         `json:"newestVersion"`
	NewestVerified *VerifiedRef        `json:"newestVerified"`
	// NewestGood is the version "latest" resolves to for a restore or
	// `get`: the newest good one (backup package: status ok).
	NewestGood          *VersionRef `json:"newestGood"`
	EtcdDeltaLagSeconds *float64    `json:"etcdDeltaLagSeconds"`
	Store               StoreUsage  `json:"store"`
	Versions            int         `json:"versions"`
	Agent               AgentInfo   `json:"agent"`
	Etcd                *EtcdState  `json:"etcd,omitempty"`
	// Degraded: the newest version is degraded; Problems says why.
	Degraded bool     `json:"degraded"`
	Problems []string `json:"problems,omitempty"`
	// Offsite: each off-site tier, by name (absent when the store has
	// none): its last successful sync, the age of the newest cluster
	// state it holds, the newest version it holds.
	Offsite map[string]OffsiteStatus `json:"offsite,omitempty"`
}

// VersionRef names a version. Status is the one it recorded (ok,
// etcd-failed, files-only, degraded); Degraded and Problems as in
// versionread.State; Good: "latest" may resolve to it.
type VersionRef struct {
	ID       string    `json:"id"`
	Time     time.Time `json:"time"`
	Status   string    `json:"status,omitempty"`
	Good     bool      `json:"good"`
	Degraded bool      `json:"degraded,omitempty"`
	Problems []string  `json:"problems,omitempty"`
	Origin   string    `json:"origin,omitempty"`
	// EtcdKind is "full" or "journal" (versionread.EtcdKind); Base is a
	// journal version's base.
	EtcdKind string `json:"etcdKind,omitempty"`
	Base     string `json:"base,omitempty"`
}

func versionRef(v rsyncish.VersionInfo) *VersionRef {
	st := versionread.VersionState(v)
	ref := &VersionRef{ID: v.ID, Time: v.Time, Status: string(st.Status), Good: st.Good, Degraded: st.Degraded,
		Problems: st.Problems, Origin: st.Origin, EtcdKind: versionread.EtcdKind(v)}
	if src, ok := versionread.EtcdSourceOf(v); ok && src.Journal {
		ref.Base = src.Version
	}
	return ref
}

// VerifiedRef is the newest version the restore drill verified; its age is
// the real recovery point.
type VerifiedRef struct {
	ID         string    `json:"id"`
	Time       time.Time `json:"time"`
	AgeSeconds float64   `json:"ageSeconds"`
}

// StoreUsage is bytes used by the store and free on its filesystem.
type StoreUsage struct {
	Used  int64  `json:"used"`
	Free  int64  `json:"free"`
	Error string `json:"error,omitempty"`
}

// AgentInfo says whether an agent holds the store and what it last wrote.
type AgentInfo struct {
	Running    bool       `json:"running"`
	PID        int        `json:"pid,omitempty"`
	Started    *time.Time `json:"started,omitempty"`
	Updated    *time.Time `json:"updated,omitempty"`
	StoreError string     `json:"storeError,omitempty"`
}

// writeStatusTo replaces the status file atomically and durably, 0600
// (rsyncish.AgentFiles.WriteStatus: it names paths and errors of the
// control plane). Writers in one agent are serialised by
// Agent.writeStatus; this is safe to call concurrently all the same: each
// write has a temp file of its own, removed by the next agent's start if
// the writer was killed.
func writeStatusTo(af rsyncish.AgentFiles, st *FileState) error {
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := af.WriteStatus(data); err != nil {
		return fmt.Errorf("status file: %w", err)
	}
	return nil
}

// ReadStatusFile reads the agent's state from a store directory. A missing
// file (no agent ever ran) is an empty state, not an error.
func ReadStatusFile(dir string) (*FileState, error) {
	return readStatusFrom(rsyncish.AgentFilesIn(dir))
}

// readStatusFrom is ReadStatusFile through the store's agent files.
func readStatusFrom(af rsyncish.AgentFiles) (*FileState, error) {
	data, err := af.ReadStatus()
	if errors.Is(err, fs.ErrNotExist) {
		return &FileState{Jobs: map[string]*JobState{}}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read agent status: %w", err)
	}
	var st FileState
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("agent status %s: %w", af.StatusPath(), err)
	}
	if st.Jobs == nil {
		st.Jobs = map[string]*JobState{}
	}
	// A job written as null (a hand edit, a damaged file) is no record at
	// all: readers dereference every record.
	for name, js := range st.Jobs {
		if js == nil {
			delete(st.Jobs, name)
		}
	}
	return &st, nil
}

// ReadStatus builds the status document from the store itself (versions,
// verification marks, journal, usage) and the agent's status file, so it
// is right whether or not an agent runs. now is the reference time for
// ages and lags.
func ReadStatus(store *rsyncish.Store, now time.Time) (*Status, error) {
	af := store.AgentFiles()
	fst, err := readStatusFrom(af)
	if err != nil {
		return nil, err
	}
	running, pid := af.Running()
	st := &Status{Jobs: map[string]JobState{}, Agent: AgentInfo{Running: running}}
	if running {
		st.Agent.PID = pid
	}
	if !fst.Started.IsZero() {
		st.Agent.Started, st.Agent.Updated = ptr(fst.Started), ptr(fst.Updated)
		st.Agent.StoreError = fst.StoreError
	}
	for name, js := range fst.Jobs {
		j := *js
		if !running {
			// Nothing will run while no agent holds the store.
			j.NextRun = nil
		}
		st.Jobs[name] = j
	}
	if e := fst.Etcd; e != (EtcdState{}) {
		st.Etcd = &e
	}

	vs, err := store.Versions()
	if err != nil {
		return nil, err
	}
	st.Versions = len(vs)
	if len(vs) > 0 {
		st.NewestVersion = versionRef(vs[len(vs)-1])
		st.Degraded, st.Problems = st.NewestVersion.Degraded, st.NewestVersion.Problems
	}
	if g, _, ok := versionread.LatestOf(store, vs); ok {
		st.NewestGood = versionRef(g)
	}
	var newestEtcd time.Time
	for i := len(vs) - 1; i >= 0; i-- {
		v := vs[i]
		if st.NewestVerified == nil && v.Verified {
			st.NewestVerified = &VerifiedRef{ID: v.ID, Time: v.Time, AgeSeconds: roundSec(now.Sub(v.Time))}
		}
		if newestEtcd.IsZero() {
			if info := versionread.VersionEtcd(v); info != nil && info.Verified {
				newestEtcd = v.Time
			}
		}
	}
	if covered := etcdCoveredUntil(store, newestEtcd); !covered.IsZero() {
		lag := roundSec(now.Sub(covered))
		st.EtcdDeltaLagSeconds = &lag
	}
	st.Offsite = readOffsite(store, fst, now)
	used, free, err := store.Usage()
	st.Store = StoreUsage{Used: used, Free: free}
	if err != nil {
		st.Store.Error = err.Error()
	}
	return st, nil
}

// etcdCoveredUntil is the latest moment whose etcd state is durable in the
// store: the newest delta segment's time, or the newest good snapshot when
// it is later.
func etcdCoveredUntil(store *rsyncish.Store, newestSnapshot time.Time) time.Time {
	covered := newestSnapshot
	names, err := store.Journals()
	if err != nil {
		return covered
	}
	for _, n := range names {
		if n != versionread.DeltaJournal {
			continue
		}
		j, err := store.Journal(n)
		if err != nil {
			return covered
		}
		segs, err := j.List()
		if err != nil {
			return covered
		}
		for _, s := range segs {
			if s.Time.After(covered) {
				covered = s.Time
			}
		}
	}
	return covered
}

func versionStatus(v rsyncish.VersionInfo) string { return v.Status() }

func roundSec(d time.Duration) float64 { return math.Round(d.Seconds()*1000) / 1000 }

func ptr[T any](v T) *T { return &v }
