package main

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/kubekeep/kubekeep/rsyncish"
)

func init() { registerCommand(newVersionsCommand) }

type versionsOptions struct{ output string }

func newVersionsCommand(g *globalOptions) *cobra.Command {
	o := &versionsOptions{}
	cmd := &cobra.Command{
		Use:   "versions",
		Short: "List the versions in the store, oldest first",
		Long: `List the versions in the store on the second disk, oldest first.

With -o json, prints [{"id","time","files","size","verified","etcd"}...]
where "etcd" (present when the version holds an etcd snapshot) is the
snapshot information recorded at backup time.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runVersions(g, o) },
	}
	outputFlag(cmd, &o.output, "table", "json")
	return cmd
}

// versionJSON is the scripting contract of `versions -o json`.
type versionJSON struct {
	ID       string          `json:"id"`
	Time     time.Time       `json:"time"`
	Files    int             `json:"files"`
	Size     int64           `json:"size"`
	Verified bool            `json:"verified"`
	Etcd     json.RawMessage `json:"etcd,omitempty"`
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
	if o.output == "json" {
		out := make([]versionJSON, 0, len(vs))
		for _, v := range vs {
			out = append(out, versionJSON{ID: v.ID, Time: v.Time, Files: v.Files, Size: v.Size, Verified: v.Verified, Etcd: v.Meta["etcd"]})
		}
		return writeJSON(g.stdout, out)
	}
	return versionsTable(g, vs)
}

func versionsTable(g *globalOptions, vs []rsyncish.VersionInfo) error {
	tw := newTable(g.stdout)
	fmt.Fprintln(tw, "ID\tTIME (UTC)\tFILES\tSIZE\tNEW\tSTREAMS\tVERIFIED")
	for _, v := range vs {
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
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\n", v.ID, v.Time.Format("2006-01-02 15:04:05"), v.Files,
			humanBytes(v.Size), humanBytes(v.Stats.BytesNew), streams, verified)
	}
	if len(vs) == 0 {
		fmt.Fprintln(tw, "(no versions)")
	}
	return tw.Flush()
}
