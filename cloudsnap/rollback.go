package cloudsnap

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/services/ecs"
)

// Rollback phases, in order; the state file records the one reached.
const (
	PhaseSafety = "safety-snapshot"
	PhaseStop   = "stop"
	PhaseReset  = "reset"
	PhaseStart  = "start"
	PhaseDone   = "done"
)

var phaseOrder = map[string]int{PhaseSafety: 0, PhaseStop: 1, PhaseReset: 2, PhaseStart: 3, PhaseDone: 4}

// RollbackState is the local record that makes a rollback resumable. It
// lives on the machine running the rollback (usually not the VM being
// rolled back, whose disks are about to be overwritten).
type RollbackState struct {
	Version     int         `json:"version"`
	InstanceID  string      `json:"instanceId"`
	Region      string      `json:"region"`
	SetID       string      `json:"setId"`
	SafetySetID string      `json:"safetySetId,omitempty"`
	SafetyDone  bool        `json:"safetyDone"`
	Phase       string      `json:"phase"`
	Disks       []StateDisk `json:"disks"`
	StartedAt   time.Time   `json:"startedAt"`
	UpdatedAt   time.Time   `json:"updatedAt"`
}

// StateDisk is one disk of a rollback: the snapshot it is to be reset
// from, and the set it was last reset from ("" while untouched).
type StateDisk struct {
	DiskID     string `json:"diskId"`
	SnapshotID string `json:"snapshotId"`
	ResetFrom  string `json:"resetFrom,omitempty"`
}

// ParseRollbackState decodes and checks a state file. The file may have
// been edited, truncated or come from another version: anything odd is an
// error rather than a guess about which disks were reset.
func ParseRollbackState(data []byte) (*RollbackState, error) {
	var st RollbackState
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		return nil, fmt.Errorf("rollback state: %w", err)
	}
	if dec.More() {
		return nil, errors.New("rollback state: trailing data after the JSON object")
	}
	if st.Version != 1 {
		return nil, fmt.Errorf("rollback state: version %d, want 1", st.Version)
	}
	for name, v := range map[string]string{"instanceId": st.InstanceID, "region": st.Region, "setId": st.SetID} {
		if !idPattern.MatchString(v) {
			return nil, fmt.Errorf("rollback state: %s %.40q is not an id", name, v)
		}
	}
	if st.SafetySetID != "" && !idPattern.MatchString(st.SafetySetID) {
		return nil, fmt.Errorf("rollback state: safetySetId %.40q is not an id", st.SafetySetID)
	}
	if _, ok := phaseOrder[st.Phase]; !ok {
		return nil, fmt.Errorf("rollback state: unknown phase %.40q", st.Phase)
	}
	if len(st.Disks) == 0 || len(st.Disks) > 64 {
		return nil, fmt.Errorf("rollback state: %d disks", len(st.Disks))
	}
	seen := map[string]bool{}
	for _, d := range st.Disks {
		if !idPattern.MatchString(d.DiskID) || !idPattern.MatchString(d.SnapshotID) {
			return nil, fmt.Errorf("rollback state: disk %.40q / snapshot %.40q is not an id", d.DiskID, d.SnapshotID)
		}
		if d.ResetFrom != "" && !idPattern.MatchString(d.ResetFrom) {
			return nil, fmt.Errorf("rollback state: resetFrom %.40q is not an id", d.ResetFrom)
		}
		if seen[d.DiskID] {
			return nil, fmt.Errorf("rollback state: disk %s listed twice", d.DiskID)
		}
		seen[d.DiskID] = true
	}
	return &st, nil
}

// LoadRollbackState reads a state file; a missing file is (nil, nil).
func LoadRollbackState(path string) (*RollbackState, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading rollback state: %w", err)
	}
	st, err := ParseRollbackState(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return st, nil
}

// save writes the state durably: a resumed rollback trusts it about which
// disks were already overwritten.
func (st *RollbackState) save(path string, now time.Time) error {
	st.UpdatedAt = now.UTC()
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("rollback state dir: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".rollback-*.tmp")
	if err != nil {
		return fmt.Errorf("rollback state: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("rollback state: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("rollback state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("rollback state: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("rollback state: %w", err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// mixed lists, when the disks are not all from one set, which disk holds
// what; "" when they agree.
func (st *RollbackState) mixed() string {
	from := map[string][]string{}
	for _, d := range st.Disks {
		k := d.ResetFrom
		if k == "" {
			k = "NOT reset (still as before the rollback)"
		} else {
			k = "reset from set " + k
		}
		from[k] = append(from[k], d.DiskID)
	}
	if len(from) < 2 {
		return ""
	}
	keys := make([]string, 0, len(from))
	for k := range from {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, strings.Join(from[k], ", ")+": "+k)
	}
	return strings.Join(parts, "; ")
}

// MixedDisksError is returned, loudly, whenever a rollback stops with the
// instance's disks holding different points in time.
type MixedDisksError struct {
	InstanceID string
	SetID      string
	Detail     string
	SafetySet  string
	Cause      error
}

func (e *MixedDisksError) Error() string {
	msg := fmt.Sprintf("!!! DISKS OF INSTANCE %s ARE FROM DIFFERENT POINTS IN TIME: %s. The instance is left stopped; do not start it like this. Re-run the rollback to set %s to finish it",
		e.InstanceID, e.Detail, e.SetID)
	if e.SafetySet != "" {
		msg += fmt.Sprintf(", or roll back to the safety set %s to undo it", e.SafetySet)
	}
	if e.Cause != nil {
		msg += ". Cause: " + e.Cause.Error()
	}
	return msg
}

func (e *MixedDisksError) Unwrap() error { return e.Cause }

// RollbackOptions say what to roll back to and where the state is kept.
type RollbackOptions struct {
	SetID     string
	StatePath string
	// NoSafetySnapshot skips the set of the current disks taken first.
	NoSafetySnapshot bool
	// Progress, when set, hears each step as it starts.
	Progress func(step string)
}

// RollbackPlan is what a rollback would do, for --dry-run and for the
// confirmation prompt.
type RollbackPlan struct {
	InstanceID string
	Instance   *Instance
	Set        Set
	Disks      []PlanDisk
	// Untouched are the instance's disks not in the set: they keep their
	// current contents.
	Untouched []Disk
	Safety    bool
	// Resume is the interrupted rollback this run continues, if any.
	Resume   *RollbackState
	Steps    []string
	Warnings []string
}

// PlanDisk is one disk to reset.
type PlanDisk struct {
	Disk       Disk
	SnapshotID string
}

// PlanRollback checks that a rollback to opts.SetID can work and says what
// it would do, calling only Describe* APIs.
func (c *Client) PlanRollback(ctx context.Context, opts RollbackOptions) (*RollbackPlan, error) {
	if opts.SetID == "" {
		return nil, errors.New("no set id given")
	}
	set, err := c.GetSet(ctx, opts.SetID)
	if err != nil {
		return nil, err
	}
	if set.Status != StatusAccomplished {
		return nil, fmt.Errorf("set %s is %s, not accomplished: it cannot be rolled back to", set.ID, set.Status)
	}
	in, err := c.Instance(ctx)
	if err != nil {
		return nil, err
	}
	attached, err := c.disks(ctx, nil)
	if err != nil {
		return nil, err
	}
	plan := &RollbackPlan{InstanceID: c.instance, Instance: in, Set: *set, Safety: !opts.NoSafetySnapshot}
	inSet := map[string]bool{}
	for _, sd := range set.Disks {
		var disk *Disk
		for i := range attached {
			if attached[i].ID == sd.DiskID {
				disk = &attached[i]
			}
		}
		if disk == nil {
			return nil, fmt.Errorf("set %s has a snapshot of disk %s, which is no longer attached to instance %s: ResetDisk needs the original disk",
				set.ID, sd.DiskID, c.instance)
		}
		inSet[sd.DiskID] = true
		plan.Disks = append(plan.Disks, PlanDisk{Disk: *disk, SnapshotID: sd.SnapshotID})
	}
	for _, d := range attached {
		if !inSet[d.ID] {
			plan.Untouched = append(plan.Untouched, d)
			plan.Warnings = append(plan.Warnings, fmt.Sprintf("disk %s (%s) is not in set %s and keeps its current contents", d.ID, d.Type, set.ID))
		}
	}
	if opts.StatePath != "" {
		st, err := LoadRollbackState(opts.StatePath)
		if err != nil {
			return nil, err
		}
		if st != nil {
			if st.InstanceID != c.instance {
				return nil, fmt.Errorf("state file %s belongs to a rollback of instance %s, not %s", opts.StatePath, st.InstanceID, c.instance)
			}
			if m := st.mixed(); m != "" {
				plan.Warnings = append(plan.Warnings, "!!! an interrupted rollback left the disks at different points in time: "+m)
			}
			if st.SetID == set.ID {
				plan.Resume = st
			} else {
				plan.Warnings = append(plan.Warnings, fmt.Sprintf("an interrupted rollback to set %s (phase %s) is replaced: every disk is reset from set %s", st.SetID, st.Phase, set.ID))
			}
		}
	}
	if plan.Safety && (plan.Resume == nil || !plan.Resume.SafetyDone) {
		plan.Steps = append(plan.Steps, "take a safety snapshot set of the current disks and wait for it")
	}
	plan.Steps = append(plan.Steps, fmt.Sprintf("stop instance %s (now %s) and wait until Stopped", c.instance, in.Status))
	for _, d := range plan.Disks {
		done := plan.Resume != nil && diskDone(plan.Resume, d.Disk.ID)
		if done {
			plan.Steps = append(plan.Steps, fmt.Sprintf("disk %s (%s %s): already reset from %s", d.Disk.ID, d.Disk.Type, d.Disk.Device, d.SnapshotID))
			continue
		}
		plan.Steps = append(plan.Steps, fmt.Sprintf("reset disk %s (%s %s) from snapshot %s", d.Disk.ID, d.Disk.Type, d.Disk.Device, d.SnapshotID))
	}
	plan.Steps = append(plan.Steps, fmt.Sprintf("start instance %s and wait until Running", c.instance))
	return plan, nil
}

func diskDone(st *RollbackState, diskID string) bool {
	for _, d := range st.Disks {
		if d.DiskID == diskID {
			return d.ResetFrom == st.SetID
		}
	}
	return false
}

// Rollback rolls the instance's disks back to a set: safety snapshot,
// StopInstance, ResetDisk for each disk, StartInstance. Every step is
// recorded in opts.StatePath first, so re-running after a crash continues
// where it stopped; the state file is removed once the instance runs again.
func (c *Client) Rollback(ctx context.Context, opts RollbackOptions) (*RollbackState, error) {
	if opts.StatePath == "" {
		return nil, errors.New("rollback needs a state file path")
	}
	plan, err := c.PlanRollback(ctx, opts)
	if err != nil {
		return nil, err
	}
	step := func(s string) {
		c.log.Info("rollback", "instance", c.instance, "set", opts.SetID, "step", s)
		if opts.Progress != nil {
			opts.Progress(s)
		}
	}
	now := c.clock.Now()
	st := plan.Resume
	if st == nil {
		prev, _ := LoadRollbackState(opts.StatePath)
		st = &RollbackState{Version: 1, InstanceID: c.instance, Region: c.region, SetID: plan.Set.ID,
			Phase: PhaseSafety, StartedAt: now.UTC()}
		for _, d := range plan.Disks {
			sd := StateDisk{DiskID: d.Disk.ID, SnapshotID: d.SnapshotID}
			// Keep what an interrupted rollback to another set did, so the
			// mixed-disks warning stays true until this run resets them.
			if prev != nil {
				for _, pd := range prev.Disks {
					if pd.DiskID == sd.DiskID {
						sd.ResetFrom = pd.ResetFrom
					}
				}
			}
			st.Disks = append(st.Disks, sd)
		}
		if opts.NoSafetySnapshot {
			st.SafetyDone = true
		}
		if err := st.save(opts.StatePath, now); err != nil {
			return nil, err
		}
	}
	save := func() error { return st.save(opts.StatePath, c.clock.Now()) }
	loud := func(err error) error {
		if m := st.mixed(); m != "" {
			return &MixedDisksError{InstanceID: c.instance, SetID: st.SetID, Detail: m, SafetySet: st.SafetySetID, Cause: err}
		}
		return err
	}

	if !st.SafetyDone {
		if st.SafetySetID == "" {
			st.SafetySetID = NewSetID(c.clock.Now())
			if err := save(); err != nil {
				return st, err
			}
		}
		step("safety snapshot set " + st.SafetySetID)
		if err := c.safetySet(ctx, st); err != nil {
			return st, loud(fmt.Errorf("safety snapshot: %w", err))
		}
		st.SafetyDone = true
		if err := save(); err != nil {
			return st, err
		}
	}

	if phaseOrder[st.Phase] < phaseOrder[PhaseReset] {
		st.Phase = PhaseStop
		if err := save(); err != nil {
			return st, err
		}
		step("stop instance " + c.instance)
		if err := c.stopAndWait(ctx); err != nil {
			return st, loud(err)
		}
		st.Phase = PhaseReset
		if err := save(); err != nil {
			return st, err
		}
	}

	if st.Phase == PhaseReset {
		// The instance must be stopped before any disk is touched, also when
		// resuming (someone may have started it in between).
		if err := c.stopAndWait(ctx); err != nil {
			return st, loud(err)
		}
		for i := range st.Disks {
			d := &st.Disks[i]
			if d.ResetFrom == st.SetID {
				continue
			}
			if err := ctx.Err(); err != nil {
				return st, loud(fmt.Errorf("rollback interrupted: %w", err))
			}
			step(fmt.Sprintf("reset disk %s from %s", d.DiskID, d.SnapshotID))
			err := c.do(ctx, "ResetDisk", false, func() error {
				r := ecs.CreateResetDiskRequest()
				r.DiskId = d.DiskID
				r.SnapshotId = d.SnapshotID
				_, err := c.ecs.ResetDisk(r)
				return err
			})
			if err != nil {
				return st, loud(fmt.Errorf("reset disk %s: %w", d.DiskID, err))
			}
			d.ResetFrom = st.SetID
			if err := save(); err != nil {
				return st, loud(err)
			}
		}
		if m := st.mixed(); m != "" {
			return st, loud(errors.New("not every disk was reset"))
		}
		st.Phase = PhaseStart
		if err := save(); err != nil {
			return st, err
		}
	}

	if st.Phase == PhaseStart {
		step("start instance " + c.instance)
		if err := c.startAndWait(ctx); err != nil {
			return st, err
		}
		st.Phase = PhaseDone
		if err := save(); err != nil {
			return st, err
		}
	}
	if err := os.Remove(opts.StatePath); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return st, fmt.Errorf("rollback done, but removing its state file: %w", err)
	}
	step("done")
	return st, nil
}

// safetySet makes (or finds, when resuming) the safety set of the disks
// about to be reset, and waits for it: stopping an instance fails its
// progressing snapshots.
func (c *Client) safetySet(ctx context.Context, st *RollbackState) error {
	var ids []string
	for _, d := range st.Disks {
		ids = append(ids, d.DiskID)
	}
	existing, err := c.GetSet(ctx, st.SafetySetID)
	var nf *NotFoundError
	switch {
	case err == nil && existing.Status == StatusFailed:
		return &SetFailedError{Set: *existing}
	case err == nil:
		_, err = c.WaitSet(ctx, st.SafetySetID, nil)
		return err
	case errors.As(err, &nf):
		_, err = c.CreateSet(ctx, CreateRequest{Purpose: PurposePreRollback, Disks: ids, Wait: true, id: st.SafetySetID})
		return err
	default:
		return err
	}
}

// waitInstance polls until the instance reaches want.
func (c *Client) waitInstance(ctx context.Context, want string) error {
	deadline := c.clock.Now().Add(c.opts.WaitTimeout)
	for {
		in, err := c.Instance(ctx)
		if err != nil {
			return err
		}
		if in.Status == want {
			return nil
		}
		if !c.clock.Now().Before(deadline) {
			return fmt.Errorf("instance %s still %s, not %s, after %s: %w", c.instance, in.Status, want, c.opts.WaitTimeout, ErrTimeout)
		}
		if err := c.clock.Sleep(ctx, c.opts.PollInterval); err != nil {
			return fmt.Errorf("waiting for instance %s to be %s: %w", c.instance, want, err)
		}
	}
}

func (c *Client) stopAndWait(ctx context.Context) error {
	in, err := c.Instance(ctx)
	if err != nil {
		return err
	}
	switch in.Status {
	case "Stopped":
		return nil
	case "Starting":
		if err := c.waitInstance(ctx, "Running"); err != nil {
			return err
		}
		fallthrough
	case "Running":
		err := c.do(ctx, "StopInstance", false, func() error {
			r := ecs.CreateStopInstanceRequest()
			r.InstanceId = c.instance
			_, err := c.ecs.StopInstance(r)
			return err
		})
		if err != nil && !IsCode(err, "IncorrectInstanceStatus") {
			return fmt.Errorf("stop instance %s: %w", c.instance, err)
		}
	}
	return c.waitInstance(ctx, "Stopped")
}

func (c *Client) startAndWait(ctx context.Context) error {
	in, err := c.Instance(ctx)
	if err != nil {
		return err
	}
	if in.Status == "Stopped" {
		err := c.do(ctx, "StartInstance", false, func() error {
			r := ecs.CreateStartInstanceRequest()
			r.InstanceId = c.instance
			_, err := c.ecs.StartInstance(r)
			return err
		})
		if err != nil && !IsCode(err, "IncorrectInstanceStatus") {
			return fmt.Errorf("start instance %s: %w", c.instance, err)
		}
	}
	return c.waitInstance(ctx, "Running")
}
