//go:build !kubekeep_front

package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"filippo.io/age"
	"github.com/spf13/cobra"

	"github.com/kubekeep/kubekeep/config"
	"github.com/kubekeep/kubekeep/internal/progress"
	"github.com/kubekeep/kubekeep/rsyncish"
	"github.com/kubekeep/kubekeep/rsyncish/backend"
	"github.com/kubekeep/kubekeep/tiers"
	"github.com/kubekeep/kubekeep/tiers/seal"
)

func newOffsiteCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "offsite",
		Short: "Copies of the store at a second site (S3, MinIO, Alibaba OSS), encrypted and immutable",
		Long: `Off-site tiers hold copies of the store's objects in object storage, each
sealed on this machine for age recipients (public keys): this master can
upload and list them, but not read them back, and with lockDays the bucket
keeps them from being deleted or overwritten, by this master's credentials
too. Tiers are the config's offsite list; credentials come from the
environment (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY for s3://,
ALIBABA_CLOUD_ACCESS_KEY_ID/ALIBABA_CLOUD_ACCESS_KEY_SECRET or the RAM role
for oss://), never from the file.

A new machine rebuilds from a tier with the identity (the private key) kept
away from the master: offsite pull makes a local store every restore
command reads.`,
	}
	return cmd
}

func newOffsiteKeygenCommand(g *globalOptions) *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "keygen --out FILE",
		Short: "Make an age identity for a tier; print its recipient",
		Long: `Write a new age X25519 identity (private key) to FILE (0600; an existing
file is never overwritten) and print its recipient (public key) on stdout.

Put the recipient in the tier's recipients list on the master. Keep FILE
away from the master (a password manager, a safe, another account): it is
what a restore on a new machine needs, and what an attacker on the master
must not have.`,
		Example: `  kubekeep offsite keygen --out /secure/kubekeep-dr.agekey`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return &exitError{code: 2, msg: "--out FILE is required"}
			}
			id, err := age.GenerateX25519Identity()
			if err != nil {
				return err
			}
			f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if errors.Is(err, fs.ErrExist) {
				return &exitError{code: 2, msg: fmt.Sprintf("%s exists: not overwriting an identity (it may be the only key to a tier)", out)}
			}
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(f, "# kubekeep off-site identity; keep it away from the master\n# public key: %s\n%s\n", id.Recipient(), id)
			if err == nil {
				err = f.Sync()
			}
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				os.Remove(out)
				return err
			}
			_, err = fmt.Fprintln(g.stdout, id.Recipient().String())
			return err
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "file to write the identity to (0600)")
	return cmd
}

type offsiteOptions struct {
	tier     string
	output   string
	identity string
	readData bool
	version  string
	into     string
	all      bool
}

// offsiteTiers picks the configured tiers --tier names (all without it).
func offsiteTiers(g *globalOptions, name string, needOne bool) ([]config.Offsite, error) {
	if len(g.cfg.Offsite) == 0 {
		return nil, &exitError{code: 2, msg: "no off-site tiers in the config (offsite: [...]); see examples/kubeadm.yaml"}
	}
	if name == "" {
		if needOne && len(g.cfg.Offsite) > 1 {
			var names []string
			for _, t := range g.cfg.Offsite {
				names = append(names, t.Name)
			}
			return nil, &exitError{code: 2, msg: "--tier is required: the config has " + strings.Join(names, ", ")}
		}
		if needOne {
			return g.cfg.Offsite[:1], nil
		}
		return g.cfg.Offsite, nil
	}
	for _, t := range g.cfg.Offsite {
		if t.Name == name {
			return []config.Offsite{t}, nil
		}
	}
	return nil, &exitError{code: 2, msg: fmt.Sprintf("no off-site tier %q in the config", name)}
}

func readIdentities(path string) ([]age.Identity, error) {
	if path == "" {
		return nil, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, &exitError{code: 2, msg: fmt.Sprintf("--identity: %v", err)}
	}
	defer f.Close()
	ids, err := seal.ParseIdentities(f)
	if err != nil {
		return nil, &exitError{code: 2, msg: fmt.Sprintf("--identity %s: %v", path, err)}
	}
	return ids, nil
}

func newOffsiteSyncCommand(g *globalOptions) *cobra.Command {
	o := &offsiteOptions{}
	cmd := &cobra.Command{
		Use:   "sync [--tier NAME]",
		Short: "Upload to the tiers what they lack",
		Long: `Upload to each tier (or the one --tier names) the store's objects it does
not hold yet, known from a local catalogue (no listing of the bucket): packs
first, manifests after the data they name, so a sync stopped anywhere (kill
-9, a dead server) leaves a consistent tier and the next sync resumes
without sending again what landed. With -o json, per tier:
  {"tier","versionsUploaded","objectsUploaded","bytesUploaded","bytesSkipped","duration"}
Exit 1 when a tier failed (the others are still synced).`,
		Example: `  kubekeep offsite sync
  kubekeep offsite sync --tier dr -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runOffsiteSync(cmd.Context(), g, o)
		},
	}
	cmd.Flags().StringVar(&o.tier, "tier", "", "the tier to sync (default: all)")
	outputFlag(cmd, &o.output, "text", "json")
	return cmd
}

func runOffsiteSync(ctx context.Context, g *globalOptions, o *offsiteOptions) error {
	if err := checkOutput(o.output, "text", "json"); err != nil {
		return err
	}
	list, err := offsiteTiers(g, o.tier, false)
	if err != nil {
		return err
	}
	store, err := openStoreMode(g, false)
	if err != nil {
		return err
	}
	src, err := backend.OpenLocal(store.Dir())
	if err != nil {
		return err
	}
	// A bar per tier at a terminal (bytes of objects uploaded, rate,
	// time left), a line per tier otherwise.
	rep, err := startProgress(g)
	if err != nil {
		return err
	}
	var results []tiers.SyncResult
	var failed []string
	for _, tc := range list {
		rep.Step("offsite sync " + tc.Name)
		res, err := syncTier(ctx, g, store, src, tc, tierProgress(rep))
		rep.Done()
		results = append(results, res)
		if err != nil {
			g.logger.Error("off-site sync failed", "tier", tc.Name, "err", err)
			failed = append(failed, tc.Name)
			continue
		}
		g.logger.Info("off-site sync", "tier", tc.Name, "versionsUploaded", res.VersionsUploaded, "objectsUploaded", res.ObjectsUploaded,
			"bytesUploaded", res.BytesUploaded, "bytesSkipped", res.BytesSkipped, "duration", res.Duration)
	}
	if o.output == "json" {
		var v any = results
		if len(results) == 1 {
			v = results[0]
		}
		if err := writeJSON(g.stdout, v); err != nil {
			return err
		}
	} else {
		for _, r := range results {
			fmt.Fprintf(g.stdout, "%s: %d versions, %d objects, %s uploaded, %s already there, %.1fs\n",
				r.Tier, r.VersionsUploaded, r.ObjectsUploaded, humanBytes(r.BytesUploaded), humanBytes(r.BytesSkipped), r.Duration)
		}
	}
	if len(failed) > 0 {
		return &exitError{code: 1, msg: "off-site sync failed for " + strings.Join(failed, ", ")}
	}
	return nil
}

// tierProgress turns a sync's running totals into a Reporter's counts.
func tierProgress(rep progress.Reporter) func(tiers.Progress) {
	var total, done int64
	return func(p tiers.Progress) {
		if p.BytesTotal != total {
			total = p.BytesTotal
			rep.Bytes(total)
		}
		if p.BytesDone > done {
			rep.Add(p.BytesDone - done)
			done = p.BytesDone
		}
	}
}

func syncTier(ctx context.Context, g *globalOptions, store *rsyncish.Store, src *backend.Local, tc config.Offsite, prog func(tiers.Progress)) (tiers.SyncResult, error) {
	t, closeTier, err := tiers.OpenForStore(ctx, tc, store)
	if err != nil {
		return tiers.SyncResult{Tier: tc.Name}, err
	}
	defer closeTier()
	return tiers.Sync(ctx, src, t.Sealed, t.Catalogue, tiers.SyncOptions{Tier: tc.Name, Bandwidth: int64(tc.Bandwidth), Logger: g.logger, Progress: prog})
}

func newOffsitePullCommand(g *globalOptions) *cobra.Command {
	o := &offsiteOptions{}
	cmd := &cobra.Command{
		Use:   "pull --tier NAME --identity FILE --version ID|latest --store DIR",
		Short: "Make DIR a local store from a tier (on a new machine)",
		Long: `Make the store directory --store names a local store holding the version
--version names and the journal after it, read from the tier with the
identity (the private key kept away from the master). Every restore command
then works on --store DIR.

--version is an ID (or a unique prefix), latest (the newest good version in
the tier) or newest. The pull takes that version's manifest and those of the
versions it reads (a journal version's base), the packs holding their data
with their indexes, the etcd delta journal from the version's snapshot
revision on (so restore etcd --at and --revision after the version work
too), their drill marks and the store's config.json; what only other
versions need stays in the tier. --all copies every object the tier holds
instead (every version, the whole journal), and then checks --version is in
it.

A pull that stops resumes: what DIR holds already is kept, and a rerun
copies the rest. With -o json:
  {"tier","objects","bytes","alreadyHad","duration","destination","version",
   "versions","objectsLeft","bytesLeft"}`,
		Example: `  kubekeep offsite pull --tier dr --identity ./dr.agekey --version latest --store /data/backup/kubekeep
  kubekeep --store /data/backup/kubekeep restore --version latest
  kubekeep offsite pull --tier dr --identity ./dr.agekey --all --store /data/backup/kubekeep   # every version`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runOffsitePull(cmd.Context(), g, o)
		},
	}
	cmd.Flags().StringVar(&o.tier, "tier", "", "the tier to pull from")
	cmd.Flags().StringVar(&o.identity, "identity", "", "age identity file that opens the tier")
	cmd.Flags().StringVar(&o.version, "version", "latest", "version to pull (ID or unique prefix, latest, newest); with --all, the version that must be in the pulled store")
	cmd.Flags().BoolVar(&o.all, "all", false, "copy every object the tier holds (every version, the whole journal)")
	outputFlag(cmd, &o.output, "text", "json")
	return cmd
}

func runOffsitePull(ctx context.Context, g *globalOptions, o *offsiteOptions) error {
	if err := checkOutput(o.output, "text", "json"); err != nil {
		return err
	}
	if o.identity == "" {
		return &exitError{code: 2, msg: "--identity FILE is required: the tier is sealed for its recipients"}
	}
	if g.cfg.Store.Path == "" {
		return &exitError{code: 2, msg: "--store DIR is required"}
	}
	if o.version == "" {
		return &exitError{code: 2, msg: "--version wants an ID, latest or newest"}
	}
	list, err := offsiteTiers(g, o.tier, true)
	if err != nil {
		return err
	}
	ids, err := readIdentities(o.identity)
	if err != nil {
		return err
	}
	t, err := tiers.Open(ctx, list[0], tiers.OpenOptions{Identities: ids})
	if err != nil {
		return err
	}
	defer t.Sealed.Close()
	dst, err := backend.OpenLocal(g.cfg.Store.Path)
	if err != nil {
		return err
	}
	// A bar at a terminal (bytes pulled, rate, time left), a line
	// otherwise.
	rep, err := startProgress(g)
	if err != nil {
		return err
	}
	po := tiers.PullOptions{Tier: t.Name, Progress: tierProgress(rep), Logger: g.logger}
	if !o.all {
		po.Version = o.version
	}
	rep.Step("offsite pull " + t.Name)
	res, err := tiers.PullWith(ctx, t.Sealed, dst, po)
	rep.Done()
	if err != nil {
		return err
	}
	store, err := rsyncish.Open(g.cfg.Store.Path, rsyncish.Options{AllowSameFilesystem: true})
	if err != nil {
		return fmt.Errorf("the pulled store at %s: %w", g.cfg.Store.Path, err)
	}
	// The version must be in the pulled store (a selective pull resolved
	// the name in the tier: that version).
	want := o.version
	if res.Version != "" {
		want = res.Version
	}
	id, err := store.Resolve(want)
	if err != nil {
		return fmt.Errorf("the pulled store at %s has no version %s: %w", g.cfg.Store.Path, want, err)
	}
	res.Version = id
	if o.all {
		// Every version, in the store's order (oldest first).
		vs, err := store.Versions()
		if err != nil {
			return err
		}
		res.Versions = res.Versions[:0]
		for _, v := range vs {
			res.Versions = append(res.Versions, v.ID)
		}
	}
	g.logger.Info("pulled", "tier", t.Name, "objects", res.Objects, "bytes", res.Bytes, "alreadyHad", res.AlreadyHad, "version", id,
		"versions", res.Versions, "objectsLeft", res.ObjectsLeft, "bytesLeft", res.BytesLeft, "store", g.cfg.Store.Path)
	if o.output == "json" {
		return writeJSON(g.stdout, res)
	}
	_, err = fmt.Fprintf(g.stdout, "%s: %d objects (%s) pulled into %s, %d already there; version %s is in it\n",
		t.Name, res.Objects, humanBytes(res.Bytes), g.cfg.Store.Path, res.AlreadyHad, id)
	if err == nil && !o.all {
		_, err = fmt.Fprintf(g.stdout, "%s: versions %s pulled; %d objects (%s) only other versions need left in the tier\n",
			t.Name, strings.Join(res.Versions, ", "), res.ObjectsLeft, humanBytes(res.BytesLeft))
	}
	if err == nil && res.BlocksMissing > 0 {
		_, err = fmt.Fprintf(g.stdout, "%s: DAMAGE: %d blocks of these versions are in no pack index the tier holds; kubekeep verify --store %s names what they hurt\n",
			t.Name, res.BlocksMissing, g.cfg.Store.Path)
	}
	return err
}

func newOffsiteVerifyCommand(g *globalOptions) *cobra.Command {
	o := &offsiteOptions{}
	cmd := &cobra.Command{
		Use:   "verify --tier NAME [--identity FILE --read-data]",
		Short: "Check a tier holds what the catalogue says (and, with the identity, that it decrypts)",
		Long: `Without an identity (on the master): list the tier and compare it with the
local catalogue; objects the catalogue records but the tier lacks are
reported, dropped from the catalogue and uploaded again by the next sync if
the store still has them. With --identity and --read-data: also read and
decrypt every object (each 64 KiB chunk is authenticated). Exit 1 when
something is missing or damaged.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runOffsiteVerify(cmd.Context(), g, o)
		},
	}
	cmd.Flags().StringVar(&o.tier, "tier", "", "the tier to verify")
	cmd.Flags().StringVar(&o.identity, "identity", "", "age identity file (for --read-data)")
	cmd.Flags().BoolVar(&o.readData, "read-data", false, "read and decrypt every object (needs --identity)")
	return cmd
}

func runOffsiteVerify(ctx context.Context, g *globalOptions, o *offsiteOptions) error {
	if o.readData && o.identity == "" {
		return &exitError{code: 2, msg: "--read-data needs --identity: the master cannot decrypt the tier"}
	}
	list, err := offsiteTiers(g, o.tier, true)
	if err != nil {
		return err
	}
	ids, err := readIdentities(o.identity)
	if err != nil {
		return err
	}
	opts := tiers.OpenOptions{Identities: ids}
	if len(ids) == 0 {
		store, err := openStoreMode(g, false)
		if err != nil {
			return err
		}
		opts.StoreDir = store.Dir()
	}
	t, err := tiers.Open(ctx, list[0], opts)
	if err != nil {
		return err
	}
	defer t.Sealed.Close()
	problems := 0
	if t.Catalogue != nil {
		before := t.Catalogue.Len()
		missing, err := t.Catalogue.Reconcile(ctx, t.Sealed)
		if err != nil {
			return err
		}
		problems += missing
		fmt.Fprintf(g.stdout, "%s: %d objects in the tier, %d recorded before; %d missing\n", t.Name, t.Catalogue.Len(), before, missing)
	}
	if o.readData {
		var n int
		var bytes int64
		for _, ft := range backend.Types {
			var names []string
			if err := t.Sealed.List(ctx, ft, func(fi backend.FileInfo) error { names = append(names, fi.Name); return nil }); err != nil {
				return err
			}
			for _, name := range names {
				data, err := backend.LoadAll(ctx, t.Sealed, backend.Handle{Type: ft, Name: name})
				if err != nil {
					fmt.Fprintf(g.stdout, "DAMAGE: %s/%s: %v\n", ft, name, err)
					problems++
					continue
				}
				n++
				bytes += int64(len(data))
			}
		}
		fmt.Fprintf(g.stdout, "%s: %d objects read and decrypted (%s)\n", t.Name, n, humanBytes(bytes))
	}
	if problems > 0 {
		return &exitError{code: 1, msg: fmt.Sprintf("tier %s: %d problem(s)", t.Name, problems)}
	}
	return nil
}

func newOffsiteVersionsCommand(g *globalOptions) *cobra.Command {
	o := &offsiteOptions{}
	cmd := &cobra.Command{
		Use:   "versions --tier NAME [--identity FILE]",
		Short: "List the versions a tier holds",
		Long: `List the versions a tier holds, in the shape of kubekeep versions (-o json
too). On the master (no identity) these are the versions the catalogue
records as uploaded that the local store still has; with --identity, the
tier's own manifests, read and decrypted from it (on any machine).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runOffsiteVersions(cmd.Context(), g, o)
		},
	}
	cmd.Flags().StringVar(&o.tier, "tier", "", "the tier")
	cmd.Flags().StringVar(&o.identity, "identity", "", "age identity file: read the tier's own manifests")
	outputFlag(cmd, &o.output, "table", "json")
	return cmd
}

func runOffsiteVersions(ctx context.Context, g *globalOptions, o *offsiteOptions) error {
	if err := checkOutput(o.output, "table", "json"); err != nil {
		return err
	}
	list, err := offsiteTiers(g, o.tier, true)
	if err != nil {
		return err
	}
	ids, err := readIdentities(o.identity)
	if err != nil {
		return err
	}
	if len(ids) == 0 {
		store, err := openStoreMode(g, false)
		if err != nil {
			return err
		}
		cat, err := tiers.OpenCatalogue(filepath.Join(tiers.StateDir(store.Dir()), list[0].Name+".catalogue"))
		if err != nil {
			return err
		}
		all, err := store.Versions()
		if err != nil {
			return err
		}
		var vs []rsyncish.VersionInfo
		for _, v := range all {
			if cat.Has(backend.Handle{Type: backend.ManifestFile, Name: v.ID + ".manifest"}) {
				vs = append(vs, v)
			}
		}
		return writeVersions(g, store, vs, o.output)
	}
	t, err := tiers.Open(ctx, list[0], tiers.OpenOptions{Identities: ids})
	if err != nil {
		return err
	}
	defer t.Sealed.Close()
	// The manifests alone, in a scratch store: what Versions reads.
	dir, err := os.MkdirTemp("", "kubekeep-offsite-versions-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	dst, err := backend.OpenLocal(dir)
	if err != nil {
		return err
	}
	if _, err := tiers.PullTypes(ctx, t.Sealed, dst, t.Name, backend.ConfigFile, backend.ManifestFile, backend.VerifiedFile); err != nil {
		return err
	}
	store, err := rsyncish.Open(dir, rsyncish.Options{AllowSameFilesystem: true})
	if err != nil {
		return fmt.Errorf("tier %s: %w", t.Name, err)
	}
	vs, err := store.Versions()
	if err != nil {
		return err
	}
	return writeVersions(g, store, vs, o.output)
}
