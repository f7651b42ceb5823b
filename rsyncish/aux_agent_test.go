package rsyncish

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The agent's status and lock files live at the top of the store and
// change every run: verify neither hashes nor warns about them (every
// operator's verify printed two warnings before), while a stray file still
// gets its warning.
func TestVerifyKnowsTheAgentsFiles(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir, 0)
	for _, n := range []string{"agent-status.json", "agent.lock", "stray.txt"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("{}"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := s.Verify(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	all := strings.Join(rep.Warnings, "\n")
	if strings.Contains(all, "agent-status.json") || strings.Contains(all, "agent.lock") {
		t.Errorf("verify warns about the agent's own files:\n%s", all)
	}
	if !strings.Contains(all, "stray.txt") {
		t.Errorf("verify no longer warns about a stray top-level file:\n%s", all)
	}
}
