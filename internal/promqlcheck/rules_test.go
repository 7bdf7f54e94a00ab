package promqlcheck

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// Beyond PromQL: every alert of alerts/*.yml is operable (a severity, a
// summary, a description and a runbook section in docs/runbooks.md) and is
// proven firing by a promtool unit test.

type alertRule struct {
	Alert       string            `yaml:"alert"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

func readAlerts(t *testing.T) (map[string]alertRule, []string) {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(root, "alerts", "*.yml"))
	alerts := map[string]alertRule{}
	var order []string
	for _, f := range files {
		if strings.HasSuffix(f, ".test.yml") {
			continue
		}
		var rf struct {
			Groups []struct {
				Rules []alertRule `yaml:"rules"`
			} `yaml:"groups"`
		}
		readYAML(t, f, &rf)
		for _, g := range rf.Groups {
			for _, r := range g.Rules {
				if r.Alert != "" {
					alerts[r.Alert] = r
					order = append(order, r.Alert)
				}
			}
		}
	}
	if len(alerts) == 0 {
		t.Fatal("no alerts in alerts/")
	}
	return alerts, order
}

func TestEveryAlertHasARunbook(t *testing.T) {
	alerts, order := readAlerts(t)
	b, err := os.ReadFile(filepath.Join(root, "docs", "runbooks.md"))
	if err != nil {
		t.Fatal(err)
	}
	headings := regexp.MustCompile(`(?m)^## (\S+)\s*$`).FindAllStringSubmatch(string(b), -1)
	var sections []string
	for _, h := range headings {
		sections = append(sections, h[1])
	}
	for _, name := range order {
		a := alerts[name]
		if s := a.Labels["severity"]; s != "warning" && s != "critical" {
			t.Errorf("%s: severity %q, want warning or critical", name, s)
		}
		for _, k := range []string{"summary", "description", "runbook_url"} {
			if strings.TrimSpace(a.Annotations[k]) == "" {
				t.Errorf("%s: no %s annotation", name, k)
			}
		}
		if want := "docs/runbooks.md#" + strings.ToLower(name); !strings.HasSuffix(a.Annotations["runbook_url"], want) {
			t.Errorf("%s: runbook_url %q does not end in %s", name, a.Annotations["runbook_url"], want)
		}
		if !slices.Contains(sections, name) {
			t.Errorf("%s: docs/runbooks.md has no section \"## %s\"", name, name)
		}
	}
}

func TestEveryAlertFiresInAUnitTest(t *testing.T) {
	alerts, order := readAlerts(t)
	files, _ := filepath.Glob(filepath.Join(root, "alerts", "*.test.yml"))
	fires := map[string]bool{}
	silent := map[string]bool{}
	for _, f := range files {
		var tf struct {
			Tests []struct {
				AlertRuleTest []struct {
					Alertname string `yaml:"alertname"`
					ExpAlerts []any  `yaml:"exp_alerts"`
				} `yaml:"alert_rule_test"`
			} `yaml:"tests"`
		}
		readYAML(t, f, &tf)
		for _, tc := range tf.Tests {
			for _, at := range tc.AlertRuleTest {
				if len(at.ExpAlerts) > 0 {
					fires[at.Alertname] = true
				} else {
					silent[at.Alertname] = true
				}
			}
		}
	}
	for _, name := range order {
		if !fires[name] {
			t.Errorf("%s: no promtool test expects it to fire", name)
		}
		if !silent[name] {
			t.Errorf("%s: no promtool test expects it to stay silent", name)
		}
	}
	for name := range fires {
		if _, ok := alerts[name]; !ok {
			t.Errorf("a promtool test expects %s, which no rule file defines", name)
		}
	}
}

// The fleet's budget is per Redis server: its recording rules keep the pool
// name and nothing else, so that every job, instance and role that reports a
// server adds up into one series (and nobody filters them by job).
func TestFleetRulesArePerServer(t *testing.T) {
	c, _ := catalogWithRules(t)
	for _, r := range []string{
		"redisconn:fleet_connection_budget:sum",
		"redisconn:fleet_maxclients:max",
		"redisconn:fleet_connection_budget:ratio",
	} {
		l, ok := c.Labels(r)
		if !ok || l == nil {
			t.Errorf("recording rule %s is missing or does not check", r)
			continue
		}
		if got := strings.Join(l.sorted(), ","); got != "db_client_connection_pool_name" {
			t.Errorf("%s keeps labels %s, want only db_client_connection_pool_name", r, got)
		}
	}
}
