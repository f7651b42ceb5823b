package agent

import (
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kubekeep/kubekeep/rsyncish"
)

// FuzzReadStatusFile: the agent's status file as found on the second disk
// (it is plain JSON, not sealed). What is not a FileState is an error
// naming the file; what is reads to a state every reader can use (every
// job a record: the agent's start and `kubekeep status` dereference each),
// ReadStatus builds the status document from it, and it writes back to a
// file that reads the same.
func FuzzReadStatusFile(f *testing.F) {
	now := time.Unix(1_800_000_000, 0).UTC()
	good, _ := json.Marshal(&FileState{PID: 7, Started: now, Updated: now, Jobs: map[string]*JobState{
		JobBackup: {LastSuccess: &now, LastError: "x", Failures: 2},
		JobPrune:  {NextRun: &now, Disabled: "not configured"},
	}, Etcd: EtcdState{Source: "api", Revision: 9, APIUp: true, DeltaGaps: 1, LastDeltaGap: &DeltaGap{}}})
	f.Add(good)
	f.Add([]byte(`{"pid":"x"}`))
	f.Add([]byte(`{"jobs":null,"etcd":{"time":"2026-13-01T00:00:00Z"}}`))
	f.Add([]byte(``))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 64<<10 {
			return
		}
		dir := filepath.Join(t.TempDir(), "store")
		store, err := rsyncish.Open(dir, rsyncish.Options{AllowSameFilesystem: true, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, StatusFile), data, 0o600); err != nil {
			t.Fatal(err)
		}
		st, err := ReadStatusFile(dir)
		if err != nil {
			if !strings.Contains(err.Error(), StatusFile) {
				t.Fatalf("error does not name the file: %v", err)
			}
			if _, err := ReadStatus(store, time.Now()); err == nil {
				t.Fatal("status built from an unreadable status file")
			}
			return
		}
		if st.Jobs == nil {
			t.Fatal("no jobs map")
		}
		for name, js := range st.Jobs {
			if js == nil {
				t.Fatalf("job %q has no record: the agent's start and ReadStatus dereference it", name)
			}
		}
		if _, err := ReadStatus(store, time.Now()); err != nil {
			t.Fatalf("status: %v", err)
		}
		if err := writeStatusFile(dir, st); err != nil {
			t.Fatal(err)
		}
		back, err := ReadStatusFile(dir)
		if err != nil {
			t.Fatalf("the file written back does not read: %v", err)
		}
		a, _ := json.Marshal(st)
		b, _ := json.Marshal(back)
		if string(a) != string(b) {
			t.Fatalf("read %s, written back and read %s", a, b)
		}
	})
}
