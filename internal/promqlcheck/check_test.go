package promqlcheck

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// root is the repository this module sits in.
const root = "../.."

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Record string            `yaml:"record"`
			Alert  string            `yaml:"alert"`
			Expr   string            `yaml:"expr"`
			Labels map[string]string `yaml:"labels"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

type ruleTestFile struct {
	RuleFiles []string `yaml:"rule_files"`
	Tests     []struct {
		Name        string `yaml:"name"`
		InputSeries []struct {
			Series string `yaml:"series"`
		} `yaml:"input_series"`
		PromQLExprTest []struct {
			Expr string `yaml:"expr"`
		} `yaml:"promql_expr_test"`
	} `yaml:"tests"`
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

// catalogWithRules is the table's series plus the outputs of the recording
// rules of every rules file in alerts/ (in file order, as Prometheus
// evaluates them), and the alert expressions, for the tests to check.
func catalogWithRules(t *testing.T) (*Catalog, map[string]string) {
	t.Helper()
	c := NewCatalog()
	files, err := filepath.Glob(filepath.Join(root, "alerts", "*.yml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no rule files in alerts/ (%v)", err)
	}
	alerts := map[string]string{}
	rules := 0
	for _, f := range files {
		if strings.HasSuffix(f, ".test.yml") {
			continue
		}
		var rf ruleFile
		readYAML(t, f, &rf)
		for _, g := range rf.Groups {
			for _, r := range g.Rules {
				rules++
				switch {
				case r.Record != "":
					if err := c.AddRecordingRule(r.Record, r.Expr, r.Labels); err != nil {
						t.Errorf("%s, group %s: %v", filepath.Base(f), g.Name, err)
					}
				case r.Alert != "":
					alerts[filepath.Base(f)+" "+r.Alert] = r.Expr
				}
			}
		}
	}
	if rules < 10 || len(alerts) < 8 {
		t.Fatalf("read %d rules and %d alerts from %v", rules, len(alerts), files)
	}
	return c, alerts
}

// Every alert expression names only series of the table or recording rules,
// with labels they carry.
func TestAlertRulesSelectOnlySignals(t *testing.T) {
	c, alerts := catalogWithRules(t)
	for name, expr := range alerts {
		for _, p := range c.Check(expr) {
			t.Errorf("alert %s: %s", name, p)
		}
	}
}

// The promtool unit tests feed series the managers really export, and query
// those or the rules' outputs.
func TestRuleUnitTestsUseOnlySignals(t *testing.T) {
	c, _ := catalogWithRules(t)
	files, _ := filepath.Glob(filepath.Join(root, "alerts", "*.test.yml"))
	if len(files) == 0 {
		t.Fatal("no rule unit tests in alerts/")
	}
	for _, f := range files {
		var tf ruleTestFile
		readYAML(t, f, &tf)
		if len(tf.Tests) == 0 {
			t.Errorf("%s has no tests", f)
		}
		for _, tc := range tf.Tests {
			for _, s := range tc.InputSeries {
				for _, p := range c.CheckSeries(s.Series) {
					t.Errorf("%s, test %q: %s", filepath.Base(f), tc.Name, p)
				}
			}
			for _, e := range tc.PromQLExprTest {
				for _, p := range c.Check(e.Expr) {
					t.Errorf("%s, test %q: %s", filepath.Base(f), tc.Name, p)
				}
			}
		}
	}
}

// dashboardQueries returns every PromQL expression of a Grafana dashboard
// (panel targets, also inside rows) and every variable query.
func dashboardQueries(t *testing.T, path string) (exprs, variables map[string]string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels     []json.RawMessage `json:"panels"`
		Templating struct {
			List []struct {
				Name  string          `json:"name"`
				Type  string          `json:"type"`
				Query json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	exprs, variables = map[string]string{}, map[string]string{}
	type panel struct {
		Title   string            `json:"title"`
		Panels  []json.RawMessage `json:"panels"`
		Targets []struct {
			RefID string `json:"refId"`
			Expr  string `json:"expr"`
		} `json:"targets"`
	}
	var walk func(raw []json.RawMessage)
	walk = func(raw []json.RawMessage) {
		for _, r := range raw {
			var p panel
			if err := json.Unmarshal(r, &p); err != nil {
				t.Fatal(err)
			}
			for i, tg := range p.Targets {
				if tg.Expr != "" {
					exprs[p.Title+" #"+string(rune('A'+i))] = tg.Expr
				}
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q string
		if err := json.Unmarshal(v.Query, &q); err != nil {
			var obj struct {
				Query string `json:"query"`
			}
			if err := json.Unmarshal(v.Query, &obj); err != nil {
				t.Fatalf("variable %s: query %s", v.Name, v.Query)
			}
			q = obj.Query
		}
		variables[v.Name] = q
	}
	return exprs, variables
}

// Every dashboard query and variable names only series of the table (or
// recording rules), with labels they carry.
func TestDashboardSelectsOnlySignals(t *testing.T) {
	c, _ := catalogWithRules(t)
	exprs, variables := dashboardQueries(t, filepath.Join(root, "dashboards", "redisconn.json"))
	if len(exprs) < 25 || len(variables) < 3 {
		t.Fatalf("read %d queries and %d variables", len(exprs), len(variables))
	}
	for where, expr := range exprs {
		for _, p := range c.Check(expr) {
			t.Errorf("panel %s: %s", where, p)
		}
	}
	for name, q := range variables {
		for _, p := range c.CheckVariable(q) {
			t.Errorf("variable %s: %s", name, p)
		}
	}
}

// The checker itself: what it must reject, and what it must let through.
func TestCheckerRejectsWhatNoSeriesCarries(t *testing.T) {
	c := NewCatalog()
	if err := c.AddRecordingRule("redisconn:pool_utilization:ratio",
		`sum by (job, instance, redisconn_role, db_client_connection_pool_name) (db_client_connection_count{db_client_connection_state="used"})
		 / sum by (job, instance, redisconn_role, db_client_connection_pool_name) (db_client_connection_max > 0)`, nil); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		expr, want string // want: a substring of the first problem; "" = accepted
	}{
		{`sum by (job, instance) (db_client_connection_max{redisconn_role="worker"})`, ""},
		{`histogram_quantile(0.99, sum by (le) (rate(db_client_operation_duration_seconds_bucket[5m])))`, ""},
		{`rate(db_client_operation_duration_seconds_count{error_type!="", db_operation_name="GET"}[$__rate_interval])`, ""},
		{`redisconn:pool_utilization:ratio{db_client_connection_pool_name="x"} > 0.9`, ""},
		{`up{job="api"} == 0`, ""},
		{`sum by (db_client_connection_pool_name) (redisconn_pubsub_connections{redisconn_role!=""})`, ""},
		{`redisconn_sentinel_sentinels_answering < on (job, instance, redisconn_role, db_client_connection_pool_name) redisconn_sentinel_quorum`, ""},
		{`redisconn_sentinel_master_switches`, `series "redisconn_sentinel_master_switches" is not produced`}, // counter without _total
		{`redisconn_sentinel_quorum{reason="x"}`, `does not carry label reason`},
		{`sum by (db_client_connection_pool_name) (redisconn_pubsub_connections) / on (instance) sum by (db_client_connection_pool_name) (redisconn_server_maxclients)`, `both sides must carry label instance`},
		{`redisconn_limiter_inflight`, `series "redisconn_limiter_inflight" is not produced`},
		{`rate(redisconn_limiter_rejected[1m])`, `series "redisconn_limiter_rejected" is not produced`}, // counter without _total
		{`rate(redisconn_batch_size[1m])`, `series "redisconn_batch_size" is not produced`},             // histogram without a suffix
		{`rate(redisconn_limiter_wait_time_bucket[1m])`, `is not produced`},                             // unit suffix missing
		{`db_client_connection_max{db_client_connection_state="used"}`, `does not carry label db_client_connection_state`},
		{`redisconn_batch_size_sum{le="1"}`, `does not carry label le`},
		{`sum by (db_operation_name) (redisconn_limiter_waiting)`, `does not carry label db_operation_name`},
		{`histogram_quantile(0.9, sum by (job) (rate(redisconn_batch_size_bucket[1m])))`, `no le label`},
		{`redisconn:pool_utilization:ratio{db_client_connection_state="used"}`, `does not carry label db_client_connection_state`},
		{`sum(rate(db_client_connection_timeouts_total[1m])`, `does not parse`},
	} {
		problems := c.Check(tc.expr)
		switch {
		case tc.want == "" && len(problems) > 0:
			t.Errorf("%s: rejected: %v", tc.expr, problems)
		case tc.want != "" && (len(problems) == 0 || !strings.Contains(problems[0], tc.want)):
			t.Errorf("%s: got %v, want a problem with %q", tc.expr, problems, tc.want)
		}
	}
	if p := c.CheckVariable(`label_values(db_client_connection_max{job=~"$job"}, instanse)`); len(p) == 0 {
		t.Error("label_values of a label the series lacks was accepted")
	}
	if p := c.CheckSeries(`redisconn_limiter_limit{job="w",redisconn_role="worker",reason="context"}`); len(p) == 0 {
		t.Error("an input series with a label its signal lacks was accepted")
	}
}
