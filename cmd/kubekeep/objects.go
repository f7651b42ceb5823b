package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/kubekeep/kubekeep/backup"
	"github.com/kubekeep/kubekeep/etcdsnap"
	"github.com/kubekeep/kubekeep/layout"
	"github.com/kubekeep/kubekeep/objects"
	"github.com/kubekeep/kubekeep/rsyncish"
)

type objectsOptions struct {
	version   string
	at        string
	namespace string
	encConfig string
	output    string
}

func newObjectsCommand(g *globalOptions) *cobra.Command {
	o := &objectsOptions{}
	cmd := &cobra.Command{
		Use:   "objects [RESOURCE]",
		Short: "List the Kubernetes objects in a version's etcd snapshot",
		Long: `List the Kubernetes objects stored in a version's etcd snapshot, read
straight from the snapshot file: no apiserver, no etcd. With --at, the
version's snapshot is moved forward by the etcd changes recorded after it,
up to that time.

RESOURCE is a plural, singular or short name (configmaps, cm, deploy) or
plural.group for custom resources (widgets.example.com).`,
		Example: `  kubekeep objects --version latest
  kubekeep objects --version latest cm -n kube-system
  kubekeep objects --at 2026-11-23T10:15:00Z secrets -o json`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runObjects(cmd.Context(), g, o, args)
		},
	}
	versionFlags(cmd, &o.version, &o.at, &o.encConfig)
	cmd.Flags().StringVarP(&o.namespace, "namespace", "n", "", "only objects in this namespace")
	outputFlag(cmd, &o.output, "table", "json")
	return cmd
}

func versionFlags(cmd *cobra.Command, version, at, encConfig *string) {
	cmd.Flags().StringVar(version, "version", "latest", "version ID (or unique prefix), or latest")
	cmd.Flags().StringVar(at, "at", "", "point in time (RFC 3339): the newest version at or before it, plus the etcd changes recorded up to it")
	cmd.Flags().StringVar(encConfig, "encryption-config", "", "EncryptionConfiguration to decrypt values encrypted at rest (default: the one the apiserver manifest in the version names, if stored)")
}

func runObjects(ctx context.Context, g *globalOptions, o *objectsOptions, args []string) error {
	if err := checkOutput(o.output, "table", "json"); err != nil {
		return err
	}
	var f objects.Filter
	if len(args) == 1 {
		group, resource, err := objects.ParseResource(args[0])
		if err != nil {
			return err
		}
		f.Group, f.Resource = group, resource
	}
	f.Namespace = o.namespace
	vs, err := openVersionSnapshot(ctx, g, o.version, o.at, o.encConfig)
	if err != nil {
		return err
	}
	defer vs.Close()
	items := vs.snap.List(f)
	if o.output == "json" {
		type row struct {
			Resource    string `json:"resource"`
			Namespace   string `json:"namespace,omitempty"`
			Name        string `json:"name"`
			Key         string `json:"key"`
			ModRevision int64  `json:"modRevision"`
		}
		rows := make([]row, 0, len(items))
		for _, it := range items {
			rows = append(rows, row{resourceName(it.Ref), it.Ref.Namespace, it.Ref.Name, it.Key, it.ModRevision})
		}
		return writeJSON(g.stdout, map[string]any{"version": vs.id, "revision": vs.snap.Revision(), "objects": rows})
	}
	tw := newTable(g.stdout)
	fmt.Fprintln(tw, "RESOURCE\tNAMESPACE\tNAME\tMODREVISION")
	for _, it := range items {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\n", resourceName(it.Ref), it.Ref.Namespace, it.Ref.Name, it.ModRevision)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	g.logger.Info("listed objects", "version", vs.id, "revision", vs.snap.Revision(), "count", len(items))
	return nil
}

func resourceName(r objects.Ref) string {
	if r.Group == "" {
		return r.Resource
	}
	return r.Resource + "." + r.Group
}

// versionSnapshot is a version's etcd snapshot, materialised and opened.
type versionSnapshot struct {
	id      string
	snap    *objects.Snapshot
	file    *backup.SnapshotFile
	deltas  int // events applied for --at
	encFrom string
}

func (v *versionSnapshot) Close() {
	if v.snap != nil {
		_ = v.snap.Close()
	}
	v.file.Remove()
}

// openVersionSnapshot resolves --version/--at to a version, copies its
// etcd snapshot stream to a file on the store's own filesystem (bbolt
// needs a file; the root filesystem may be the broken one), opens it, and
// for --at applies the recorded etcd changes up to that time.
func openVersionSnapshot(ctx context.Context, g *globalOptions, version, at, encConfig string) (*versionSnapshot, error) {
	store, err := openStoreMode(g, false)
	if err != nil {
		return nil, err
	}
	var atTime time.Time
	if at != "" {
		if atTime, err = time.Parse(time.RFC3339, at); err != nil {
			return nil, fmt.Errorf("--at %q: want RFC 3339, like 2026-11-23T10:15:00Z", at)
		}
	}
	var id string
	if at != "" && (version == "" || version == "latest") {
		id, err = versionAt(store, atTime)
	} else {
		id, err = store.Resolve(version)
	}
	if err != nil {
		return nil, err
	}
	vs := &versionSnapshot{id: id}
	ok := false
	defer func() {
		if !ok {
			vs.Close()
		}
	}()
	if vs.file, err = backup.MaterializeSnapshot(ctx, store, id); err != nil {
		return nil, err
	}
	if vs.snap, err = objects.Open(vs.file.Path); err != nil {
		return nil, fmt.Errorf("version %s: %w", id, err)
	}
	kr, from, err := keyring(store, id, g.cfg.Root, encConfig)
	if err != nil {
		return nil, err
	}
	if kr != nil {
		vs.snap.UseEncryption(kr)
		vs.encFrom = from
	}
	if at != "" {
		vi, err := store.Version(id)
		if err != nil {
			return nil, err
		}
		if atTime.Before(vi.Time) {
			return nil, fmt.Errorf("--at %s is before version %s (%s)", at, id, vi.Time.Format(time.RFC3339))
		}
		if vs.deltas, err = applyDeltas(store, vs.snap, atTime); err != nil {
			return nil, fmt.Errorf("version %s: %w", id, err)
		}
	}
	g.logger.Debug("opened version snapshot", "version", id, "revision", vs.snap.Revision(), "deltas", vs.deltas, "encryption", vs.encFrom)
	ok = true
	return vs, nil
}

// versionAt is the newest version started at or before t that holds an
// etcd snapshot.
func versionAt(store *rsyncish.Store, t time.Time) (string, error) {
	vs, err := store.Versions()
	if err != nil {
		return "", err
	}
	for i := len(vs) - 1; i >= 0; i-- {
		if vs[i].Time.After(t) {
			continue
		}
		for _, sh := range vs[i].Streams {
			if sh.Name == backup.EtcdSnapshotStream {
				return vs[i].ID, nil
			}
		}
	}
	return "", fmt.Errorf("no version with an etcd snapshot at or before %s: %w", t.Format(time.RFC3339), rsyncish.ErrNotFound)
}

// keyring loads the EncryptionConfiguration: the file given, else the one
// the version's kube-apiserver manifest names, read from the version
// itself (the host's copy may be newer, or gone).
func keyring(store *rsyncish.Store, id, root, explicit string) (*objects.Keyring, string, error) {
	if explicit != "" {
		kr, err := objects.LoadEncryptionConfig(explicit)
		return kr, explicit, err
	}
	manifest := filepath.Join(layout.ManifestsDir, "kube-apiserver.yaml")
	data, err := readVersionFile(store, id, manifest)
	if err != nil {
		return nil, "", nil // no manifest in the version: nothing encrypted we could know of
	}
	pod, err := layout.ParseManifest(manifest, data)
	if err != nil || len(pod.Spec.Containers) == 0 {
		return nil, "", nil
	}
	c := pod.Spec.Containers[0]
	cpath := layout.ContainerFlags(c)["encryption-provider-config"]
	if cpath == "" {
		return nil, "", nil
	}
	hostPath, ok := layout.HostPathOf(pod, c, cpath)
	if !ok {
		return nil, "", fmt.Errorf("the apiserver's --encryption-provider-config %s is on no hostPath volume: pass --encryption-config", cpath)
	}
	cfg, err := readVersionFile(store, id, hostPath)
	if err != nil {
		// Encrypted values will say which key they need.
		return nil, "", nil
	}
	kr, err := objects.ParseEncryptionConfig(cfg)
	if err != nil {
		return nil, "", fmt.Errorf("version %s: encryption config %s: %w", id, hostPath, err)
	}
	return kr, "version " + id + ":" + hostPath, nil
}

func readVersionFile(store *rsyncish.Store, id, hostPath string) ([]byte, error) {
	rc, _, err := store.OpenFile(id, hostPath)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(io.LimitReader(rc, 16<<20))
}

// applyDeltas replays the journal's etcd changes recorded after the
// snapshot, up to t.
func applyDeltas(store *rsyncish.Store, snap *objects.Snapshot, t time.Time) (int, error) {
	// Only the segments up to t: damage in a later one blocks nothing
	// before it.
	j, err := store.Journal(backup.DeltaJournal)
	if err != nil {
		return 0, fmt.Errorf("etcd deltas: %w", err)
	}
	datas, _, err := j.ReadNeeded(uint64(max(snap.Revision(), 0)), 0, t)
	if err != nil {
		if errors.Is(err, rsyncish.ErrNotFound) {
			return 0, nil
		}
		return 0, fmt.Errorf("etcd deltas: %w", err)
	}
	readers := make([]io.Reader, len(datas))
	for i, d := range datas {
		readers[i] = bytes.NewReader(d)
	}
	// The restore's own checks: no gap from the snapshot, t covered (up to
	// the newest change or progress mark), not inside a stretch a
	// restarted watch caught up on.
	evs, err := etcdsnap.ReplayEvents(readers, snap.Revision(), 0, t)
	if err != nil {
		return 0, fmt.Errorf("etcd deltas: %w", err)
	}
	if err := snap.ApplyEvents(evs); err != nil {
		return 0, fmt.Errorf("etcd deltas: %w", err)
	}
	return len(evs), nil
}
