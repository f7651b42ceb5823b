package config

import (
	"encoding/base64"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// keyChecker walks the document against the Config type before yaml.v3
// decodes it, for the problems yaml.v3 would either stop at or let pass:
//
//   - a key set twice: yaml.v3 skips the whole mapping holding it, so every
//     other problem in that section went unreported. The later one is
//     reported and dropped (a section written twice is merged into the
//     first, so the problems inside both are still found);
//   - unknown keys, with the dotted path and a suggestion;
//   - a setting with no value ("backup:"), which yaml.v3 silently leaves
//     at its default;
//   - merge keys (<<) that do not merge a mapping, an anchor that contains
//     itself and !!binary values that are not base64, which make yaml.v3
//     stop decoding altogether: reported and dropped.
//
// What it drops never reaches the decoder, so each problem is reported
// once. It visits each (node, key path) pair once, which bounds the work on
// documents built from aliases of aliases.
type keyChecker struct {
	file string
	errs Errors
	// failed are keys whose value is reported here; Validate leaves them
	// alone (they hold their default, and judging that is misleading).
	failed  []string
	visited map[visit]bool
	active  map[*yaml.Node]bool
}

type visit struct {
	n    *yaml.Node
	path string
}

func newKeyChecker(file string) *keyChecker {
	return &keyChecker{file: file, visited: map[visit]bool{}, active: map[*yaml.Node]bool{}}
}

func (k *keyChecker) report(line int, key, format string, args ...any) {
	k.errs = append(k.errs, &Error{File: k.file, Line: line, Key: key, Msg: fmt.Sprintf(format, args...)})
}

func join(prefix, key string) string {
	if prefix == "" {
		return key
	}
	return prefix + "." + key
}

func isMerge(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Value == "<<" && (n.Tag == "" || n.Tag == "!" || n.ShortTag() == "!!merge")
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// follow returns the value an alias names, or n itself. One hop is all
// there is: an alias cannot carry an anchor ("&a *b" does not parse), so
// no alias names another.
func follow(n *yaml.Node) *yaml.Node {
	if n != nil && n.Kind == yaml.AliasNode {
		return n.Alias
	}
	return n
}

// deref follows an alias; nil when it leads to a value that contains it
// (a mapping being checked).
func (k *keyChecker) deref(n *yaml.Node) *yaml.Node {
	if n != nil && n.Kind == yaml.AliasNode && k.active[n.Alias] {
		return nil
	}
	return follow(n)
}

// resolve is deref that reports the alias it cannot follow.
func (k *keyChecker) resolve(n *yaml.Node, path string) (*yaml.Node, bool) {
	v := k.deref(n)
	if v == nil {
		k.report(n.Line, path, "alias *%s refers to a value that contains it", n.Value)
	}
	return v, v != nil
}

// section checks a mapping that decodes into the struct value def (the
// defaults, shown when a setting has no value).
func (k *keyChecker) section(n *yaml.Node, def reflect.Value, path string) {
	if k.visited[visit{n, path}] {
		return
	}
	k.visited[visit{n, path}] = true
	k.active[n] = true
	defer delete(k.active, n)

	fields := fieldsOf(def)
	seen := map[string]int{} // key -> index in kept of its first pair
	var kept []*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, val := n.Content[i], n.Content[i+1]
		if key.Kind != yaml.ScalarNode {
			k.report(key.Line, path, "a setting name must be a plain word, not a %s", kindName(key))
			continue
		}
		if first, dup := seen[key.Value]; dup {
			k.report(key.Line, join(path, key.Value), "set twice (first at line %d): give each setting once", kept[first].Line)
			// Two copies of a section: check what both say, as one.
			a, b := k.deref(kept[first+1]), k.deref(val)
			if f, ok := fields[key.Value]; ok && f.Kind() == reflect.Struct && a != nil && b != nil &&
				a.Kind == yaml.MappingNode && b.Kind == yaml.MappingNode && a != b {
				a.Content = append(a.Content, b.Content...)
			}
			continue
		}
		if isMerge(key) && !k.mergeable(val) {
			k.report(key.Line, path, "a merge (<<) takes an anchored mapping or a list of them")
			continue
		}
		seen[key.Value] = len(kept)
		kept = append(kept, key, val)
	}
	n.Content = kept

	for i := 0; i+1 < len(n.Content); i += 2 {
		key, val := n.Content[i], n.Content[i+1]
		if isMerge(key) {
			k.merge(val, def, path)
			continue
		}
		f, ok := fields[key.Value]
		if !ok {
			k.report(key.Line, join(path, key.Value), "unknown setting %q%s", key.Value, suggest(key.Value, fields))
			continue
		}
		k.value(val, f, join(path, key.Value))
	}
}

// mergeable reports whether yaml.v3 can merge val: a mapping, or a list
// of mappings, directly or through aliases.
func (k *keyChecker) mergeable(val *yaml.Node) bool {
	v := k.deref(val)
	if v == nil {
		return false
	}
	switch v.Kind {
	case yaml.MappingNode:
		return true
	case yaml.SequenceNode:
		for _, item := range v.Content {
			item = follow(item)
			if item == nil || item.Kind != yaml.MappingNode || k.active[item] {
				return false
			}
		}
		return true
	}
	return false
}

func (k *keyChecker) merge(val *yaml.Node, def reflect.Value, path string) {
	v := k.deref(val)
	if v.Kind == yaml.MappingNode {
		k.section(v, def, path)
		return
	}
	for _, item := range v.Content {
		k.section(follow(item), def, path)
	}
}

// value checks the value of one known setting.
func (k *keyChecker) value(val *yaml.Node, def reflect.Value, path string) {
	v, ok := k.resolve(val, path)
	if !ok {
		k.failed = append(k.failed, path)
		// The decoder would stop at this alias: leave it out.
		*val = yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Line: val.Line, Column: val.Column}
		return
	}
	switch {
	case def.Kind() == reflect.Struct:
		if v.Kind == yaml.MappingNode {
			k.section(v, def, path)
		}
		// A null section (every line below it commented out) keeps its
		// defaults; any other kind is a type error the decoder reports.
	case def.Kind() == reflect.Slice:
		if v.Kind == yaml.SequenceNode {
			for i, item := range v.Content {
				k.value(item, reflect.Zero(def.Type().Elem()), fmt.Sprintf("%s[%d]", path, i))
			}
		}
	case isNull(v):
		k.report(v.Line, path, "has no value: write one, or delete the line to keep the default (%s)", showDefault(def))
		k.failed = append(k.failed, path)
	case v.Kind == yaml.ScalarNode && v.ShortTag() == "!!binary":
		if _, err := base64.StdEncoding.DecodeString(v.Value); err != nil {
			k.report(v.Line, path, "!!binary value is not base64")
			k.failed = append(k.failed, path)
			*v = yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Line: v.Line, Column: v.Column}
		}
	}
}

// fieldsOf maps the YAML keys of a struct to the field values.
func fieldsOf(v reflect.Value) map[string]reflect.Value {
	out := map[string]reflect.Value{}
	t := v.Type()
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if name != "" && name != "-" {
			out[name] = v.Field(i)
		}
	}
	return out
}

// suggest names the known key an unknown one is probably a typo of.
func suggest(key string, fields map[string]reflect.Value) string {
	best, bestD := "", 3
	for name := range fields {
		if l := len(key) - len(name); l >= bestD || -l >= bestD {
			continue // the distance is at least the difference in length
		}
		d := editDistance(strings.ToLower(key), strings.ToLower(name))
		if d < bestD || (d == bestD && best != "" && name < best) {
			best, bestD = name, d
		}
	}
	if best == "" || bestD > len(key)/3+1 {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 64
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func showDefault(v reflect.Value) string {
	switch x := v.Interface().(type) {
	case string:
		return strconv.Quote(x)
	case time.Duration:
		return formatDuration(x)
	case fmt.Stringer:
		return x.String()
	}
	return fmt.Sprint(v.Interface())
}

// formatDuration writes 5m rather than 5m0s, as the example file does.
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	case yaml.AliasNode:
		return "alias"
	}
	return "value"
}

// keyAtLine returns the dotted path of the key that stands on line, or of
// the innermost mapping value that contains it. Lines only grow through a
// mapping's keys and a list's items, so each level is a binary search.
func keyAtLine(n *yaml.Node, line int, prefix string) string {
	for depth := 0; n != nil && depth < 10000; depth++ {
		switch n.Kind {
		case yaml.MappingNode:
			pairs := len(n.Content) / 2
			q := sort.Search(pairs, func(p int) bool { return n.Content[2*p].Line >= line })
			if q < pairs && n.Content[2*q].Line == line {
				k, v := n.Content[2*q], n.Content[2*q+1]
				path := join(prefix, k.Value)
				if isMerge(k) {
					path = prefix
				}
				if v.Line != line || v.Kind != yaml.MappingNode {
					return path
				}
				// A flow mapping on the key's line: the innermost key wins.
				n, prefix = v, path
				continue
			}
			if q == 0 {
				return prefix
			}
			k := n.Content[2*(q-1)]
			if !isMerge(k) {
				prefix = join(prefix, k.Value)
			}
			n = n.Content[2*(q-1)+1]
		case yaml.SequenceNode:
			q := sort.Search(len(n.Content), func(i int) bool { return n.Content[i].Line >= line })
			if q == len(n.Content) || n.Content[q].Line != line {
				q--
			}
			if q < 0 {
				return prefix
			}
			n, prefix = n.Content[q], fmt.Sprintf("%s[%d]", prefix, q)
		default:
			return prefix
		}
	}
	return prefix
}

// valueIndex finds the value yaml.v3 could not decode, named by its line,
// tag and (for scalars) the start of its text: on a line holding a flow
// mapping the line alone cannot tell "certFile: {a: b}" (certFile's value
// is wrong) from "store: {path: [a]}" (path's is). It is built in one walk
// of the document, so a file with many such errors costs no more than one
// with few.
type valueIndex map[int][]indexed

type indexed struct {
	path string
	n    *yaml.Node
}

func newValueIndex(top *yaml.Node) valueIndex {
	ix := valueIndex{}
	var walk func(n *yaml.Node, prefix string, depth int)
	walk = func(n *yaml.Node, prefix string, depth int) {
		if depth > 8 {
			return
		}
		switch n.Kind {
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				path := join(prefix, k.Value)
				if isMerge(k) {
					path = prefix
				}
				ix[v.Line] = append(ix[v.Line], indexed{path, v})
				walk(v, path, depth+1)
			}
		case yaml.SequenceNode:
			for i, item := range n.Content {
				path := fmt.Sprintf("%s[%d]", prefix, i)
				ix[item.Line] = append(ix[item.Line], indexed{path, item})
				walk(item, path, depth+1)
			}
		}
	}
	walk(top, "", 0)
	return ix
}

// key returns the innermost (last in document order) value on line with
// that tag and text; ok is false when none matches.
func (ix valueIndex) key(line int, tag, text string) (key string, ok bool) {
	for _, c := range ix[line] {
		if c.n.ShortTag() == tag && (c.n.Kind != yaml.ScalarNode || strings.HasPrefix(c.n.Value, text)) {
			key, ok = c.path, true
		}
	}
	return key, ok
}

// findKey returns the key and value nodes of name in mapping n, looking
// through merges (<<) the way yaml.v3 decodes them: the mapping's own
// keys first, then each merged mapping in order.
func findKey(n *yaml.Node, name string, depth int) (key, val *yaml.Node) {
	if n == nil || n.Kind != yaml.MappingNode || depth > 8 {
		return nil, nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if !isMerge(n.Content[i]) && n.Content[i].Value == name {
			return n.Content[i], n.Content[i+1]
		}
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if !isMerge(n.Content[i]) {
			continue
		}
		m := follow(n.Content[i+1])
		merged := []*yaml.Node{m}
		if m != nil && m.Kind == yaml.SequenceNode {
			merged = m.Content
		}
		for _, mm := range merged {
			if k, v := findKey(follow(mm), name, depth+1); k != nil {
				return k, v
			}
		}
	}
	return nil, nil
}

// lineOf returns the line of a key path such as "store.path" or
// "paths.extra[2]" in the document. When the file does not set that key
// (a default, or a flag), it is the line of the closest section that is
// there, else of the document's first key: every problem in a file gets a
// line to look at.
func lineOf(top *yaml.Node, key string) int {
	n := top
	line := top.Line
	for _, part := range strings.Split(key, ".") {
		name, idx := part, -1
		if i := strings.IndexByte(part, '['); i >= 0 && strings.HasSuffix(part, "]") {
			if v, err := strconv.Atoi(part[i+1 : len(part)-1]); err == nil {
				name, idx = part[:i], v
			}
		}
		k, next := findKey(n, name, 0)
		if k == nil {
			return line
		}
		line = k.Line
		next = follow(next)
		if next == nil {
			return line
		}
		if idx >= 0 {
			if next.Kind != yaml.SequenceNode || idx >= len(next.Content) {
				return line
			}
			next = next.Content[idx]
			line = next.Line
		}
		n = next
	}
	return line
}
