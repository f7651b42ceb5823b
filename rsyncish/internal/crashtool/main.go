// Command crashtool drives rsyncish from a separate process so tests can
// SIGKILL it at random moments (and measure its peak memory). Not shipped.
//
//	crashtool backup -store S -root R -path P [-path P...] [-stream N:BYTES]
//	crashtool prune  -store S -keep-last N
//	crashtool mem    -store S -size BYTES     (an AddStream of BYTES; prints peak RSS)
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"syscall"

	"github.com/kubekeep/kubekeep/rsyncish"
)

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: crashtool backup|prune|mem ...")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	store := fs.String("store", "", "store dir")
	root := fs.String("root", "/", "root")
	keepLast := fs.Int("keep-last", 3, "versions to keep")
	size := fs.Int64("size", 8<<30, "stream size for mem")
	bs := fs.Int("block-size", 0, "block size")
	var paths multi
	fs.Var(&paths, "path", "host path")
	_ = fs.Parse(os.Args[2:])
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	s, err := rsyncish.Open(*store, rsyncish.Options{BlockSize: *bs, AllowSameFilesystem: true, Logger: log})
	if err != nil {
		fail(err)
	}
	ctx := context.Background()
	unlock, err := s.Lock(ctx)
	if err != nil {
		fail(err)
	}
	defer unlock()
	switch os.Args[1] {
	case "backup":
		w, err := s.NewVersion(ctx, rsyncish.WriteOptions{})
		if err != nil {
			fail(err)
		}
		// The test learns the ID before anything can be committed, so it
		// knows what every version that survives a kill must contain.
		fmt.Println("ID", w.ID())
		if err := w.AddTree(*root, paths, nil); err != nil {
			fail(err)
		}
		vi, err := w.Commit()
		if err != nil {
			fail(err)
		}
		fmt.Println("COMMITTED", vi.ID)
	case "prune":
		res, err := s.Prune(ctx, rsyncish.RetentionPolicy{KeepLast: *keepLast}, false)
		if err != nil {
			fail(err)
		}
		fmt.Println("PRUNED", len(res.Remove), res.PacksDeleted, res.PacksRewritten)
	case "mem":
		w, err := s.NewVersion(ctx, rsyncish.WriteOptions{})
		if err != nil {
			fail(err)
		}
		si, err := w.AddStream("big", &pattern{left: *size})
		if err != nil {
			fail(err)
		}
		vi, err := w.Commit()
		if err != nil {
			fail(err)
		}
		var ru syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		fmt.Printf("STREAM %d bytes, new %d, read %d; peak RSS %d KiB\n", si.Size, vi.Stats.BytesNew, vi.Stats.BytesRead, ru.Maxrss)
	default:
		fail(fmt.Errorf("unknown command %q", os.Args[1]))
	}
}

// pattern yields size bytes that repeat every MiB (so the store holds only
// 1 MiB of it) but are not zero, so every block is hashed and looked up.
type pattern struct{ left, off int64 }

func (p *pattern) Read(b []byte) (int, error) {
	if p.left == 0 {
		return 0, io.EOF
	}
	n := int(min(int64(len(b)), p.left))
	for i := 0; i < n; {
		i += copy(b[i:n], table[(p.off+int64(i))%int64(len(table)):])
	}
	p.left -= int64(n)
	p.off += int64(n)
	return n, nil
}

var table = func() []byte {
	t := make([]byte, 1<<20)
	for i := range t {
		t[i] = byte(uint64(i)*2654435761>>13) | 1
	}
	return t
}()

func fail(err error) {
	fmt.Fprintln(os.Stderr, "crashtool:", err)
	os.Exit(1)
}
