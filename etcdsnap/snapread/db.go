package snapread

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"sort"
	"strings"
	"time"
	"unsafe"

	"github.com/kubekeep/kubekeep/internal/kscheme"
	bolt "go.etcd.io/bbolt"
	"go.etcd.io/etcd/api/v3/mvccpb"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
)

// Bucket and key names of etcd's backend (server/storage/schema); stable
// across 3.4, 3.5 and 3.6.
var (
	bucketKey  = []byte("key")
	bucketMeta = []byte("meta")

	metaConsistentIndex  = []byte("consistent_index")
	metaTerm             = []byte("term")
	metaFinishedCompact  = []byte("finishedCompactRev")
	metaScheduledCompact = []byte("scheduledCompactRev")
	metaStorageVersion   = []byte("storageVersion")
)

// DBStats is what a snapshot image says about itself.
type DBStats struct {
	// Revision is the newest main revision in the key bucket: the store's
	// revision at the moment of the snapshot (a restore's bump marker
	// counts: it is what etcd serves until the next write).
	Revision int64 `json:"revision"`
	// CompactRevision is where history starts: the finished compaction,
	// or a scheduled one not finished yet (see CompactRevision).
	CompactRevision int64  `json:"compactRevision"`
	ConsistentIndex uint64 `json:"consistentIndex"`
	Term            uint64 `json:"term"`
	// Keys are live keys at Revision; Entries are all stored revisions
	// (history since the last compaction included).
	Keys           int64  `json:"keys"`
	Entries        int64  `json:"entries"`
	Size           int64  `json:"size"`
	PageSize       int    `json:"pageSize"`
	StorageVersion string `json:"storageVersion,omitempty"`
}

// KeyValue is one key at a revision, as etcd stores it.
type KeyValue struct {
	Key            string
	Value          []byte
	CreateRevision int64
	ModRevision    int64
	Version        int64
	Lease          int64
}

// openDB opens an image read-only. The timeout keeps us from waiting on the
// exclusive flock a running etcd holds on its live db.
func openDB(path string) (*bolt.DB, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, &Error{Op: "open db", File: path, Kind: ErrCorruptDB, Err: err}
	}
	db, err := bolt.Open(path, 0o400, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		kind := ErrCorruptDB
		if errors.Is(err, bolt.ErrTimeout) {
			kind = ErrDataDirLocked
		}
		return nil, &Error{Op: "open db", File: path, Kind: kind, Err: err}
	}
	return db, nil
}

// checkDB runs bbolt's page-level consistency check over the image at path
// and then walks etcd's key bucket, so a snapshot that bbolt accepts but
// etcd could not read (wrong buckets, undecodable entries) fails too. Each
// entry is parsed as every reader parses it (checkEntry: ParseEntry, then
// the rest of its wire structure), and the compaction record as they read
// it (CompactRevision): a snapshot the check passes is one kubekeep's
// objects, get and diff can read.
// It can crash the process on a damaged image: see CheckDB.
//
// On the way it keeps the newest stored value of each of kubeadm's
// ConfigMaps (kubeadmExportKeys), so the ClusterConfiguration, the
// KubeletConfiguration and the KubeProxyConfiguration come out of the same
// pass instead of a second scan.
//
// With kx, it also collects the key index (keyindex.go) on the way.
func checkDB(path string, kx *keyIndexBuilder) (st DBStats, exports map[string][]byte, err error) {
	db, err := openDB(path)
	if err != nil {
		return st, nil, err
	}
	defer db.Close()
	defer func() {
		if r := recover(); r != nil {
			err = &Error{Op: "check db", File: path, Kind: ErrCorruptDB, Err: fmt.Errorf("bbolt: %v", r)}
		}
	}()
	fail := func(err error) (DBStats, map[string][]byte, error) {
		return st, nil, &Error{Op: "check db", File: path, Kind: ErrCorruptDB, Err: err}
	}
	exports = map[string][]byte{}
	st.PageSize = db.Info().PageSize
	err = db.View(func(tx *bolt.Tx) error {
		st.Size = tx.Size()
		if kx != nil {
			kx.base, kx.size = db.Info().Data, uintptr(st.Size)
		}
		var errs []error
		for e := range tx.Check() {
			// Keep draining: Check's goroutine blocks until the channel is read.
			if len(errs) < 10 {
				errs = append(errs, e)
			}
		}
		if len(errs) > 0 {
			return fmt.Errorf("bbolt consistency check: %w", errors.Join(errs...))
		}
		meta := tx.Bucket(bucketMeta)
		kb := tx.Bucket(bucketKey)
		if meta == nil || kb == nil {
			return errors.New("not an etcd database: no \"key\" or \"meta\" bucket")
		}
		if v := meta.Get(metaConsistentIndex); len(v) == 8 {
			st.ConsistentIndex = binary.BigEndian.Uint64(v)
		}
		if v := meta.Get(metaTerm); len(v) == 8 {
			st.Term = binary.BigEndian.Uint64(v)
		}
		var err error
		if st.CompactRevision, err = CompactRevision(meta); err != nil {
			return err
		}
		st.StorageVersion = string(meta.Get(metaStorageVersion))
		live := make(map[string]struct{})
		err = kb.ForEach(func(k, v []byte) error {
			// What every reader will meet, parsed as they parse it.
			e, err := checkEntry(k, v)
			if err != nil {
				return err
			}
			st.Entries++
			st.Revision = max(st.Revision, e.Main)
			if kx != nil && len(v) > 0 {
				kx.add(e, v, uintptr(unsafe.Pointer(unsafe.SliceData(v))))
			}
			if e.IsBumpMarker() {
				return nil
			}
			if e.Tombstone {
				delete(live, string(e.Key))
			} else {
				live[string(e.Key)] = struct{}{}
			}
			if isExportKey(e.Key) {
				delete(exports, string(e.Key))
				if !e.Tombstone {
					var kv mvccpb.KeyValue
					if err := kv.Unmarshal(v); err != nil {
						return fmt.Errorf("entry at revision %s: %w", e.Revision, err)
					}
					exports[string(e.Key)] = kv.Value
				}
			}
			return nil
		})
		st.Keys = int64(len(live))
		return err
	})
	if err != nil {
		return fail(err)
	}
	return st, exports, nil
}

// ReadKeys returns every live key of the image at its newest revision,
// sorted by key.
func ReadKeys(dbPath string) ([]KeyValue, error) { return ReadKeysAt(dbPath, 0) }

// ReadKeysAt returns the live keys as of revision rev (0 = newest). Only
// revisions the image still holds are visible: before the compact revision
// history is gone, and asking for one is an error.
func ReadKeysAt(dbPath string, rev int64) ([]KeyValue, error) {
	m := make(map[string]KeyValue)
	err := scan(dbPath, rev, func(kv *mvccpb.KeyValue, tomb bool) bool {
		if tomb {
			delete(m, string(kv.Key))
		} else {
			m[string(kv.Key)] = fromPB(kv)
		}
		return true
	})
	if err != nil {
		return nil, err
	}
	out := make([]KeyValue, 0, len(m))
	for _, kv := range m {
		out = append(out, kv)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

// Scan calls fn for every stored entry of the image in revision order
// (overwrites and deletions included; tomb marks a deletion) until fn
// returns false: what a caller needs to fold the keyspace without holding
// every value in memory. key and value are valid only during the call.
func Scan(dbPath string, fn func(key, value []byte, tomb bool) bool) error {
	return scan(dbPath, 0, func(kv *mvccpb.KeyValue, tomb bool) bool { return fn(kv.Key, kv.Value, tomb) })
}

// Get returns key's newest value in the image; found is false when the key
// does not exist or was deleted.
func Get(dbPath, key string) (kv KeyValue, found bool, err error) {
	err = scan(dbPath, 0, func(p *mvccpb.KeyValue, tomb bool) bool {
		if string(p.Key) == key {
			found = !tomb
			if found {
				kv = fromPB(p)
			}
		}
		return true
	})
	if !found {
		kv = KeyValue{}
	}
	return kv, found, err
}

func fromPB(p *mvccpb.KeyValue) KeyValue {
	return KeyValue{Key: string(p.Key), Value: bytes.Clone(p.Value), CreateRevision: p.CreateRevision,
		ModRevision: p.ModRevision, Version: p.Version, Lease: p.Lease}
}

// view opens the image at path read-only and runs fn in a read transaction,
// turning what bbolt does on a damaged file into an error of kind
// ErrCorruptDB (op names the reader):
//   - a file shorter than the pages its meta page counts is refused before
//     any page is read: bbolt maps past the end of the file, and a read
//     there faults (SIGBUS), which would kill the process;
//   - bbolt follows page numbers straight into its memory map and panics on
//     a page that is not what its parent says; with SetPanicOnFault a fault
//     inside the file's mapping panics too, and both are recovered here.
//
// It does not catch everything: pages that point back at their parent make
// bbolt's cursor loop. A file that passed CheckDB (bbolt's own consistency
// check, out of process) has none of this. fn runs in this goroutine.
func view(path, op string, fn func(tx *bolt.Tx) error) (err error) {
	db, err := openDB(path)
	if err != nil {
		return err
	}
	defer db.Close()
	fi, err := os.Stat(path)
	if err != nil {
		return &Error{Op: op, File: path, Kind: ErrCorruptDB, Err: err}
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = &Error{Op: op, File: path, Kind: ErrCorruptDB, Err: fmt.Errorf("damaged bbolt file: %v", r)}
		}
	}()
	err = db.View(func(tx *bolt.Tx) error {
		if tx.Size() > fi.Size() {
			return fmt.Errorf("truncated: the file is %d bytes, its bbolt meta page says %d", fi.Size(), tx.Size())
		}
		return fn(tx)
	})
	if err != nil {
		var e *Error
		if errors.As(err, &e) {
			return err
		}
		return &Error{Op: op, File: path, Kind: ErrCorruptDB, Err: err}
	}
	return nil
}

// scan visits the key bucket in revision order up to rev (0 = all), through
// view: a damaged file is an error of kind ErrCorruptDB, and so are
// revisions out of order (everything a reader folds, and the stop at rev,
// rests on bbolt handing keys over sorted, which it does only as far as its
// pages are).
func scan(dbPath string, rev int64, fn func(kv *mvccpb.KeyValue, tomb bool) bool) error {
	return view(dbPath, "read db", func(tx *bolt.Tx) error {
		kb := tx.Bucket(bucketKey)
		if kb == nil {
			return errors.New("not an etcd database: no \"key\" bucket")
		}
		if rev > 0 {
			c, err := CompactRevision(tx.Bucket(bucketMeta))
			if err != nil {
				return err
			}
			if rev < c {
				return fmt.Errorf("revision %d is compacted (history starts at %d)", rev, c)
			}
		}
		c := kb.Cursor()
		var kv mvccpb.KeyValue
		var prev *Revision
		for k, v := c.First(); k != nil; k, v = c.Next() {
			e, err := ParseEntry(k, v)
			if err != nil {
				return err
			}
			if prev != nil && (e.Main < prev.Main || e.Main == prev.Main && e.Sub <= prev.Sub) {
				return fmt.Errorf("entry at revision %s after %s: revisions out of order, the file is damaged", e.Revision, prev)
			}
			prev = &e.Revision
			if rev > 0 && e.Main > rev {
				break
			}
			if e.IsBumpMarker() {
				continue
			}
			kv.Reset()
			if err := kv.Unmarshal(v); err != nil {
				return fmt.Errorf("entry at revision %s: %w", e.Revision, err)
			}
			if !bytes.Equal(kv.Key, e.Key) {
				return fmt.Errorf("entry at revision %s: key %q in its head, %q in full", e.Revision, e.Key, kv.Key)
			}
			if !fn(&kv, e.Tombstone) {
				break
			}
		}
		return nil
	})
}

// Where kubeadm keeps its configuration, in ConfigMaps of kube-system:
// kubeadm init writes them, `kubeadm upgrade` and `kubeadm join` read them.
const (
	// KubeadmConfigKey holds the ClusterConfiguration (data key
	// ClusterConfiguration).
	KubeadmConfigKey = "/registry/configmaps/kube-system/kubeadm-config"
	// KubeletConfigKey holds the cluster's KubeletConfiguration (data key
	// kubelet): what kubeadm init --config's KubeletConfiguration document
	// said, custom settings (maxPods, eviction thresholds…) included.
	KubeletConfigKey = "/registry/configmaps/kube-system/kubelet-config"
	// KubeProxyConfigKey holds the KubeProxyConfiguration (data key
	// config.conf), which the kube-proxy addon phase writes.
	KubeProxyConfigKey = "/registry/configmaps/kube-system/kube-proxy"
)

// Kinds of the configuration documents kubeadm keeps in those ConfigMaps.
const (
	KindClusterConfiguration   = "ClusterConfiguration"
	KindKubeletConfiguration   = "KubeletConfiguration"
	KindKubeProxyConfiguration = "KubeProxyConfiguration"
)

// kubeadmDoc says where one kind of document is kept.
type kubeadmDoc struct{ key, dataKey string }

// kubeadmDocs are the documents the check exports, by kind.
var kubeadmDocs = map[string]kubeadmDoc{
	KindClusterConfiguration:   {KubeadmConfigKey, "ClusterConfiguration"},
	KindKubeletConfiguration:   {KubeletConfigKey, "kubelet"},
	KindKubeProxyConfiguration: {KubeProxyConfigKey, "config.conf"},
}

// KubeadmKinds lists the kinds of document the backup's check exports, in
// the order kubeadm init --config takes them.
func KubeadmKinds() []string {
	return []string{KindClusterConfiguration, KindKubeletConfiguration, KindKubeProxyConfiguration}
}

func isExportKey(key []byte) bool {
	switch string(key) {
	case KubeadmConfigKey, KubeletConfigKey, KubeProxyConfigKey:
		return true
	}
	return false
}

// ErrNotFound: the key or data item is not in the image.
var ErrNotFound = errors.New("not found")

// ExportClusterConfiguration returns the ClusterConfiguration document of
// ConfigMap kube-system/kubeadm-config as stored in the image: what
// `kubeadm init --config` needs before etcd runs again.
func ExportClusterConfiguration(dbPath string) ([]byte, error) {
	return ExportKubeadmDocument(dbPath, KindClusterConfiguration)
}

// ExportKubeadmDocument returns the document of kind (KubeadmKinds) as the
// image stores it in its ConfigMap; it wraps ErrNotFound when the image has
// no such ConfigMap or the ConfigMap no such data key.
func ExportKubeadmDocument(dbPath, kind string) ([]byte, error) {
	d, ok := kubeadmDocs[kind]
	if !ok {
		return nil, fmt.Errorf("no kubeadm document of kind %q (kinds: %s)", kind, strings.Join(KubeadmKinds(), ", "))
	}
	kv, found, err := Get(dbPath, d.key)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, fmt.Errorf("%s in %s: %w", d.key, dbPath, ErrNotFound)
	}
	doc, err := kubeadmDocumentOf(kind, kv.Value)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dbPath, err)
	}
	return doc, nil
}

// kubeadmDocumentOf decodes a stored ConfigMap and returns the document of
// kind it holds.
func kubeadmDocumentOf(kind string, value []byte) ([]byte, error) {
	d := kubeadmDocs[kind]
	obj, err := DecodeObject(value)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", d.key, err)
	}
	cm, ok := obj.(*corev1.ConfigMap)
	if !ok {
		return nil, fmt.Errorf("%s holds a %T, not a ConfigMap", d.key, obj)
	}
	doc, ok := cm.Data[d.dataKey]
	if !ok {
		return nil, fmt.Errorf("%s has no %s data key: %w", d.key, d.dataKey, ErrNotFound)
	}
	return []byte(doc), nil
}

// KubeadmDocument returns the document of kind (KubeadmKinds) the image
// Check looked at holds. It wraps ErrNotFound when the image has none (an
// external or non-kubeadm etcd; kube-proxy left out with
// --skip-phases=addon/kube-proxy).
func (i *Info) KubeadmDocument(kind string) ([]byte, error) {
	d, ok := kubeadmDocs[kind]
	if !ok {
		return nil, fmt.Errorf("no kubeadm document of kind %q", kind)
	}
	v := i.exports[d.key]
	if v == nil {
		return nil, fmt.Errorf("%s: %w", d.key, ErrNotFound)
	}
	return kubeadmDocumentOf(kind, v)
}

// ClusterConfiguration returns the kubeadm ClusterConfiguration the image
// Check looked at holds (ConfigMap kube-system/kubeadm-config): what
// `kubeadm init --config` needs before etcd runs again. It wraps
// ErrNotFound when the image has none (an external or non-kubeadm etcd).
func (i *Info) ClusterConfiguration() ([]byte, error) {
	return i.KubeadmDocument(KindClusterConfiguration)
}

// ErrEncrypted: the value is encrypted at rest by the apiserver and cannot
// be decoded without its EncryptionConfiguration keys.
var ErrEncrypted = errors.New("value is encrypted at rest (k8s:enc:)")

// UniversalDeserializer recognises protobuf by its magic as well as JSON
// and YAML, so values written under any storage media type decode.
// The scheme is client-go's, filled as values need its groups (kscheme).
var decoder runtime.Decoder = serializer.NewCodecFactory(kscheme.Scheme()).UniversalDeserializer()

// DecodeObject decodes a value the apiserver stored: protobuf with the
// "k8s\x00" magic (the default), or JSON/YAML (--storage-media-type).
func DecodeObject(value []byte) (runtime.Object, error) {
	if bytes.HasPrefix(value, []byte("k8s:enc:")) {
		provider, _, _ := strings.Cut(strings.TrimPrefix(string(value[:min(len(value), 64)]), "k8s:enc:"), ":")
		return nil, fmt.Errorf("%w by provider %q", ErrEncrypted, provider)
	}
	obj, err := kscheme.Decode(value, func() (runtime.Object, error) {
		obj, _, err := decoder.Decode(value, nil, nil)
		return obj, err
	})
	if err != nil {
		return nil, fmt.Errorf("decode stored object: %w", err)
	}
	return obj, nil
}

// NewestRevision reads the newest main revision of the db at path: the
// last key of the key bucket, without walking it. A damaged file is an
// error of kind ErrCorruptDB (see view).
func NewestRevision(path string) (int64, error) {
	var rev int64
	err := view(path, "read revision", func(tx *bolt.Tx) error {
		kb := tx.Bucket(bucketKey)
		if kb == nil {
			return errors.New("not an etcd database: no \"key\" bucket")
		}
		k, _ := kb.Cursor().Last()
		if k == nil {
			return nil
		}
		r, err := ParseRevision(k)
		rev = r.Main
		return err
	})
	if err != nil {
		return 0, err
	}
	return rev, nil
}
