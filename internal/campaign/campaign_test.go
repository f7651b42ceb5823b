package campaign

import (
	"testing"
)

// TestCampaign is issue 13's fault campaign; see the package doc. It runs
// the sub-campaigns one after the other (the machine has 2 cores) and
// logs the summary table at the end.
func TestCampaign(t *testing.T) {
	if testing.Short() {
		t.Skip("the fault campaign takes minutes; not in -short")
	}
	k := readKnobs(t)
	t.Logf("seed %d, N %d; reproduce with: %s", k.seed, k.n, reproduce(k))
	bin := buildCLI(t)
	sum := newSummary()
	t.Cleanup(func() {
		text := sum.table(k)
		t.Log("\n" + text)
		if err := writeSummary(text); err != nil {
			t.Errorf("writing the summary: %v", err)
		}
	})
	t.Run("kill", func(t *testing.T) { runKill(t, bin, k, sum) })
	t.Run("damage", func(t *testing.T) { runDamage(t, bin, k, sum) })
	t.Run("enospc", func(t *testing.T) { runENOSPC(t, bin, k, sum) })
	t.Run("eio", func(t *testing.T) { runEIO(t, bin, k, sum) })
}
