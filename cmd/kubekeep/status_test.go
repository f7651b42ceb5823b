package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kubekeep/kubekeep/agent"
	"github.com/kubekeep/kubekeep/rsyncish"
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

// richStatus has every line kubekeep status prints, in every state the
// colours tell apart.
func richStatus(now time.Time) *agent.Status {
	at := func(d time.Duration) *time.Time { t := now.Add(-d); return &t }
	lag, tierLag, slowLag := 1.5, 12.0, 1000.0
	return &agent.Status{
		Jobs: map[string]agent.JobState{
			"backup":         {LastSuccess: at(10 * time.Second), NextRun: &now},
			"drill":          {LastSuccess: at(25 * time.Hour), LastFailure: at(time.Hour), LastError: "drill of v1 did not verify"},
			"prune":          {LastSuccess: at(2 * time.Hour), LastFailure: at(3 * time.Hour), LastError: "old"},
			"cloud-snapshot": {Disabled: "cloud.enabled is false"},
			"verify":         {},
		},
		NewestVersion: &agent.VersionRef{ID: "20261201T095900Z-bbbbbbbb", Time: now.Add(-time.Minute), Status: "etcd-failed",
			Degraded: true, Problems: []string{"must-never-lose files are gone: /etc/kubernetes/pki/ca.key"}},
		NewestGood:          &agent.VersionRef{ID: "20261201T090000Z-aaaaaaaa", Time: now.Add(-time.Hour), Status: "ok", Good: true},
		NewestVerified:      &agent.VerifiedRef{ID: "20261130T090000Z-cccccccc", Time: now.Add(-25 * time.Hour), AgeSeconds: 25 * 3600},
		Degraded:            true,
		Problems:            []string{"must-never-lose files are gone: /etc/kubernetes/pki/ca.key"},
		EtcdDeltaLagSeconds: &lag,
		Store:               agent.StoreUsage{Used: 3 << 30, Free: 40 << 30},
		Versions:            12,
		Agent:               agent.AgentInfo{Updated: at(time.Minute), StoreError: "read-only file system"},
		Etcd: &agent.EtcdState{APIUp: false, Revision: 30, Source: "api", Kind: "journal", Base: "20261201T090000Z-aaaaaaaa",
			Error: "etcd unreachable", FullVersions: 2, JournalVersions: 10, FullReason: "a full snapshot was asked for",
			DeltaRevision: 41, DeltaTime: now.Add(-2 * time.Second), DeltaGaps: 1,
			LastDeltaGap: &agent.DeltaGap{FromRevision: 15, ToRevision: 22, FromTime: now.Add(-10 * time.Minute), ToTime: now.Add(-9 * time.Minute)}},
		Offsite: map[string]agent.OffsiteStatus{
			"dr":   {LastSuccess: at(3 * time.Second), LagSeconds: &tierLag, NewestVersion: "20261201T095500Z-aaaaaaaa"},
			"slow": {LastSuccess: at(20 * time.Minute), LagSeconds: &slowLag},
			"new":  {},
		},
	}
}

// The text output scripts read is unchanged by the colours: byte for byte
// what kubekeep status printed before them when it writes to a pipe.
func TestStatusPlainTextUnchanged(t *testing.T) {
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	var out bytes.Buffer
	if err := printStatus(&out, richStatus(now), now); err != nil {
		t.Fatal(err)
	}
	if out.String() != plainGolden {
		t.Errorf("plain status changed:\n%s\nwant:\n%s", out.String(), plainGolden)
	}
}

const plainGolden = "agent:            NOT RUNNING (last seen 1m0s ago)\n" +
	"second disk:      NOT WRITING: read-only file system\n" +
	"newest version:   20261201T095900Z-bbbbbbbb (1m0s ago, etcd-failed,degraded)\n" +
	"latest (good):    20261201T090000Z-aaaaaaaa (1h0m0s ago): what a restore or get takes; newer versions are not good\n" +
	"DEGRADED:         the newest version is degraded:\n" +
	"                  - must-never-lose files are gone: /etc/kubernetes/pki/ca.key\n" +
	"newest verified:  20261130T090000Z-cccccccc (25h0m0s old)\n" +
	"etcd delta lag:   1.5s\n" +
	"etcd:             API DOWN, last version's revision 30 (api), a journal version on base 20261201T090000Z-aaaaaaaa: etcd unreachable\n" +
	"etcd versions:    2 full, 10 journal; last full because a full snapshot was asked for\n" +
	"etcd deltas:      durable through revision 41 (2s ago)\n" +
	"DELTA GAP:        1 so far; newest: revisions 15 to 22, between 2026-12-01T09:50:00Z and 2026-12-01T09:51:00Z: no --at inside it\n" +
	"store:            3.0GiB used, 40.0GiB free, 12 versions\n" +
	"off-site dr:      last sync 3s ago; holds cluster state 12s old, newest version 20261201T095500Z-aaaaaaaa\n" +
	"off-site new:     last sync never; holds nothing known yet, newest version -\n" +
	"off-site slow:    last sync 20m0s ago; holds cluster state 16m40s old, newest version -\n" +
	"\n" +
	"JOB             LAST SUCCESS  LAST FAILURE  NEXT RUN                     ERROR\n" +
	"backup          10s ago       never         due now                      \n" +
	"cloud-snapshot  never         never         off: cloud.enabled is false  \n" +
	"drill           25h0m0s ago   1h0m0s ago    -                            drill of v1 did not verify\n" +
	"prune           2h0m0s ago    3h0m0s ago    -                            \n" +
	"verify          never         never         -                            \n"

var ansiCode = regexp.MustCompile("\x1b\\[[0-9;]*m")

// On a terminal, values are green when fine, yellow when stale or
// degraded, red when failing; the job table's rows are painted whole so
// the columns stay aligned; without the escape codes the text is the
// plain one.
func TestStatusColours(t *testing.T) {
	const green, yellow, red = "\x1b[32m", "\x1b[33m", "\x1b[1;31m"
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	var out bytes.Buffer
	if err := printStatusColor(&out, richStatus(now), now, palette{on: true}); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	if got := ansiCode.ReplaceAllString(text, ""); got != plainGolden {
		t.Errorf("coloured status without its colours differs from the plain one:\n%s", got)
	}
	painted := func(color, s string) string { return color + s + ansiReset }
	for _, c := range []struct{ line, want string }{
		{"agent:", painted(red, "NOT RUNNING (last seen 1m0s ago)")},
		{"second disk:", painted(red, "NOT WRITING: read-only file system")},
		{"newest version:", painted(red, "etcd-failed,degraded")},
		{"latest (good):", painted(yellow, "what a restore or get takes; newer versions are not good")},
		{"the newest version is degraded", painted(yellow, "DEGRADED:")},
		{"newest verified:", painted(yellow, "25h0m0s old")},
		{"etcd delta lag:", painted(green, "1.5s")},
		{"etcd:", "API " + painted(red, "DOWN")},
		{"etcd:", painted(red, "etcd unreachable")},
		{"no --at inside it", painted(yellow, "DELTA GAP:")},
		{"off-site dr:", painted(green, "cluster state 12s old")},
		{"off-site slow:", painted(red, "cluster state 16m40s old")},
		{"off-site new:", painted(yellow, "nothing known yet")},
		{"off-site new:", painted(yellow, "never")},
	} {
		if !lineHasAll(text, c.line, c.want) {
			t.Errorf("no line with %q and %q:\n%s", c.line, c.want, text)
		}
	}
	rows := map[string]string{}
	for _, line := range strings.Split(text, "\n") {
		if f := strings.Fields(ansiCode.ReplaceAllString(line, "")); len(f) > 0 {
			rows[f[0]] = line
		}
	}
	for job, color := range map[string]string{"backup": green, "prune": green, "drill": red, "cloud-snapshot": "", "verify": "", "JOB": ""} {
		line := rows[job]
		switch {
		case color == "" && strings.Contains(line, "\x1b"):
			t.Errorf("row %s is coloured: %q", job, line)
		case color != "" && (!strings.HasPrefix(line, color+job) || !strings.HasSuffix(line, ansiReset)):
			t.Errorf("row %s: %q, want it painted %q whole", job, line, color)
		}
	}

	// A healthy store: all green.
	st := richStatus(now)
	st.Agent = agent.AgentInfo{Running: true, PID: 42}
	st.NewestVersion = st.NewestGood
	st.Degraded, st.Problems = false, nil
	st.NewestVerified.AgeSeconds = 3600
	st.Etcd.APIUp, st.Etcd.Error = true, ""
	out.Reset()
	if err := printStatusColor(&out, st, now, palette{on: true}); err != nil {
		t.Fatal(err)
	}
	text = out.String()
	for _, c := range []struct{ line, want string }{
		{"agent:", painted(green, "running (pid 42)")},
		{"newest version:", painted(green, "ok")},
		{"latest (good):", painted(green, "the newest version")},
		{"newest verified:", painted(green, "1h0m0s old")},
		{"etcd:", "API " + painted(green, "up")},
	} {
		if !lineHasAll(text, c.line, c.want) {
			t.Errorf("healthy: no line with %q and %q:\n%s", c.line, c.want, text)
		}
	}
	// Past the alerts' thresholds: red.
	st.NewestVerified.AgeSeconds = 3 * 86400
	lag := 75.0
	st.EtcdDeltaLagSeconds = &lag
	st.NewestVersion = &agent.VersionRef{ID: "v", Time: now, Status: "ok", Degraded: true}
	out.Reset()
	if err := printStatusColor(&out, st, now, palette{on: true}); err != nil {
		t.Fatal(err)
	}
	text = out.String()
	for _, c := range []struct{ line, want string }{
		{"newest verified:", painted(red, "72h0m0s old")},
		{"etcd delta lag:", painted(red, "75.0s")},
		{"newest version:", painted(yellow, "ok,degraded")},
	} {
		if !lineHasAll(text, c.line, c.want) {
			t.Errorf("stale: no line with %q and %q:\n%s", c.line, c.want, text)
		}
	}
}

// openPty returns the two ends of a new pseudo-terminal.
func openPty(t *testing.T) (master, tty *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("no pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return m, s
}

// --color auto colours a terminal only, and not when NO_COLOR is set or
// TERM is dumb; always and never do as they say.
func TestStatusColorChoice(t *testing.T) {
	_, tty := openPty(t)
	file, err := os.Create(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	env := func(kv ...string) func(string) string {
		return func(k string) string {
			for i := 0; i+1 < len(kv); i += 2 {
				if kv[i] == k {
					return kv[i+1]
				}
			}
			return ""
		}
	}
	for _, c := range []struct {
		name, mode string
		w          io.Writer
		env        func(string) string
		want       bool
	}{
		{"terminal", "auto", tty, env("TERM", "xterm"), true},
		{"terminal, NO_COLOR", "auto", tty, env("TERM", "xterm", "NO_COLOR", "1"), false},
		{"terminal, TERM=dumb", "auto", tty, env("TERM", "dumb"), false},
		{"file", "auto", file, env("TERM", "xterm"), false},
		{"pipe or buffer", "auto", &bytes.Buffer{}, env(), false},
		{"always, buffer", "always", &bytes.Buffer{}, env("NO_COLOR", "1"), true},
		{"never, terminal", "never", tty, env("TERM", "xterm"), false},
	} {
		got, err := useColor(c.mode, c.w, c.env)
		if err != nil || got != c.want {
			t.Errorf("%s: useColor(%s) = %v, %v; want %v", c.name, c.mode, got, err, c.want)
		}
	}
	if _, err := useColor("yes", tty, env()); err == nil || !strings.Contains(err.Error(), "--color") {
		t.Errorf("--color yes: %v", err)
	}
}

// The command: output to a pipe is the plain text, --color always paints
// it, and -o json is never coloured.
func TestStatusCommandColor(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	if _, err := rsyncish.Open(dir, rsyncish.Options{AllowSameFilesystem: true, Logger: slog.New(slog.DiscardHandler)}); err != nil {
		t.Fatal(err)
	}
	plainText, err := runCLI(t, "status", "--store", dir)
	if err != nil {
		t.Fatal(err)
	}
	never, _ := runCLI(t, "status", "--store", dir, "--color", "never")
	always, err := runCLI(t, "status", "--store", dir, "--color", "always")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(plainText, "\x1b") || ansiCode.ReplaceAllString(never, "") != never {
		t.Errorf("status to a pipe is coloured:\n%q", plainText)
	}
	if !strings.Contains(always, "\x1b[1;31mNOT RUNNING") || ansiCode.ReplaceAllString(always, "") != ansiCode.ReplaceAllString(plainText, "") {
		t.Errorf("--color always:\n%q\nplain:\n%q", always, plainText)
	}
	jsonAlways, err := runCLI(t, "status", "--store", dir, "-o", "json", "--color", "always")
	if err != nil || strings.Contains(jsonAlways, "\x1b") || !json.Valid([]byte(jsonAlways)) {
		t.Errorf("-o json --color always: %v\n%s", err, jsonAlways)
	}
	if _, err := runCLI(t, "status", "--store", dir, "--color", "sometimes"); err == nil {
		t.Error("--color sometimes accepted")
	}
}
