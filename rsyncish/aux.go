package rsyncish

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/kubekeep/kubekeep/rsyncish/format"
)

// Aux files live at the top of the store so that an operator with nothing
// but the second disk finds them: the kubekeep binary and RESTORE.md. Each
// is recorded (size, blake3) in the sealed aux.json when written, so that
// verify catches a rotted rescue kit before the day it is needed.
const auxFile = "aux.json"

var reservedNames = map[string]bool{configFile: true, lockFile: true, readLockFile: true, damageFile: true, auxFile: true,
	agentStatusFile: true, agentLockFile: true, midxFile: true}

// The agent's own top-level files (package agent's StatusFile and
// LockFile): state that changes every run, not a kit to check, so verify
// neither hashes them nor warns about them.
const (
	agentStatusFile = "agent-status.json"
	agentLockFile   = "agent.lock"
)

// WriteAux atomically writes a top-level extra file (perm is masked to
// owner-only bits: 0600 for RESTORE.md, 0700 for the binary) and records
// its hash in aux.json. The record names both the old and the new hash
// while the file is replaced, so a crash leaves no false alarm. The caller
// holds the lock (a backup does).
func (s *Store) WriteAux(name string, data []byte, perm os.FileMode) error {
	if name == "" || name != filepath.Base(name) || strings.HasPrefix(name, ".") || reservedNames[name] || strings.Contains(name, tmpMarker) {
		return fmt.Errorf("aux file name %q is not allowed", name)
	}
	for _, d := range storeDirs {
		if name == d {
			return fmt.Errorf("aux file name %q is a store directory", name)
		}
	}
	rec, err := s.readAux()
	if err != nil {
		s.log.Warn("rewriting an unreadable "+auxFile, "store", s.dir, "err", err)
	}
	sum := format.Sum(data).String()
	old := rec.Files[name]
	entry := format.AuxFile{Size: int64(len(data)), Blake3: sum, Time: time.Now().UTC()}
	if old.Blake3 != "" && old.Blake3 != sum {
		entry.Prev = old.Blake3
		rec.Files[name] = entry
		if err := s.writeAux(rec); err != nil {
			return err
		}
	}
	perm &= 0o700
	if err := writeFileAtomic(s.path(name), data, perm); err != nil {
		return fmt.Errorf("writing %s to the store: %w", name, err)
	}
	// The temp file was created with perm under the umask; make it exact.
	if err := os.Chmod(s.path(name), perm); err != nil {
		return err
	}
	entry.Prev = ""
	rec.Files[name] = entry
	if err := s.writeAux(rec); err != nil {
		return err
	}
	if bad := s.damagedAux(); slices.Contains(bad, name) {
		packs, _, _ := s.readDamage()
		return s.writeDamageAll(packs, slices.DeleteFunc(bad, func(n string) bool { return n == name }))
	}
	return nil
}

// AuxNeedsWrite reports whether the aux file name should be written again
// even if it looks current: it is missing, has no recorded hash (an older
// kubekeep wrote it), is not the size recorded, or the last verify found it
// damaged. It reads no content: a backup may ask every time.
func (s *Store) AuxNeedsWrite(name string) bool {
	rec, err := s.readAux()
	if err != nil {
		return true
	}
	want, ok := rec.Files[name]
	fi, err := os.Lstat(s.path(name))
	if !ok || err != nil || !fi.Mode().IsRegular() || fi.Size() != want.Size || want.Prev != "" {
		return true
	}
	return slices.Contains(s.damagedAux(), name)
}

func (s *Store) readAux() (format.AuxFiles, error) {
	rec := format.AuxFiles{Files: map[string]format.AuxFile{}}
	data, err := readStoreFile(s.path(auxFile))
	if errors.Is(err, fs.ErrNotExist) {
		return rec, nil
	}
	if err == nil {
		err = format.UnsealJSON(data, &rec)
	}
	if err != nil {
		return format.AuxFiles{Files: map[string]format.AuxFile{}}, fmt.Errorf("%s: %w", auxFile, err)
	}
	if rec.Files == nil {
		rec.Files = map[string]format.AuxFile{}
	}
	return rec, nil
}

func (s *Store) writeAux(rec format.AuxFiles) error {
	data, err := format.SealJSON(rec)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(s.path(auxFile), data, 0o600); err != nil {
		return fmt.Errorf("writing %s: %w", auxFile, err)
	}
	return nil
}

// aux checks every aux file against its record: present, regular,
// its recorded size and hash. Files at the top of the store that no record
// names are warnings (an older kubekeep wrote them).
func (v *verifier) aux() {
	s := v.s
	rec, err := s.readAux()
	if err != nil {
		v.problem(Problem{Kind: "aux", Object: auxFile, Detail: err.Error() + " (the next backup writes it again)"})
	}
	names := make([]string, 0, len(rec.Files))
	for name := range rec.Files {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		want := rec.Files[name]
		detail := ""
		data, err := readStoreFile(s.path(name))
		switch {
		case err != nil:
			detail = err.Error()
		case int64(len(data)) != want.Size && want.Prev == "":
			detail = fmt.Sprintf("%d bytes, %d when it was written", len(data), want.Size)
		default:
			v.r.BytesRead += int64(len(data))
			if sum := format.Sum(data).String(); sum != want.Blake3 && (want.Prev == "" || sum != want.Prev) {
				detail = "content does not match the hash recorded when it was written (bit rot?)"
			}
		}
		if detail != "" {
			v.problem(Problem{Kind: "aux", Object: name, Detail: detail + "; the next backup writes it again (the rescue kit must work from this disk alone)"})
			v.auxBad = append(v.auxBad, name)
		}
	}
	ents, err := readStoreDir(s.dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		n := e.Name()
		if e.IsDir() || reservedNames[n] || strings.Contains(n, tmpMarker) || n == "lost+found" {
			continue
		}
		if _, ok := rec.Files[n]; !ok {
			v.r.Warnings = append(v.r.Warnings, "top-level file with no recorded hash (written by an older kubekeep, or not by kubekeep): "+n)
		}
	}
}
