package config

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"testing"

	"gopkg.in/yaml.v3"
)

var positioned = regexp.MustCompile(`^fuzz\.yaml:(\d+): `)

// FuzzParse holds the config loader, which reads a file an operator (or
// a config-management tool) wrote, to what it promises: it never panics,
// every problem names the file and a line that is in it, and what it
// accepts is a valid config that `config show` writes back identically.
// Seeds: the shipped example, f.Add below and testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	example, err := os.ReadFile(filepath.Join("..", "examples", "kubeadm.yaml"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(example)
	f.Add([]byte("store: {path: /x}\n"))
	f.Add([]byte("schedules:\n  backup: [1, 2]\n"))
	f.Add([]byte("store:\n  path: /a\n  path: /b\nstore:\n  pth: 1\n"))
	f.Add([]byte("a: &a {level: x}\nlog:\n  <<: [*a, *a]\nmetrics: {listen: ':9477'}\n"))
	f.Add([]byte("store: &s\n  path: *s\n---\n["))
	f.Fuzz(func(t *testing.T, data []byte) {
		lines := yamlLines(data)
		cfg, top, err := parse("fuzz.yaml", data)
		if err != nil {
			var es Errors
			if !errors.As(err, &es) || len(es) == 0 {
				t.Fatalf("error is not a list of positioned problems: %T %v", err, err)
			}
			for _, e := range es {
				checkPositioned(t, e, lines)
			}
			return
		}
		if err := cfg.Validate("fuzz.yaml", nil); err != nil {
			t.Fatalf("Parse accepted a config that Validate rejects: %v", err)
		}
		for _, w := range cfg.Warnings("fuzz.yaml", top) {
			if top != nil {
				checkPositioned(t, w, lines)
			}
		}
		// What `config show` prints must load back as the same config.
		out, err := yaml.Marshal(cfg)
		if err != nil {
			t.Fatalf("marshal an accepted config: %v", err)
		}
		again, err := Parse("shown.yaml", out)
		if err != nil {
			t.Fatalf("the accepted config, written out, does not load: %v\n%s", err, out)
		}
		if !reflect.DeepEqual(normalise(again), normalise(cfg)) {
			t.Fatalf("the accepted config changed through show and load:\n%+v\n%+v", cfg, again)
		}
	})
}

// yamlLines counts lines as YAML breaks them: LF, CR, CRLF, and the
// Unicode NEL, LS and PS.
func yamlLines(data []byte) int {
	d := bytes.ReplaceAll(data, []byte("\r\n"), []byte("\n"))
	n := 1
	for _, br := range []string{"\n", "\r", "\u0085", "\u2028", "\u2029"} {
		n += bytes.Count(d, []byte(br))
	}
	return n
}

func checkPositioned(t *testing.T, e *Error, lines int) {
	t.Helper()
	m := positioned.FindStringSubmatch(e.Error())
	if m == nil {
		t.Fatalf("problem without file:line: %q", e.Error())
	}
	if n, _ := strconv.Atoi(m[1]); n < 1 || n > lines {
		t.Fatalf("problem on line %d of a %d-line file: %q", n, lines, e.Error())
	}
}
