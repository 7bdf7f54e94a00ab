package signaldoc

import (
	"bytes"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/redisconn/redisconn/telemetry"
)

// The committed README's metrics table is what the table of signals generates.
func TestREADMEMetricsTableIsGenerated(t *testing.T) {
	got, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	want, err := Replace(got)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("README.md's metrics table differs from telemetry.Signals: run go generate ./internal/signaldoc and commit")
	}
}

var (
	// promName is anything that looks like one of the managers' Prometheus
	// series or labels.
	promName = regexp.MustCompile(`\b(?:redisconn|db_client)_[a-z0-9_]+\b`)
	// recordName is a recording rule's output (redisconn:...:...).
	recordName = regexp.MustCompile(`\bredisconn:[a-z0-9_:]+[a-z0-9_]`)
	ruleRecord = regexp.MustCompile(`(?m)^\s*- record:\s*(\S+)\s*$`)
)

// The README and the runbooks name only series of the table (families,
// their _bucket/_sum/_count series, their labels) and recording rules of
// alerts/redisconn.rules.yml.
func TestDocsNameOnlySignals(t *testing.T) {
	known := map[string]bool{}
	for _, s := range telemetry.Signals() {
		known[s.PrometheusName()] = true
		for _, n := range s.PrometheusSeries() {
			known[n] = true
		}
		for _, l := range s.PrometheusLabels() {
			known[l] = true
		}
	}
	rules, err := os.ReadFile("../../alerts/redisconn.rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	records := map[string]bool{}
	for _, m := range ruleRecord.FindAllStringSubmatch(string(rules), -1) {
		records[m[1]] = true
	}
	if len(records) == 0 {
		t.Fatal("no recording rules in alerts/redisconn.rules.yml")
	}
	for _, doc := range []string{"../../README.md", "../../docs/runbooks.md"} {
		b, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for i, line := range strings.Split(string(b), "\n") {
			for _, name := range promName.FindAllString(line, -1) {
				n++
				if !known[name] {
					t.Errorf("%s:%d names %s, which is not a series or label of telemetry.Signals", doc, i+1, name)
				}
			}
			for _, at := range recordName.FindAllStringIndex(line, -1) {
				name := line[at[0]:at[1]]
				if at[1] < len(line) && strings.ContainsRune(":-", rune(line[at[1]])) {
					// A connection's client name, redisconn:<role>:<host>:<pid>,
					// goes on past where a rule's name would end.
					continue
				}
				if !records[name] {
					t.Errorf("%s:%d names %s, which is not a recording rule of alerts/redisconn.rules.yml", doc, i+1, name)
				}
			}
		}
		if n == 0 {
			t.Errorf("%s names no series at all: is the pattern still right?", doc)
		}
	}
}
