package main

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/kubekeep/kubekeep/backup/versionread"
	"github.com/kubekeep/kubekeep/rsyncish"
)

type versionsOptions struct{ output string }

func newVersionsCommand(g *globalOptions) *cobra.Command {
	o := &versionsOptions{}
	cmd := &cobra.Command{
		Use:   "versions",
		Short: "List the versions in the store, oldest first, with their status",
		Long: `List the versions in the store on the second disk, oldest first.

STATUS is what the backup recorded: ok (a checked etcd snapshot and a
complete file set), etcd-failed (files only: etcd was not backed up),
files-only (no etcd to back up), degraded (files lost since the previous
complete version, or manifests discovery could not read), or a
combination such as etcd-failed,degraded; [safety] marks the version a
restore took of the node before overwriting it. Only ok versions are
good: "latest" (restore, get, objects, diff, drill) means the newest good
version, named below the table; "newest" the newest whatever its status.
VERIFIED is when the restore drill passed on the version.

With -o json, prints [{"id","time","files","size","verified","etcd",
"status","good","degraded","problems","origin","latest"}...] where "etcd"
(present when the version holds an etcd snapshot) is the snapshot
information recorded at backup time, "problems" why a version is
degraded, and "latest" is true on the version "latest" resolves to.
"etcdKind" is "full" (the version holds a snapshot of its own) or
"journal" (its etcd state is the snapshot of version "base", at
etcd.baseRevision, plus the delta journal up to etcd.revision; "journal"
holds the evidence recorded from etcd for the drill). ETCD in the table
says the same: full, or journal on the base's ID.

A journal version is only "latest" while its base is in the store and the
journal from the base to its revision has no hole; otherwise "latest"
passes over it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runVersions(g, o) },
	}
	outputFlag(cmd, &o.output, "table", "json")
	return cmd
}

// versionJSON is the scripting contract of `versions -o json`: fields are
// added, never renamed.
type versionJSON struct {
	ID       string          `json:"id"`
	Time     time.Time       `json:"time"`
	Files    int             `json:"files"`
	Size     int64           `json:"size"`
	Verified bool            `json:"verified"`
	Etcd     json.RawMessage `json:"etcd,omitempty"`
	Status   string          `json:"status"`
	Good     bool            `json:"good"`
	Degraded bool            `json:"degraded"`
	Problems []string        `json:"problems,omitempty"`
	Origin   string          `json:"origin,omitempty"`
	Latest   bool            `json:"latest"`
	// EtcdKind, Base and Journal: see the command's help.
	EtcdKind string          `json:"etcdKind,omitempty"`
	Base     string          `json:"base,omitempty"`
	Journal  json.RawMessage `json:"journal,omitempty"`
}

func runVersions(g *globalOptions, o *versionsOptions) error {
	if err := checkOutput(o.output, "table", "json"); err != nil {
		return err
	}
	s, err := openStoreMode(g, false)
	if err != nil {
		return err
	}
	vs, err := s.Versions()
	if err != nil {
		return err
	}
	return writeVersions(g, s, vs, o.output)
}

// writeVersions prints versions vs of store s as `versions` does (also
// used for what an off-site tier holds).
func writeVersions(g *globalOptions, s *rsyncish.Store, vs []rsyncish.VersionInfo, output string) error {
	latest, _, _ := versionread.LatestOf(s, vs)
	if output == "json" {
		out := make([]versionJSON, 0, len(vs))
		for _, v := range vs {
			st := versionread.VersionState(v)
			vj := versionJSON{ID: v.ID, Time: v.Time, Files: v.Files, Size: v.Size, Verified: v.Verified,
				Etcd: v.Meta[versionread.MetaEtcd], Status: string(st.Status), Good: st.Good, Degraded: st.Degraded,
				Problems: st.Problems, Origin: st.Origin, Latest: latest.ID != "" && v.ID == latest.ID,
				EtcdKind: versionread.EtcdKind(v), Journal: v.Meta[versionread.MetaJournal]}
			if src, ok := versionread.EtcdSourceOf(v); ok && src.Journal {
				vj.Base = src.Version
			}
			out = append(out, vj)
		}
		return writeJSON(g.stdout, out)
	}
	return versionsTable(g, vs, latest.ID)
}

// statusCell is the STATUS column: the state, with the version a restore
// took as its safety copy marked.
func statusCell(st versionread.State) string {
	out := st.String()
	if st.Origin == versionread.OriginSafety {
		out += " [safety]"
	}
	return out
}

// etcdCell is the ETCD column: full, journal on its base, or "-".
func etcdCell(v rsyncish.VersionInfo) string {
	src, ok := versionread.EtcdSourceOf(v)
	switch {
	case !ok:
		return "-"
	case src.Journal:
		return "journal on " + src.Version
	}
	return "full"
}

func versionsTable(g *globalOptions, vs []rsyncish.VersionInfo, latest string) error {
	tw := newTable(g.stdout)
	fmt.Fprintln(tw, "ID\tTIME (UTC)\tFILES\tSIZE\tNEW\tSTREAMS\tETCD\tSTATUS\tVERIFIED")
	var degraded []rsyncish.VersionInfo
	for _, v := range vs {
		st := versionread.VersionState(v)
		if st.Degraded {
			degraded = append(degraded, v)
		}
		streams := "-"
		if len(v.Streams) > 0 {
			streams = ""
			for i, st := range v.Streams {
				if i > 0 {
					streams += ","
				}
				streams += st.Name
			}
		}
		verified := "no"
		if v.Verified {
			verified = "yes"
			if v.Verification != nil {
				verified = v.Verification.Time.Format("2006-01-02 15:04")
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", v.ID, v.Time.Format("2006-01-02 15:04:05"), v.Files,
			humanBytes(v.Size), humanBytes(v.Stats.BytesNew), streams, etcdCell(v), statusCell(st), verified)
	}
	if len(vs) == 0 {
		fmt.Fprintln(tw, "(no versions)")
		return tw.Flush()
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	w := g.stdout
	fmt.Fprintln(w)
	if latest != "" {
		fmt.Fprintf(w, "latest (what restore, get and drill take): %s\n", latest)
	} else {
		fmt.Fprintf(w, "latest: NONE: no version is good; name one by its ID, or use --version newest\n")
	}
	// The newest degraded version's problems; older ones usually repeat them.
	if n := len(degraded); n > 0 {
		v := degraded[n-1]
		fmt.Fprintf(w, "DEGRADED: %d version(s); the newest, %s:\n", n, v.ID)
		for _, p := range versionread.VersionState(v).Problems {
			fmt.Fprintf(w, "  - %s\n", p)
		}
	}
	return nil
}
