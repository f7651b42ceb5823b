package config

import (
	"fmt"
	"sort"
	"strings"
)

// Error is one problem in a config file, positioned so an operator can jump
// to it: "kubekeep.yaml:12: schedules.backup: must be at least 1s, got 10ms".
// A Warning is a setting that is valid but probably not what the operator
// wants; it prints with "warning: " before the message and never stops
// kubekeep.
type Error struct {
	File    string
	Line    int
	Key     string
	Msg     string
	Warning bool
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	if e.Key != "" {
		if b.Len() > 0 {
			b.WriteString(": ")
		}
		b.WriteString(e.Key)
	}
	if b.Len() > 0 {
		b.WriteString(": ")
	}
	if e.Warning {
		b.WriteString("warning: ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors collects every problem found in one file, so one run of
// `kubekeep config validate` shows them all, in the order of the file.
type Errors []*Error

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// sorted orders the problems by line (those without one last), keeping the
// order they were found in on the same line.
func (es Errors) sorted() Errors {
	sort.SliceStable(es, func(i, j int) bool {
		a, b := es[i].Line, es[j].Line
		if a == 0 || b == 0 {
			return a != 0 && b == 0
		}
		return a < b
	})
	return es
}

// orNil returns es as an error, or nil when it is empty (a nil Errors in an
// error interface is not a nil error).
func (es Errors) orNil() error {
	if len(es) == 0 {
		return nil
	}
	return es.sorted()
}
