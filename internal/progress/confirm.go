package progress

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// ErrNotConfirmed is what Confirm returns when the command must not go on:
// nobody at a terminal to ask and no --yes, or the person said no. Commands
// exit 2 with its message.
var ErrNotConfirmed = errors.New("not confirmed")

// ConfirmOptions describe one question.
type ConfirmOptions struct {
	// Yes is the --yes flag: go on without asking.
	Yes bool
	// What names the change in the refusal ("restore over the running node
	// under /"), Summary is what will change, shown before the question.
	What    string
	Summary []string
	// In and Out are the command's stdin and stderr. The question is asked
	// only when Out is a terminal and In is one too (or, when In is not,
	// /dev/tty opens): a person is there to read it and answer.
	In  io.Reader
	Out io.Writer
	// Expect, when set, is what the person must type instead of y (the
	// set id of a cloud rollback).
	Expect string
	// OpenTTY opens the terminal to read from when In is not one; nil:
	// /dev/tty.
	OpenTTY func() (io.ReadCloser, error)
	// Context ends the wait for an answer (Ctrl-C: the CLI's context is
	// cancelled on SIGINT, which then no longer kills the process); nil:
	// wait for the answer.
	Context context.Context
}

// Confirm shows the summary and asks "Proceed? [y/N]" (or for Expect),
// returning nil only for a yes. Without a terminal and without Yes it
// refuses at once, with an error naming --yes; nothing is read.
func Confirm(o ConfirmOptions) error {
	if o.Yes {
		return nil
	}
	in, closeIn := o.terminal()
	if in == nil {
		return fmt.Errorf("%w: %s needs a yes, and there is no terminal to ask: re-run with --yes to go on (--dry-run shows what it would do)", ErrNotConfirmed, o.What)
	}
	defer closeIn()
	out := o.Out
	for _, l := range o.Summary {
		fmt.Fprintln(out, l)
	}
	if o.Expect != "" {
		fmt.Fprintf(out, "Type %s to proceed: ", o.Expect)
	} else {
		fmt.Fprint(out, "Proceed? [y/N] ")
	}
	line, err := readLine(o.Context, in)
	if err != nil && line == "" {
		fmt.Fprintln(out)
		return fmt.Errorf("%w: no answer read (%v): nothing changed", ErrNotConfirmed, err)
	}
	ans := strings.TrimSpace(line)
	if o.Expect != "" {
		if ans == o.Expect {
			return nil
		}
		return fmt.Errorf("%w: the answer did not match %s: nothing changed", ErrNotConfirmed, o.Expect)
	}
	if a := strings.ToLower(ans); a == "y" || a == "yes" {
		return nil
	}
	return fmt.Errorf("%w: %s: nothing changed", ErrNotConfirmed, o.What)
}

// readLine reads one line from in, or gives up when ctx ends.
func readLine(ctx context.Context, in io.Reader) (string, error) {
	if ctx == nil {
		return bufio.NewReader(in).ReadString('\n')
	}
	type answer struct {
		line string
		err  error
	}
	ch := make(chan answer, 1)
	go func() {
		l, err := bufio.NewReader(in).ReadString('\n')
		ch <- answer{l, err}
	}()
	select {
	case a := <-ch:
		return a.line, a.err
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// terminal is where the answer is read from, or nil when no person can be
// asked.
func (o ConfirmOptions) terminal() (io.Reader, func()) {
	if !IsTerminal(o.Out) {
		return nil, nil
	}
	if IsTerminal(o.In) {
		return o.In, func() {}
	}
	open := o.OpenTTY
	if open == nil {
		open = func() (io.ReadCloser, error) { return os.Open("/dev/tty") }
	}
	tty, err := open()
	if err != nil {
		return nil, nil
	}
	return tty, func() { tty.Close() }
}
