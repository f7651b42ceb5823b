//go:build !kubekeep_front

package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/kubekeep/kubekeep/agent"
	"github.com/kubekeep/kubekeep/backup/versionread"
)

func newStatusCommand(g *globalOptions) *cobra.Command {
	var output, color string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show what the agent did: jobs, newest (verified) version, etcd delta lag, store space",
		Long: `Show the state of the backups on the second disk: each job's last
success and failure (with the error) and next run, the newest version,
the newest version the restore drill verified and its age (the recovery
point that is proven), how far behind the etcd delta stream is, and the
store's size and free space. A gap the agent had to leave in the etcd
delta journal (the chain could not continue, e.g. after compaction or
while no agent ran) is shown with its revisions and times: no point in
time inside it can be restored with --at.

It reads the store and the status file the agent keeps in it, so it works
whether or not the agent is running.

The newest version's status is shown with it (ok, etcd-failed, degraded,
...); when it is degraded every problem is listed. "latest" is the newest
good version: the one a restore or 'kubekeep get --version latest' takes.
A next run that is already due shows as "due now".

With -o json:
  {"jobs":{"<name>":{"lastSuccess","lastFailure","lastError","nextRun"}},
   "newestVersion":{"id","time","status","good","degraded","problems"},
   "newestVerified":{"id","time","ageSeconds"},"newestGood":{"id",...},
   "degraded","problems","etcdDeltaLagSeconds","store":{"used","free"},
   "etcd":{"apiUp","deltaRevision","deltaTime","deltaGaps",
           "lastDeltaGap":{"fromRevision","toRevision","fromTime","toTime"},
           "kind","base","fullReason","fullVersions","journalVersions"}, ...}

"kind" is the newest version's etcd kind: "full" (a snapshot of its own) or
"journal" (the snapshot of version "base" plus the delta journal up to its
revision); newestVersion and newestGood carry "etcdKind" and "base" too.

On a terminal the text is coloured at a glance: green what is fine, yellow
what is stale or degraded, red what is failing (the thresholds of the
suggested alerts: newest verified version older than 2 days, yellow past 1;
etcd delta lag over 60 s, yellow past 30; an off-site tier over 15 minutes
behind, yellow past 7.5; a job whose last run failed). --color never, the
NO_COLOR environment variable or TERM=dumb turn it off; piped or redirected
output is never coloured unless --color always, and -o json never is.`,
		Example: `  kubekeep status --store /data/backup/kubekeep
  kubekeep status --store /data/backup/kubekeep -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output, "text", "json"); err != nil {
				return err
			}
			colored, err := useColor(color, g.stdout, os.Getenv)
			if err != nil {
				return err
			}
			s, err := openStoreMode(g, false)
			if err != nil {
				return err
			}
			st, err := agent.ReadStatus(s, time.Now())
			if err != nil {
				return err
			}
			if output == "json" {
				return writeJSON(g.stdout, st)
			}
			return printStatusColor(g.stdout, st, time.Now(), palette{on: colored})
		},
	}
	outputFlag(cmd, &output, "text", "json")
	cmd.Flags().StringVar(&color, "color", "auto", "colour the text output: auto (on a terminal, unless NO_COLOR is set or TERM=dumb), always, never")
	_ = cmd.RegisterFlagCompletionFunc("color", cobra.FixedCompletions([]string{"auto", "always", "never"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// useColor decides whether the text output is coloured: "auto" colours a
// terminal unless NO_COLOR is set (https://no-color.org) or TERM is dumb.
func useColor(mode string, w io.Writer, getenv func(string) string) (bool, error) {
	switch mode {
	case "always":
		return true, nil
	case "never":
		return false, nil
	case "auto":
		if getenv("NO_COLOR") != "" || getenv("TERM") == "dumb" {
			return false, nil
		}
		f, ok := w.(*os.File)
		return ok && term.IsTerminal(int(f.Fd())), nil
	}
	return false, fmt.Errorf("--color %q: want auto, always or never", mode)
}

// health is how a status value looks at a glance.
type health int

const (
	plain  health = iota // no judgement (a name, a size)
	good                 // green: fine
	stale                // yellow: stale, degraded, not known yet
	failed               // red: failing, gone, past an alert's threshold
)

// palette colours values by their health; the zero palette adds nothing,
// so the text is byte for byte the same as without colours.
type palette struct{ on bool }

const ansiReset = "\x1b[0m"

var ansiColor = map[health]string{good: "\x1b[32m", stale: "\x1b[33m", failed: "\x1b[1;31m"}

func (p palette) paint(h health, s string) string {
	if !p.on || h == plain || s == "" {
		return s
	}
	return ansiColor[h] + s + ansiReset
}

// Thresholds of the at-a-glance colours: the suggested alerts' (README,
// examples/prometheus-rules.yaml), yellow from half of each.
const (
	verifiedAgeBad = 2 * 24 * time.Hour
	deltaLagBad    = 60.0  // seconds
	offsiteLagBad  = 900.0 // seconds
)

// byThreshold is good up to half of bad, stale up to bad, failed beyond.
func byThreshold(v, bad float64) health {
	switch {
	case v > bad:
		return failed
	case v > bad/2:
		return stale
	}
	return good
}

// statusHealth is a version status's colour: ok green, degraded or
// files-only yellow, etcd-failed red.
func statusHealth(v *agent.VersionRef) health {
	switch {
	case v.Status == string(versionread.StatusEtcdFailed):
		return failed
	case v.Good:
		return good
	}
	return stale
}

// printStatus prints the status as text without colours.
func printStatus(w io.Writer, st *agent.Status, now time.Time) error {
	return printStatusColor(w, st, now, palette{})
}

func printStatusColor(w io.Writer, st *agent.Status, now time.Time, p palette) error {
	switch {
	case st.Agent.Running:
		fmt.Fprintf(w, "agent:            %s\n", p.paint(good, fmt.Sprintf("running (pid %d)", st.Agent.PID)))
	case st.Agent.Updated != nil:
		fmt.Fprintf(w, "agent:            %s\n", p.paint(failed, fmt.Sprintf("NOT RUNNING (last seen %s)", ago(now, st.Agent.Updated))))
	default:
		fmt.Fprintf(w, "agent:            %s\n", p.paint(failed, "NOT RUNNING (never ran on this store)"))
	}
	if st.Agent.StoreError != "" {
		fmt.Fprintf(w, "second disk:      %s\n", p.paint(failed, "NOT WRITING: "+st.Agent.StoreError))
	}
	if v := st.NewestVersion; v != nil {
		fmt.Fprintf(w, "newest version:   %s (%s, %s)\n", v.ID, ago(now, &v.Time), p.paint(statusHealth(v), refStatus(v)))
	} else {
		fmt.Fprintf(w, "newest version:   %s\n", p.paint(failed, "none"))
	}
	switch v := st.NewestGood; {
	case v != nil && st.NewestVersion != nil && v.ID == st.NewestVersion.ID:
		fmt.Fprintf(w, "latest (good):    %s\n", p.paint(good, "the newest version"))
	case v != nil:
		fmt.Fprintf(w, "latest (good):    %s (%s): %s\n", v.ID, ago(now, &v.Time), p.paint(stale, "what a restore or get takes; newer versions are not good"))
	case st.NewestVersion != nil:
		fmt.Fprintf(w, "latest (good):    %s\n", p.paint(failed, "NONE: no version is good (restore with an explicit --version ID)"))
	}
	if st.Degraded {
		fmt.Fprintf(w, "%s         the newest version is degraded:\n", p.paint(stale, "DEGRADED:"))
		for _, pr := range st.Problems {
			fmt.Fprintf(w, "                  - %s\n", pr)
		}
	}
	if v := st.NewestVerified; v != nil {
		age := time.Duration(v.AgeSeconds) * time.Second
		fmt.Fprintf(w, "newest verified:  %s (%s)\n", v.ID, p.paint(byThreshold(v.AgeSeconds, verifiedAgeBad.Seconds()), age.String()+" old"))
	} else {
		fmt.Fprintf(w, "newest verified:  %s\n", p.paint(failed, "none (no restore drill has passed yet; run 'kubekeep drill')"))
	}
	if st.EtcdDeltaLagSeconds != nil {
		fmt.Fprintf(w, "etcd delta lag:   %s\n", p.paint(byThreshold(*st.EtcdDeltaLagSeconds, deltaLagBad), fmt.Sprintf("%.1fs", *st.EtcdDeltaLagSeconds)))
	} else {
		fmt.Fprintf(w, "etcd delta lag:   %s\n", p.paint(stale, "unknown (no etcd snapshot or deltas yet)"))
	}
	if e := st.Etcd; e != nil {
		api := p.paint(good, "up")
		if !e.APIUp {
			api = p.paint(failed, "DOWN")
		}
		fmt.Fprintf(w, "etcd:             API %s, last version's revision %d (%s)", api, e.Revision, orNone(e.Source))
		if e.Kind == versionread.EtcdKindJournal {
			fmt.Fprintf(w, ", a journal version on base %s", e.Base)
		}
		if e.Error != "" {
			fmt.Fprintf(w, ": %s", p.paint(failed, e.Error))
		}
		fmt.Fprintln(w)
		if e.FullVersions+e.JournalVersions > 0 {
			fmt.Fprintf(w, "etcd versions:    %d full, %d journal", e.FullVersions, e.JournalVersions)
			if e.FullReason != "" {
				fmt.Fprintf(w, "; last full because %s", e.FullReason)
			}
			fmt.Fprintln(w)
		}
		if e.DeltaRevision > 0 {
			fmt.Fprintf(w, "etcd deltas:      durable through revision %d (%s)\n", e.DeltaRevision, ago(now, &e.DeltaTime))
		}
		if g := e.LastDeltaGap; g != nil {
			fmt.Fprintf(w, "%s        %d so far; newest: revisions %d to %d, between %s and %s: no --at inside it\n",
				p.paint(stale, "DELTA GAP:"), e.DeltaGaps, g.FromRevision, g.ToRevision, g.FromTime.Format(time.RFC3339), g.ToTime.Format(time.RFC3339))
		}
	}
	fmt.Fprintf(w, "store:            %s used, %s free, %d versions\n", humanBytes(st.Store.Used), humanBytes(st.Store.Free), st.Versions)
	tierNames := make([]string, 0, len(st.Offsite))
	for n := range st.Offsite {
		tierNames = append(tierNames, n)
	}
	sort.Strings(tierNames)
	for _, n := range tierNames {
		o := st.Offsite[n]
		holds := p.paint(stale, "nothing known yet")
		if o.LagSeconds != nil {
			holds = p.paint(byThreshold(*o.LagSeconds, offsiteLagBad),
				fmt.Sprintf("cluster state %s old", (time.Duration(*o.LagSeconds)*time.Second).String()))
		}
		last := ago(now, o.LastSuccess)
		if o.LastSuccess == nil {
			last = p.paint(stale, last)
		}
		fmt.Fprintf(w, "off-site %-8s last sync %s; holds %s, newest version %s\n", n+":", last, holds, orNone(o.NewestVersion))
	}
	fmt.Fprintln(w)

	names := make([]string, 0, len(st.Jobs))
	for n := range st.Jobs {
		names = append(names, n)
	}
	sort.Strings(names)
	// The table is laid out without colours, then each row is painted
	// whole: escape codes inside the cells would skew the columns.
	var table bytes.Buffer
	tw := newTable(&table)
	fmt.Fprintln(tw, "JOB\tLAST SUCCESS\tLAST FAILURE\tNEXT RUN\tERROR")
	rows := []health{plain}
	for _, n := range names {
		j := st.Jobs[n]
		next := "-"
		if j.NextRun != nil {
			next = nextRun(*j.NextRun, now)
		}
		if j.Disabled != "" {
			next = "off: " + j.Disabled
		}
		errText := ""
		h := plain
		switch {
		case j.LastFailure != nil && (j.LastSuccess == nil || j.LastFailure.After(*j.LastSuccess)):
			errText, h = j.LastError, failed
		case j.Disabled != "":
		case j.LastSuccess != nil:
			h = good
		}
		rows = append(rows, h)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", n, ago(now, j.LastSuccess), ago(now, j.LastFailure), next, errText)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if !p.on {
		_, err := w.Write(table.Bytes())
		return err
	}
	lines := strings.SplitAfter(table.String(), "\n")
	for i, line := range lines {
		if i < len(rows) {
			body := strings.TrimSuffix(line, "\n")
			line = p.paint(rows[i], body) + line[len(body):]
		}
		if _, err := io.WriteString(w, line); err != nil {
			return err
		}
	}
	return nil
}

// nextRun says when a job runs next; one whose time has come (it starts
// any moment, or waits behind a run of another job) is "due now", never
// "in -7s".
func nextRun(t, now time.Time) string {
	d := t.Sub(now).Round(time.Second)
	if d <= 0 {
		return "due now"
	}
	return "in " + d.String()
}

// refStatus is a version's status as the versions table shows it, e.g.
// "etcd-failed,degraded" (versionread.State.String).
func refStatus(v *agent.VersionRef) string {
	return versionread.State{Status: versionread.Status(v.Status), Degraded: v.Degraded}.String()
}

func ago(now time.Time, t *time.Time) string {
	if t == nil {
		return "never"
	}
	return now.Sub(*t).Round(time.Second).String() + " ago"
}

func orNone(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
