package rsyncish

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kubekeep/kubekeep/rsyncish/format"
)

// DefaultBlockSize is used when Options.BlockSize is 0 (see doc.go for the
// measurement behind it).
const DefaultBlockSize = 64 << 10

// PageSize is the granularity at which a changed block is compared with its
// previous content, so that rewriting one 4 KiB bbolt page in a 64 KiB block
// stores about 4 KiB, not 64.
const PageSize = 4 << 10

// Options configure a Store. The zero value is usable except for Logger,
// which defaults to slog.Default().
type Options struct {
	// BlockSize of new versions: a power of two from 4 KiB to 16 MiB.
	BlockSize int
	// Mountpoint, when set, must be mounted or the store refuses to open:
	// a bare mountpoint directory sits on the root disk.
	Mountpoint string
	// AllowSameFilesystem lets backed-up paths share the store's filesystem
	// (tests and demos only: such a store dies with the disk it protects).
	AllowSameFilesystem bool
	// MinFree is kept free on the store's filesystem on top of what a
	// version needs.
	MinFree int64
	// NoCreate makes Open fail with fs.ErrNotExist instead of creating a
	// store, for read-only commands pointed at a mistyped path.
	NoCreate bool
	Logger   *slog.Logger
	// SegmentSpan, when set, reads what a journal segment's content says
	// it holds; Verify then checks each journal's chain by content as well
	// as by names (journal_span.go).
	SegmentSpan SegmentSpan
}

// Store is a versioned, deduplicated store in one directory. Its methods are
// safe for concurrent use within a process; across processes, writers
// (backup, prune, MarkVerified) serialise through Lock.
type Store struct {
	dir  string
	opts Options
	log  *slog.Logger
	cfg  format.Config

	mu     sync.Mutex
	cfgErr error // config.json unusable: cfg is what the manifests record
	locked bool
	idx    *index // loaded on demand; the writer adds to it
	// prog is the Progress SetProgress installed (progress.go).
	prog progressHolder
}

// Errors callers may test with errors.Is.
var (
	ErrLocked     = errors.New("store is locked")
	ErrNotMounted = errors.New("store mountpoint is not mounted")
	ErrSameFS     = errors.New("store is on the same filesystem as a backed-up path")
	ErrNoSpace    = errors.New("not enough free space in the store")
	ErrNotFound   = errors.New("not found")
	ErrUnsafePath = errors.New("stored path escapes the restore directory")
)

// Store layout. Everything but the aux files lives in these directories.
const (
	configFile  = "config.json"
	lockFile    = "lock"
	packsDir    = "packs"
	indexDir    = "index"
	versionsDir = "versions"
	verifiedDir = "verified"
	journalsDir = "journals"
	tmpDir      = "tmp"
	packExt     = ".pack"
	indexExt    = ".idx"
	manifestExt = ".manifest"
)

var storeDirs = []string{packsDir, indexDir, versionsDir, verifiedDir, journalsDir, tmpDir}

// Open opens the store in dir, creating it (0700 directories, 0600 files)
// unless it exists or opts.NoCreate is set. It refuses when opts.Mountpoint
// is set and nothing is mounted there. Leftovers of interrupted runs are
// cleaned by Lock, never here: another process may be writing.
func Open(dir string, opts Options) (*Store, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.BlockSize == 0 {
		opts.BlockSize = DefaultBlockSize
	}
	if bs := opts.BlockSize; bs < PageSize || bs > 16<<20 || bs&(bs-1) != 0 {
		return nil, fmt.Errorf("block size %d: must be a power of two from 4 KiB to 16 MiB", bs)
	}
	if !filepath.IsAbs(dir) {
		abs, err := filepath.Abs(dir)
		if err != nil {
			return nil, err
		}
		dir = abs
	}
	dir = filepath.Clean(dir)
	if opts.Mountpoint != "" {
		ok, err := isMounted(opts.Mountpoint)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("checking mountpoint %s: %w", opts.Mountpoint, err)
		}
		if !ok {
			return nil, fmt.Errorf("%w: nothing is mounted at %s, so the store %s would land on the disk it protects; mount the second disk or fix store.mountpoint", ErrNotMounted, opts.Mountpoint, dir)
		}
	}
	s := &Store{dir: dir, opts: opts, log: opts.Logger}
	data, err := readStoreFile(filepath.Join(dir, configFile))
	if err == nil {
		if err = format.UnsealJSON(data, &s.cfg); err == nil && (s.cfg.Format < 1 || s.cfg.Format > format.StoreFormat) {
			return nil, fmt.Errorf("store %s: format %d, this kubekeep reads formats 1 to %d: use a newer kubekeep (the store's own copy, %s/kubekeep, is the one that wrote it)", dir, s.cfg.Format, format.StoreFormat, dir)
		}
	}
	if err != nil {
		// A damaged (or lost) config.json: what it held is in every
		// manifest. Without one, this is no store (or an empty one).
		cfgErr := fmt.Errorf("%s: %w", configFile, err)
		cfg, ok, rerr := s.recoverConfig()
		switch {
		case ok:
			s.cfg, s.cfgErr = cfg, cfgErr
			s.log.Warn("the store's config.json cannot be used; working from what the version manifests record (kubekeep repair rebuilds it)",
				"store", dir, "err", err, "storeId", cfg.StoreID, "format", cfg.Format)
		case !errors.Is(err, fs.ErrNotExist):
			if rerr == nil {
				rerr = errors.New("no readable version manifest to recover it from")
			}
			return nil, fmt.Errorf("store %s: %w (%w)", dir, cfgErr, rerr)
		case opts.NoCreate:
			return nil, fmt.Errorf("store %s: %w (no %s)", dir, fs.ErrNotExist, configFile)
		default:
			// Never scatter a store into a directory holding something else
			// (the bare mountpoint, /data/backup with other tools' files).
			// A fresh ext4 mounted as the store path holds lost+found: that
			// directory is empty for our purposes.
			if ents, _ := readStoreDir(dir); len(foreign(ents)) > 0 {
				return nil, fmt.Errorf("%s is not empty and is not a kubekeep store (no %s; it holds %s); use an empty or new directory", dir, configFile, strings.Join(foreign(ents), ", "))
			}
			if err := s.create(); err != nil {
				return nil, fmt.Errorf("creating store %s: %w", dir, err)
			}
		}
	}
	// Directories are (re)created on every open: a store copied without its
	// empty directories must still work.
	if !opts.NoCreate {
		for _, d := range storeDirs {
			if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
				return nil, fmt.Errorf("store %s: %w", dir, err)
			}
		}
	}
	return s, nil
}

// foreign returns the names in a would-be store directory that make it
// someone else's: everything but a filesystem's lost+found directory.
func foreign(ents []fs.DirEntry) []string {
	var out []string
	for _, e := range ents {
		if e.Name() == "lost+found" && e.IsDir() {
			continue
		}
		out = append(out, e.Name())
	}
	if len(out) > 5 {
		out = append(out[:5], "...")
	}
	return out
}

func (s *Store) create() error {
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return err
	}
	if err := os.Chmod(s.dir, 0o700); err != nil {
		return err
	}
	for _, d := range storeDirs {
		if err := os.MkdirAll(filepath.Join(s.dir, d), 0o700); err != nil {
			return err
		}
	}
	s.cfg = format.Config{Format: format.StoreFormat, StoreID: randHex(16), Created: time.Now().UTC()}
	data, err := format.SealJSON(s.cfg)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(s.dir, configFile), data, 0o600); err != nil {
		return err
	}
	return syncDir(filepath.Dir(s.dir))
}

// upgradeFormat rewrites config.json of an older store with the format
// this code writes, before the first file of that format is written (the
// caller holds the lock). Everything older stays readable as it is.
func (s *Store) upgradeFormat() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cfg.Format >= format.StoreFormat || s.cfgErr != nil {
		return nil // a damaged config.json is Repair's to write
	}
	cfg := s.cfg
	cfg.Format = format.StoreFormat
	data, err := format.SealJSON(cfg)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(s.path(configFile), data, 0o600); err != nil {
		return fmt.Errorf("upgrading the store to format %d: %w", cfg.Format, err)
	}
	s.log.Info("store format upgraded", "store", s.dir, "from", s.cfg.Format, "to", cfg.Format)
	s.cfg = cfg
	return nil
}

// Dir is the store directory.
func (s *Store) Dir() string { return s.dir }

func (s *Store) path(parts ...string) string {
	return filepath.Join(append([]string{s.dir}, parts...)...)
}

// LockWait is Lock, retrying for up to wait while another writer holds the
// store: the agent's backups and prunes are short, and a CLI run or the next
// scheduled job should queue behind them rather than fail.
func (s *Store) LockWait(ctx context.Context, wait time.Duration) (unlock func() error, err error) {
	deadline := time.Now().Add(wait)
	for {
		unlock, err := s.Lock(ctx)
		if err == nil || !errors.Is(err, ErrLocked) || !time.Now().Before(deadline) {
			return unlock, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// Lock takes the exclusive writer lock (flock on <dir>/lock) and then cleans
// leftovers of interrupted runs. It fails at once, wrapping ErrLocked and
// naming the holder's pid, when another writer holds it; callers that want
// to wait retry. ctx is checked before the cleanup starts.
func (s *Store) Lock(ctx context.Context) (unlock func() error, err error) {
	s.mu.Lock()
	if s.locked {
		s.mu.Unlock()
		return nil, fmt.Errorf("%w: already held by this process (pid %d)", ErrLocked, os.Getpid())
	}
	s.mu.Unlock()
	f, err := openLockFile(s.path(lockFile), os.O_RDWR)
	if err != nil {
		return nil, fmt.Errorf("store lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder, _ := readStoreFile(s.path(lockFile))
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			who := strings.TrimSpace(string(holder))
			if who == "" {
				who = "unknown"
			}
			return nil, fmt.Errorf("%w: store %s is in use by pid %s (a backup, prune or verify); try again when it finishes", ErrLocked, s.dir, who)
		}
		return nil, fmt.Errorf("store lock: %w", err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	s.mu.Lock()
	s.locked = true
	s.mu.Unlock()
	unlock = func() error {
		s.mu.Lock()
		s.locked = false
		s.idx = nil // another process may change packs once we let go
		s.mu.Unlock()
		_ = f.Truncate(0)
		return f.Close()
	}
	if err := ctx.Err(); err != nil {
		_ = unlock()
		return nil, err
	}
	if err := s.cleanLeftovers(); err != nil {
		_ = unlock()
		return nil, fmt.Errorf("cleaning leftovers of an interrupted run: %w", err)
	}
	return unlock, nil
}

func (s *Store) holdsLock() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.locked {
		return errors.New("rsyncish: store lock not held (call Store.Lock first)")
	}
	return nil
}

// cleanLeftovers removes what a killed run leaves: temp files and temp
// directories (the restore drill's scratch data dir, with all it holds) of
// dead processes, packs that never got their index (a pack is written
// before its index, and only the lock holder writes packs), and
// verification marks of versions that are gone. Called with the lock held.
func (s *Store) cleanLeftovers() error {
	var removed []string
	rm := func(p string) error {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		removed = append(removed, strings.TrimPrefix(p, s.dir+"/"))
		return nil
	}
	// Temp files anywhere in the store (journals have a level more).
	err := filepath.WalkDir(s.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			pid, ok := tmpOwner(d.Name())
			if !ok || p == s.dir {
				return nil
			}
			// A temp dir is its maker's whole: nothing below it is
			// the store's, so it is never walked, only removed once
			// its maker is dead.
			if !pidAlive(pid) {
				if err := os.RemoveAll(p); err != nil {
					return err
				}
				removed = append(removed, strings.TrimPrefix(p, s.dir+"/")+"/")
			}
			return filepath.SkipDir
		}
		if pid, ok := tmpOwner(d.Name()); ok && !pidAlive(pid) {
			return rm(p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	packs, err := readStoreDir(s.path(packsDir))
	if err != nil {
		return err
	}
	for _, e := range packs {
		id, ok := strings.CutSuffix(e.Name(), packExt)
		if !ok {
			continue
		}
		if _, err := os.Stat(s.path(indexDir, id+indexExt)); errors.Is(err, fs.ErrNotExist) {
			if err := rm(s.path(packsDir, e.Name())); err != nil {
				return err
			}
		}
	}
	marks, err := readStoreDir(s.path(verifiedDir))
	if err != nil {
		return err
	}
	for _, e := range marks {
		if _, ok := tmpOwner(e.Name()); ok {
			continue
		}
		if _, err := os.Stat(s.path(versionsDir, e.Name()+manifestExt)); errors.Is(err, fs.ErrNotExist) {
			if err := rm(s.path(verifiedDir, e.Name())); err != nil {
				return err
			}
		}
	}
	if len(removed) > 0 {
		s.log.Info("removed leftovers of an interrupted run", "store", s.dir, "count", len(removed), "files", removed)
		for _, d := range []string{packsDir, verifiedDir} {
			if err := syncDir(s.path(d)); err != nil {
				return err
			}
		}
	}
	return nil
}

// VersionInfo describes a committed version.
type VersionInfo struct {
	ID string `json:"id"`
	// Time is when the version was started, in UTC.
	Time      time.Time             `json:"time"`
	Files     int                   `json:"files"`
	Dirs      int                   `json:"dirs"`
	Symlinks  int                   `json:"symlinks"`
	Size      int64                 `json:"size"`
	BlockSize int                   `json:"blockSize"`
	Paths     []string              `json:"paths,omitempty"`
	Streams   []format.StreamHeader `json:"streams,omitempty"`
	Skipped   []format.Skipped      `json:"skipped,omitempty"`
	Stats     format.Stats          `json:"stats"`
	// Verified is set once MarkVerified recorded a successful check.
	Verified     bool                       `json:"verified"`
	Verification *Verification              `json:"verification,omitempty"`
	Meta         map[string]json.RawMessage `json:"meta,omitempty"`
}

// Verification is what the restore drill records about a version.
type Verification = format.Verification

func infoFromHeader(h *format.Header) VersionInfo {
	return VersionInfo{
		ID: h.ID, Time: h.Time.UTC(), Files: h.Files, Dirs: h.Dirs, Symlinks: h.Symlinks, Size: h.Size,
		BlockSize: h.BlockSize, Paths: h.Paths, Streams: h.Streams, Skipped: h.Skipped, Stats: h.Stats, Meta: h.Meta,
	}
}

// Versions lists committed versions, oldest first (newest last). A manifest
// whose header cannot be read is skipped with a warning here; Verify reports it.
func (s *Store) Versions() ([]VersionInfo, error) {
	ents, err := readStoreDir(s.path(versionsDir))
	if err != nil {
		return nil, fmt.Errorf("listing versions: %w", err)
	}
	var out []VersionInfo
	for _, e := range ents {
		id, ok := strings.CutSuffix(e.Name(), manifestExt)
		if !ok {
			continue
		}
		h, err := s.readHeader(id)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue // pruned meanwhile
			}
			s.log.Warn("unreadable version manifest", "version", id, "err", err)
			continue
		}
		vi := infoFromHeader(h)
		if v, err := s.readVerification(id); err == nil {
			vi.Verified, vi.Verification = true, v
		}
		out = append(out, vi)
	}
	sortVersions(out)
	return out, nil
}

func sortVersions(vs []VersionInfo) {
	sort.Slice(vs, func(i, j int) bool {
		if !vs[i].Time.Equal(vs[j].Time) {
			return vs[i].Time.Before(vs[j].Time)
		}
		return vs[i].ID < vs[j].ID
	})
}

func (s *Store) readHeader(id string) (*format.Header, error) {
	f, err := openStoreFile(s.path(versionsDir, id+manifestExt))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h, err := format.ReadManifestHeader(f)
	if err != nil {
		return nil, err
	}
	if h.ID != id {
		return nil, fmt.Errorf("manifest %s names itself %q", id, h.ID)
	}
	return h, nil
}

// manifest reads and checks a whole version manifest.
func (s *Store) manifest(id string) (*format.Manifest, error) {
	if !validID(id) {
		return nil, fmt.Errorf("version %q: %w", id, ErrNotFound)
	}
	data, err := readStoreFile(s.path(versionsDir, id+manifestExt))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("version %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("version %s: %w", id, err)
	}
	m, err := format.DecodeManifest(data)
	if err != nil {
		return nil, fmt.Errorf("version %s: %w", id, err)
	}
	if m.Header.ID != id {
		return nil, fmt.Errorf("version %s: manifest names itself %q", id, m.Header.ID)
	}
	return m, nil
}

// validID keeps version IDs usable as file names.
func validID(id string) bool {
	if id == "" || len(id) > 100 {
		return false
	}
	for _, c := range id {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return id[0] != '.'
}

// Version returns one version's info.
func (s *Store) Version(id string) (VersionInfo, error) {
	if !validID(id) {
		return VersionInfo{}, fmt.Errorf("version %q: %w", id, ErrNotFound)
	}
	h, err := s.readHeader(id)
	if errors.Is(err, fs.ErrNotExist) {
		return VersionInfo{}, fmt.Errorf("version %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return VersionInfo{}, fmt.Errorf("version %s: %w", id, err)
	}
	vi := infoFromHeader(h)
	if v, err := s.readVerification(id); err == nil {
		vi.Verified, vi.Verification = true, v
	}
	return vi, nil
}

// MarkVerified records that version id passed a check (the restore drill).
// Manifests are immutable, so the mark is a separate sealed file beside them;
// it goes when the version is pruned.
func (s *Store) MarkVerified(id string, v Verification) error {
	if _, err := s.Version(id); err != nil {
		return err
	}
	if v.Time.IsZero() {
		v.Time = time.Now()
	}
	v.Time = v.Time.UTC()
	data, err := format.SealJSON(v)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(s.path(verifiedDir, id), data, 0o600); err != nil {
		return fmt.Errorf("marking version %s verified: %w", id, err)
	}
	return nil
}

func (s *Store) readVerification(id string) (*Verification, error) {
	data, err := readStoreFile(s.path(verifiedDir, id))
	if err != nil {
		return nil, err
	}
	var v Verification
	if err := format.UnsealJSON(data, &v); err != nil {
		return nil, err
	}
	return &v, nil
}

// CreateTemp creates a 0600 temp file in the store's tmp directory, on the
// store's filesystem: the etcd snapshot is checked from such a file so it
// never touches the root disk. The caller removes it; a killed caller's file
// is removed as a leftover by the next Lock.
func (s *Store) CreateTemp(pattern string) (*os.File, error) {
	pattern = strings.ReplaceAll(filepath.Base(pattern), "*", "")
	name := s.path(tmpDir, tmpName(pattern))
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("store temp file: %w", err)
	}
	return f, nil
}

// MkdirTemp creates a 0700 temp directory in the store's tmp directory
// (the off-site sync seals objects in one before upload). The caller
// removes it; a killed caller's directory, with all it holds, is removed
// as a leftover by the next Lock, as temp files are.
func (s *Store) MkdirTemp(pattern string) (string, error) {
	pattern = strings.ReplaceAll(filepath.Base(pattern), "*", "")
	if err := os.MkdirAll(s.path(tmpDir), 0o700); err != nil {
		return "", fmt.Errorf("store temp dir: %w", err)
	}
	name := s.path(tmpDir, tmpName(pattern))
	if err := os.Mkdir(name, 0o700); err != nil {
		return "", fmt.Errorf("store temp dir: %w", err)
	}
	return name, nil
}

// OpenScratch opens (creating it 0600) a named scratch file in the store's
// tmp directory that outlives the run: the etcd snapshot's check copy is
// kept there so the next backup rewrites only the pages that changed
// instead of a whole image. Its content is never trusted, only overwritten
// (callers compare before they skip a write), so a crash or a stale file
// costs a full rewrite, never a wrong check. It takes the lock holder's
// name space: only the writer holding the store lock may use it.
func (s *Store) OpenScratch(name string) (*os.File, error) {
	if err := s.holdsLock(); err != nil {
		return nil, err
	}
	if name == "" || name != filepath.Base(name) || strings.HasPrefix(name, ".") || strings.Contains(name, tmpMarker) {
		return nil, fmt.Errorf("scratch file name %q is not allowed", name)
	}
	f, err := openLockFile(s.path(tmpDir, name), os.O_RDWR)
	if err != nil {
		return nil, fmt.Errorf("store scratch file: %w", err)
	}
	return f, nil
}

// Usage returns the bytes the store occupies on disk and the bytes still
// free on its filesystem.
func (s *Store) Usage() (used, free int64, err error) {
	err = filepath.WalkDir(s.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			used += st.Blocks * 512
		} else {
			used += info.Size()
		}
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("store usage: %w", err)
	}
	free, err = freeBytes(s.dir)
	return used, free, err
}
