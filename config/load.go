package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// Load reads the file at path over Default() and validates the result.
func Load(path string) (Config, error) {
	cfg, _, err := Check(path)
	return cfg, err
}

// Check is Load that also returns the file's warnings: settings that are
// valid but risky (see Config.Warnings), positioned like errors. An
// invalid file has no warnings, only its errors.
func Check(path string) (Config, Errors, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, nil, fmt.Errorf("read config: %w", err)
	}
	cfg, top, err := parse(path, data)
	if err != nil {
		return Config{}, nil, err
	}
	return cfg, cfg.Warnings(path, top), nil
}

// Parse decodes data (named name in errors) over Default() strictly and
// validates it. Every problem is reported, each once, in the order of the
// file: syntax aside (nothing after a syntax error can be read), no kind of
// problem hides another.
func Parse(name string, data []byte) (Config, error) {
	cfg, _, err := parse(name, data)
	return cfg, err
}

// parse also returns the document's top mapping (nil for an empty file),
// to position warnings.
func parse(name string, data []byte) (Config, *yaml.Node, error) {
	cfg := Default()
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return cfg, nil, cfg.Validate(name, nil)
		}
		return Config{}, nil, syntaxError(name, data, err)
	}
	var errs Errors
	// A second document is a problem of its own; the first is still checked.
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case err == nil:
		errs = append(errs, &Error{File: name, Line: extra.Line, Msg: "more than one YAML document; a config file holds exactly one"})
	case !errors.Is(err, io.EOF):
		errs = append(errs, syntaxError(name, data, err).(Errors)...)
	}
	if len(doc.Content) == 0 || isNull(doc.Content[0]) {
		return cfg, nil, append(errs, asErrors(cfg.Validate(name, nil))...).orNil()
	}
	top := doc.Content[0]
	if top.Kind != yaml.MappingNode {
		return Config{}, nil, append(errs, &Error{File: name, Line: top.Line, Msg: "the config must be a mapping of settings"}).orNil()
	}

	// Keys first (unknown, twice, without a value): yaml.v3 stops at some
	// of these and passes others silently. Then decode what is left; its
	// type errors do not stop it. Then validate every value that decoded.
	kc := newKeyChecker(name)
	kc.section(top, reflect.ValueOf(&cfg).Elem(), "")
	errs = append(errs, kc.errs...)
	failed := kc.failed
	if err := top.Decode(&cfg); err != nil {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			// yaml.v3 gave up (excessive aliasing): nothing decoded can be
			// trusted enough to validate.
			return Config{}, nil, append(errs, decodeFailure(name, top, err)).orNil()
		}
		ix := newValueIndex(top)
		for _, raw := range te.Errors {
			e := typeError(name, top, ix, raw)
			errs = append(errs, e)
			failed = append(failed, e.Key)
		}
	}
	// A file that names store.mountpoint but leaves store.path to the
	// command line (--store) is not judged against the default path here;
	// the command checks the two together once its flags are in
	// (Config.Validate after them).
	if !hasKey(top, "store", "path") {
		failed = append(failed, "store.path")
	}
	errs = append(errs, asErrors(cfg.validate(name, top, failed))...)
	if len(errs) > 0 {
		return Config{}, nil, errs.orNil()
	}
	return cfg, top, nil
}

func asErrors(err error) Errors {
	var es Errors
	if errors.As(err, &es) {
		return es
	}
	return nil
}

var yamlLine = regexp.MustCompile(`^line (\d+): (.*)$`)

// syntaxError positions a parse error. yaml.v3 names the line of most;
// for the few it does not (bytes that are not UTF-8, control characters)
// the first such byte is found here.
func syntaxError(name string, data []byte, err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		n, _ := strconv.Atoi(m[1])
		return Errors{{File: name, Line: n, Msg: m[2]}}
	}
	return Errors{{File: name, Line: badByteLine(data), Msg: msg}}
}

// badByteLine is the line of the first byte YAML does not accept: invalid
// UTF-8, or a control character other than tab, LF and CR. 1 when there is
// none (the problem is then the document as a whole).
func badByteLine(data []byte) int {
	line := 1
	for i := 0; i < len(data); {
		r, size := utf8.DecodeRune(data[i:])
		if (r == utf8.RuneError && size <= 1) || (r < 0x20 && r != '\t' && r != '\n' && r != '\r') ||
			(r >= 0x7f && r <= 0x9f && r != 0x85) || r == 0xFFFE || r == 0xFFFF {
			return line
		}
		// yaml.v3's line breaks: LF, CR, CRLF, NEL, LS, PS.
		if r == '\n' || r == 0x85 || r == 0x2028 || r == 0x2029 || (r == '\r' && (i+1 >= len(data) || data[i+1] != '\n')) {
			line++
		}
		i += size
	}
	return 1
}

func decodeFailure(name string, top *yaml.Node, err error) *Error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	e := &Error{File: name, Line: top.Line, Msg: msg}
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		e.Line, _ = strconv.Atoi(m[1])
		e.Msg = m[2]
	}
	return e
}

var wrongType = regexp.MustCompile("^cannot unmarshal ((!!\\w+)(?: `(.*?)(?:\\.\\.\\.)?`)?) into (.*)$")

// typeError turns one of yaml.v3's "line N: ..." messages into a
// positioned error that also names the dotted key, found by walking the
// document to that line.
func typeError(name string, top *yaml.Node, ix valueIndex, raw string) *Error {
	e := &Error{File: name, Line: top.Line, Msg: raw}
	if m := yamlLine.FindStringSubmatch(raw); m != nil {
		e.Line, _ = strconv.Atoi(m[1])
		e.Msg = m[2]
		e.Key = keyAtLine(top, e.Line, "")
	}
	if m := wrongType.FindStringSubmatch(e.Msg); m != nil {
		if key, ok := ix.key(e.Line, m[2], m[3]); ok {
			e.Key = key
		}
		e.Msg = fmt.Sprintf("wrong type: cannot use %s as %s", m[1], friendlyType(m[4]))
	}
	return e
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
	case "[]int":
		return "a list of whole numbers"
	}
	if strings.HasPrefix(goType, "config.") {
		return "a mapping of settings"
	}
	return goType
}

// hasKey reports whether the mapping top sets the key path (section,
// key), through merges and aliases as yaml.v3 decodes them (findKey).
func hasKey(top *yaml.Node, path ...string) bool {
	n := top
	for _, k := range path {
		_, n = findKey(n, k, 0)
		n = follow(n)
		if n == nil {
			return false
		}
	}
	return true
}
