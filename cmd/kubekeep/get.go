package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kubekeep/kubekeep/objects"
)

type getOptions struct {
	version    string
	at         string
	namespace  string
	encConfig  string
	output     string
	keepStatus bool
}

func newGetCommand(g *globalOptions) *cobra.Command {
	o := &getOptions{}
	cmd := &cobra.Command{
		Use:   "get RESOURCE[/NAMESPACE]/NAME",
		Short: "Print one Kubernetes object from a version, ready for kubectl apply",
		Long: `Print one Kubernetes object out of a version's etcd snapshot, read straight
from the store: no apiserver, no etcd, no cluster rollback. The snapshot's key
index (written by the backup) says where the object's bytes are, and only
those are read, so it takes milliseconds whatever the size of etcd; a version
without an index (older backups) has its snapshot copied out first. A journal
version is its base's snapshot moved forward by the etcd changes recorded up
to its revision; with --at the changes up to that time are applied.

The output is what 'kubectl apply -f' takes back: apiVersion and kind set;
resourceVersion, uid, managedFields, creationTimestamp, generation, selfLink
and status removed (--keep-status keeps status). CRDs, stored by the
apiserver as apiextensions.k8s.io/v1beta1, come out as v1.

A value encrypted at rest (k8s:enc:) is decrypted with the
EncryptionConfiguration the version's kube-apiserver manifest names, read
from the version, or with --encryption-config; otherwise the error says
which provider and key encrypted it.`,
		Example: `  kubekeep get cm/kube-system/kubeadm-config
  kubekeep get deployments.apps/default/web --version 20261123T112831Z-3f2a9c1b
  kubekeep get secret/default/db --at 2026-11-23T10:15:00Z -o json
  kubekeep get cm/foo -n kube-system | kubectl apply -f -`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runGet(cmd.Context(), g, o, args[0])
		},
	}
	versionFlags(cmd, &o.version, &o.at, &o.encConfig)
	cmd.Flags().StringVarP(&o.namespace, "namespace", "n", "", "namespace, for RESOURCE/NAME of a namespaced resource")
	cmd.Flags().BoolVar(&o.keepStatus, "keep-status", false, "keep .status in the output")
	outputFlag(cmd, &o.output, "yaml", "json")
	return cmd
}

func runGet(ctx context.Context, g *globalOptions, o *getOptions, arg string) error {
	shortLivedGC()
	if err := checkOutput(o.output, "yaml", "json"); err != nil {
		return err
	}
	ref, err := parseGetRef(arg, o.namespace)
	if err != nil {
		return &exitError{code: 2, msg: err.Error()}
	}
	return withIndexFallback(ctx, g, o.version, o.at, o.encConfig, func(vs *versionSnapshot) error {
		return printObject(g, o, ref, vs)
	})
}

func printObject(g *globalOptions, o *getOptions, ref objects.Ref, vs *versionSnapshot) error {
	obj, err := vs.snap.Get(ref)
	var nf *objects.NotFoundError
	if errors.As(err, &nf) {
		return &exitError{code: 1, msg: fmt.Sprintf("%s not found in version %s: %v", ref, vs.id, err)}
	}
	if err != nil {
		return fmt.Errorf("version %s: %w", vs.id, err)
	}
	opts := objects.ManifestOptions{KeepStatus: o.keepStatus}
	var out []byte
	if o.output == "json" {
		out, err = obj.JSON(opts)
	} else {
		out, err = obj.YAML(opts)
	}
	if err != nil {
		return err
	}
	if _, err := g.stdout.Write(out); err != nil {
		return err
	}
	attrs := []any{"version", vs.id, "object", ref.String(), "modRevision", obj.ModRevision, "snapshotRevision", vs.snap.Revision(), "encoding", obj.Encoding, "indexed", vs.indexed, "storeBytesRead", vs.storeBytes()}
	if obj.EncryptedBy != nil {
		attrs = append(attrs, "encryptedAtRest", obj.EncryptedBy.String(), "keysFrom", vs.encryptionFrom())
	}
	if obj.StoredAPIVersion != "" {
		attrs = append(attrs, "storedAs", obj.StoredAPIVersion)
	}
	if vs.journalIndexed {
		attrs = append(attrs, "journalIndex", true)
	}
	if vs.deltas > 0 {
		attrs = append(attrs, "deltaEvents", vs.deltas)
	}
	if n := vs.journalBytes.Load(); n > 0 {
		attrs = append(attrs, "journalBytesRead", n)
	}
	g.logger.Info("object", attrs...)
	return nil
}

// parseGetRef reads RESOURCE[/NAMESPACE]/NAME, taking the namespace from
// -n when the argument has none, as kubectl does (and, as kubectl does,
// ignoring -n for a cluster-scoped resource).
func parseGetRef(arg, namespace string) (objects.Ref, error) {
	if namespace != "" && strings.Count(arg, "/") == 1 {
		if ref, err := objects.ParseRef(insertNamespace(arg, namespace)); err == nil {
			return ref, nil
		}
	}
	ref, err := objects.ParseRef(arg)
	if err != nil {
		return objects.Ref{}, err
	}
	if namespace != "" && ref.Namespace != "" && ref.Namespace != namespace {
		return objects.Ref{}, fmt.Errorf("%s: namespace %q in the argument and -n %q differ", arg, ref.Namespace, namespace)
	}
	return ref, nil
}

func insertNamespace(arg, ns string) string {
	res, name, _ := strings.Cut(arg, "/")
	return res + "/" + ns + "/" + name
}
