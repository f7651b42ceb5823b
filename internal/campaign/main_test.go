package campaign

import (
	"context"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The kubekeep binary, built once per test process.
var (
	cliOnce sync.Once
	cliPath string
	cliErr  error
	cliDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if cliDir != "" {
		os.RemoveAll(cliDir)
	}
	os.Exit(code)
}

// moduleRoot is the directory holding go.mod above the working directory
// (go test runs in the package directory).
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above the working directory")
		}
		dir = parent
	}
}

// buildCLI builds ./cmd/kubekeep (or takes KUBEKEEP_CAMPAIGN_BIN, a
// kubekeep built elsewhere) without -race (only the harness runs
// under the race detector) the way `make build` does, stripped, so the
// rescue kit it copies into every store stays small.
func buildCLI(t *testing.T) string {
	t.Helper()
	cliOnce.Do(func() {
		if p := os.Getenv("KUBEKEEP_CAMPAIGN_BIN"); p != "" {
			cliPath = p
			return
		}
		root, err := moduleRoot()
		if err != nil {
			cliErr = err
			return
		}
		cliDir, err = os.MkdirTemp("", "kubekeep-campaign-bin-")
		if err != nil {
			cliErr = err
			return
		}
		out := filepath.Join(cliDir, "kubekeep")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w -X main.version=campaign", "-o", out, "./cmd/kubekeep")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		start := time.Now()
		if b, err := cmd.CombinedOutput(); err != nil {
			cliErr = fmt.Errorf("go build ./cmd/kubekeep: %v\n%s", err, b)
			return
		}
		cliPath = out
		fmt.Fprintf(os.Stderr, "campaign: built %s in %s\n", out, time.Since(start).Round(time.Millisecond))
	})
	if cliErr != nil {
		t.Fatal(cliErr)
	}
	return cliPath
}

// knobs are the campaign's settings, from the environment.
type knobs struct {
	seed   uint64
	n      int
	strict bool
}

func readKnobs(t *testing.T) knobs {
	t.Helper()
	k := knobs{seed: uint64(time.Now().UnixNano()), n: 1}
	if s := os.Getenv("KUBEKEEP_CAMPAIGN_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("KUBEKEEP_CAMPAIGN_SEED=%q: not an unsigned integer", s)
		}
		k.seed = v
	}
	if s := os.Getenv("KUBEKEEP_CAMPAIGN_N"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 || v > 1000 {
			t.Fatalf("KUBEKEEP_CAMPAIGN_N=%q: want an integer from 1 to 1000", s)
		}
		k.n = v
	}
	k.strict = os.Getenv("KUBEKEEP_CAMPAIGN_STRICT") == "1"
	return k
}

// rngFor gives each sub-campaign its own stream from the seed, so running
// one alone (-run TestCampaign/damage) makes the same choices as in the
// whole campaign.
func rngFor(seed uint64, name string) *rand.Rand {
	h := fnv.New64a()
	h.Write([]byte(name))
	return rand.New(rand.NewPCG(seed, h.Sum64()))
}

// reproduce is the command line that repeats this run.
func reproduce(k knobs) string {
	run := ""
	if f := flagRun(); f != "" {
		run = " -run '" + f + "'"
	}
	return fmt.Sprintf("KUBEKEEP_CAMPAIGN_SEED=%d KUBEKEEP_CAMPAIGN_N=%d go test -race -v%s ./internal/campaign/", k.seed, k.n, run)
}

func flagRun() string {
	for i, a := range os.Args {
		if v, ok := strings.CutPrefix(a, "-test.run="); ok {
			return v
		}
		if a == "-test.run" && i+1 < len(os.Args) {
			return os.Args[i+1]
		}
	}
	return ""
}
