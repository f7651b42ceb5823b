package main

import (
	"bytes"
	"testing"
	"time"

	"github.com/kubekeep/kubekeep/agent"
)

// kubekeep status shows each off-site tier: its last sync, how old the
// newest cluster state it holds is, its newest version (issue 15).
func TestStatusShowsOffsiteTiers(t *testing.T) {
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	last, lag := now.Add(-3*time.Second), 12.0
	st := &agent.Status{Jobs: map[string]agent.JobState{}, Offsite: map[string]agent.OffsiteStatus{
		"dr":  {LastSuccess: &last, LagSeconds: &lag, NewestVersion: "20261201T095500Z-aaaaaaaa"},
		"new": {},
	}}
	var out bytes.Buffer
	if err := printStatus(&out, st, now); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	if !lineHasAll(text, "off-site dr:", "last sync 3s ago", "12s old", "20261201T095500Z-aaaaaaaa") ||
		!lineHasAll(text, "off-site new:", "last sync never", "nothing known yet") {
		t.Errorf("off-site tiers:\n%s", text)
	}
}
