package agent

// Off-site tiers (the config's offsite list): the agent's sync of each
// tier, journal segments shipped as they seal, and what the tier holds.
// A tier stays open between syncs (reopened when its config changes or a
// sync fails; a sync that uploads nothing HEADs the tier key, so success
// still means the tier answered), and a full sync lists the tier at the
// agent's start and once a day after (Catalogue.Reconcile), so an object
// the tier lost is uploaded again instead of trusted forever.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/kubekeep/kubekeep/backup/versionread"
	"github.com/kubekeep/kubekeep/config"
	"github.com/kubekeep/kubekeep/rsyncish"
	"github.com/kubekeep/kubekeep/rsyncish/backend"
	"github.com/kubekeep/kubekeep/tiers"
	"github.com/kubekeep/kubekeep/tiers/seal"
)

// JobOffsitePrefix starts the job name of a tier's sync: "offsite-dr"
// for the tier named dr (status key and "job" metric label).
const JobOffsitePrefix = "offsite-"

// OffsiteJob is the job name of the tier's sync.
func OffsiteJob(tier string) string { return JobOffsitePrefix + tier }

// Defaults of the off-site knobs in Config.
var (
	// DefaultOffsiteRetry is shorter than tiers.DefaultRetry: a sync that
	// gives up is retried by the job with its own backoff, and the job
	// reports the failure meanwhile instead of hiding it for half an hour.
	DefaultOffsiteRetry = tiers.Retry{Initial: time.Second, Max: 30 * time.Second, Budget: 2 * time.Minute}
)

const (
	defaultOffsiteJournalEvery = 10 * time.Second
	defaultOffsiteVersionDelay = 5 * time.Second
	// offsiteMarkEvery: a progress mark (an idle etcd's "nothing changed
	// until now") ships at most this often; each is one more object.
	offsiteMarkEvery = time.Minute
)

// OffsiteState is what the agent knows of a tier, kept in the status
// file. Covered is the newest cluster state the tier holds (the time of
// the newest version or journal segment uploaded).
type OffsiteState struct {
	LastSuccess   *time.Time `json:"lastSuccess,omitempty"`
	Covered       time.Time  `json:"covered,omitzero"`
	NewestVersion string     `json:"newestVersion,omitempty"`
}

// OffsiteStatus is a tier in the status document ("offsite": {"TIER":
// {...}}). LagSeconds is the age of the newest cluster state the tier
// holds (null: none known); NewestVersion the newest version it holds.
type OffsiteStatus struct {
	LastSuccess   *time.Time `json:"lastSuccess"`
	LagSeconds    *float64   `json:"lagSeconds"`
	NewestVersion string     `json:"newestVersion"`
}

// defaultOffsiteReconcile is how often a tier's full sync first lists the
// tier (tiers.Catalogue.Reconcile), so an object the tier lost is
// uploaded again (if the store still has it) instead of trusted forever.
const defaultOffsiteReconcile = 24 * time.Hour

// offsiteTier serialises the syncs of one tier (its catalogue is one
// file), debounces the sync after a version and keeps the tier open
// between syncs.
type offsiteTier struct {
	mu           sync.Mutex
	versionTimer *time.Timer // under Agent.offMu

	// Under mu. open is the tier as the last sync opened it, for the next
	// (an open costs requests: the bucket, its lock configuration, the
	// tier key, the owner marker; journal shipping syncs every few
	// seconds); it is opened again when the tier's config changed or a
	// sync failed (credentials rotated, the server replaced).
	open   *openedTier
	opens  int  // times opened (tests)
	closer bool // the goroutine closing it at the agent's stop runs
	// reconcileEvery (default defaultOffsiteReconcile) is how often a
	// full sync first lists the tier; the first full sync after the agent
	// starts does, so what the tier lost while the agent was down is
	// noticed too. reconciled is when it last did.
	reconcileEvery time.Duration
	reconciled     time.Time
}

type openedTier struct {
	tr    *tiers.Tier
	close func()
	cfg   config.Offsite
}

func (a *Agent) offsiteTier(name string) *offsiteTier {
	a.offMu.Lock()
	defer a.offMu.Unlock()
	t := a.offTiers[name]
	if t == nil {
		t = &offsiteTier{reconcileEvery: defaultOffsiteReconcile}
		a.offTiers[name] = t
	}
	return t
}

// opened returns the tier open for tc, opening it when there is none or
// its config changed (t.mu held).
func (t *offsiteTier) opened(ctx context.Context, a *Agent, tc config.Offsite) (*tiers.Tier, error) {
	if t.open != nil && reflect.DeepEqual(t.open.cfg, tc) {
		if err := t.open.tr.Catalogue.Refresh(); err != nil {
			return nil, fmt.Errorf("tier %s: %w", tc.Name, err)
		}
		return t.open.tr, nil
	}
	t.drop()
	// Credentials come from the agent's environment (tiers.Open), never
	// from the file, and no error or log line here carries them.
	tr, closeTier, err := tiers.OpenForStore(ctx, tc, a.store)
	if err != nil {
		return nil, err
	}
	t.open = &openedTier{tr: tr, close: closeTier, cfg: tc}
	t.opens++
	if !t.closer && a.jobCtx != nil {
		t.closer = true // one closer per tier, when the agent stops
		go func() {
			<-a.jobCtx.Done()
			t.mu.Lock()
			defer t.mu.Unlock()
			t.drop()
		}()
	}
	return tr, nil
}

// drop closes the open tier, if any (t.mu held).
func (t *offsiteTier) drop() {
	if t.open != nil {
		t.open.close()
		t.open = nil
	}
}

func (a *Agent) offsiteConfig(name string) (config.Offsite, bool) {
	for _, tc := range a.config().Offsite {
		if tc.Name == name {
			return tc, true
		}
	}
	return config.Offsite{}, false
}

// offsiteSpecs are the tiers' sync jobs, off for a tier whose every is 0.
func (a *Agent) offsiteSpecs(cfg config.Config) []jobSpec {
	var out []jobSpec
	for i, tc := range cfg.Offsite {
		name := tc.Name
		off := ""
		if tc.Every <= 0 {
			off = fmt.Sprintf("offsite[%d].every is 0: no agent sync of tier %s", i, name)
		}
		out = append(out, jobSpec{OffsiteJob(name), tc.Every, off, func(ctx context.Context) (int64, error) {
			return 0, a.syncTier(ctx, name, nil)
		}})
	}
	return out
}

// syncTier uploads to the tier what it lacks (types nil: everything;
// else only those kinds). It reads the store only: no store slot and no
// writer lock, so backups never wait for an upload. Prune waits for it
// (offGate), so a sync never misses a pack a repack moved.
func (a *Agent) syncTier(ctx context.Context, name string, types []backend.FileType) error {
	tc, ok := a.offsiteConfig(name)
	if !ok {
		return fmt.Errorf("tier %s is no longer in the config's offsite list", name)
	}
	a.offGate.RLock()
	defer a.offGate.RUnlock()
	t := a.offsiteTier(name)
	t.mu.Lock()
	defer t.mu.Unlock()
	if a.jobCtx != nil && a.jobCtx.Err() != nil {
		return a.jobCtx.Err() // stopping: the tier is closed, not opened again
	}
	tr, err := t.opened(ctx, a, tc)
	if err != nil {
		return err
	}
	if types == nil && (t.reconciled.IsZero() || a.now().Sub(t.reconciled) >= t.reconcileEvery) {
		missing, err := tr.Catalogue.Reconcile(ctx, tr.Sealed)
		if err != nil {
			t.drop()
			return fmt.Errorf("tier %s: list it to check the catalogue: %w", name, err)
		}
		t.reconciled = a.now()
		if missing > 0 {
			a.log.Warn("the tier lacks objects its catalogue recorded; this sync uploads again those the store still has", "tier", name, "missing", missing)
		}
	}
	src, err := backend.OpenLocal(a.store.Dir())
	if err != nil {
		return fmt.Errorf("tier %s: %w", name, err)
	}
	retry := a.opts.OffsiteRetry
	if retry == (tiers.Retry{}) {
		retry = DefaultOffsiteRetry
	}
	res, err := tiers.Sync(ctx, src, tr.Sealed, tr.Catalogue, tiers.SyncOptions{Tier: name, Bandwidth: int64(tc.Bandwidth),
		Retry: retry, Logger: a.log, Types: types})
	if res.BytesUploaded > 0 {
		a.m.offBytes.WithLabelValues(name).Add(float64(res.BytesUploaded))
	}
	if err == nil && res.ObjectsUploaded == 0 {
		// Nothing went up, and the open tier is cached: ask the tier
		// something (a HEAD of its key) so a success still means it
		// answered, and a tier that is down fails its job.
		if _, serr := tr.Remote.Stat(ctx, seal.KeyHandle); serr != nil {
			err = fmt.Errorf("tier %s: %w", name, serr)
		}
	}
	if err != nil {
		t.drop()
		return err
	}
	now := a.now().UTC()
	covered, newest := tierHolds(a.store, tr.Catalogue)
	a.noteOffsite(name, &now, covered, newest)
	lvl := a.log.Info
	if types != nil {
		lvl = a.log.Debug // journal shipping runs every few seconds
	}
	lvl("off-site sync", "tier", name, "journalOnly", types != nil, "versionsUploaded", res.VersionsUploaded,
		"objectsUploaded", res.ObjectsUploaded, "bytesUploaded", res.BytesUploaded, "bytesSkipped", res.BytesSkipped,
		"duration", time.Duration(res.Duration*float64(time.Second)).Round(time.Millisecond).String())
	return nil
}

// noteOffsite records a tier's state in status and metrics.
func (a *Agent) noteOffsite(name string, success *time.Time, covered time.Time, newest string) {
	a.stMu.Lock()
	if a.state.Offsite == nil {
		a.state.Offsite = map[string]*OffsiteState{}
	}
	st := a.state.Offsite[name]
	if st == nil {
		st = &OffsiteState{}
		a.state.Offsite[name] = st
	}
	if success != nil {
		st.LastSuccess = success
	}
	if covered.After(st.Covered) {
		st.Covered = covered.UTC()
	}
	if newest != "" {
		st.NewestVersion = newest
	}
	last, cov := st.LastSuccess, st.Covered
	a.statusChangedLocked()
	a.stMu.Unlock()
	if last != nil {
		a.m.offLastSuccess.WithLabelValues(name).Set(float64(last.UnixNano()) / 1e9)
	}
	a.m.offsiteCovered(name, cov)
}

// offsiteSetup prepares the configured tiers' metrics from what the
// store's catalogues and the status file already say, so a restarted
// agent reports the tier's lag at once, not +Inf until its next sync.
func (a *Agent) offsiteSetup(cfg config.Config) {
	names := map[string]bool{}
	for _, tc := range cfg.Offsite {
		names[tc.Name] = true
	}
	// A tier dropped from the config is closed.
	a.offMu.Lock()
	var gone []*offsiteTier
	for name, t := range a.offTiers {
		if !names[name] {
			gone = append(gone, t)
		}
	}
	a.offMu.Unlock()
	for _, t := range gone {
		go func() { // not under the reload: a sync of it may be running
			t.mu.Lock()
			defer t.mu.Unlock()
			t.drop()
		}()
	}
	for _, tc := range cfg.Offsite {
		a.m.offBytes.WithLabelValues(tc.Name).Add(0)
		a.m.offsiteCovered(tc.Name, time.Time{})
		if a.store == nil {
			continue
		}
		p := catalogueFile(a.store.Dir(), tc.Name)
		if _, err := os.Stat(p); err != nil {
			a.noteOffsite(tc.Name, nil, time.Time{}, "")
			continue
		}
		cat, err := tiers.OpenCatalogue(p)
		if err != nil {
			a.log.Warn("reading a tier's catalogue", "tier", tc.Name, "err", err)
			continue
		}
		covered, newest := tierHolds(a.store, cat)
		a.noteOffsite(tc.Name, nil, covered, newest)
	}
	a.m.offsiteKeep(names)
}

func catalogueFile(storeDir, tier string) string {
	return filepath.Join(tiers.StateDir(storeDir), tier+".catalogue")
}

// tierHolds is the newest cluster state the catalogue records in the
// tier: the time of the newest version or delta segment uploaded, and the
// newest version's ID.
func tierHolds(store *rsyncish.Store, cat *tiers.Catalogue) (covered time.Time, newest string) {
	if vs, err := store.Versions(); err == nil {
		for i := len(vs) - 1; i >= 0; i-- {
			if cat.Has(backend.Handle{Type: backend.ManifestFile, Name: vs[i].ID + ".manifest"}) {
				covered, newest = vs[i].Time, vs[i].ID
				break
			}
		}
	}
	names, err := store.Journals()
	if err != nil {
		return covered, newest
	}
	for _, n := range names {
		if n != versionread.DeltaJournal {
			continue
		}
		j, err := store.Journal(n)
		if err != nil {
			break
		}
		segs, err := j.List()
		if err != nil {
			break
		}
		for _, s := range segs {
			if s.Time.After(covered) && cat.Has(backend.Handle{Type: backend.JournalFile, Name: n + "/" + s.File}) {
				covered = s.Time
			}
		}
	}
	return covered, newest
}

// offsiteVersionCommitted asks for a sync of every agent-synced tier
// shortly after a version committed (debounced: versions committed within
// OffsiteVersionDelay share one sync), so it need not wait for every.
func (a *Agent) offsiteVersionCommitted() {
	delay := a.opts.OffsiteVersionDelay
	for _, tc := range a.config().Offsite {
		if tc.Every <= 0 {
			continue
		}
		name := tc.Name
		t := a.offsiteTier(name)
		a.offMu.Lock()
		if t.versionTimer == nil {
			t.versionTimer = time.AfterFunc(delay, func() {
				a.offMu.Lock()
				t.versionTimer = nil
				a.offMu.Unlock()
				if j := a.offsiteJobOn(name); j != nil {
					a.trigger(j, "a version was committed", false)
				}
			})
		}
		a.offMu.Unlock()
	}
}

// offsiteJobOn is the tier's sync job while it is scheduled (nil when
// off or unknown).
func (a *Agent) offsiteJobOn(tier string) *jobRunner {
	a.jobsMu.Lock()
	defer a.jobsMu.Unlock()
	if j := a.jobs[OffsiteJob(tier)]; j != nil && j.interval > 0 {
		return j
	}
	return nil
}

// offsiteSegment is called for every durable delta segment: it wakes the
// journal shipper (a progress mark at most every offsiteMarkEvery).
func (a *Agent) offsiteSegment(firstRev, lastRev int64) {
	if len(a.config().Offsite) == 0 {
		return
	}
	if firstRev == lastRev+1 { // a progress mark
		now := time.Now()
		a.offMu.Lock()
		due := now.Sub(a.offMarkKick) >= offsiteMarkEvery
		if due {
			a.offMarkKick = now
		}
		a.offMu.Unlock()
		if !due {
			return
		}
	}
	kick(a.offKick)
}

// offsiteJournalLoop ships journal segments to the agent-synced tiers as
// they seal, at most once per OffsiteJournalEvery, so a tier trails the
// cluster by seconds instead of by schedules.backup. A tier whose sync is
// failing is left to its job's retries (which ship the journal too); a
// failed shipment hands the tier to its job.
func (a *Agent) offsiteJournalLoop(ctx context.Context) {
	every := a.opts.OffsiteJournalEvery
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.offKick:
		}
		if wait := time.Until(last.Add(every)); wait > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
		last = time.Now()
		for _, tc := range a.config().Offsite {
			if tc.Every <= 0 || !a.storeOK.Load() {
				continue
			}
			name := OffsiteJob(tc.Name)
			if js := jobRecord(a, name); js.Failures > 0 {
				continue
			}
			if !a.beginRun() {
				return
			}
			err := a.syncTier(a.jobCtx, tc.Name, []backend.FileType{backend.JournalFile})
			a.inflight.Done()
			if err == nil || a.jobCtx.Err() != nil {
				continue
			}
			a.log.Warn("shipping journal segments to the tier failed; its sync job takes over", "tier", tc.Name, "err", err)
			if j := a.offsiteJobOn(tc.Name); j != nil {
				go a.trigger(j, "journal shipping failed", false)
			}
		}
	}
}

// jobRecord is a copy of the job's record.
func jobRecord(a *Agent, name string) JobState {
	a.stMu.Lock()
	defer a.stMu.Unlock()
	if js := a.state.Jobs[name]; js != nil {
		return *js
	}
	return JobState{}
}

// readOffsite is the status document's offsite block: every tier this
// store has a catalogue for (a CLI sync's too) or the agent recorded.
func readOffsite(store *rsyncish.Store, fst *FileState, now time.Time) map[string]OffsiteStatus {
	out := map[string]OffsiteStatus{}
	add := func(name string) {
		if _, ok := out[name]; ok {
			return
		}
		var ts OffsiteStatus
		var covered time.Time
		if st := fst.Offsite[name]; st != nil {
			ts.LastSuccess, ts.NewestVersion, covered = st.LastSuccess, st.NewestVersion, st.Covered
		}
		// The catalogue (a CLI sync's uploads too) when there is one; not
		// created here: status only reads.
		p := catalogueFile(store.Dir(), name)
		if _, err := os.Stat(p); err == nil {
			if cat, err := tiers.OpenCatalogue(p); err == nil {
				c, n := tierHolds(store, cat)
				if c.After(covered) {
					covered = c
				}
				if n != "" {
					ts.NewestVersion = n
				}
			}
		}
		if !covered.IsZero() {
			lag := roundSec(now.Sub(covered))
			ts.LagSeconds = &lag
		}
		out[name] = ts
	}
	for name := range fst.Offsite {
		add(name)
	}
	ents, _ := os.ReadDir(tiers.StateDir(store.Dir()))
	for _, e := range ents {
		if name, ok := strings.CutSuffix(e.Name(), ".catalogue"); ok && e.Type().IsRegular() {
			add(name)
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}
