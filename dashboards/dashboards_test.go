package dashboards

import (
	"bytes"
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/redisconn/redisconn/telemetry"
)

// The committed JSON is what the code generates: run `go generate ./dashboards`
// after changing dashboards.go.
func TestCommittedJSONMatchesTheGenerator(t *testing.T) {
	want, err := Build()
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(File)
	if err != nil {
		t.Fatalf("%v (run go generate ./dashboards)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s differs from what dashboards.go generates: run go generate ./dashboards and commit", File)
	}
}

// Every query uses the dashboard's variables, whose All selects only series
// that carry the label, and every signal is shown. (That
// queries name only series of the table, with labels they carry, is checked
// with the PromQL parser in internal/promqlcheck.)
func TestQueriesUseVariablesAndKnownMetrics(t *testing.T) {
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Type    string `json:"type"`
			Targets []struct {
				Expr     string `json:"expr"`
				Exemplar bool   `json:"exemplar"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name       string `json:"name"`
				Type       string `json:"type"`
				IncludeAll bool   `json:"includeAll"`
				AllValue   string `json:"allValue"`
				Query      any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	b, _ := Build()
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	var vars []string
	for _, v := range d.Templating.List {
		vars = append(vars, v.Name)
	}
	if strings.Join(vars, ",") != "datasource,traces,job,instance,role" {
		t.Errorf("variables %v", vars)
	}
	// With "All", a label variable must match only series that carry its
	// label: Prometheus anchors the regexp, and a label a series lacks is the
	// empty string, which ".*" matches. For $role that would take in go-redis's
	// own redisotel series (the same db_client_* names, no redisconn_role).
	// The variables list only redisconn managers' values.
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		if !v.IncludeAll {
			t.Errorf("variable %s has no All", v.Name)
		}
		re, err := regexp.Compile(`^(?:` + v.AllValue + `)$`)
		if err != nil || v.AllValue == "" || re.MatchString("") {
			t.Errorf("variable %s: All value %q also selects series without the label", v.Name, v.AllValue)
		}
		if q, _ := v.Query.(string); !strings.Contains(q, `redisconn_role!=""`) {
			t.Errorf("variable %s: query %v lists values of series that are not redisconn managers'", v.Name, v.Query)
		}
	}
	// Every family of the table of signals is on some panel.
	var known []string
	for _, sig := range telemetry.Signals() {
		known = append(known, sig.PrometheusName())
	}
	used := map[string]bool{}
	queries, exemplars := 0, 0
	for _, p := range d.Panels {
		for _, q := range p.Targets {
			queries++
			if q.Exemplar {
				exemplars++
			}
			for _, v := range []string{`job=~"$job"`, `instance=~"$instance"`, `redisconn_role=~"$role"`} {
				if !strings.Contains(q.Expr, v) {
					t.Errorf("%s: query without %s: %s", p.Title, v, q.Expr)
				}
			}
			for _, m := range known {
				if strings.Contains(q.Expr, m) {
					used[m] = true
				}
			}
		}
	}
	for _, m := range known {
		if !used[m] {
			t.Errorf("no panel shows %s", m)
		}
	}
	if queries < 25 || exemplars < 4 {
		t.Errorf("%d queries, %d with exemplars", queries, exemplars)
	}
}
