// Package rsyncish is kubekeep's store on the second disk: immutable,
// deduplicated, crash-safe versions of a set of files and named streams.
// It knows nothing of Kubernetes.
//
// # Use
//
//	s, _ := rsyncish.Open(dir, rsyncish.Options{Mountpoint: "/data/backup"})
//	unlock, _ := s.Lock(ctx)           // one writer at a time, across processes
//	defer unlock()
//	w, _ := s.NewVersion(ctx, rsyncish.WriteOptions{})
//	w.AddTree("/", []string{"/etc/kubernetes"}, nil)
//	w.AddStream("etcd.db", snapshotReader)
//	w.SetMeta("etcd", info)
//	vi, _ := w.Commit()
//
// Versions are listed oldest first (newest last). Readers (Versions,
// OpenStream, OpenFile, RestoreFiles, Verify) do not need the lock; Prune,
// Repair, NewVersion and leftover cleaning do. The journal (etcd watch
// deltas) is appended without the lock.
//
// # Readers
//
// OpenStream and OpenFile (until the reader is closed) and RestoreFiles
// hold a shared flock on readlock; Prune and Repair take it exclusively for
// everything they remove, after waiting (up to 10 minutes, or their
// context) for the readers that started before them, and readers that
// start meanwhile wait for them. So a reader never finds a pack gone that
// the index it loaded named, which it would have to report as damage
// (TestReadersVsPrune), and callers need no locking of their own. Backups
// do not touch readlock: readers never wait for a backup. A store whose
// readlock cannot be created (a read-only mount) is read without it.
//
// SetProgress (progress.go) lets a command draw a progress bar: the bytes
// OpenStream, OpenFile and RestoreFiles hand out, and the packs Verify
// --read-data reads (whose total it announces first), are counted into
// the installed Progress; nil, the default, changes nothing.
//
// OpenVersion (and OpenStreamAt) give random access into stored streams
// and files (readat.go): a read maps its range through the entry's
// extents and reads and checks only the blobs it touches, so one object
// out of an 8 GiB etcd snapshot costs a few blobs, not the stream. It
// decodes only the manifest lines asked for, of a stream's extents only
// their lengths (an extent's blob ID and offset are decoded out of the
// manifest's mapping when a read reaches it: readat_extents.go), and
// finds blobs through the
// multi-pack index (index.midx, midx.go) and the raw entries of the pack
// indexes it does not cover, instead of building the writer's in-memory
// index; it holds the read lock like OpenStream.
//
// # Layout
//
//	config.json              store id, format and creation time, sealed (blake3
//	                         trailer); every manifest header records the same
//	                         ("store"), so a damaged config.json locks nobody
//	                         out: Open works from the manifests with a warning,
//	                         verify reports it, Repair writes it again
//	                         (TestDamagedConfig)
//	lock                     flock target of the writer lock; holds the holder's pid
//	readlock                 flock target: readers share it, Prune and Repair
//	                         take it exclusively (see Readers)
//	packs/<rand>.pack        blobs back to back, no header: every byte is
//	                         covered by some blob's blake3 ID
//	index/<rand>.idx         the pack's blob list (format.EncodeIndex), sealed
//	index.midx               a cache: many packs' blob lists in one file sorted
//	                         by blob ID, blake3 trailer (midx.go); readers use it
//	                         as far as it agrees with index/, a commit rewrites
//	                         it when missing, damaged or 8 packs apart; verify
//	                         warns of damage there, never calls it a problem
//	versions/<id>.manifest   line-oriented: magic, header JSON, one JSON line
//	                         per file/dir/symlink/stream, blake3 trailer
//	                         (format.ManifestMagic); the header's "requires"
//	                         lists what else the version needs (see
//	                         Requirements)
//	verified/<id>            the restore drill's result (versions are immutable)
//	damage.json              the blobs verify --read-data found rotten, by pack,
//	                         and the journal segments verify found damaged
//	                         (format.Damage), sealed; absent when none
//	journals/<name>/<first>-<last>-<ns>.seg   checksummed delta segments;
//	                         a progress mark at R (no revision) is named R-R,
//	                         as a segment holding revision R is: with
//	                         Options.SegmentSpan verify reads each segment's
//	                         own range too (journal_span.go)
//	journals/<name>/<from>-<to>.break         sealed: revisions from..to were
//	                         never recorded because the chain restarted (Append
//	                         writes it when a segment does not follow the tail);
//	                         any other hole between segments is a lost segment,
//	                         which verify reports as a gap (Journal.Gaps). A
//	                         replay reads only the segments up to its target
//	                         (Journal.Needed), so damage after it blocks nothing
//	journals/<name>/<from>-<to>.trimmed       sealed: prune removed the
//	                         segments holding from..to because no kept version
//	                         needed them (Journal.TrimExcept); verify does not
//	                         report the hole, a read that needs it says so.
//	                         Segments may overlap: a merged segment
//	                         (Journal.Replace) over the ones it replaced, until
//	                         they go (a crash between the two leaves both; every
//	                         reader takes overlapping segments)
//	journals/<name>/breaks-since  sealed: the tail when a kubekeep that records
//	                         breaks first appended; older holes may be restarts
//	                         and are warnings, not damage
//	tmp/                     scratch on the store's filesystem (CreateTemp;
//	                         OpenScratch files such as the snapshot check copy
//	                         persist)
//	lost+found               a filesystem's own, when store.path is the root
//	                         of a fresh ext4 (the one thing Open accepts in a
//	                         directory it makes a store in)
//	RESTORE.md, kubekeep     top-level extras for a rebuild from the disk
//	                         alone (WriteAux)
//	aux.json                 sealed: size and blake3 of each extra as written
//	                         (format.AuxFiles), so verify catches a rotted
//	                         rescue kit and AuxNeedsWrite tells the backup to
//	                         write it again (TestAuxHash)
//	agent.lock               the agent's lifetime lock (see The agent's files)
//	agent-status.json        the agent's state, plain JSON it writes; neither
//	                         is hashed or warned about by verify
//
// # The agent's files
//
// The agent keeps its lock and its status at the top of the store, on the
// second disk, so `kubekeep status` reads them with or without an agent
// and they outlive the root disk. It reaches them only through
// Store.AgentFiles (AgentFilesIn for a directory not opened as a Store),
// never with os calls on store paths; the guarantees, written on each
// method, are what the agent's crash safety rests on:
//
//   - Lock: an exclusive non-blocking flock on agent.lock, held for the
//     agent's life, the holder's pid written in it; a second Lock (this
//     process or another) fails at once with ErrAgentRunning naming that
//     pid; the kernel drops it when the holder dies. File name and lock
//     type are unchanged since the first agent, so agents of different
//     kubekeep versions exclude each other (TestAgentLockExcludes).
//     Running probes it without taking it or creating the file.
//   - WriteStatus: temp file of its own (.agent-status.json.tmp-<pid>-<rand>,
//     0600, O_EXCL), write, fsync, rename (no directory fsync: it runs
//     every few seconds, and a lost rename leaves the old status). Readers
//     and crashes see the old status or the new, whole; concurrent writers
//     never share a temp file and all succeed (TestAgentStatusConcurrentWriters).
//   - A killed writer leaves the old status and a temp file, which the next
//     Lock (the store's, as any dead writer's temp file) removes, and so
//     does RemoveStatusTemps, which the agent calls once it holds the agent
//     lock (TestAgentStatusKilledWriter).
//   - ReadStatus returns the last published status, fs.ErrNotExist when none
//     was; a FIFO or other non-regular file planted in the place of either
//     file is refused, never opened in a way that blocks
//     (TestAgentFilesRefuseFIFO).
//
// # Formats
//
// config.json says the store's format; this code reads formats 1 and 2 and
// writes 2, upgrading a format-1 store's config.json when it writes its
// first version (older versions stay as they are, and stay readable:
// TestReadFormat1Store reads testdata/store-v1, written by the format-1
// code). Format 2 manifests start "kubekeep-manifest 2". File names are
// bytes: a path or symlink target that is not valid UTF-8 (JSON strings
// cannot hold it) is stored base64-encoded in "pb" / "lb" beside its lossy
// rendering, so key\xff and key\xfe stay two files (TestNonUTF8Names).
// Format 1 stored such names with U+FFFD and could merge them. Format 2
// also writes a run of zeros as one extent (see Content) and records the
// store's config in every header.
//
// The store writes nothing but regular files and directories, and opens
// every store file through one path that never blocks (Lstat first, then
// O_NONBLOCK|O_NOFOLLOW and fstat; directories O_DIRECTORY): a FIFO, device
// or symlink planted anywhere in it is refused as damage and named by
// verify, instead of hanging a command in an open(2) that no signal ends
// (TestFIFOInStore).
//
// Temp files carry the writer's pid (name.tmp-<pid>-<rand>), so cleaning
// leftovers under the lock never removes the file of a live process.
//
// # Content
//
// Files and streams are cut into fixed, page-aligned blocks (64 KiB by
// default) addressed by blake3-256. All-zero blocks, and holes found with
// SEEK_DATA (etcd preallocates WAL segments to 64 MB), are stored as
// nothing: a run of them is one zero extent of up to 2 GiB in the manifest
// (a 10 GiB sparse file with one block of data: 1.2 KiB of manifest,
// TestSparseManifest), the only extents that may span blocks. A block the
// store already has costs nothing. A changed block whose file had a
// previous version is compared with its previous content
// 4 KiB page by page: unchanged pages become references into the old blobs
// (an extent is blob+offset+length) and only runs of changed pages are
// stored, unless more than half the block changed or it would need more
// than 8 extents. So one rewritten bbolt page costs ~4 KiB whatever the
// block size, while the index stays at one entry per 64 KiB. Unchanged
// files (same size, mtime, ctime and inode as in the previous version) are
// not read at all. A changed file is read once: reading, hashing (on all
// cores) and writing overlap, with at most 4 batches of 4 MiB in flight.
//
// # Crash safety
//
// A pack is written and fsynced, then its index is published (temp, fsync,
// rename, fsync dir); at Commit the manifest is published the same way,
// last. A version exists exactly when its manifest does. A killed run leaves
// packs without an index and temp files, which the next Lock removes; a
// version that fails (a full disk) or is aborted removes every pack it
// wrote at once (TestENOSPC).
// Prune removes manifests first, then a pack's index before the pack, and
// writes a rewritten pack with its index before dropping the old one; a
// crash leaves orphans (cleaned) or duplicate blobs (harmless). Checked by
// TestCrashKill: 60 backups and 60 prunes SIGKILLed at random moments, a
// verify --read-data after every round, every surviving version restored
// byte-identical.
//
// # Damage
//
// A new version never refers to data the store cannot produce. Loading the
// index stats every pack once (present, a regular file, the size its index
// says) and reads the damage record: copies in a pack that fails, or that
// verify --read-data found rotten, are kept for readers (the blob's hash
// decides) but never reused by a writer, so the next backup stores those
// blocks again, even for a file it would otherwise not read; that good copy
// then serves the old versions too (a content-addressed store heals). Prune
// never counts a bad copy as a blob's home and leaves a damaged pack that
// versions refer to alone. Repair (kubekeep repair) copies every readable
// blob of a damaged pack into a new one, checked against its hash (a blob
// whose index entry rotted is kept under the hash of its bytes), removes
// the damaged pack and its index, clears the damage record, lists the
// versions still lacking data and drops their verification marks. Checked
// by TestLostPackNotReused and TestRepair.
//
// # Requirements
//
// A version may need data beyond its manifest: a journal version of etcd
// holds no snapshot of its own and is its base's snapshot streams plus a
// journal's revisions (base, R]. VersionWriter.Require records that in the
// header (format.Requirement: Stream of Version, or Journal revisions
// (After, Through]); it first checks that the store holds it whole as far
// as is known without reading data (every block of the stream with a good
// copy, per the index's pack stats and the damage record; the journal's
// segment names covering the range with no hole and no break, none of its
// segments recorded damaged), and refuses otherwise, so the caller builds
// on a full copy instead. Verify then judges the version by what it
// requires: it is named damaged (problem kind "requires", one per cause,
// naming every version it hurts) when the required version is missing or
// its manifest damaged, the stream lost a block (a lost, wrong-size or,
// with read-data, rotten pack), or the journal's segments a replay of the
// range reads (Journal.Needed) have a hole or break in their names, or one
// is unreadable, fails its checksum or is truncated (verify reads and
// checks every segment, with or without read-data). Damage outside what a
// version requires (a file of its base, a segment after its revision)
// does not name it. Repair lists such versions among those damaged for
// good; Prune keeps every version a kept version requires, transitively.
// A manifest without "requires" stands alone (every version written
// before requirements were recorded); an older kubekeep ignores the field
// (it ignored the dependency before). Checked by TestVerifyRequirements,
// TestRequireRefusesDamage, TestPruneKeepsRequired.
//
// # Block size: the measurement
//
// scripts/bench-store.sh with BENCH_BLOCK_SIZES="4KiB 16KiB 64KiB" (W1: a
// 1 GiB file with 1% of its 4 KiB pages rewritten at random offsets, an
// 8 MiB append inside a 64 MiB preallocated WAL, 300 unchanged small files;
// 18.2 MiB changed), incremental run, 2 shared cores at load average ~8:
//
//	tool            wall    written   store growth  vs rsync
//	rsync -a        5.70 s  1088 MiB     0           1x, 100% of bytes
//	restic backup   9.65 s  1998 MiB   999 MiB       0.6x, 184%
//	kubekeep  4KiB  1.81 s    33 MiB    33 MiB       3.1x, 3.0%
//	kubekeep 16KiB  1.00 s    22 MiB    22 MiB       5.7x, 2.1%
//	kubekeep 64KiB  0.99 s    20 MiB    20 MiB       5.8x, 1.8%
//
// Without page-level reuse, fixed blocks store 10/39/148 MiB of the 10 MiB
// of scattered page writes at 4/16/64 KiB (design notes, section 6); with
// it the data cost is the changed pages at every block size, and what
// separates the sizes is the rest: 4 KiB blocks hash 3x slower per byte
// (blake3 parallelises across the chunks of a long input: 350 MB/s at 4 KiB
// against 1.2 GB/s at 64 KiB on this machine) and make a 1 GiB file's block
// list 16x longer (a 14 MiB manifest per version, and 16x the index memory).
// 64 KiB is the default. Peak RSS storing an 8 GiB stream: 78 MiB
// (TestPeakMemory8GiB).
package rsyncish
