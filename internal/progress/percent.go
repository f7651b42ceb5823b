package progress

import (
	"fmt"
	"io"
	"time"

	"github.com/schollz/progressbar/v3"
)

// Percent shows work that reports how far it is in percent, not bytes
// (ECS reports a snapshot's progress so): at a terminal a 0-100 bar with
// the time so far and left, otherwise a line each time the detail changes,
// and a summary line at the end.
type Percent struct {
	w     io.Writer
	mode  Mode
	name  string
	start time.Time
	last  string
	pb    *progressbar.ProgressBar
}

// NewPercent starts the named work on w in mode m (ModeFor).
func NewPercent(w io.Writer, m Mode, name string) *Percent {
	p := &Percent{w: w, mode: m, name: name, start: time.Now()}
	if m == ModeBar {
		p.pb = progressbar.NewOptions(100,
			progressbar.OptionSetWriter(w),
			progressbar.OptionSetDescription(name),
			progressbar.OptionSetWidth(30),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionSetElapsedTime(true),
			progressbar.OptionClearOnFinish(),
		)
	}
	return p
}

// Set reports pct (0-100) done; detail says what the percent is of.
func (p *Percent) Set(pct int, detail string) {
	switch p.mode {
	case ModeBar:
		p.pb.Describe(p.name + " " + detail)
		_ = p.pb.Set(min(max(pct, 0), 99))
	case ModePlain:
		if detail != p.last {
			fmt.Fprintf(p.w, "%s: %s\n", p.name, detail)
			p.last = detail
		}
	}
}

// Done ends the work with its summary line.
func (p *Percent) Done() {
	if p.mode == ModeOff {
		return
	}
	if p.pb != nil {
		_ = p.pb.Finish()
		fmt.Fprint(p.w, "\r\033[K")
	}
	fmt.Fprintln(p.w, Summary(p.name, 0, time.Since(p.start)))
}
