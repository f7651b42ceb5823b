// Package restore rebuilds a kubeadm control plane from a store version, in
// named phases modelled on `kubeadm init phase`: each can run on its own,
// each logs what it did, a dry run prints every action and changes nothing,
// and a failed phase says how to resume. It also runs the restore drill
// that proves a version's etcd snapshot restores.
//
// Every host path goes through the root prefix and every write goes through
// an os.Root on it, so a hostile version or a symlink cannot lead a write
// outside the root; a restore of files checks the whole target first (a
// parent dir that is a symlink leading out is refused before anything is
// written). Nothing on the node is deleted: what a phase replaces is moved
// or kept aside under a name that says when and why, in single-phase runs
// too:
//
//   - files (and the manifests the kubeadm phase puts back): every file,
//     symlink or dir in the way that differs from the version is kept under
//     /etc/kubernetes/kubekeep-replaced-STAMP/<host path> (hard-linked, or
//     copied across filesystems) before it is replaced;
//   - etcd: the old data dir is renamed to <data dir>.kubekeep-old-STAMP;
//     when the data dir is a mount point (a dedicated etcd disk: rename
//     fails with EBUSY) its contents move into <data dir>/.kubekeep-old-STAMP
//     on the same disk instead, and the snapshot is restored into
//     <data dir>/.kubekeep-restore-STAMP and its member/ moved up (etcd reads
//     only <data dir>/member). A data dir without member/snap/db (wiped) is
//     held by no etcd. The dry run plans with the same code, so it shows
//     exactly what the run does.
//
// A file damaged in the store (a block that no longer matches its hash)
// does not stop a restore of files: every intact file is restored and the
// error (ErrDamagedFiles) names each damaged one with the newest version
// holding an intact copy (damaged.go).
//
// The kubeadm phase puts the manifests back on an unchanged node; on a
// changed one it runs kubeadm init with a config (InitConfig) made of the
// saved ClusterConfiguration and what kubeadm would otherwise detect or
// default differently from the node that was backed up: the node name, the
// CRI socket (kubeadm 1.34 keeps it only in instance-config.yaml), the
// apiserver's advertise address and port while this host still has that
// address, and the cluster's KubeletConfiguration and
// KubeProxyConfiguration as the backup exported them from etcd.
//
// The verify phase waits, bounded, for etcd and then the apiserver's
// /readyz, and fails saying it timed out when either never gets ready.
//
// A version's etcd state is its own snapshot, or for a journal version
// (versionread.EtcdSourceOf) its base's snapshot plus the delta journal
// replayed to the version's revision: loadSource points the snapshot at
// the base and every phase, `restore etcd` and the drill replay the
// segments up to that revision (or the --at/--revision asked for), and
// verify expects the version's own revision and key count. A journal
// version whose base or journal is gone restores nothing and says why.
//
// The drill of a journal version proves the replay against what etcd held
// at the version's revision R, as the backup recorded it
// (backup.JournalProof): the replay lands on exactly R (revisions are
// dense, so a lost one leaves it short), the replayed etcd holds etcd's key
// count at R, every key the journal changed since the base has the
// presence, last-change revision (plus the bump) and version etcd reported
// at R, and the values of the keys changed since the previous version hash
// as etcd's did at R. Keys the journal never touched come from the base
// snapshot, which is checked against its own sha256 and bbolt, not against
// etcd at R; leases are not compared.
//
// Options.Progress (nil: none) hears each phase as a step and the bytes
// the bulk reads move out of the store (the files the files phase
// restores, the etcd snapshot), counted by the store itself
// (rsyncish.Store.SetProgress) only around those reads; FilesOptions and
// EtcdOptions take one too. Result.Replaces lists what a run replaces or
// moves aside on the node (static pod manifests, files that differ from
// the version, leaf certificates and kubeconfigs, the etcd data dir); a
// dry run fills it the same way, so a caller can show it and ask before
// the real run (the CLI does), and it is empty for a restore into an
// empty root.
//
// The restore drill (Drill) checks first that the store's filesystem has
// room for its scratch data dir (DrillSpace: the db and the two WAL
// segments etcd preallocates) and fails with ErrDrillSpace otherwise. The
// dir carries the drill's pid in its name, so the next store Lock removes
// what a killed drill left.
package restore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/kubekeep/kubekeep/config"
	"github.com/kubekeep/kubekeep/rsyncish"
)

// Phase names, in the order a full restore runs them.
const (
	PhasePreflight = "preflight"
	PhaseSafety    = "safety"
	PhaseStop      = "stop"
	PhaseFiles     = "files"
	PhaseEtcd      = "etcd"
	PhaseKubeadm   = "kubeadm"
	PhaseVerify    = "verify"
)

// Phases lists every phase in run order.
var Phases = []string{PhasePreflight, PhaseSafety, PhaseStop, PhaseFiles, PhaseEtcd, PhaseKubeadm, PhaseVerify}

var phaseHelp = map[string]string{
	PhasePreflight: "what will happen and what blocks it; checks the version and its snapshot",
	PhaseSafety:    "a new version of the node's current state, before anything is overwritten",
	PhaseStop:      "static pod manifests moved aside; waits until the control plane is down",
	PhaseFiles:     "PKI, kubeconfigs, kubelet and extra files back in place (what they replace kept aside); stale leaf certs removed",
	PhaseEtcd:      "the etcd data dir restored from the snapshot (old data moved aside, inside the mount when it is one)",
	PhaseKubeadm:   "kubeadm init with the saved ClusterConfiguration, or the manifests put back",
	PhaseVerify:    "etcd healthy with the expected revision and keys; waits for the apiserver's /readyz",
}

// PhaseHelp is a one-line description of a phase, for --help texts.
func PhaseHelp(name string) string { return phaseHelp[name] }

// Options configure one restore run. Store and Version are required.
type Options struct {
	// Root prefixes every host path ("/" on a real node).
	Root  string
	Store *rsyncish.Store
	// Version is a version ID, a unique prefix, or "latest".
	Version string
	// Phases to run (nil = all), always in the canonical order.
	Phases []string
	DryRun bool
	// Out receives the human account of every action (stdout in the CLI).
	Out    io.Writer
	Logger *slog.Logger

	// At or Revision pick a point after the snapshot: deltas from
	// DeltaJournal are replayed up to it.
	At           time.Time
	Revision     int64
	DeltaJournal string

	// Hostname and HostIPs describe the node being restored; empty means
	// ask the OS. Tests and moved disks set them.
	Hostname string
	HostIPs  []net.IP
	// ForceKubeadm runs kubeadm init even when the node is unchanged.
	ForceKubeadm bool
	// Kubeadm is the kubeadm binary; default "kubeadm" looked up on PATH.
	Kubeadm string
	// Etcd overrides for the safety backup (endpoints, certificates).
	Etcd config.Etcd
	// WaitStopped decides when the control plane is down after its
	// manifests were moved; default: poll the etcd and apiserver ports
	// until they refuse connections. StopTimeout bounds it (default 2m).
	WaitStopped WaitFunc
	StopTimeout time.Duration
	// VerifyTimeout bounds how long verify waits for etcd (default 2m).
	VerifyTimeout time.Duration
	// ReadyzTimeout bounds how long verify then waits for the apiserver's
	// /readyz to answer ok (default 3m; below 0: not checked). APIServer
	// is its host:port (default: the saved controlPlaneEndpoint when it is
	// an address of this host or a name, else 127.0.0.1:6443).
	ReadyzTimeout time.Duration
	APIServer     string
	// Now is the clock (certificate expiry, names of moved-aside dirs).
	Now func() time.Time
	// Progress hears each phase and the bytes it reads from the store
	// (nil: none).
	Progress Progress
}

// PhaseResult is what one phase did (or, in a dry run, would do).
type PhaseResult struct {
	Name     string   `json:"name"`
	Actions  []string `json:"actions"`
	Warnings []string `json:"warnings,omitempty"`
	Skipped  string   `json:"skipped,omitempty"`
	Duration string   `json:"duration"`
}

// Result is the account of a run.
type Result struct {
	Version string        `json:"version"`
	DryRun  bool          `json:"dryRun"`
	Phases  []PhaseResult `json:"phases"`
	// Preflight is the preflight report when that phase ran.
	Preflight *Report `json:"preflight,omitempty"`
	// Replaces is what the run replaces or moves aside on the node (in a
	// dry run: would): static pod manifests, files that differ from the
	// version, leaf certificates and kubeconfigs, the etcd data dir. Empty
	// for a restore into an empty root. The CLI asks for a yes when it is
	// not empty.
	Replaces []string `json:"replaces,omitempty"`
}

// PhaseError is a failed phase with the command that resumes the restore.
type PhaseError struct {
	Phase  string
	Resume string
	Err    error
}

func (e *PhaseError) Error() string {
	return fmt.Sprintf("restore phase %q failed: %v\n  fix the cause, then resume with: %s", e.Phase, e.Err, e.Resume)
}

func (e *PhaseError) Unwrap() error { return e.Err }

// ErrBlocked: preflight found something that must be fixed first.
var ErrBlocked = errors.New("preflight found blockers")

// SelectPhases checks names and returns them in run order (all when empty).
func SelectPhases(names []string) ([]string, error) {
	if len(names) == 0 {
		return slices.Clone(Phases), nil
	}
	var out []string
	for _, n := range names {
		for _, part := range strings.Split(n, ",") {
			part = strings.TrimSpace(part)
			if part == "all" {
				return slices.Clone(Phases), nil
			}
			if !slices.Contains(Phases, part) {
				return nil, fmt.Errorf("unknown restore phase %q (phases: %s)", part, strings.Join(Phases, ", "))
			}
		}
	}
	for _, p := range Phases {
		for _, n := range names {
			if slices.Contains(strings.Split(n, ","), p) && !slices.Contains(out, p) {
				out = append(out, p)
			}
		}
	}
	return out, nil
}

// Run runs the selected phases in order and stops at the first failure,
// returning a *PhaseError that names the command resuming from it. A dry
// run previews every phase even past a failing one, and then returns the
// first failure.
func Run(ctx context.Context, opts Options) (*Result, error) {
	r, err := newRunner(opts)
	if err != nil {
		return nil, err
	}
	defer r.close()
	res := &Result{Version: r.src.id, DryRun: opts.DryRun}
	defer func() { res.Replaces = r.replaced }()
	if p := opts.Progress; p != nil {
		defer p.Done()
	}
	var firstErr *PhaseError
	for i, name := range r.phases {
		start := time.Now()
		pr := PhaseResult{Name: name}
		r.cur = &pr
		if p := opts.Progress; p != nil {
			p.Step("restore phase " + name)
		}
		r.log.Info("restore phase starting", "phase", name, "version", r.src.id, "dryRun", opts.DryRun)
		r.printf("[%s] %s", name, phaseHelp[name])
		err := r.runPhase(ctx, name)
		pr.Duration = time.Since(start).Round(time.Millisecond).String()
		res.Phases = append(res.Phases, pr)
		if name == PhasePreflight {
			res.Preflight = r.report
		}
		if err != nil && opts.DryRun {
			// A preview is for seeing everything at once: say what would
			// block this phase and go on showing the rest.
			r.printf("[%s] WOULD FAIL: %v", name, err)
			r.log.Error("restore phase would fail", "phase", name, "err", err)
			if firstErr == nil {
				firstErr = &PhaseError{Phase: name, Err: err, Resume: r.resumeCommand(r.phases[i:])}
			}
			continue
		}
		if err != nil {
			r.log.Error("restore phase failed", "phase", name, "err", err)
			return res, &PhaseError{Phase: name, Err: err, Resume: r.resumeCommand(r.phases[i:])}
		}
		r.log.Info("restore phase done", "phase", name, "actions", len(pr.Actions), "warnings", len(pr.Warnings), "duration", pr.Duration)
	}
	if firstErr != nil {
		return res, firstErr
	}
	return res, nil
}

func (r *runner) runPhase(ctx context.Context, name string) error {
	switch name {
	case PhasePreflight:
		return r.preflight(ctx)
	case PhaseSafety:
		return r.safety(ctx)
	case PhaseStop:
		return r.stop(ctx)
	case PhaseFiles:
		return r.files(ctx)
	case PhaseEtcd:
		return r.etcd(ctx)
	case PhaseKubeadm:
		return r.kubeadm(ctx)
	case PhaseVerify:
		return r.verify(ctx)
	}
	return fmt.Errorf("unknown phase %q", name)
}

// resumeCommand is the CLI line that re-runs the failed phase and the rest.
func (r *runner) resumeCommand(rest []string) string {
	var b strings.Builder
	b.WriteString("kubekeep restore --store ")
	b.WriteString(r.opts.Store.Dir())
	b.WriteString(" --version ")
	b.WriteString(r.src.id)
	if r.opts.Root != "" && r.opts.Root != "/" {
		b.WriteString(" --root ")
		b.WriteString(r.opts.Root)
	}
	if !r.opts.At.IsZero() {
		b.WriteString(" --at " + r.opts.At.UTC().Format(time.RFC3339Nano))
	}
	if r.opts.Revision > 0 {
		fmt.Fprintf(&b, " --revision %d", r.opts.Revision)
	}
	if r.opts.APIServer != "" {
		b.WriteString(" --apiserver " + r.opts.APIServer)
	}
	for _, p := range rest {
		b.WriteString(" --phase ")
		b.WriteString(p)
	}
	return b.String()
}

// runner holds what the phases of one run share.
type runner struct {
	opts   Options
	log    *slog.Logger
	out    io.Writer
	phases []string
	src    *source
	rootFS *os.Root
	host   hostIdentity
	now    time.Time
	stamp  string // names moved-aside files of this run
	// replacedDir keeps what this run's restores of files replace.
	replacedDir string

	cur    *PhaseResult
	report *Report
	// replaced is what the run replaces on the node (Result.Replaces).
	replaced []string
	an       *analysis
	// snap is the verified snapshot image materialised once per run.
	snap *snapshotFile
}

func newRunner(opts Options) (*runner, error) {
	if opts.Store == nil {
		return nil, errors.New("restore: no store")
	}
	if opts.Root == "" {
		opts.Root = "/"
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Out == nil {
		opts.Out = io.Discard
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.DeltaJournal == "" {
		opts.DeltaJournal = DefaultDeltaJournal
	}
	phases, err := SelectPhases(opts.Phases)
	if err != nil {
		return nil, err
	}
	src, err := loadSource(opts.Store, opts.Version)
	if err != nil {
		return nil, err
	}
	host, err := detectHost(opts.Hostname, opts.HostIPs)
	if err != nil {
		return nil, err
	}
	r := &runner{opts: opts, log: opts.Logger.With("version", src.id), out: opts.Out, phases: phases, src: src, host: host}
	r.now = opts.Now()
	r.stamp = r.now.UTC().Format(stampFormat)
	if fi, err := os.Stat(opts.Root); err == nil && fi.IsDir() {
		if r.rootFS, err = os.OpenRoot(opts.Root); err != nil {
			return nil, fmt.Errorf("restore root %s: %w", opts.Root, err)
		}
	}
	return r, nil
}

func (r *runner) close() {
	if r.snap != nil {
		r.snap.remove()
	}
	if r.rootFS != nil {
		r.rootFS.Close()
	}
}

// printf writes one line of the human account.
func (r *runner) printf(format string, args ...any) {
	fmt.Fprintf(r.out, format+"\n", args...)
}

// do performs one action that changes something, or in a dry run only
// says it would. Every change a phase makes goes through here, so the dry
// run prints exactly what a real run does.
func (r *runner) do(desc string, fn func() error) error {
	r.cur.Actions = append(r.cur.Actions, desc)
	if r.opts.DryRun {
		r.printf("  would: %s", desc)
		return nil
	}
	r.printf("  %s", desc)
	r.log.Info("restore action", "phase", r.cur.Name, "action", desc)
	if err := fn(); err != nil {
		return fmt.Errorf("%s: %w", desc, err)
	}
	return nil
}

// note records something a phase found without changing anything.
func (r *runner) note(format string, args ...any) {
	r.printf("  "+format, args...)
}

func (r *runner) warn(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.cur.Warnings = append(r.cur.Warnings, msg)
	r.printf("  WARNING: %s", msg)
	r.log.Warn(msg, "phase", r.cur.Name)
}

// replaces records something on the node this run replaces or moves
// aside.
func (r *runner) replaces(format string, args ...any) {
	r.replaced = append(r.replaced, fmt.Sprintf(format, args...))
}

func (r *runner) skip(why string) {
	r.cur.Skipped = why
	r.printf("  skipped: %s", why)
}

// root returns the os.Root on the restore root, creating the root first
// (a fresh VM may not have it yet, e.g. a sandbox dir).
func (r *runner) root() (*os.Root, error) {
	if r.rootFS != nil {
		return r.rootFS, nil
	}
	if err := os.MkdirAll(r.opts.Root, 0o755); err != nil {
		return nil, fmt.Errorf("restore root %s: %w", r.opts.Root, err)
	}
	fs, err := os.OpenRoot(r.opts.Root)
	if err != nil {
		return nil, fmt.Errorf("restore root %s: %w", r.opts.Root, err)
	}
	r.rootFS = fs
	return fs, nil
}
