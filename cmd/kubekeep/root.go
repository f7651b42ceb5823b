package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kubekeep/kubekeep/config"
)

// globalOptions are the flags every command takes, and the configuration
// they resolve to: the file (if any) first, then flags that were set.
type globalOptions struct {
	configFile string
	root       string
	store      string
	logLevel   string
	logFormat  string
	sameFS     bool
	etcd       config.Etcd

	cfg    config.Config
	logger *slog.Logger
	stdout io.Writer
	stderr io.Writer
}

func newRootCommand() *cobra.Command {
	g := &globalOptions{stdout: os.Stdout, stderr: os.Stderr}
	cmd := &cobra.Command{
		Use:   "kubekeep",
		Short: "Keep a single-master kubeadm control plane recoverable",
		Long: `kubekeep backs up a kubeadm control plane to a second disk and restores it.

It reads the static-pod manifests to learn what to back up (PKI, kubeconfigs,
etcd, kubelet config, extra files), writes immutable deduplicated versions with
a consistent etcd snapshot every few minutes, streams etcd changes in between,
takes ECS disk snapshots, and restores one object, the whole control plane
(through kubeadm), or the whole VM.

Settings come from --config (default $KUBEKEEP_CONFIG, else ` + config.DefaultPath + `
when it exists); flags override the file. See examples/kubeadm.yaml.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return g.resolve(cmd)
		},
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&g.configFile, "config", "", "config file (default $KUBEKEEP_CONFIG, else "+config.DefaultPath+" if present)")
	pf.StringVar(&g.root, "root", "/", "prefix for every host path read or written (a sandbox dir in tests)")
	pf.StringVar(&g.store, "store", "", "store directory on the second disk (overrides store.path)")
	pf.StringVar(&g.logLevel, "log-level", "", "debug, info, warn or error (overrides log.level)")
	pf.StringVar(&g.logFormat, "log-format", "", "auto, json or text (overrides log.format; auto = JSON unless stderr is a terminal)")
	pf.BoolVar(&g.sameFS, "allow-same-filesystem", false, "allow the store on the same filesystem as backed-up paths (tests and demos only)")
	pf.StringSliceVar(&g.etcd.Endpoints, "etcd-endpoints", nil, "etcd client URLs, e.g. https://10.0.0.5:2379 (overrides etcd.endpoints and discovery; for an external etcd)")
	pf.StringVar(&g.etcd.CAFile, "etcd-cafile", "", "CA bundle etcd's serving cert chains to, a host path (overrides etcd.caFile)")
	pf.StringVar(&g.etcd.CertFile, "etcd-certfile", "", "client certificate etcd accepts, a host path (overrides etcd.certFile)")
	pf.StringVar(&g.etcd.KeyFile, "etcd-keyfile", "", "key of --etcd-certfile, a host path (overrides etcd.keyFile)")

	addCommands(cmd, g)
	return cmd
}

// resolve loads the config file and applies the global flags over it.
func (g *globalOptions) resolve(cmd *cobra.Command) error {
	g.stdout, g.stderr = cmd.OutOrStdout(), cmd.ErrOrStderr()
	cfg, _, err := g.settings(cmd)
	if err != nil {
		return err
	}
	if err := cfg.Validate("flags", nil); err != nil {
		return err
	}
	g.cfg = cfg
	g.logger = newLogger(g.stderr, cfg.Log)
	return nil
}

// settings reads the config file (--config, else $KUBEKEEP_CONFIG, else
// the default path when it exists) and applies the global flags the
// operator set over it, unvalidated. It changes nothing in g, so the agent
// calls it again on reload. path is "" when no file was read.
func (g *globalOptions) settings(cmd *cobra.Command) (cfg config.Config, path string, err error) {
	path, explicit := g.configFile, true
	if path == "" {
		path = os.Getenv("KUBEKEEP_CONFIG")
	}
	if path == "" {
		path, explicit = config.DefaultPath, false
	}
	cfg, err = config.Load(path)
	switch {
	case err == nil:
	case !explicit && errors.Is(err, fs.ErrNotExist):
		cfg, path = config.Default(), ""
	default:
		return config.Config{}, "", err
	}
	flags := cmd.Flags()
	if flags.Changed("root") || cfg.Root == "" {
		cfg.Root = g.root
	}
	if flags.Changed("store") {
		cfg.Store.Path = g.store
	}
	if flags.Changed("allow-same-filesystem") {
		cfg.Store.AllowSameFilesystem = g.sameFS
	}
	if flags.Changed("log-format") {
		cfg.Log.Format = g.logFormat
	}
	if flags.Changed("log-level") {
		cfg.Log.Level = g.logLevel
	}
	if flags.Changed("etcd-endpoints") {
		cfg.Etcd.Endpoints = g.etcd.Endpoints
	}
	if flags.Changed("etcd-cafile") {
		cfg.Etcd.CAFile = g.etcd.CAFile
	}
	if flags.Changed("etcd-certfile") {
		cfg.Etcd.CertFile = g.etcd.CertFile
	}
	if flags.Changed("etcd-keyfile") {
		cfg.Etcd.KeyFile = g.etcd.KeyFile
	}
	return cfg, path, nil
}

// newLogger logs JSON when stderr is not a terminal (journald, files) and
// text for a person at a terminal.
func newLogger(w io.Writer, lc config.Log) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(strings.ToUpper(lc.Level)))
	opts := &slog.HandlerOptions{Level: level}
	format := lc.Format
	if format == "auto" {
		format = "json"
		if f, ok := w.(*os.File); ok {
			if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
				format = "text"
			}
		}
	}
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// outputFlag adds the -o flag with the formats a command supports.
func outputFlag(cmd *cobra.Command, dst *string, formats ...string) {
	cmd.Flags().StringVarP(dst, "output", "o", formats[0], "output format: "+strings.Join(formats, ", "))
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions(formats, cobra.ShellCompDirectiveNoFileComp))
}

func checkOutput(got string, formats ...string) error {
	for _, f := range formats {
		if got == f {
			return nil
		}
	}
	return fmt.Errorf("unknown output format %q (want one of %s)", got, strings.Join(formats, ", "))
}
