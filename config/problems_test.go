package config

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// problem is what an operator must see for one mistake: the line to go to,
// the key, and words of the message.
type problem struct {
	line int
	key  string
	msg  string
}

// checkProblems holds err to exactly the problems in want, in file order:
// none missing, none extra (a value that did not decode must not also be
// judged as its default), each on its line.
func checkProblems(t *testing.T, err error, file string, want []problem) {
	t.Helper()
	var es Errors
	if !errors.As(err, &es) {
		t.Fatalf("want config.Errors, got %T %v", err, err)
	}
	var got []string
	for _, e := range es {
		got = append(got, e.Error())
	}
	for i, w := range want {
		prefix := fmt.Sprintf("%s:%d: %s: ", file, w.line, w.key)
		if w.key == "" {
			prefix = fmt.Sprintf("%s:%d: ", file, w.line)
		}
		if i >= len(got) {
			t.Errorf("problem %d missing: want %q…%q", i+1, prefix, w.msg)
			continue
		}
		if !strings.HasPrefix(got[i], prefix) || !strings.Contains(got[i], w.msg) {
			t.Errorf("problem %d: got %q, want %q…%q", i+1, got[i], prefix, w.msg)
		}
	}
	if len(got) != len(want) {
		t.Errorf("got %d problems, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
}

// Issue 13: `config validate` promises every problem at once. Before, a
// type error or an unknown key stopped validation of every value, a key
// set twice made yaml.v3 skip the whole section holding it (and one at the
// top level, everything), list entries all pointed at the list's key, and
// a second document with a syntax error was not noticed at all.
func TestConfigEveryKindOfProblemAtOnce(t *testing.T) {
	doc := `root: /
store:
  path: /data/backup/kubekeep
  pth: /data/other
  path: /data/again
  mountpoint: /mnt/second
  blockSize: 48KiB
schedules:
  backup: often
  prune: 10ms
  backupCPUBudget: 0.01
  debounce:
retention:
  keepLast: many
  keepDaily: -1
etcd:
  endpoints:
    - https://10.0.0.1:2379
    - ftp://10.0.0.2:2379
  keyFile: /etc/kubernetes/pki/etcd/client.key
cloud:
  mode: sometimes
  policyTimePoints: [0, 8, 24]
paths:
  extra:
    - /etc/kubernetes/audit.yaml
    - etc/kubernetes/webhook.yaml
  exclude: [/etc/ssl/../shadow]
log:
  level: loud
log:
  format: xml
tracing: true
---
[
`
	_, err := Parse("kubekeep.yaml", []byte(doc))
	checkProblems(t, err, "kubekeep.yaml", []problem{
		{4, "store.pth", `unknown setting "pth" (did you mean "path"?)`},
		{5, "store.path", "set twice (first at line 3)"},
		{6, "store.mountpoint", `store.path "/data/backup/kubekeep" is not under the mountpoint "/mnt/second"`},
		{7, "store.blockSize", "must be a power of two"},
		{9, "schedules.backup", "wrong type: cannot use !!str `often` as a duration with a unit"},
		{10, "schedules.prune", "must be at least 1s, got 10ms"},
		{11, "schedules.backupCPUBudget", "the % sign is required"},
		{12, "schedules.debounce", "has no value: write one, or delete the line to keep the default (10s)"},
		{14, "retention.keepLast", "wrong type: cannot use !!str `many` as a whole number"},
		{15, "retention.keepDaily", "must not be negative, got -1"},
		{19, "etcd.endpoints[1]", `"ftp://10.0.0.2:2379" is not an http(s)://host:port URL`},
		{20, "etcd.keyFile", "certFile and keyFile go together"},
		{22, "cloud.mode", `must be "agent" or "policy", got "sometimes"`},
		{23, "cloud.policyTimePoints[2]", "hours must be 0..23 (UTC+8), got 24"},
		{27, "paths.extra[1]", `must be an absolute path, got "etc/kubernetes/webhook.yaml"`},
		{28, "paths.exclude[0]", "must not contain '..'"},
		{30, "log.level", `must be debug, info, warn or error, got "loud"`},
		{31, "log", "set twice (first at line 29)"},
		{32, "log.format", `must be auto, json or text, got "xml"`},
		{33, "tracing", `unknown setting "tracing"`},
		{35, "", "did not find expected node content"},
	})
}

// A key set twice at the top level made yaml.v3 skip the whole document.
func TestConfigDuplicateTopLevelKeyHidesNothing(t *testing.T) {
	_, err := Parse("k.yaml", []byte("schedules:\n  backup: 1ms\nschedules:\n  prune: 1ms\nlog:\n  level: loud\n"))
	checkProblems(t, err, "k.yaml", []problem{
		{2, "schedules.backup", "must be at least 1s"},
		{3, "schedules", "set twice (first at line 1)"},
		{4, "schedules.prune", "must be at least 1s"},
		{6, "log.level", "must be debug"},
	})
}

// A value that did not decode keeps its default; checks across settings
// must not hold that default against the others.
func TestConfigUndecodedValueIsNotJudgedAsItsDefault(t *testing.T) {
	doc := "store:\n  path: [/a, /b]\n  mountpoint: /mnt/second\netcd:\n  certFile: {a: b}\n  keyFile: /k\nretention:\n  keepLast: x\n  keepHourly: 0\n  keepDaily: 0\n  keepWeekly: 0\n"
	_, err := Parse("k.yaml", []byte(doc))
	checkProblems(t, err, "k.yaml", []problem{
		{2, "store.path", "wrong type"},
		{5, "etcd.certFile", "wrong type"},
		{8, "retention.keepLast", "wrong type"},
	})
}

// Aliases and merges: a key found through a merge is checked under the
// section it is merged into, and an alias that contains itself, which
// makes yaml.v3 give up on the whole document, is one positioned problem.
func TestConfigMergesAndAliases(t *testing.T) {
	doc := "x-common: &common\n  level: loud\n  colour: red\nlog:\n  <<: *common\n  format: text\nstore: &self\n  path: *self\nschedules:\n  <<: 5\n  backup: 1ms\n"
	_, err := Parse("k.yaml", []byte(doc))
	checkProblems(t, err, "k.yaml", []problem{
		{1, "x-common", `unknown setting "x-common"`},
		{2, "log.level", "must be debug"},
		{3, "log.colour", `unknown setting "colour"`},
		{8, "store.path", "alias *self refers to a value that contains it"},
		{10, "schedules", "a merge (<<) takes an anchored mapping"},
		{11, "schedules.backup", "must be at least 1s"},
	})
}

func TestConfigSecondDocumentDoesNotHideTheFirst(t *testing.T) {
	_, err := Parse("k.yaml", []byte("log:\n  level: loud\n---\nroot: /x\n"))
	checkProblems(t, err, "k.yaml", []problem{
		{2, "log.level", "must be debug"},
		{3, "", "more than one YAML document"},
	})
}

func TestConfigBytesYAMLRefusesGetALine(t *testing.T) {
	_, err := Parse("k.yaml", []byte("root: /\nstore:\n  path: /x\x01y\n"))
	checkProblems(t, err, "k.yaml", []problem{{3, "", "control characters are not allowed"}})
	_, err = Parse("k.yaml", []byte("root: /\n\n  # \xff\n"))
	checkProblems(t, err, "k.yaml", []problem{{3, "", "invalid"}})
}

// A section whose lines are all commented out is null: it keeps its
// defaults. A setting with no value is an error, not a silent default.
func TestConfigNullSectionKeepsDefaults(t *testing.T) {
	cfg, err := Parse("k.yaml", []byte("cloud:\n  # enabled: true\nstore:\n  path: /srv/kk\n"))
	if err != nil || cfg.Cloud.RetentionDays != 7 || cfg.Store.Path != "/srv/kk" {
		t.Fatalf("got %v %+v", err, cfg.Cloud)
	}
	_, err = Parse("k.yaml", []byte("store:\n  path:\n  mountpoint: /mnt/b\n"))
	checkProblems(t, err, "k.yaml", []problem{{2, "store.path", `has no value: write one, or delete the line to keep the default ("/data/backup/kubekeep")`}})
}

// Positioning many problems is one walk of the document, not one per
// problem: 20,000 bad list entries took over two minutes that way.
func TestConfigManyProblemsStayFast(t *testing.T) {
	doc := "cloud:\n  policyTimePoints:\n" + strings.Repeat("    - x\n", 20000)
	start := time.Now()
	_, err := Parse("k.yaml", []byte(doc))
	var es Errors
	if !errors.As(err, &es) || len(es) != 20000 {
		t.Fatalf("want 20000 problems, got %d", len(es))
	}
	if last := es[len(es)-1].Error(); !strings.HasPrefix(last, "k.yaml:20002: cloud.policyTimePoints[19999]: wrong type") {
		t.Errorf("last problem %q", last)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("took %s", d)
	}
}

// A file that names store.mountpoint and leaves store.path to --store is
// not refused for the default path (the campaign's finding: every command
// with such a file failed "store.path /data/backup/kubekeep is not under
// the mountpoint" before --store was applied); a store.path the file does
// set is still held against its mountpoint.
func TestConfigMountpointWithoutPath(t *testing.T) {
	if _, err := Parse("k.yaml", []byte("store:\n  mountpoint: /mnt/disk\n")); err != nil {
		t.Errorf("mountpoint alone: %v", err)
	}
	_, err := Parse("k.yaml", []byte("store:\n  path: /elsewhere/kk\n  mountpoint: /mnt/disk\n"))
	if err == nil || !strings.Contains(err.Error(), "not under the mountpoint") {
		t.Errorf("a path outside its mountpoint: %v", err)
	}
}

// A store.path the file sets through a merge or an alias is set by the
// file, and judged there, on its line: it was taken for one left to
// --store, so its problem surfaced later as "flags: store.path".
func TestConfigStorePathThroughMergeOrAlias(t *testing.T) {
	for _, doc := range []string{
		"store:\n  <<: {path: relative/dir}\n",
		"x-store: &s\n  path: relative/dir\nstore: *s\n",
	} {
		_, err := Parse("k.yaml", []byte(doc))
		var es Errors
		if !errors.As(err, &es) {
			t.Fatalf("%q: want config.Errors, got %T %v", doc, err, err)
		}
		found := false
		for _, e := range es {
			if e.Key == "store.path" && e.Line == 2 && strings.Contains(e.Msg, "must be an absolute path") {
				found = true
			}
		}
		if !found {
			t.Errorf("%q: no problem for store.path on line 2: %v", doc, err)
		}
	}
}
