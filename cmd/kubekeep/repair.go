//go:build !kubekeep_front

package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kubekeep/kubekeep/rsyncish"
)

func newRepairCommand(g *globalOptions) *cobra.Command {
	o := &checkerOptions{}
	cmd := &cobra.Command{
		Use:   "repair",
		Short: "Make a damaged store consistent again and say which versions lost data",
		Long: `Repair the store after damage that verify reported (like restic's repair
index and repair packs):

  - a damaged or lost config.json is written again from what the version
    manifests record (until then every command works from the manifests,
    with a warning);
  - every damaged pack (missing, of the wrong size, with a damaged index, or
    holding blocks an earlier verify --read-data found rotten; with
    --read-data, any block that does not match its hash) has its readable
    blocks copied to a new pack, each checked against its hash, and is then
    removed with its index. No index refers to lost data any more, so the
    next backup stores it again: a version whose lost content is still on
    the host (an unchanged file, the same etcd image) heals.

It then lists the versions that still lack data, with the paths they lose,
and removes their verification marks (a damaged version must never be
"the newest verified"). Their other files still restore; verify keeps
naming them until they heal or are pruned. Repair never removes a version.

Exit status: 0 the store is whole, 1 versions remain damaged (listed),
2 the repair could not run (usage, config, no store, lock held, I/O error).

-o json prints {"config" (what was wrong with config.json, when it was),
"packsChecked", "packs": [{"pack", "problem",
"salvaged", "spare", "lost"}], "blobsSalvaged", "blobsLost", "damaged":
[{"id", "manifest", "paths", "blobs"}], "marksDropped"}.`,
		RunE: func(cmd *cobra.Command, _ []string) error { return runRepair(cmd, g, o) },
	}
	checkerFlags(cmd, g, o, "re-hash every pack, not only those known to be damaged")
	return cmd
}

func runRepair(cmd *cobra.Command, g *globalOptions, o *checkerOptions) error {
	s, unlock, err := openChecked(cmd, g, o)
	if err != nil {
		return err
	}
	defer unlock()
	res, err := s.Repair(cmd.Context(), rsyncish.RepairOptions{ReadData: o.readData})
	if err != nil {
		return operational(err)
	}
	if o.output == "json" {
		if err := writeJSON(g.stdout, res); err != nil {
			return operational(err)
		}
	} else {
		if res.Config != "" {
			fmt.Fprintln(g.stdout, res.Config)
		}
		for _, p := range res.Packs {
			fmt.Fprintf(g.stdout, "pack %s: %s; %d blocks salvaged, %d had a copy elsewhere, %d lost\n", p.Pack, p.Problem, p.Salvaged, p.Spare, p.Lost)
		}
		for _, d := range res.Damaged {
			if d.Manifest != "" {
				fmt.Fprintf(g.stdout, "DAMAGED: version %s: manifest unreadable: %s\n", d.ID, d.Manifest)
				continue
			}
			if d.Blobs > 0 {
				fmt.Fprintf(g.stdout, "DAMAGED: version %s lost %d block(s) of %s\n", d.ID, d.Blobs, strings.Join(d.Paths, ", "))
			}
			if len(d.Requires) > 0 {
				fmt.Fprintf(g.stdout, "DAMAGED: version %s requires what is lost: %s\n", d.ID, strings.Join(d.Requires, "; "))
			}
		}
		for _, id := range res.MarksDropped {
			fmt.Fprintf(g.stdout, "verification mark of %s removed\n", id)
		}
		status := "store whole"
		if !res.Clean() {
			status = fmt.Sprintf("%d version(s) still lack data (their lost content comes back only if a backup stores it again)", len(res.Damaged))
		}
		fmt.Fprintf(g.stdout, "%s: %d packs checked, %d replaced; %d blocks salvaged, %d lost\n",
			status, res.PacksChecked, len(res.Packs), res.BlobsSalvaged, res.BlobsLost)
	}
	if !res.Clean() {
		return &exitError{code: 1}
	}
	return nil
}

// operational makes an error that is not a finding (no store, the lock
// held, an I/O error) exit 2, so that 1 keeps meaning "damage" for
// scripts of verify and repair.
func operational(err error) error {
	if err == nil {
		return nil
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return err
	}
	return &exitError{code: 2, msg: err.Error()}
}
