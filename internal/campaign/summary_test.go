package campaign

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
)

// summary counts what the campaign did, per sub-campaign.
type summary struct {
	mu     sync.Mutex
	counts map[string]map[string]int // kind -> counter -> n
	notes  []string
	hits   map[string]int // known bug id -> checks it failed
	start  time.Time
}

func (s *summary) hit(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hits == nil {
		s.hits = map[string]int{}
	}
	s.hits[id]++
}

func newSummary() *summary {
	return &summary{counts: map[string]map[string]int{}, start: time.Now()}
}

func (s *summary) add(kind, counter string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.counts[kind] == nil {
		s.counts[kind] = map[string]int{}
	}
	s.counts[kind][counter] += n
}

func (s *summary) get(kind, counter string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[kind][counter]
}

func (s *summary) note(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.notes = append(s.notes, fmt.Sprintf(format, args...))
}

// kinds in the order the campaign runs them.
var kindOrder = []string{"kill", "damage", "enospc", "eio"}

// mainRows are the closing figures, in this order; other counters follow.
var mainRows = []string{
	"faults injected", "verify runs", "versions called good by verify", "file restores byte-identical",
	"etcd restores key-identical", "etcd servers started on a restore", "point-in-time restores exact",
	"versions called damaged by verify", "damaged versions refused by restore", "next backups good",
	"data lost", "check failures", "known-bug hits", "cases skipped (known bug)",
}

// table renders the summary.
func (s *summary) table(k knobs) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "kubekeep fault campaign (issue 13): seed %d, N %d, %s\n", k.seed, k.n, time.Since(s.start).Round(time.Second))
	fmt.Fprintf(&b, "reproduce: %s\n\n", reproduce(k))
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "\t")
	for _, kd := range kindOrder {
		fmt.Fprintf(tw, "%s\t", kd)
	}
	fmt.Fprint(tw, "total\t\n")
	seen := map[string]bool{}
	var rows []string
	for _, r := range mainRows {
		rows = append(rows, r)
		seen[r] = true
	}
	var extra []string
	for _, m := range s.counts {
		for c := range m {
			if !seen[c] {
				seen[c] = true
				extra = append(extra, c)
			}
		}
	}
	sort.Strings(extra)
	rows = append(rows, extra...)
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t", r)
		total := 0
		for _, kd := range kindOrder {
			n := s.counts[kd][r]
			total += n
			fmt.Fprintf(tw, "%d\t", n)
		}
		fmt.Fprintf(tw, "%d\t\n", total)
	}
	tw.Flush()
	lost := 0
	for _, m := range s.counts {
		lost += m["data lost"]
	}
	fmt.Fprintf(&b, "\ndata lost: %d (must be 0)\n", lost)
	for _, kb := range knownBugs {
		if n := s.hits[kb.id]; n > 0 {
			fmt.Fprintf(&b, "known bug %s: %d failed check(s): %s\n", kb.id, n, kb.desc)
		} else {
			fmt.Fprintf(&b, "known bug %s: not met in this run (fixed, or this seed did not reach it)\n", kb.id)
		}
	}
	for _, n := range s.notes {
		fmt.Fprintf(&b, "note: %s\n", n)
	}
	return b.String()
}

// writeSummary writes the table to KUBEKEEP_CAMPAIGN_SUMMARY when set.
func writeSummary(text string) error {
	p := os.Getenv("KUBEKEEP_CAMPAIGN_SUMMARY")
	if p == "" {
		return nil
	}
	return os.WriteFile(p, []byte(text), 0o644)
}
