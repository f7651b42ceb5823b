package rsyncish

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"time"

	"github.com/kubekeep/kubekeep/rsyncish/format"
)

// rangeRecord is a sealed record of a run of revisions a journal holds no
// segment for, named <from>-<to><ext>: a break (the chain restarted,
// Break) or a trim (prune removed them, TrimRecord).
type rangeRecord struct {
	From, To uint64
	Time     time.Time
	File     string
}

func rangeRecordName(from, to uint64, ext string) string {
	return fmt.Sprintf("%020d-%020d%s", from, to, ext)
}

// writeRangeRecord durably writes the record of from..to at t.
func (j *Journal) writeRangeRecord(ext string, from, to uint64, t time.Time) error {
	data, err := format.SealJSON(map[string]any{"from": from, "to": to, "time": t.UTC()})
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(j.dir, rangeRecordName(from, to, ext)), data, 0o600)
}

// rangeRecords lists the records with extension ext, each checked against
// its checksum and its name; a damaged one is returned as an error naming
// it ("damaged <kind> record ..."), after the good ones.
func (j *Journal) rangeRecords(ext, kind string) ([]rangeRecord, error) {
	ents, err := readStoreDir(j.dir)
	if err != nil {
		return nil, fmt.Errorf("journal %s: %w", j.name, err)
	}
	return j.rangeRecordsIn(ents, ext, kind)
}

// rangeRecordsIn is rangeRecords among a directory's entries.
func (j *Journal) rangeRecordsIn(ents []fs.DirEntry, ext, kind string) ([]rangeRecord, error) {
	var out []rangeRecord
	var bad []string
	for _, e := range ents {
		base, ok := strings.CutSuffix(e.Name(), ext)
		if !ok {
			continue
		}
		var r struct {
			From, To uint64
			Time     time.Time
		}
		data, err := readStoreFile(filepath.Join(j.dir, e.Name()))
		if err == nil {
			err = format.UnsealJSON(data, &r)
		}
		if err == nil && base+ext != rangeRecordName(r.From, r.To, ext) {
			err = errors.New("does not hold what its name says")
		}
		if err != nil {
			bad = append(bad, e.Name()+": "+err.Error())
			continue
		}
		out = append(out, rangeRecord{From: r.From, To: r.To, Time: r.Time, File: e.Name()})
	}
	if len(bad) > 0 {
		return out, fmt.Errorf("journal %s: damaged %s record %s", j.name, kind, strings.Join(bad, "; "))
	}
	return out, nil
}
