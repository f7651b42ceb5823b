// Package progress shows how far a long command got, and asks a person to
// confirm a destructive one.
//
// A command takes a Reporter from For and tells it about its steps:
// Step(name) starts one (ending the one before), Bytes(total) says how
// many bytes it will move, Add(n) counts them as they go, Done ends the
// last. What the person sees depends on where stderr goes:
//
//   - a terminal: a bar (github.com/schollz/progressbar/v3) with the step,
//     the bytes done and to do, the rate and the time left; a step without
//     a byte count shows its name until it ends. When the step ends
//     the bar is replaced by its summary line, so the scrollback keeps one
//     line per step.
//   - anything else (a pipe, a file, journald): only the summary lines, one
//     per step when it ends: "restore phase etcd: 64.0 MiB in 2.1s
//     (30.5 MiB/s)", or "restore phase stop: done in 1.2s" for a step that
//     moved no counted bytes.
//
// KUBEKEEP_PROGRESS=bar, plain or off overrides the choice (off: nothing).
//
// While a bar is drawn, other output to the same terminal (logs, a
// restore's account of its actions) must go through Wrap, which clears the
// bar's line before each write so the two do not mix.
//
// Confirm (confirm.go) is the other half: the question a destructive
// command asks before it changes anything, and its refusal to run
// unattended without --yes.
package progress

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// Reporter hears the steps of a command. Its methods are safe to call
// from several goroutines (Add in particular); a nil-safe no-op is Off.
type Reporter interface {
	// Step ends the current step, if any, and starts the named one.
	Step(name string)
	// Bytes sets the number of bytes the current step moves (0: unknown).
	Bytes(total int64)
	// Add counts n more bytes of the current step.
	Add(n int64)
	// Done ends the current step, if any.
	Done()
}

// Mode is how a Reporter shows progress.
type Mode string

const (
	ModeBar   Mode = "bar"
	ModePlain Mode = "plain"
	ModeOff   Mode = "off"
)

// EnvVar overrides the mode chosen from the terminal.
const EnvVar = "KUBEKEEP_PROGRESS"

// ModeFor is the mode For picks for w: $KUBEKEEP_PROGRESS when it names
// one, else a bar when w is a terminal, else plain lines. An unknown value
// of the variable is an error naming it.
func ModeFor(w io.Writer) (Mode, error) {
	switch v := strings.TrimSpace(os.Getenv(EnvVar)); v {
	case "":
	case string(ModeBar), string(ModePlain), string(ModeOff):
		return Mode(v), nil
	default:
		return "", fmt.Errorf("%s=%q: must be bar, plain or off", EnvVar, v)
	}
	if IsTerminal(w) {
		return ModeBar, nil
	}
	return ModePlain, nil
}

// IsTerminal says whether w is a terminal.
func IsTerminal(w any) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// For returns the Reporter for w in the mode ModeFor picks.
func For(w io.Writer) (Reporter, error) {
	m, err := ModeFor(w)
	if err != nil {
		return nil, err
	}
	return New(w, m), nil
}

// New returns a Reporter writing to w in mode m.
func New(w io.Writer, m Mode) Reporter {
	switch m {
	case ModeOff:
		return Off{}
	case ModeBar:
		return &reporter{w: w, bar: true, now: time.Now}
	}
	return &reporter{w: w, now: time.Now}
}

// Off reports nothing.
type Off struct{}

func (Off) Step(string) {}
func (Off) Bytes(int64) {}
func (Off) Add(int64)   {}
func (Off) Done()       {}

// Wrap returns a writer for other output to the terminal r draws on: each
// write first clears the bar's line. For any other Reporter it is w.
func Wrap(r Reporter, w io.Writer) io.Writer {
	if rp, ok := r.(*reporter); ok && rp.bar {
		return &wrapped{r: rp, w: w}
	}
	return w
}

// IsBar says whether r draws a bar (and so whether logs should be wrapped
// and rendered as text).
func IsBar(r Reporter) bool {
	rp, ok := r.(*reporter)
	return ok && rp.bar
}

type reporter struct {
	w   io.Writer
	bar bool
	now func() time.Time

	mu    sync.Mutex
	name  string
	start time.Time
	total int64
	done  int64
	pb    *progressbar.ProgressBar
}

func (r *reporter) Step(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.endLocked()
	r.name, r.start, r.total, r.done = name, r.now(), 0, 0
	if r.bar {
		// Until the step says how many bytes it moves: its name, which
		// the bar or the summary line then overwrites.
		fmt.Fprintf(lockedWriter{r}, "\r\033[K%s ...", name)
	}
}

func (r *reporter) Bytes(total int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.name == "" || total <= 0 {
		return
	}
	r.total = total
	if r.bar {
		r.dropBar()
		r.pb = r.newBar(total)
		_ = r.pb.Set64(r.done)
	}
}

func (r *reporter) Add(n int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.name == "" {
		return
	}
	r.done += n
	if r.pb != nil && r.total > 0 {
		// The bar's own maximum ends it early: keep it just below until
		// Done says the step is over.
		_ = r.pb.Set64(min(r.done, r.total-1))
	}
}

func (r *reporter) Done() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.endLocked()
}

// endLocked ends the current step: the bar goes, the summary line stays.
func (r *reporter) endLocked() {
	if r.name == "" {
		return
	}
	r.dropBar()
	w := lockedWriter{r}
	if r.bar {
		fmt.Fprint(w, "\r\033[K")
	}
	fmt.Fprintln(w, Summary(r.name, r.done, r.now().Sub(r.start)))
	r.name = ""
}

// dropBar stops the bar and clears its line.
func (r *reporter) dropBar() {
	if r.pb == nil {
		return
	}
	_ = r.pb.Finish()
	fmt.Fprint(lockedWriter{r}, "\r\033[K")
	r.pb = nil
}

func (r *reporter) newBar(total int64) *progressbar.ProgressBar {
	return progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(lockedWriter{r}),
		progressbar.OptionSetDescription(r.name),
		progressbar.OptionSetWidth(barWidth(r.w, r.name)),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionUseIECUnits(true),
		progressbar.OptionShowBytes(true),
		progressbar.OptionShowTotalBytes(true),
		progressbar.OptionShowCount(),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionSetElapsedTime(true),
		progressbar.OptionClearOnFinish(),
	)
}

// barWidth fits the bar's line to the terminal (a wrapped line cannot be
// redrawn in place): what is left of its width after the step's name and
// the counts, between 10 and 30 cells.
func barWidth(w io.Writer, name string) int {
	cols := 120
	if f, ok := w.(*os.File); ok {
		if c, _, err := term.GetSize(int(f.Fd())); err == nil && c > 0 {
			cols = c
		}
	}
	// "NAME  45% |BAR| (123.4/256.0 MiB, 123 MiB/s) [12s:34s]"
	return min(30, max(10, cols-len(name)-52))
}

// lockedWriter is what the bar and the summaries write through; Wrap's
// writes take the same lock, so a log line never lands inside a bar's
// redraw.
type lockedWriter struct{ r *reporter }

var termMu sync.Mutex

func (l lockedWriter) Write(p []byte) (int, error) {
	termMu.Lock()
	defer termMu.Unlock()
	return l.r.w.Write(p)
}

type wrapped struct {
	r *reporter
	w io.Writer
}

func (w *wrapped) Write(p []byte) (int, error) {
	termMu.Lock()
	defer termMu.Unlock()
	if _, err := io.WriteString(w.w, "\r\033[K"); err != nil {
		return 0, err
	}
	return w.w.Write(p)
}

// Summary is the line a step leaves: its name, the bytes it moved, how
// long it took and the rate, or "done in" when it counted no bytes.
func Summary(name string, bytes int64, d time.Duration) string {
	d = d.Round(time.Millisecond)
	if bytes <= 0 {
		return fmt.Sprintf("%s: done in %s", name, d)
	}
	rate := ""
	if s := d.Seconds(); s > 0 {
		rate = fmt.Sprintf(" (%s/s)", HumanBytes(int64(float64(bytes)/s)))
	}
	return fmt.Sprintf("%s: %s in %s%s", name, HumanBytes(bytes), d, rate)
}

// HumanBytes writes n in IEC units with one decimal (512 B, 1.5 KiB,
// 64.0 MiB).
func HumanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
