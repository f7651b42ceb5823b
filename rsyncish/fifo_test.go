package rsyncish

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

var errMissed = errors.New("missed")

// TestFIFOInStore plants FIFOs where the store keeps files: no operation
// may block on opening one (an open of a FIFO waits for a writer forever,
// in a system call that neither a signal nor a context interrupts). Each
// must return, and a planted FIFO must be reported as what it is.
func TestFIFOInStore(t *testing.T) {
	root := t.TempDir()
	sampleTree(t, root)
	clean := filepath.Join(t.TempDir(), "store")
	s := openTest(t, clean, 16<<10)
	v1 := treeAndStream(t, s, root, randBytes(100<<10), WriteOptions{})
	j, _ := s.Journal("etcd-deltas")
	if err := j.Append([]byte("x"), 1, 5, time.Now()); err != nil {
		t.Fatal(err)
	}
	packs, _ := filepath.Glob(filepath.Join(clean, packsDir, "*"+packExt))
	segs, _ := j.List()
	places := map[string]string{
		"manifest":     filepath.Join(versionsDir, "20990101T000000Z-fifo0000"+manifestExt),
		"index":        filepath.Join(indexDir, "0123456789abcdef0123456789abcdef"+indexExt),
		"pack":         strings.TrimPrefix(packs[0], clean+"/"),
		"verified":     filepath.Join(verifiedDir, v1.ID),
		"segment":      filepath.Join(journalsDir, "etcd-deltas", segs[0].File),
		"damage":       damageFile,
		"config":       configFile,
		"lock":         lockFile,
		"new-manifest": filepath.Join(versionsDir, v1.ID+manifestExt),
	}
	type op struct {
		name string
		f    func(s *Store) error
	}
	// Readers first, prune (which drops v1) last.
	ops := []op{
		{"versions", func(s *Store) error { _, err := s.Versions(); return err }},
		{"version", func(s *Store) error { _, err := s.Version(v1.ID); return err }},
		{"list", func(s *Store) error { _, err := s.List(v1.ID); return err }},
		{"stream", func(s *Store) error {
			rc, _, err := s.OpenStream(v1.ID, "etcd.db")
			if err == nil {
				_, err = bytes.NewBuffer(nil).ReadFrom(rc)
				rc.Close()
			}
			return err
		}},
		{"restore", func(s *Store) error { return s.RestoreFiles(context.Background(), v1.ID, t.TempDir(), nil) }},
		{"journal", func(s *Store) error {
			j, err := s.Journal("etcd-deltas")
			if err != nil {
				return err
			}
			segs, err := j.List()
			for _, si := range segs {
				if _, rerr := j.Read(si); rerr != nil {
					err = rerr
				}
			}
			return err
		}},
		{"verify", func(s *Store) error {
			unlock, err := s.Lock(context.Background())
			if err != nil {
				return err
			}
			defer unlock()
			rep, err := s.Verify(context.Background(), true)
			if err != nil {
				return err
			}
			for _, p := range rep.Problems {
				if strings.Contains(p.String(), "FIFO") {
					return nil
				}
			}
			return fmt.Errorf("%w: verify does not report the FIFO: %v", errMissed, rep.Problems)
		}},
		{"backup", func(s *Store) error {
			unlock, err := s.Lock(context.Background())
			if err != nil {
				return err
			}
			defer unlock()
			w, err := s.NewVersion(context.Background(), WriteOptions{})
			if err != nil {
				return err
			}
			if err := w.AddTree(root, []string{"/etc/kubernetes"}, nil); err != nil {
				w.Abort()
				return err
			}
			_, err = w.Commit()
			return err
		}},
		{"repair", func(s *Store) error {
			unlock, err := s.Lock(context.Background())
			if err != nil {
				return err
			}
			defer unlock()
			_, err = s.Repair(context.Background(), RepairOptions{ReadData: true})
			return err
		}},
		{"prune", func(s *Store) error {
			unlock, err := s.Lock(context.Background())
			if err != nil {
				return err
			}
			defer unlock()
			_, err = s.Prune(context.Background(), RetentionPolicy{KeepLast: 1}, false)
			return err
		}},
	}
	for place, rel := range places {
		t.Run(place, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "store")
			copyDir(t, clean, dir)
			p := filepath.Join(dir, rel)
			os.Remove(p)
			if err := syscall.Mkfifo(p, 0o600); err != nil {
				t.Fatal(err)
			}
			// Whatever blocks is let go at the end, so the test exits.
			defer func() {
				if f, err := os.OpenFile(p, os.O_RDWR|syscall.O_NONBLOCK, 0); err == nil {
					f.Close()
				}
			}()
			done := make(chan error, 1)
			var s *Store
			go func() {
				var err error
				s, err = Open(dir, Options{AllowSameFilesystem: true, Logger: testLogger(t)})
				done <- err
			}()
			select {
			case err := <-done:
				if err != nil {
					t.Logf("open: %v", err)
					if !strings.Contains(err.Error(), "FIFO") {
						t.Errorf("open fails without naming the FIFO: %v", err)
					}
					return
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Open blocked")
			}
			for _, op := range ops {
				done := make(chan error, 1)
				go func() { done <- op.f(s) }()
				select {
				case err := <-done:
					if errors.Is(err, errMissed) && place != "lock" {
						t.Error(err)
					} else if err != nil {
						t.Logf("%s: %v", op.name, err)
					}
				case <-time.After(10 * time.Second):
					t.Errorf("%s blocked on a FIFO at %s", op.name, rel)
				}
			}
		})
	}
}
