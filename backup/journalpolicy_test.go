package backup

import (
	"strings"
	"testing"
	"time"

	"github.com/kubekeep/kubekeep/config"
)

// The full-snapshot policy: never before minInterval, then when the
// journal since the last full one reaches journalShare of the db, always
// after maxInterval; a db of 8 GiB with a quiet journal gets one a day,
// not one an hour.
func TestFullSnapshotPolicy(t *testing.T) {
	const gib = 1 << 30
	p := config.DefaultFullSnapshot()
	for _, tc := range []struct {
		name          string
		age           time.Duration
		db, journal   int64
		wantFull      bool
		reasonContain string
	}{
		{"young base, huge journal", 30 * time.Minute, gib, gib, false, ""},
		{"an hour, journal under the share", time.Hour, 8 * gib, 100 << 20, false, ""},
		{"an hour, journal past the share", time.Hour, gib, gib / 4, true, "journalShare"},
		{"a day old, quiet", 24 * time.Hour, 8 * gib, 1 << 20, true, "maxInterval"},
		{"23h, quiet 8 GiB", 23 * time.Hour, 8 * gib, 1 << 20, false, ""},
	} {
		why := FullReason(p, tc.age, tc.db, tc.journal)
		if (why != "") != tc.wantFull || !strings.Contains(why, tc.reasonContain) {
			t.Errorf("%s: reason %q, want full=%v (%s)", tc.name, why, tc.wantFull, tc.reasonContain)
		}
	}
	// A zero policy (built in code) means the defaults, not "always full".
	if why := FullReason(config.FullSnapshot{}, 10*time.Minute, gib, 0); why != "" {
		t.Errorf("zero policy at 10m: %q", why)
	}
}
