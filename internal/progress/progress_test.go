package progress

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

// fakeClock advances by step at each reading.
func fakeClock(step time.Duration) func() time.Time {
	t := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	return func() time.Time { t = t.Add(step); return t }
}

// Plain mode writes one line per step when it ends, with the bytes it
// counted, the time and the rate; a step without bytes says how long it
// took; nothing else is written (no bar, no escape codes).
func TestPlainOneLinePerStep(t *testing.T) {
	var b bytes.Buffer
	r := &reporter{w: &b, now: fakeClock(2 * time.Second)}
	r.Step("restore phase preflight")
	r.Step("restore phase etcd")
	r.Bytes(64 << 20)
	for range 64 {
		r.Add(1 << 20)
	}
	r.Done()
	r.Done() // a second Done writes nothing
	want := "restore phase preflight: done in 2s\nrestore phase etcd: 64.0 MiB in 2s (32.0 MiB/s)\n"
	if b.String() != want {
		t.Fatalf("plain output\n%q\nwant\n%q", b.String(), want)
	}
}

func TestModeFor(t *testing.T) {
	for env, want := range map[string]Mode{"": ModePlain, "bar": ModeBar, "plain": ModePlain, "off": ModeOff} {
		t.Setenv(EnvVar, env)
		if m, err := ModeFor(&bytes.Buffer{}); err != nil || m != want {
			t.Errorf("%s=%q: %v %v, want %v", EnvVar, env, m, err, want)
		}
	}
	t.Setenv(EnvVar, "fancy")
	if _, err := ModeFor(io.Discard); err == nil || !strings.Contains(err.Error(), EnvVar) {
		t.Fatalf("a bad %s must be an error naming it: %v", EnvVar, err)
	}
}

// A bar forced on a non-terminal writer shows the bytes, the rate and
// the time left while the step runs, and leaves only the summary line.
func TestBarShowsBytesAndEnds(t *testing.T) {
	var b bytes.Buffer
	r := New(&b, ModeBar)
	r.Step("restore etcd")
	r.Bytes(10 << 20)
	for range 5 {
		r.Add(1 << 20)
		time.Sleep(120 * time.Millisecond) // past the bar's throttle
	}
	mid := b.String()
	if !strings.Contains(mid, "restore etcd") || !strings.Contains(mid, "MiB") || !strings.Contains(mid, "/s") {
		t.Fatalf("bar while running: %q", mid)
	}
	r.Done()
	out := b.String()
	last := out[strings.LastIndex(out, "\033[K")+len("\033[K"):]
	if !strings.HasPrefix(last, "restore etcd: 5.0 MiB in ") {
		t.Fatalf("after Done the line is %q, want the summary", last)
	}
	if w := Wrap(r, &b); w == io.Writer(&b) {
		t.Fatal("Wrap of a bar must clear its line")
	}
}

// Without a terminal Confirm refuses at once, naming --yes, and reads
// nothing; --yes goes on.
func TestConfirmWithoutTerminal(t *testing.T) {
	in := strings.NewReader("y\n")
	var out bytes.Buffer
	err := Confirm(ConfirmOptions{What: "the restore", Summary: []string{"replaces X"}, In: in, Out: &out,
		OpenTTY: func() (io.ReadCloser, error) { t.Fatal("no terminal: /dev/tty must not be opened"); return nil, nil }})
	if !errors.Is(err, ErrNotConfirmed) || !strings.Contains(err.Error(), "--yes") {
		t.Fatalf("no terminal, no --yes: %v", err)
	}
	if out.Len() != 0 || in.Len() != 2 {
		t.Fatalf("refusal wrote %q and read %d bytes", out.String(), 2-in.Len())
	}
	if err := Confirm(ConfirmOptions{Yes: true, In: in, Out: &out}); err != nil {
		t.Fatal(err)
	}
}

func TestHumanBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1536: "1.5 KiB", 64 << 20: "64.0 MiB", 3 << 30: "3.0 GiB"} {
		if got := HumanBytes(n); got != want {
			t.Errorf("HumanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}
