//go:build !kubekeep_front

package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/kubekeep/kubekeep/layout"
)

type planOptions struct{ output string }

func newPlanCommand(g *globalOptions) *cobra.Command {
	o := &planOptions{}
	cmd := &cobra.Command{
		Use:   "plan",
		Short: "Show what would be backed up on this node and how etcd is reached",
		Long: `Read the static pod manifests under --root (/etc/kubernetes/manifests) and
print the backup set: every hostPath the control plane mounts, the files a
kubeadm rebuild needs that no manifest names (kubeconfigs, kubelet config,
the manifests themselves), paths.extra, minus paths.exclude; nested paths are
folded into the directory that holds them. Also shows how kubekeep reaches
etcd (endpoints, CA, client cert, data dir, member name).

A path that is a symlink is shown with where it leads ("symlink ->
/data/pki"), and what it leads to is listed too, on its own or inside
another path, with its kind and size: the pods see the target, and both
are backed up, the link as a link. A path below a symlink is listed where
it really is. Nothing is written; plan fails only without a manifests dir:

  Problems make every backup of this set degraded: a manifest that does
  not parse (file:line), is over 1 MiB or cannot be read, skipped while the
  rest is discovered; hostPath /, /proc, /sys, /dev or another kernel
  filesystem, left out (list it in paths.exclude to acknowledge it).
  Warnings are the rest: missing paths, dangling links, /run paths left
  out, flags naming files on no volume, stray files in the manifests dir.

With -o json the output is a stable contract for scripts, host paths as on
the host (no --root prefix):
  {"paths":[{"path","kind","role","sources":[...],"target","size","exclude"}],
   "skipped":[{"path","coveredBy"}], "excluded":[{"path","exclude"}],
   "missing":[...], "etcd":{"external","endpoints","caFile","certFile",
   "keyFile","dataDir","name","initialCluster","peerURLs","image","manifest"},
   "warnings":[...], "problems":[...]}
"target" is where a path of kind "symlink" leads (none: it dangles);
every problem is also in "warnings".
Roles: etcd-data, pki, kubeconfig, ca-bundle, plugin-dir, extra, manifests,
kubelet. etcd settings in the config file replace what was discovered.`,
		Example: `  kubekeep plan
  kubekeep plan --root /tmp/sandbox -o json | jq -r '.paths[].path'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runPlan(cmd.Context(), o, g) },
	}
	outputFlag(cmd, &o.output, "table", "json", "yaml")
	return cmd
}

func runPlan(_ context.Context, o *planOptions, g *globalOptions) error {
	if err := checkOutput(o.output, "table", "json", "yaml"); err != nil {
		return err
	}
	set, err := layout.Discover(g.cfg.Root, layout.Options{Extra: g.cfg.Paths.Extra, Exclude: g.cfg.Paths.Exclude})
	if err != nil {
		return err
	}
	applyEtcdOverrides(set, g)
	switch o.output {
	case "json":
		return writeJSON(g.stdout, set)
	case "yaml":
		// Through JSON so the keys are the JSON contract's, not yaml.v3's
		// lower-cased field names.
		data, err := yaml.Marshal(set)
		if err != nil {
			return err
		}
		_, err = g.stdout.Write(data)
		return err
	}
	return planTable(g.stdout, set)
}

// applyEtcdOverrides puts the config's etcd settings over what discovery
// found, so plan shows what the agent will dial, and says so.
func applyEtcdOverrides(set *layout.Set, g *globalOptions) {
	ec := g.cfg.Etcd
	override := func(key string, dst *string, v string) {
		if v != "" && v != *dst {
			set.Warnings = append(set.Warnings, fmt.Sprintf("etcd.%s %s from the config replaces discovered %q", key, v, *dst))
			*dst = v
		}
	}
	if len(ec.Endpoints) > 0 && strings.Join(ec.Endpoints, ",") != strings.Join(set.Etcd.Endpoints, ",") {
		set.Warnings = append(set.Warnings, fmt.Sprintf("etcd.endpoints %s from the config replace discovered %s",
			strings.Join(ec.Endpoints, ","), strings.Join(set.Etcd.Endpoints, ",")))
		set.Etcd.Endpoints = append([]string{}, ec.Endpoints...)
	}
	override("caFile", &set.Etcd.CAFile, ec.CAFile)
	override("certFile", &set.Etcd.CertFile, ec.CertFile)
	override("keyFile", &set.Etcd.KeyFile, ec.KeyFile)
}

func planTable(w io.Writer, s *layout.Set) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "PATH\tKIND\tROLE\tSIZE\tWHY")
	for _, p := range s.Paths {
		path := p.Path
		if len(p.Exclude) > 0 {
			path += " (except " + strings.Join(p.Exclude, ", ") + ")"
		}
		reason := why(p.Sources)
		if p.Role == layout.RoleEtcdData {
			reason += "; backed up by etcd snapshot, never copied live"
		}
		kind := p.Kind
		if p.Target != "" {
			kind += " -> " + p.Target
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", path, kind, p.Role, humanBytes(p.Size), reason)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(s.Skipped) > 0 {
		fmt.Fprintln(w, "\nInside another path (backed up with it):")
		tw = newTable(w)
		for _, k := range s.Skipped {
			fmt.Fprintf(tw, "  %s\tin %s\t%s\n", k.Path, k.CoveredBy, why(k.Sources))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(s.Excluded) > 0 {
		fmt.Fprintln(w, "\nExcluded (paths.exclude):")
		for _, e := range s.Excluded {
			fmt.Fprintf(w, "  %s\tby %s\n", e.Path, e.Exclude)
		}
	}
	if len(s.Missing) > 0 {
		fmt.Fprintln(w, "\nNot present on this node:")
		for _, m := range s.Missing {
			fmt.Fprintf(w, "  %s\t%s\t%s\n", m.Path, m.Role, why(m.Sources))
		}
	}
	e := s.Etcd
	fmt.Fprintln(w)
	tw = newTable(w)
	if e.External {
		fmt.Fprintf(tw, "etcd\texternal (from the apiserver flags in %s)\n", e.Manifest)
	} else if e.Manifest != "" {
		fmt.Fprintf(tw, "etcd\tlocal static pod %s\n", e.Manifest)
	} else {
		fmt.Fprintf(tw, "etcd\tnot found\n")
	}
	rows := [][2]string{
		{"endpoints", strings.Join(e.Endpoints, ", ")},
		{"CA", e.CAFile}, {"client cert", e.CertFile}, {"client key", e.KeyFile},
		{"data dir", e.DataDir}, {"member", e.Name}, {"initial cluster", e.InitialCluster},
		{"peer URLs", strings.Join(e.PeerURLs, ", ")}, {"image", e.Image},
	}
	for _, r := range rows {
		if r[1] != "" {
			fmt.Fprintf(tw, "  %s\t%s\n", r[0], r[1])
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(s.Problems) > 0 {
		fmt.Fprintln(w, "\nProblems (every backup of this set is degraded):")
		for _, msg := range s.Problems {
			fmt.Fprintf(w, "  - %s\n", msg)
		}
	}
	// Problems are warnings too; each is printed once.
	var rest []string
	for _, msg := range s.Warnings {
		if !slices.Contains(s.Problems, msg) {
			rest = append(rest, msg)
		}
	}
	if len(rest) > 0 {
		fmt.Fprintln(w, "\nWarnings:")
		for _, msg := range rest {
			fmt.Fprintf(w, "  - %s\n", msg)
		}
	}
	return nil
}

// why folds a path's sources into one short line: the pods mounting it,
// then the rebuild or config reason.
func why(srcs []layout.Source) string {
	var mounts, others []string
	for _, s := range srcs {
		if s.From == layout.FromVolume {
			mounts = append(mounts, s.Pod+"/"+s.Volume)
			continue
		}
		others = append(others, s.String())
	}
	var parts []string
	if len(mounts) > 0 {
		parts = append(parts, "mounted by "+strings.Join(mounts, ", "))
	}
	return strings.Join(append(parts, others...), "; ")
}
