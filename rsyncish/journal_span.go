package rsyncish

import (
	"errors"
	"fmt"
)

// Segment names and what segments hold.
//
// A segment's name gives the revisions it holds, First to Last, and that
// is all verify, Needed and the requirements judge by: the journal does
// not read its callers' bytes. One name is ambiguous. A writer records a
// progress mark (a segment that holds no revision: "nothing changed up to
// R") as the empty range ending at R, named R-R, and a segment holding the
// one revision R is named R-R too. While both are there the chain is
// whole; when the one holding R is lost and the mark stays, the names
// still say R is held. Only the content tells, so a writer that can read
// its segments' spans gives the store one (Options.SegmentSpan), and Verify then checks
// the chain by what segments say they hold as well.

// SegmentSpan reads, from a segment's data (what Append was given), the
// revisions it holds: those after after, up to through (after == through:
// none, a progress mark).
type SegmentSpan func(journal string, data []byte) (after, through uint64, err error)

// ErrSpanUnknown: a SegmentSpan does not read that journal's segments
// (they are judged by their names).
var ErrSpanUnknown = errors.New("segment span unknown")

// segSpan is what a segment's content says it holds: (after, through].
type segSpan struct {
	after, through uint64
	ok             bool // read and understood; a damaged segment is judged by its name
}

// contentHoles returns the revisions no segment holds by content, in
// list order, that the names say are held: what a lost one-revision
// segment beside its progress mark leaves. The holes the names show too
// are left out (Gaps reports them, declared or not).
func contentHoles(segs []SegmentInfo, spans []segSpan) []Gap {
	named := nameHoles(segs)
	var out []Gap
	var covered uint64
	for i, si := range segs {
		after, through := si.First-min(si.First, 1), si.Last
		if spans[i].ok {
			after, through = spans[i].after, spans[i].through
		}
		if i > 0 && after > covered {
			g := Gap{From: covered + 1, To: after}
			known := false
			for _, n := range named {
				if n.From <= g.To && n.To >= g.From {
					known = true
				}
			}
			if !known {
				out = append(out, g)
			}
		}
		covered = max(covered, through)
	}
	return out
}

// holeDetail names what a content hole is.
func holeDetail(g Gap, segs []SegmentInfo, spans []segSpan) string {
	var marks []string
	for i, si := range segs {
		if spans[i].ok && spans[i].after == spans[i].through && si.Last >= g.From && si.First <= g.To {
			marks = append(marks, si.File)
		}
	}
	d := fmt.Sprintf("gap: no segment holds revisions %d-%d", g.From, g.To)
	if len(marks) > 0 {
		d += fmt.Sprintf(" (%s is a progress mark, which holds none; the segment holding them was lost)", marks[0])
	}
	return d + fmt.Sprintf("; a point-in-time restore cannot reach past revision %d from a snapshot before it", g.From-1)
}
