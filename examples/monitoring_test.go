package examples_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// The monitoring examples, relative to this package's directory.
const (
	rulesFile     = "prometheus-rules.yaml"
	rulesTestFile = "prometheus-rules.test.yaml"
	dashboardFile = "grafana-dashboard.json"
	promConfig    = "prometheus.yml"
)

// tool finds a Debian-packaged tool the tests need; a missing one fails
// the test (never a silent skip under make test) saying how to get it.
func tool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found: run `make deps` (it installs Debian's prometheus package, which has promtool and prometheus)", name)
	}
	return p
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(tool(t, name), args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// ruleFile is the part of a Prometheus rule file the tests read.
type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert  string `yaml:"alert"`
			Record string `yaml:"record"`
			Expr   string `yaml:"expr"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// alertExprs are the rule file's alerts, by name.
func alertExprs(t *testing.T) map[string]string {
	t.Helper()
	var rf ruleFile
	readYAML(t, rulesFile, &rf)
	out := map[string]string{}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				t.Errorf("%s: group %s has a rule that is not an alert (%q)", rulesFile, g.Name, r.Record)
				continue
			}
			if _, dup := out[r.Alert]; dup {
				t.Errorf("%s: alert %s twice", rulesFile, r.Alert)
			}
			out[r.Alert] = r.Expr
		}
	}
	if len(out) == 0 {
		t.Fatalf("%s has no alerts", rulesFile)
	}
	return out
}

// The rules pass promtool's checks (syntax, PromQL, templates).
func TestPrometheusRulesCheck(t *testing.T) {
	out := run(t, "promtool", "check", "rules", rulesFile)
	if !strings.Contains(out, "SUCCESS") {
		t.Errorf("promtool check rules:\n%s", out)
	}
}

// The unit tests pass, and they show every alert both firing (an
// evaluation that expects it) and silent (one that expects nothing).
func TestPrometheusRulesUnitTests(t *testing.T) {
	out := run(t, "promtool", "test", "rules", rulesTestFile)
	if !strings.Contains(out, "SUCCESS") {
		t.Errorf("promtool test rules:\n%s", out)
	}
	var tf struct {
		RuleFiles []string `yaml:"rule_files"`
		Tests     []struct {
			AlertRuleTest []struct {
				EvalTime  string `yaml:"eval_time"`
				Alertname string `yaml:"alertname"`
				ExpAlerts []any  `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	readYAML(t, rulesTestFile, &tf)
	if len(tf.RuleFiles) != 1 || tf.RuleFiles[0] != rulesFile {
		t.Errorf("%s tests %v, want [%s]", rulesTestFile, tf.RuleFiles, rulesFile)
	}
	fires, silent := map[string]bool{}, map[string]bool{}
	for _, c := range tf.Tests {
		for _, a := range c.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				silent[a.Alertname] = true
			}
		}
	}
	for name := range alertExprs(t) {
		if !fires[name] || !silent[name] {
			t.Errorf("%s: alert %s is not shown both firing (%v) and silent (%v)", rulesTestFile, name, fires[name], silent[name])
		}
	}
}

// panelQuery is one target of a dashboard panel.
type panelQuery struct {
	Panel string // title
	RefID string
	Expr  string // as written, with the dashboard's variables
}

// dashboard reads the dashboard and checks its shape: every panel (rows
// aside) has the dashboard's Prometheus datasource and targets with a
// query, panel ids and each panel's refIds are unique, and every variable
// a query uses is one the dashboard defines. It returns the queries and
// the variables' values for a query (a variable that selects masters
// selects all of them: ".*").
func dashboard(t *testing.T) ([]panelQuery, map[string]string) {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	type datasource struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	}
	type panel struct {
		ID         int         `json:"id"`
		Type       string      `json:"type"`
		Title      string      `json:"title"`
		Datasource *datasource `json:"datasource"`
		GridPos    *struct {
			H, W, X, Y int
		} `json:"gridPos"`
		Targets []struct {
			Datasource *datasource `json:"datasource"`
			Expr       string      `json:"expr"`
			RefID      string      `json:"refId"`
		} `json:"targets"`
		Panels []json.RawMessage `json:"panels"`
	}
	var d struct {
		Title      string            `json:"title"`
		UID        string            `json:"uid"`
		Panels     []json.RawMessage `json:"panels"`
		Templating struct {
			List []struct {
				Name       string          `json:"name"`
				Type       string          `json:"type"`
				Query      json.RawMessage `json:"query"`
				Definition string          `json:"definition"`
				AllValue   string          `json:"allValue"`
			} `json:"list"`
		} `json:"templating"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	if d.Title == "" || d.UID == "" {
		t.Errorf("%s: no title or uid", dashboardFile)
	}
	vars := map[string]string{}
	dsVar := ""
	for _, v := range d.Templating.List {
		switch v.Type {
		case "datasource":
			dsVar = v.Name
		case "query":
			if v.AllValue == "" {
				t.Errorf("%s: variable %s has no allValue", dashboardFile, v.Name)
			}
			vars[v.Name] = v.AllValue
		default:
			t.Errorf("%s: variable %s of type %s: the test knows datasource and query variables", dashboardFile, v.Name, v.Type)
		}
	}
	if dsVar == "" {
		t.Fatalf("%s: no datasource variable (the dashboard must not name the importer's datasource)", dashboardFile)
	}
	wantDS := "${" + dsVar + "}"
	ids := map[int]bool{}
	var queries []panelQuery
	var walk func(raws []json.RawMessage)
	walk = func(raws []json.RawMessage) {
		for _, raw := range raws {
			var p panel
			if err := json.Unmarshal(raw, &p); err != nil {
				t.Fatalf("%s: a panel: %v", dashboardFile, err)
			}
			if ids[p.ID] || p.ID == 0 {
				t.Errorf("%s: panel %q: id %d missing or not unique", dashboardFile, p.Title, p.ID)
			}
			ids[p.ID] = true
			if p.GridPos == nil || p.GridPos.W == 0 || p.GridPos.H == 0 {
				t.Errorf("%s: panel %q has no gridPos", dashboardFile, p.Title)
			}
			if p.Type == "row" {
				walk(p.Panels)
				continue
			}
			if p.Datasource == nil || p.Datasource.Type != "prometheus" || p.Datasource.UID != wantDS {
				t.Errorf("%s: panel %q: datasource %+v, want prometheus %s", dashboardFile, p.Title, p.Datasource, wantDS)
			}
			if len(p.Targets) == 0 {
				t.Errorf("%s: panel %q has no targets", dashboardFile, p.Title)
			}
			refs := map[string]bool{}
			for _, tg := range p.Targets {
				if tg.Datasource != nil && (tg.Datasource.Type != "prometheus" || tg.Datasource.UID != wantDS) {
					t.Errorf("%s: panel %q target %s: datasource %+v", dashboardFile, p.Title, tg.RefID, tg.Datasource)
				}
				if strings.TrimSpace(tg.Expr) == "" || tg.RefID == "" || refs[tg.RefID] {
					t.Errorf("%s: panel %q: a target without a query or with a missing or repeated refId %q", dashboardFile, p.Title, tg.RefID)
				}
				refs[tg.RefID] = true
				queries = append(queries, panelQuery{Panel: p.Title, RefID: tg.RefID, Expr: tg.Expr})
			}
		}
	}
	walk(d.Panels)
	// The variables' own queries are PromQL too.
	for _, v := range d.Templating.List {
		if v.Type == "query" {
			if m := labelValues.FindStringSubmatch(v.Definition); m != nil {
				queries = append(queries, panelQuery{Panel: "variable " + v.Name, RefID: "query", Expr: m[1]})
			} else {
				t.Errorf("%s: variable %s: definition %q is not label_values(SERIES, LABEL)", dashboardFile, v.Name, v.Definition)
			}
		}
	}
	for _, q := range queries {
		if _, err := expand(q.Expr, vars); err != nil {
			t.Errorf("%s: panel %q %s: %v", dashboardFile, q.Panel, q.RefID, err)
		}
	}
	return queries, vars
}

var (
	labelValues = regexp.MustCompile(`^label_values\((.+),\s*\w+\)$`)
	variableRef = regexp.MustCompile(`\$\{?(\w+)\}?`)
)

// expand puts the variables' values into a query.
func expand(expr string, vars map[string]string) (string, error) {
	var bad []string
	out := variableRef.ReplaceAllStringFunc(expr, func(m string) string {
		name := variableRef.FindStringSubmatch(m)[1]
		v, ok := vars[name]
		if !ok {
			bad = append(bad, m)
		}
		return v
	})
	if bad != nil {
		return "", fmt.Errorf("query %q uses %v, which the dashboard does not define", expr, bad)
	}
	return out, nil
}

// The dashboard is valid JSON of the expected shape, and each query
// parses: every one is written out as a recording rule and the file goes
// through promtool check rules.
func TestGrafanaDashboardQueries(t *testing.T) {
	queries, vars := dashboard(t)
	if len(queries) < 10 {
		t.Fatalf("%s has %d queries", dashboardFile, len(queries))
	}
	type rule struct {
		Record string `yaml:"record"`
		Expr   string `yaml:"expr"`
	}
	var rules []rule
	for i, q := range queries {
		e, err := expand(q.Expr, vars)
		if err != nil {
			continue // reported by dashboard
		}
		rules = append(rules, rule{Record: fmt.Sprintf("dashboard:query_%d:%s", i, q.RefID), Expr: e})
	}
	b, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}})
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "dashboard-queries.yaml")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	out := run(t, "promtool", "check", "rules", p)
	if want := fmt.Sprintf("SUCCESS: %d rules found", len(rules)); !strings.Contains(out, want) {
		t.Errorf("promtool check rules on the dashboard's queries: %s, want %q\n%s", out, want, b)
	}
}

// metricNames returns the metric names a PromQL expression selects, and
// an error for a name that is not kubekeep's (the agent exports only
// kubekeep_*: a dashboard or rule that needs another exporter would fail
// for the operator who installs only kubekeep). Label matchers, strings,
// ranges, grouping clauses, functions and keywords are not names.
func metricNames(expr string) ([]string, error) {
	e := quoted.ReplaceAllString(expr, `""`)
	e = matchers.ReplaceAllString(e, "{}")
	e = ranges.ReplaceAllString(e, "[]")
	e = grouping.ReplaceAllString(e, " ")
	var names []string
	for _, loc := range ident.FindAllStringIndex(e, -1) {
		if loc[0] > 0 && strings.ContainsAny(e[loc[0]-1:loc[0]], "0123456789.") {
			continue // 1e3, 2.5e-1
		}
		name := e[loc[0]:loc[1]]
		call := strings.HasPrefix(strings.TrimLeft(e[loc[1]:], " \t\n"), "(")
		if call || promqlKeywords[strings.ToLower(name)] {
			continue
		}
		if !strings.HasPrefix(name, "kubekeep_") {
			return nil, fmt.Errorf("%q selects %s, which is not a kubekeep metric", expr, name)
		}
		names = append(names, name)
	}
	return names, nil
}

var (
	quoted   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	matchers = regexp.MustCompile(`\{[^}]*\}`)
	ranges   = regexp.MustCompile(`\[[^\]]*\]`)
	grouping = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	ident    = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)

	promqlKeywords = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true,
		"inf": true, "nan": true, "atan2": true, "by": true, "without": true}
)

func TestMetricNames(t *testing.T) {
	for expr, want := range map[string]string{
		`increase(kubekeep_job_failures_total{job="backup", instance=~"$x"}[30m]) > 3`: "kubekeep_job_failures_total",
		`time() - kubekeep_job_last_success_timestamp_seconds{job="a b"}`:              "kubekeep_job_last_success_timestamp_seconds",
		`sum by (job, tier) (rate(kubekeep_a[5m])) / on(job) kubekeep_b > 2 * 86400`:   "kubekeep_a kubekeep_b",
		`absent(kubekeep_store_writable) or vector(1e3)`:                               "kubekeep_store_writable",
	} {
		got, err := metricNames(expr)
		if err != nil || strings.Join(got, " ") != want {
			t.Errorf("metricNames(%s) = %v, %v; want %s", expr, got, err, want)
		}
	}
	if _, err := metricNames(`up{job="kubekeep"} == 0`); err == nil {
		t.Error("up is not the agent's metric")
	}
}

// usedMetrics maps every metric name the rules and the dashboard use to
// where it is used.
func usedMetrics(t *testing.T) map[string][]string {
	t.Helper()
	used := map[string][]string{}
	add := func(where, expr string) {
		names, err := metricNames(expr)
		if err != nil {
			t.Errorf("%s: %v", where, err)
		}
		for _, n := range names {
			used[n] = append(used[n], where)
		}
	}
	alerts := alertExprs(t)
	for name, expr := range alerts {
		add(rulesFile+" "+name, expr)
	}
	queries, _ := dashboard(t)
	for _, q := range queries {
		add(fmt.Sprintf("%s %q %s", dashboardFile, q.Panel, q.RefID), q.Expr)
	}
	return used
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
