// Package objects reads Kubernetes objects straight out of an etcd
// snapshot or data file, with no apiserver and no running etcd.
//
// etcd v3 keeps every revision in bbolt bucket "key", keyed by revision;
// each value is an mvccpb.KeyValue holding the Kubernetes key
// (/registry/<resource>/[<namespace>/]<name>) and the object. Open walks the
// bucket once, reading only the head of each KeyValue, and keeps the latest
// revision of every key; Get then reads and decodes just that one value.
// Each entry is read with snapread.ParseEntry, the reading the backup's
// check applies to every entry of a snapshot before the version counts, so
// a version that passed its check opens here. A restore's revision bump
// leaves an entry with no key in the bucket, which etcd keeps: it is
// skipped, and only moves the revision on.
// A damaged file is an error, not a crash or a wrong answer: Open refuses
// one cut short of the pages its meta page counts or whose revisions are
// out of order, and bbolt's panics and faults on a bad page come back as
// errors. bbolt trusts its pages, so one that points back at its parent
// still makes it loop; the backup's check (bbolt's own consistency check)
// rules that out for every stored version.
// ApplyEvents moves a snapshot forward by watch events for a point in time.
//
// Indexed reads the same objects without bbolt and without the image on
// disk: through the key index the backup's check writes beside each
// snapshot (snapread.KeyIndex) and any io.ReaderAt over the image, such as
// rsyncish's random access into the stored stream. A lookup reads the
// index's root, one chunk, one block and the one value, whatever the size
// of etcd; Items reads only the index blocks under the filter's key prefix
// (one resource, one namespace) and no values. Every value read is checked
// against the index (the stored KeyValue must hold that key at that
// revision), and a damaged index is an error wrapping
// snapread.ErrKeyIndex, never another object: the caller then falls back
// to Open on the materialised snapshot, as `kubekeep get` does. Journal
// events overlay the index as they overlay a Snapshot (ApplyEvents).
// A journal version's own key index (UseJournal: every key the journal
// changed since the base, in its last state, the value read through
// JournalConfig.Value out of the one journal segment holding it) moves an
// Indexed to the version's revision without replaying anything: a lookup
// tries it, then the base's index; Items merges the two ranges. Diff of
// two views of one base reads the journal's values segment by segment.
//
// Reader is what both offer, and what Diff takes: it walks the two key
// sets in key order and reads values only for keys whose revisions differ
// (equal mod and create revisions name one value in one etcd history);
// two Indexed on the same base snapshot (IndexedConfig.Base) differ only
// where their events moved them, and only those keys are looked at.
//
// Values are protobuf ("k8s\x00", built-in types, decoded with client-go's
// scheme), JSON or CBOR (custom resources, CRDs), optionally encrypted at
// rest ("k8s:enc:<provider>:v1:<key>:"); a Keyring built from the
// apiserver's EncryptionConfiguration decrypts aescbc, aesgcm and secretbox,
// finding each value's key by that whole prefix as the apiserver does (a
// key's name may hold colons).
//
// Object.Manifest is what `kubectl apply` takes back: server-set metadata
// (resourceVersion, uid, managedFields, creationTimestamp, generation,
// selfLink, deletionTimestamp) and, by default, status are removed. Status
// is dropped because the controllers that own it rebuild it and apply
// ignores it where a status subresource exists; ManifestOptions.KeepStatus
// keeps it for inspection. Object.Content is the object as an apiserver
// would serve it.
package objects
