// Package serve answers the Kubernetes API read-only from one backup
// version, so kubectl works on a backup without a throwaway etcd and
// kube-apiserver restored from the snapshot.
//
// A Server reads through an objects.Reader (the version's key index and
// random access into the stored snapshot, or a materialised snapshot;
// moved forward by journal events for a point in time), exactly as
// `kubekeep get` does: each request reads the index blocks under the
// resource's key prefix and the values it returns, nothing else, so
// starting a Server costs one listing of the CRDs, whatever the size of
// etcd. Values are decoded as `get` decodes them (protobuf built-ins
// through client-go's scheme to JSON, custom resources as stored, CRDs
// converted from the v1beta1 they are stored as) and Secrets encrypted at
// rest are decrypted with the Reader's keyring.
//
// What is served:
//
//   - discovery: /version (the kubernetesVersion of the kubeadm
//     ClusterConfiguration in the snapshot, +kubekeep), /api, /apis and
//     each group and version, both as the legacy documents and as
//     aggregated discovery (apidiscovery.k8s.io/v2, which kubectl asks for
//     first). Built-in resources come from a table of kube-apiserver 1.34's
//     resources at the version it stores each group in (names, kinds,
//     scope, short names, the "all" category), checked against client-go's
//     scheme; custom resources from every CRD in the snapshot, each served
//     version with its names, scope, short names and categories. Verbs are
//     get, list and watch only, so clients know not to write;
//   - get and list of every resource, namespaced (in one namespace or all)
//     and cluster-scoped, with labelSelector (labels.Parse), fieldSelector
//     on metadata.name and metadata.namespace for every resource plus the
//     fields kube-apiserver supports for pods, events, secrets, namespaces,
//     nodes, services, replica sets, jobs and CSRs, and a CRD's
//     selectableFields (any other field is a 400 naming those supported),
//     limit and continue. A list's resourceVersion is the etcd revision of
//     the version, an object's its mod revision. An object that does not
//     read (a Secret encrypted with a key the version's
//     EncryptionConfiguration lacks, or by KMS) is an error naming the
//     provider and key when asked for by name, and is left out of lists
//     with a Warning header kubectl prints. Damage to the key index
//     (snapread.ErrKeyIndex) switches the Server, once, to
//     Config.Fallback's reader (the materialised snapshot, which
//     `kubekeep serve` opens then) and the read is answered from there;
//     without a Fallback it is a 500;
//   - meta.k8s.io Tables when asked (kubectl get's output): NAME and AGE,
//     the CRD's additionalPrinterColumns for custom resources (evaluated
//     with client-go's jsonpath as the apiserver does; date columns as an
//     age), and the common columns of pods (READY, STATUS, RESTARTS, IP,
//     NODE), namespaces, configmaps, secrets, service accounts, services,
//     deployments, daemon sets, stateful sets, replica sets, jobs, cron
//     jobs, PVCs, PVs, ingresses, leases, role bindings, nodes, events and
//     CRDs (the apiserver's own printers live in k8s.io/kubernetes; these
//     are written after them); rows carry PartialObjectMetadata by default
//     (includeObject=Object or None as asked), which kubectl reads
//     namespaces from. AGE is measured from now, not from the backup;
//   - watch: a backup has one state. A watch from resourceVersion "" or "0"
//     (or with sendInitialEvents) gets an ADDED event per object first;
//     one from the served revision (what `kubectl get -w` sends after its
//     list) gets nothing; one from an older revision 410 Expired. The
//     stream then stays open until the client leaves, timeoutSeconds pass
//     or the Server is closed;
//   - the reviews kubectl posts to ask what it may do and who it is
//     (SelfSubjectAccessReview, SelfSubjectRulesReview, SelfSubjectReview;
//     JSON or protobuf, which kubectl's typed clients send) get the truth:
//     get, list and watch of everything, nothing else, as
//     kubekeep-serve-client;
//   - every other write (POST, PUT, PATCH, DELETE) is 405 MethodNotAllowed with
//     a Status saying this is a read-only backup and how to put an object
//     back; pods/log, exec and other subresources but status are 404
//     saying a backup has no containers.
//
// Security: the API shows decrypted Secrets, so every request needs the
// client certificate of the session. Credentials makes a throwaway ECDSA
// P-256 CA (its key never leaves the process), a server certificate for
// 127.0.0.1, ::1, localhost and the listen host, and one client
// certificate; Kubeconfig writes a kubeconfig that trusts the CA and
// carries the client certificate (WriteKubeconfig: 0600). The TLS config
// asks for a client certificate and verifies one when given; a request
// without one completes the handshake and gets a 401 Status saying what it
// needs, which reads better in curl and kubectl than a TLS alert.
// Requests are logged at debug level without bodies.
//
// OpenAPI: /openapi/v2 is a document without paths or schemas, which
// kubectl apply and create validate against (finding no schema, they
// skip the check) before they send the write that gets the 405; with no
// document at all they stop at "failed to download openapi" instead.
// /openapi/v3 is not served, so kubectl explain finds nothing.
//
// Not served: other versions of a built-in group than
// the one listed (objects are served as stored: the apiserver converts
// through internal types that exist only in k8s.io/kubernetes), the
// events.k8s.io view of events, aggregated APIs (metrics.k8s.io), and
// conversion webhooks (a custom resource of a CRD with one is served as
// stored; with strategy None its apiVersion is relabelled, as the
// apiserver does).
package serve
