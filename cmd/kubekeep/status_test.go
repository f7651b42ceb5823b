package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/kubekeep/kubekeep/agent"
)

// A next run whose time has passed (the job starts any moment, or waits
// behind another) is "due now", never "in -7s"; a degraded newest version
// shows with its problems, and "latest" names the newest good version.
func TestStatusDueNowDegradedAndLatest(t *testing.T) {
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	past, soon := now.Add(-7*time.Second), now.Add(90*time.Second)
	good := &agent.VersionRef{ID: "20261201T090000Z-aaaaaaaa", Time: now.Add(-time.Hour), Status: "ok", Good: true}
	st := &agent.Status{
		Jobs: map[string]agent.JobState{
			"backup": {NextRun: &past},
			"prune":  {NextRun: &soon},
		},
		NewestVersion: &agent.VersionRef{ID: "20261201T095900Z-bbbbbbbb", Time: now.Add(-time.Minute), Status: "etcd-failed",
			Degraded: true, Problems: []string{"must-never-lose files are gone since version 20261201T090000Z-aaaaaaaa: /etc/kubernetes/pki/ca.key"}},
		NewestGood: good,
		Degraded:   true,
		Problems:   []string{"must-never-lose files are gone since version 20261201T090000Z-aaaaaaaa: /etc/kubernetes/pki/ca.key"},
	}
	var out bytes.Buffer
	if err := printStatus(&out, st, now); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	if strings.Contains(text, "-7s") || !lineHasAll(text, "backup", "due now") || !lineHasAll(text, "prune", "in 1m30s") {
		t.Errorf("next runs:\n%s", text)
	}
	if !lineHasAll(text, "newest version:", "etcd-failed,degraded") || !lineHasAll(text, "DEGRADED") ||
		!lineHasAll(text, "- must-never-lose", "/etc/kubernetes/pki/ca.key") || !lineHasAll(text, "latest (good):", good.ID) {
		t.Errorf("degraded newest version and latest:\n%s", text)
	}
}

// A gap in the delta journal shows with its revisions and times, and how
// far the deltas are durable (issue 13 item 18: the gap was only in the
// log).
func TestStatusShowsDeltaGap(t *testing.T) {
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	st := &agent.Status{Jobs: map[string]agent.JobState{}, Etcd: &agent.EtcdState{
		APIUp: true, Revision: 30, Source: "api", DeltaRevision: 41, DeltaTime: now.Add(-2 * time.Second), DeltaGaps: 2,
		LastDeltaGap: &agent.DeltaGap{FromRevision: 15, ToRevision: 22, FromTime: now.Add(-10 * time.Minute), ToTime: now.Add(-9 * time.Minute)},
	}}
	var out bytes.Buffer
	if err := printStatus(&out, st, now); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	if !lineHasAll(text, "etcd deltas:", "revision 41", "2s ago") ||
		!lineHasAll(text, "DELTA GAP:", "2 so far", "revisions 15 to 22", "2026-12-01T09:50:00Z", "2026-12-01T09:51:00Z") {
		t.Errorf("delta state and gap:\n%s", text)
	}
}
