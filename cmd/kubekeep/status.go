package main

import (
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/spf13/cobra"

	"github.com/kubekeep/kubekeep/agent"
	"github.com/kubekeep/kubekeep/backup"
)

func newStatusCommand(g *globalOptions) *cobra.Command {
	var output string
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
revision); newestVersion and newestGood carry "etcdKind" and "base" too.`,
		Example: `  kubekeep status --store /data/backup/kubekeep
  kubekeep status --store /data/backup/kubekeep -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output, "text", "json"); err != nil {
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
			return printStatus(g.stdout, st, time.Now())
		},
	}
	outputFlag(cmd, &output, "text", "json")
	return cmd
}

func printStatus(w io.Writer, st *agent.Status, now time.Time) error {
	switch {
	case st.Agent.Running:
		fmt.Fprintf(w, "agent:            running (pid %d)\n", st.Agent.PID)
	case st.Agent.Updated != nil:
		fmt.Fprintf(w, "agent:            NOT RUNNING (last seen %s)\n", ago(now, st.Agent.Updated))
	default:
		fmt.Fprintln(w, "agent:            NOT RUNNING (never ran on this store)")
	}
	if st.Agent.StoreError != "" {
		fmt.Fprintf(w, "second disk:      NOT WRITING: %s\n", st.Agent.StoreError)
	}
	if v := st.NewestVersion; v != nil {
		fmt.Fprintf(w, "newest version:   %s (%s, %s)\n", v.ID, ago(now, &v.Time), refStatus(v))
	} else {
		fmt.Fprintln(w, "newest version:   none")
	}
	switch v := st.NewestGood; {
	case v != nil && st.NewestVersion != nil && v.ID == st.NewestVersion.ID:
		fmt.Fprintln(w, "latest (good):    the newest version")
	case v != nil:
		fmt.Fprintf(w, "latest (good):    %s (%s): what a restore or get takes; newer versions are not good\n", v.ID, ago(now, &v.Time))
	case st.NewestVersion != nil:
		fmt.Fprintln(w, "latest (good):    NONE: no version is good (restore with an explicit --version ID)")
	}
	if st.Degraded {
		fmt.Fprintln(w, "DEGRADED:         the newest version is degraded:")
		for _, p := range st.Problems {
			fmt.Fprintf(w, "                  - %s\n", p)
		}
	}
	if v := st.NewestVerified; v != nil {
		fmt.Fprintf(w, "newest verified:  %s (%s old)\n", v.ID, (time.Duration(v.AgeSeconds) * time.Second).String())
	} else {
		fmt.Fprintln(w, "newest verified:  none (no restore drill has passed yet; run 'kubekeep drill')")
	}
	if st.EtcdDeltaLagSeconds != nil {
		fmt.Fprintf(w, "etcd delta lag:   %.1fs\n", *st.EtcdDeltaLagSeconds)
	} else {
		fmt.Fprintln(w, "etcd delta lag:   unknown (no etcd snapshot or deltas yet)")
	}
	if e := st.Etcd; e != nil {
		api := "up"
		if !e.APIUp {
			api = "DOWN"
		}
		fmt.Fprintf(w, "etcd:             API %s, last version's revision %d (%s)", api, e.Revision, orNone(e.Source))
		if e.Kind == backup.EtcdKindJournal {
			fmt.Fprintf(w, ", a journal version on base %s", e.Base)
		}
		if e.Error != "" {
			fmt.Fprintf(w, ": %s", e.Error)
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
			fmt.Fprintf(w, "DELTA GAP:        %d so far; newest: revisions %d to %d, between %s and %s: no --at inside it\n",
				e.DeltaGaps, g.FromRevision, g.ToRevision, g.FromTime.Format(time.RFC3339), g.ToTime.Format(time.RFC3339))
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
		holds := "nothing known yet"
		if o.LagSeconds != nil {
			holds = fmt.Sprintf("cluster state %s old", (time.Duration(*o.LagSeconds) * time.Second).String())
		}
		fmt.Fprintf(w, "off-site %-8s last sync %s; holds %s, newest version %s\n", n+":", ago(now, o.LastSuccess), holds, orNone(o.NewestVersion))
	}
	fmt.Fprintln(w)

	names := make([]string, 0, len(st.Jobs))
	for n := range st.Jobs {
		names = append(names, n)
	}
	sort.Strings(names)
	tw := newTable(w)
	fmt.Fprintln(tw, "JOB\tLAST SUCCESS\tLAST FAILURE\tNEXT RUN\tERROR")
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
		if j.LastFailure != nil && (j.LastSuccess == nil || j.LastFailure.After(*j.LastSuccess)) {
			errText = j.LastError
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", n, ago(now, j.LastSuccess), ago(now, j.LastFailure), next, errText)
	}
	return tw.Flush()
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
// "etcd-failed,degraded" (backup.State.String).
func refStatus(v *agent.VersionRef) string {
	return backup.State{Status: backup.Status(v.Status), Degraded: v.Degraded}.String()
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
