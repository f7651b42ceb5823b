package rsyncish

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// MapNeeded hands out what ReadNeeded reads, segment for segment, as
// views of the mapped files, and refuses a damaged one as Read does.
func TestJournalMapNeededIsReadNeeded(t *testing.T) {
	s := openTest(t, t.TempDir(), 0)
	j, err := s.Journal("etcd-deltas")
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	for i := range uint64(20) {
		data := bytes.Repeat([]byte(fmt.Sprintf("segment %d ", i)), int(i)*100+1)
		if err := j.Append(data, 10*i+1, 10*i+10, t0.Add(time.Duration(i)*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	for _, target := range [][2]uint64{{0, 0}, {35, 120}, {0, 5}} {
		want, wantSegs, err := j.ReadNeeded(target[0], target[1], time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		got, segs, release, err := j.MapNeeded(target[0], target[1], time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) || len(segs) != len(wantSegs) || len(want) == 0 {
			t.Fatalf("after %d until %d: %d segments mapped, %d read", target[0], target[1], len(got), len(want))
		}
		for i := range want {
			if !bytes.Equal(got[i], want[i]) || segs[i] != wantSegs[i] {
				t.Errorf("after %d until %d: segment %s mapped differs from what Read gives", target[0], target[1], segs[i].File)
			}
		}
		release()
	}
	segs, _ := j.List()
	victim := filepath.Join(s.dir, journalsDir, "etcd-deltas", segs[7].File)
	raw, err := os.ReadFile(victim)
	if err != nil {
		t.Fatal(err)
	}
	raw[len(raw)/2] ^= 1
	if err := os.WriteFile(victim, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := j.MapNeeded(0, 0, time.Time{}); err == nil {
		t.Fatalf("a flipped bit in %s: mapped without an error", segs[7].File)
	}
	if _, _, _, err := j.MapNeeded(0, segs[6].Last, time.Time{}); err != nil {
		t.Fatalf("the segments before the damaged one: %v", err)
	}
}
