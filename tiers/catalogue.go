package tiers

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kubekeep/kubekeep/rsyncish/backend"
)

// Catalogue is the local record of what a tier holds, so a sync knows
// what to upload without listing the bucket (a LIST per sync costs money
// and time on object storage; Reconcile lists when asked). One line per
// object, "<type>/<name> <size>", appended and fsynced after each upload:
// a kill -9 loses at most the line of the upload in flight, whose object
// the next sync finds already there (ErrExists) and records. A torn last
// line is ignored.
//
// Beside it, <tier>.refs records what each version uploaded needs in the
// tier (VersionRefs) and which versions the tier's retention removed
// (see Prune), and <tier>.lock serialises Prune against syncs (Sync holds
// it shared, Prune exclusively: a sync never finds a pack gone that it
// skipped as uploaded).
type Catalogue struct {
	path     string
	refsPath string
	mu       sync.Mutex
	have     map[backend.Handle]int64
	refs     map[string]*VersionRefs
	pruned   map[string]bool
	// stamp is the catalogue file's size and time as last read or
	// written by this Catalogue (Refresh rereads it when they differ).
	stamp fileStamp
}

type fileStamp struct {
	size int64
	mod  time.Time
}

func stampOf(path string) fileStamp {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}
	}
	return fileStamp{fi.Size(), fi.ModTime()}
}

// OpenCatalogue reads (or starts) the catalogue at path; its directory
// is created 0700.
func OpenCatalogue(path string) (*Catalogue, error) {
	c := &Catalogue{path: path, refsPath: refsPath(path), have: map[backend.Handle]int64{}}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("catalogue %s: %w", path, err)
	}
	if err := c.load(); err != nil {
		return nil, err
	}
	return c, nil
}

// load reads the catalogue and refs files (c.mu held, or c not shared).
func (c *Catalogue) load() error {
	if err := c.loadRefs(); err != nil {
		return err
	}
	have := map[backend.Handle]int64{}
	stamp := stampOf(c.path)
	f, err := os.Open(c.path)
	if errors.Is(err, fs.ErrNotExist) {
		c.have, c.stamp = have, fileStamp{}
		return nil
	}
	if err != nil {
		return fmt.Errorf("catalogue %s: %w", c.path, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if h, size, ok := parseLine(sc.Text()); ok {
			have[h] = size
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("catalogue %s: %w", c.path, err)
	}
	c.have, c.stamp = have, stamp
	return nil
}

// Refresh rereads the catalogue when another process changed it since
// (a CLI sync or prune beside the agent, which keeps its Catalogue open);
// it costs a stat otherwise.
func (c *Catalogue) Refresh() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if stampOf(c.path) == c.stamp {
		return nil
	}
	return c.load()
}

func parseLine(l string) (backend.Handle, int64, bool) {
	ref, sizeStr, ok := strings.Cut(l, " ")
	if !ok {
		return backend.Handle{}, 0, false
	}
	t, name, ok := strings.Cut(ref, "/")
	size, err := strconv.ParseInt(sizeStr, 10, 64)
	h := backend.Handle{Type: backend.FileType(t), Name: name}
	if !ok || err != nil || size < 0 || h.Valid() != nil {
		return backend.Handle{}, 0, false
	}
	return h, size, true
}

// Has says whether the tier is known to hold h.
func (c *Catalogue) Has(h backend.Handle) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.have[h]
	return ok
}

// Len is the number of objects the tier is known to hold.
func (c *Catalogue) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.have)
}

// Add records that the tier holds h (size: as uploaded), durably.
func (c *Catalogue) Add(h backend.Handle, size int64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.have[h]; ok {
		return nil
	}
	f, err := os.OpenFile(c.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("catalogue %s: %w", c.path, err)
	}
	defer f.Close()
	fi0 := int64(-1)
	// A torn line from a kill mid-write must not glue onto this one.
	if fi, err := f.Stat(); err == nil {
		fi0 = fi.Size()
	}
	if fi, err := f.Stat(); err == nil && fi.Size() > 0 {
		last := make([]byte, 1)
		if r, err := os.Open(c.path); err == nil {
			if _, err := r.ReadAt(last, fi.Size()-1); err == nil && last[0] != '\n' {
				_, _ = f.WriteString("\n")
			}
			r.Close()
		}
	}
	if _, err := fmt.Fprintf(f, "%s %d\n", h, size); err != nil {
		return fmt.Errorf("catalogue %s: %w", c.path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("catalogue %s: %w", c.path, err)
	}
	c.have[h] = size
	if c.stamp.size == fi0 {
		c.stamp = stampOf(c.path) // nobody else wrote meanwhile
	}
	return nil
}

// Reconcile lists the tier and rewrites the catalogue from what it holds
// (objects removed by the tier's retention, or lost, drop out and are
// uploaded again by the next sync if the store still has them). It
// returns how many objects the catalogue had that the tier lacks.
func (c *Catalogue) Reconcile(ctx context.Context, remote backend.Backend) (missing int, err error) {
	have := map[backend.Handle]int64{}
	for _, t := range backend.Types {
		if err := remote.List(ctx, t, func(fi backend.FileInfo) error {
			have[backend.Handle{Type: t, Name: fi.Name}] = fi.Size
			return nil
		}); err != nil {
			return 0, err
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for h := range c.have {
		if _, ok := have[h]; !ok {
			missing++
		}
	}
	old := c.have
	c.have = have
	if err := c.rewrite(); err != nil {
		c.have = old
		return 0, err
	}
	return missing, nil
}

// Handles lists what the catalogue records of type t.
func (c *Catalogue) Handles(t backend.FileType) map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]int64{}
	for h, size := range c.have {
		if h.Type == t {
			out[h.Name] = size
		}
	}
	return out
}

// rewrite replaces the catalogue file with c.have (c.mu held).
func (c *Catalogue) rewrite() error {
	tmp := c.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("catalogue %s: %w", c.path, err)
	}
	w := bufio.NewWriter(f)
	for h, size := range c.have {
		fmt.Fprintf(w, "%s %d\n", h, size)
	}
	if err := w.Flush(); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, c.path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("catalogue %s: %w", c.path, err)
	}
	c.stamp = stampOf(c.path)
	return nil
}

// lock takes the tier's lock file, shared (syncs) or exclusive (prune),
// polling until ctx ends; unlock releases it.
func (c *Catalogue) lock(ctx context.Context, exclusive bool) (unlock func(), err error) {
	p := strings.TrimSuffix(c.path, ".catalogue") + ".lock"
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("tier lock %s: %w", p, err)
	}
	how := syscall.LOCK_SH
	if exclusive {
		how = syscall.LOCK_EX
	}
	for {
		err := syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("tier lock %s: %w", p, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			what := "a prune of the tier is running"
			if exclusive {
				what = "a sync of the tier is running"
			}
			return nil, fmt.Errorf("tier lock %s: %s: %w", p, what, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
