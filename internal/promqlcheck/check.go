// Package promqlcheck checks PromQL against the table of signals
// (telemetry.Signals): every selector must name a series the managers export
// (or a recording rule's output, or a standard series such as up), and every
// label a query matches, groups or joins on must be one that series carries.
//
// It is a module of its own, so that the Prometheus parser
// (github.com/prometheus/prometheus/promql/parser) stays out of the library's
// go.mod. `make test` runs its tests: they read dashboards/redisconn.json and
// alerts/*.yml of the enclosing repository. They also check that every alert
// has a severity, a summary, a description and a runbook section in
// docs/runbooks.md, that a promtool unit test expects it to fire and one to stay
// silent, and that the fleet budget's recording rules are per server.
package promqlcheck

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/redisconn/redisconn/telemetry"
)

// Labels is a set of label names. A nil Labels is unknown: the labels of a
// series the catalog does not have, which later checks do not complain about
// again.
type Labels map[string]bool

func newLabels(names ...string) Labels {
	l := Labels{}
	for _, n := range names {
		l[n] = true
	}
	return l
}

func (l Labels) sorted() []string { return slices.Sorted(maps.Keys(l)) }

// targetLabels are added by Prometheus to every scraped series; scopeLabels
// by the official OpenTelemetry exporter.
var (
	targetLabels = []string{"job", "instance"}
	scopeLabels  = []string{"otel_scope_name", "otel_scope_version", "otel_scope_schema_url"}
)

// Catalog is what a query may select: series names and the labels each carries.
type Catalog struct {
	series map[string]Labels
}

// NewCatalog is the series of the table of signals (a histogram's _bucket,
// with le, _sum and _count; a counter's _total), each with the base
// attributes, its own attributes, the target labels and the exporter's scope
// labels, plus Prometheus's own up.
func NewCatalog() *Catalog {
	c := &Catalog{series: map[string]Labels{}}
	for _, s := range telemetry.Signals() {
		for _, name := range s.PrometheusSeries() {
			l := newLabels(append(append(s.PrometheusLabels(), targetLabels...), scopeLabels...)...)
			if strings.HasSuffix(name, "_bucket") && s.Kind == telemetry.KindHistogram {
				l["le"] = true
			}
			c.series[name] = l
		}
	}
	c.series["up"] = newLabels(targetLabels...)
	return c
}

// Labels returns the labels of the series name, and whether it is known.
func (c *Catalog) Labels(name string) (Labels, bool) {
	l, ok := c.series[name]
	return l, ok
}

// AddRecordingRule adds a recording rule's output series: named record,
// with the labels its expression keeps (and the rule's own labels).
func (c *Catalog) AddRecordingRule(record, expr string, ruleLabels map[string]string) error {
	e, err := parse(expr)
	if err != nil {
		return err
	}
	out, problems := c.check(e)
	if out != nil {
		for k := range ruleLabels {
			out[k] = true
		}
	}
	c.series[record] = out // nil when unknown: later uses are not checked again
	if len(problems) > 0 {
		return fmt.Errorf("recording rule %s: %s", record, strings.Join(problems, "; "))
	}
	return nil
}

// grafanaVars are the Grafana interval variables a dashboard query may use
// where PromQL wants a duration; the label-value variables ($job, ...) sit
// inside strings and parse as they are.
var grafanaVars = strings.NewReplacer("$__rate_interval", "1m", "$__interval", "1m", "$__range", "1h")

var promParser = parser.NewParser(parser.Options{})

func parse(expr string) (parser.Expr, error) {
	e, err := promParser.ParseExpr(grafanaVars.Replace(expr))
	if err != nil {
		return nil, fmt.Errorf("does not parse: %w", err)
	}
	return e, nil
}

// Check parses expr with the Prometheus parser and returns what is wrong
// with it: a syntax error, a selector of a series not in the catalog, or a
// label that the series (or the expression at that point) does not carry.
func (c *Catalog) Check(expr string) []string {
	e, err := parse(expr)
	if err != nil {
		return []string{err.Error()}
	}
	_, problems := c.check(e)
	return problems
}

var labelValues = regexp.MustCompile(`^\s*label_values\((.*),\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*$`)

// CheckVariable checks a Grafana variable query: label_values(selector, label)
// (the selector must be valid, and its series must carry label), or plain PromQL.
func (c *Catalog) CheckVariable(q string) []string {
	m := labelValues.FindStringSubmatch(q)
	if m == nil {
		return c.Check(q)
	}
	e, err := parse(m[1])
	if err != nil {
		return []string{err.Error()}
	}
	out, problems := c.check(e)
	if len(problems) == 0 && out != nil && !out[m[2]] {
		problems = append(problems, fmt.Sprintf("label_values of %q: %s does not carry label %s (it has %s)", m[1], m[1], m[2], strings.Join(out.sorted(), ", ")))
	}
	return problems
}

// CheckSeries checks a promtool input series, "name{label="value",...}".
func (c *Catalog) CheckSeries(desc string) []string {
	lbls, err := promParser.ParseMetric(desc)
	if err != nil {
		return []string{fmt.Sprintf("series %q does not parse: %v", desc, err)}
	}
	name := lbls.Get(labels.MetricName)
	known, ok := c.series[name]
	if ok && known == nil {
		return nil // a recording rule whose expression is wrong, reported there
	}
	if !ok {
		return []string{fmt.Sprintf("series %s is not produced by the table of signals (nor a recording rule)", name)}
	}
	var problems []string
	lbls.Range(func(l labels.Label) {
		if l.Name != labels.MetricName && !known[l.Name] {
			problems = append(problems, fmt.Sprintf("series %s does not carry label %s (it has %s)", name, l.Name, strings.Join(known.sorted(), ", ")))
		}
	})
	return problems
}

// check walks e and returns the labels its result carries and the problems found.
func (c *Catalog) check(e parser.Expr) (Labels, []string) {
	var problems []string
	out := c.walk(e, &problems)
	sort.Strings(problems)
	return out, slices.Compact(problems)
}

func (c *Catalog) walk(e parser.Expr, problems *[]string) Labels {
	bad := func(format string, a ...any) { *problems = append(*problems, fmt.Sprintf(format, a...)) }
	switch e := e.(type) {
	case *parser.VectorSelector:
		name := e.Name
		for _, m := range e.LabelMatchers {
			if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
				name = m.Value
			}
		}
		known, ok := c.series[name]
		if !ok {
			bad("selector %s: series %q is not produced by the table of signals (nor a recording rule)", e, name)
			return nil
		}
		if known == nil {
			return nil // a recording rule whose expression is wrong, reported there
		}
		for _, m := range e.LabelMatchers {
			if m.Name != labels.MetricName && !known[m.Name] {
				bad("selector %s: series %s does not carry label %s (it has %s)", e, name, m.Name, strings.Join(known.sorted(), ", "))
			}
		}
		return maps.Clone(known)
	case *parser.MatrixSelector:
		return c.walk(e.VectorSelector, problems)
	case *parser.SubqueryExpr:
		return c.walk(e.Expr, problems)
	case *parser.ParenExpr:
		return c.walk(e.Expr, problems)
	case *parser.StepInvariantExpr:
		return c.walk(e.Expr, problems)
	case *parser.UnaryExpr:
		return c.walk(e.Expr, problems)
	case *parser.NumberLiteral, *parser.StringLiteral, *parser.DurationExpr:
		return Labels{}
	case *parser.AggregateExpr:
		if e.Param != nil {
			c.walk(e.Param, problems)
		}
		in := c.walk(e.Expr, problems)
		for _, g := range e.Grouping {
			if in != nil && !in[g] {
				bad("%s %s (%s): its input does not carry label %s (it has %s)", e.Op, map[bool]string{true: "without", false: "by"}[e.Without], strings.Join(e.Grouping, ", "), g, strings.Join(in.sorted(), ", "))
			}
		}
		if e.Without {
			out := maps.Clone(in)
			for _, g := range e.Grouping {
				delete(out, g)
			}
			return out
		}
		if e.Op == parser.TOPK || e.Op == parser.BOTTOMK || e.Op == parser.LIMITK || e.Op == parser.LIMIT_RATIO {
			return in
		}
		if e.Op == parser.COUNT_VALUES {
			if s, ok := e.Param.(*parser.StringLiteral); ok {
				return newLabels(append(slices.Clone(e.Grouping), s.Val)...)
			}
		}
		return newLabels(e.Grouping...)
	case *parser.BinaryExpr:
		lhs := c.walk(e.LHS, problems)
		rhs := c.walk(e.RHS, problems)
		lScalar := e.LHS.Type() == parser.ValueTypeScalar
		rScalar := e.RHS.Type() == parser.ValueTypeScalar
		switch {
		case lScalar && rScalar:
			return Labels{}
		case lScalar:
			return rhs
		case rScalar:
			return lhs
		}
		vm := e.VectorMatching
		if vm != nil && vm.On {
			for _, l := range vm.MatchingLabels {
				if (lhs != nil && !lhs[l]) || (rhs != nil && !rhs[l]) {
					bad("%s on (%s): both sides must carry label %s", e.Op, strings.Join(vm.MatchingLabels, ", "), l)
				}
			}
		}
		if vm != nil && vm.Card == parser.CardOneToMany {
			out := maps.Clone(rhs)
			for _, l := range vm.Include {
				out[l] = true
			}
			return out
		}
		out := maps.Clone(lhs)
		if vm != nil {
			for _, l := range vm.Include {
				out[l] = true
			}
		}
		return out
	case *parser.Call:
		var args []Labels
		for _, a := range e.Args {
			args = append(args, c.walk(a, problems))
		}
		switch e.Func.Name {
		case "histogram_quantile", "histogram_fraction":
			in := args[len(args)-1]
			if in != nil && !in["le"] {
				bad("%s: its input has no le label (select a _bucket series and keep le)", e.Func.Name)
			}
			out := maps.Clone(in)
			delete(out, "le")
			return out
		case "absent", "absent_over_time":
			return Labels{}
		case "time", "vector", "scalar", "pi":
			return Labels{}
		}
		for i, a := range e.Args {
			if t := a.Type(); t == parser.ValueTypeVector || t == parser.ValueTypeMatrix {
				return args[i]
			}
		}
		return Labels{}
	}
	bad("expression %s: node %T is not understood by the checker", e, e)
	return Labels{}
}
