// Package tiers copies kubekeep's store to off-site tiers: object
// storage (tiers/s3, tiers/oss) behind the storage seam
// (rsyncish/backend), sealed (tiers/seal) so that neither the bucket's
// readers nor the master can read it back.
//
// A tier holds copies of the store's objects, byte for byte before
// sealing: packs, pack indexes, version manifests, drill marks, journal
// segments and config.json. So an off-site copy is an object copy, not a
// re-encode, and a store pulled back from a tier, whole or one version
// with what it needs (see Pulling one version), is a store every restore
// command reads.
//
// Sync uploads what the tier lacks, known from a local Catalogue (no LIST
// on the hot path), in an order that keeps the tier consistent at every
// moment: all object lists are taken first, newest kinds first
// (manifests before packs: a manifest is committed only after its
// packs), then uploaded oldest kinds first (packs, indexes, journal
// segments, manifests, drill marks, config). A sync killed anywhere
// leaves a tier whose every manifest's data is there, and the next sync
// finishes without uploading again what landed. Uploads are retried with
// exponential backoff and full jitter within a total budget, and can be
// held to a bandwidth limit. SyncOptions.Progress and PullOptions.Progress
// report bytes and objects as they go (nil: nothing), for a progress bar.
//
// # Pulling one version
//
// A tier holds months of versions; a rebuild needs one. PullWith with
// PullOptions.Version (kubekeep offsite pull --version, latest by
// default) makes the destination a store holding that version and the
// journal after it, and nothing only other versions need:
//
//   - the version is named as rsyncish.Store.Resolve reads names (an ID
//     or unique prefix, "latest" the newest good one, "newest"), over the
//     versions the tier holds, known from their manifests' headers (only
//     the first chunk of each is read);
//   - its manifest and, transitively, those of the versions it reads: the
//     header's requires (a journal version's base's snapshot and key
//     index streams) and versionread.EtcdSourceOf's base. A version whose base
//     the tier lacks is refused, naming both, before anything is copied;
//   - the packs holding the blocks those manifests name, with their
//     indexes: every index of the tier is read (nothing else maps a block
//     to its pack), only packs with a needed block come, and only the
//     indexes of packs that come (an index without its pack is damage to
//     verify). A pack comes whole: blocks of other versions in it come
//     too, and are never referenced;
//   - the delta journal's segments whose last revision is past the
//     lowest etcd snapshot revision among the pulled versions (and past
//     the start of any journal range a header requires), up to the
//     tier's newest: the replay up to the version, and restore etcd --at
//     or --revision after it; the journal's break records always;
//   - the pulled versions' drill marks and config.json.
//
// They are copied in the order a store is written (packs, indexes,
// journal, manifests base first, marks, config), skipping what the
// destination holds: a killed pull leaves no manifest whose data is
// missing, and a rerun copies the rest. The pulled store opens, verify
// --read-data finds it clean, and its versions are the pulled ones.
// PullResult says which (Versions) and what stayed in the tier
// (ObjectsLeft, BytesLeft); blocks in no index of the tier are counted
// (BlocksMissing) and logged, not an error: a damaged tier still gives
// what it can. Without a Version, PullWith copies every object (--all).
//
// # One store per tier
//
// On the master, Open refuses (naming the tier) a tier that holds another
// store: a tier key there while this store has none for the tier; a tier
// key other than the one this store sealed (its SHA-256 is kept in
// <tier>.keyid, taken on first use); config objects whose names this
// store's name key did not make; or the owner marker config/store-<id>
// (sealed like every name) of another store id, as when the offsite state
// was copied with a cloned disk. A tier without this store's marker gets
// it. So two clusters never mix their objects under one prefix.
//
// # Retention (Prune)
//
// Prune (kubekeep offsite prune) applies the tier's retention {keepLast,
// keepDaily, keepWeekly, keepMonthly} to the versions the tier holds, by
// the store's own rules (rsyncish.RetentionPolicy.Keep: UTC buckets, each
// keeps its newest version; the newest version with a drill mark in the
// tier is always kept), plus every version a kept one reads (a journal
// version's base), transitively. It runs on the master and relies on:
//
//   - a LIST of the tier first (Catalogue.Reconcile): what the tier holds
//     is the bucket's word, so a lost or stale catalogue is rebuilt (the
//     names open with the name key; no identity needed), and uploads a
//     killed sync never recorded are seen;
//   - the refs file beside the catalogue: what each version needs in the
//     tier (VersionRefs: its packs, the versions it reads, its etcd
//     snapshot revision), recorded by Sync from the store before the
//     manifest goes up. The tier is sealed and the master cannot read it
//     back; so a version without a record (uploaded by an older kubekeep,
//     or the store's offsite state was lost) is read from the store if it
//     still holds the version, else from the tier with an identity
//     (PruneOptions.Reader, --identity); without either Prune refuses
//     before deleting anything (ErrNoRefs).
//
// It deletes in an order that keeps the tier consistent if stopped
// anywhere: the manifests of the versions not kept (each first recorded as
// pruned in the refs file, so Sync does not upload it again while the
// store still has it), their drill marks, then the pack indexes and packs
// no remaining version needs (index before pack), then the etcd delta
// segments wholly below the lowest snapshot revision of the remaining
// versions (what the local prune trims too). Nothing else the store still
// holds is deleted: the next sync would upload it again, and versions not
// uploaded yet may need it. A config.json or the tier key is never
// deleted. An object the bucket refuses to delete because its retention
// runs (S3 Object Lock, OSS WORM: s3.ErrLocked, oss.ErrLocked) is counted
// in LockedSkipped, not an error; a version whose manifest is refused
// stays whole, with everything it needs, and a later prune deletes it. On
// S3 every version of a key is deleted (a delete marker alone keeps the
// data and its bill). A dry run asks the bucket nothing about locks: it
// counts what it would delete if nothing were locked.
//
// A prune holds the tier's lock file exclusively, syncs hold it shared:
// a sync never skips a pack as uploaded that a prune is deleting.
// Deleting needs credentials the agent does not have (its policy: put,
// get, list): Prune uses what its caller opened the tier with, which the
// CLI reads from the same environment variables as the sync, given a
// delete-capable key in the prune's own environment only.
package tiers
