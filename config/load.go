package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Error is one problem in a config file, positioned so an operator can jump
// to it: "kubekeep.yaml:12: schedules.backup: must be at least 1m".
type Error struct {
	File string
	Line int
	Key  string
	Msg  string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	if e.Key != "" {
		fmt.Fprintf(&b, ": %s", e.Key)
	}
	fmt.Fprintf(&b, ": %s", e.Msg)
	return b.String()
}

// Errors collects every problem found in one file, so one run of
// `kubekeep config validate` shows them all.
type Errors []*Error

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Load reads the file at path over Default() and validates the result.
func Load(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, data)
}

// Parse decodes data (named name in errors) over Default() in strict mode
// and validates it.
func Parse(name string, data []byte) (Config, error) {
	cfg := Default()
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return cfg, cfg.Validate(name, nil)
		}
		return Config{}, syntaxError(name, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return Config{}, Errors{{File: name, Line: extra.Line, Msg: "more than one YAML document; a config file holds exactly one"}}
	}
	if len(doc.Content) == 0 {
		return cfg, cfg.Validate(name, nil)
	}
	top := doc.Content[0]
	if top.Kind != yaml.MappingNode {
		return Config{}, Errors{{File: name, Line: top.Line, Msg: "the config must be a mapping of settings"}}
	}
	// Decode the document (not the node) again so KnownFields applies: it is
	// a Decoder setting and Node.Decode ignores it.
	strict := yaml.NewDecoder(bytes.NewReader(data))
	strict.KnownFields(true)
	if err := strict.Decode(&cfg); err != nil {
		return Config{}, typeErrors(name, top, err)
	}
	return cfg, cfg.Validate(name, top)
}

var yamlLine = regexp.MustCompile(`^line (\d+): (.*)$`)

func syntaxError(name string, err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		n, _ := strconv.Atoi(m[1])
		return Errors{{File: name, Line: n, Msg: m[2]}}
	}
	return Errors{{File: name, Msg: msg}}
}

var (
	unknownField = regexp.MustCompile(`^field (\S+) not found in type \S+$`)
	wrongType    = regexp.MustCompile("^cannot unmarshal (.*) into (.*)$")
)

// typeErrors turns yaml.v3's "line N: ..." messages into positioned errors
// that also name the dotted key, found by walking the document to that line.
func typeErrors(name string, top *yaml.Node, err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return syntaxError(name, err)
	}
	var out Errors
	for _, raw := range te.Errors {
		e := &Error{File: name, Msg: raw}
		if m := yamlLine.FindStringSubmatch(raw); m != nil {
			e.Line, _ = strconv.Atoi(m[1])
			e.Msg = m[2]
			e.Key = keyAtLine(top, e.Line, "")
		}
		if m := unknownField.FindStringSubmatch(e.Msg); m != nil {
			e.Msg = fmt.Sprintf("unknown setting %q", m[1])
		} else if m := wrongType.FindStringSubmatch(e.Msg); m != nil {
			e.Msg = fmt.Sprintf("wrong type: cannot use %s as %s", m[1], friendlyType(m[2]))
		}
		out = append(out, e)
	}
	return out
}

func friendlyType(goType string) string {
	switch goType {
	case "time.Duration":
		return "a duration with a unit (e.g. 5m, 8h; 0s to disable)"
	case "int":
		return "a whole number"
	case "bool":
		return "true or false"
	case "string":
		return "a string"
	case "[]string":
		return "a list of strings"
	}
	return goType
}

// keyAtLine returns the dotted path of the key that stands on line, or of
// the innermost mapping value that contains it.
func keyAtLine(n *yaml.Node, line int, prefix string) string {
	if n == nil {
		return prefix
	}
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			path := k.Value
			if prefix != "" {
				path = prefix + "." + k.Value
			}
			if k.Line == line {
				return path
			}
			if line > k.Line && (i+2 >= len(n.Content) || line < n.Content[i+2].Line) {
				return keyAtLine(v, line, path)
			}
		}
	case yaml.SequenceNode:
		for i, item := range n.Content {
			if item.Line == line || (line > item.Line && (i+1 >= len(n.Content) || line < n.Content[i+1].Line)) {
				return keyAtLine(item, line, fmt.Sprintf("%s[%d]", prefix, i))
			}
		}
	}
	return prefix
}

// lineOf returns the line of the dotted key in the document, or 0.
func lineOf(top *yaml.Node, key string) int {
	n := top
	line := 0
	for _, part := range strings.Split(key, ".") {
		if n == nil || n.Kind != yaml.MappingNode {
			return line
		}
		var next *yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == part {
				line = n.Content[i].Line
				next = n.Content[i+1]
				break
			}
		}
		if next == nil {
			return 0
		}
		n = next
	}
	return line
}
