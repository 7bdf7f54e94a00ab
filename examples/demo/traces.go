package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redisconn/redisconn/internal/jaeger"
)

// defaultTraceRatio is the share of runs the demo traces (DEMO_TRACE_RATIO):
// more than production's 1 in 10, so a short demo has traced runs to show.
const defaultTraceRatio = 0.25

// lineWriter prefixes every line written to it (the Jaeger build's progress
// inside the demo's output).
type lineWriter struct {
	out    io.Writer
	prefix string
	buf    []byte
}

func (l *lineWriter) Write(p []byte) (int, error) {
	l.buf = append(l.buf, p...)
	for {
		i := strings.IndexByte(string(l.buf), '\n')
		if i < 0 {
			return len(p), nil
		}
		fmt.Fprintf(l.out, "%s%s\n", l.prefix, l.buf[:i])
		l.buf = l.buf[i+1:]
	}
}

// startJaeger builds Jaeger when missing (scripts/jaeger.sh, with progress;
// minutes the first time), starts it on free loopback ports and returns the
// environment that sends the services' spans to it. Without Jaeger the demo
// goes on without traces, and says why.
func (s *stack) startJaeger(ctx context.Context, root, dir string, o options, out io.Writer) []string {
	if !o.traces {
		fmt.Fprintln(out, "  jaeger      off (DEMO_TRACES=0): spans stay in the processes")
		return []string{"OTEL_TRACES_EXPORTER=none"}
	}
	bin, ok, err := jaeger.Path(ctx, root)
	if err == nil && !ok {
		fmt.Fprintln(out, "  jaeger      not built yet: building it now (about 9 minutes the first time on 2 cores; DEMO_TRACES=0 skips traces)")
		bin, err = jaeger.Ensure(ctx, root, &lineWriter{out: out, prefix: "              "})
	}
	if err != nil {
		fmt.Fprintf(out, "  jaeger      unavailable, going on without traces: %v\n", err)
		return []string{"OTEL_TRACES_EXPORTER=none"}
	}
	// Three tries: a port chosen free can be taken before Jaeger binds it.
	var in *jaeger.Instance
	for try := 1; try <= 3 && in == nil; try++ {
		in, err = s.tryJaeger(ctx, bin, dir)
		if ctx.Err() != nil {
			return []string{"OTEL_TRACES_EXPORTER=none"}
		}
	}
	if in == nil {
		fmt.Fprintf(out, "  jaeger      did not start, going on without traces: %v\n", err)
		return []string{"OTEL_TRACES_EXPORTER=none"}
	}
	s.jaeger = in
	env := in.OTLPEnv()
	s.sampler = os.Getenv("OTEL_TRACES_SAMPLER")
	if s.sampler == "" {
		s.sampler = "parentbased_traceidratio " + strconv.FormatFloat(o.traceRatio, 'g', -1, 64)
		env = append(env, "OTEL_TRACES_SAMPLER=parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG="+strconv.FormatFloat(o.traceRatio, 'g', -1, 64))
	} else {
		s.sampler += " " + os.Getenv("OTEL_TRACES_SAMPLER_ARG")
	}
	fmt.Fprintf(out, "  jaeger      %s (query API; OTLP in on %s; in memory, sampler %s)\n", in.QueryURL, in.OTLPHTTP, strings.TrimSpace(s.sampler))
	return env
}

// tryJaeger starts Jaeger on fresh ports and waits until it is healthy; on
// failure it is stopped and forgotten, so the demo can go on without it.
func (s *stack) tryJaeger(ctx context.Context, bin, dir string) (*jaeger.Instance, error) {
	in, err := jaeger.NewInstance(dir, 200000)
	if err != nil {
		return nil, err
	}
	c, err := s.procs.start("jaeger", bin, in.Args(), nil)
	if err != nil {
		return nil, err
	}
	err = in.WaitHealthy(ctx, 30*time.Second, func() error {
		select {
		case <-c.done:
			return fmt.Errorf("jaeger exited: %s", tail(filepath.Join(s.procs.dir, "jaeger.log"), 3))
		default:
			return nil
		}
	})
	if err != nil {
		s.procs.drop(c)
		return nil, err
	}
	return in, nil
}

// showTraces prints one completed run's trace from Jaeger as a waterfall,
// then one exemplar that Prometheus stored and the same trace from Jaeger.
func (s *stack) showTraces(ctx context.Context, load *loadResult, out io.Writer) {
	if s.jaeger == nil {
		return
	}
	c := &jaeger.Client{URL: s.jaeger.QueryURL}
	fmt.Fprintf(out, "\ntraces in Jaeger (%s, sampler %s)\n", s.jaeger.QueryURL, strings.TrimSpace(s.sampler))
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()

	// The newest completed runs first: one of them was sampled.
	ids := load.completedRuns()
	slices.Reverse(ids)
	var traceID, runID string
	deadline := time.Now().Add(10 * time.Second)
	for traceID == "" && time.Now().Before(deadline) && ctx.Err() == nil {
		for i, id := range ids {
			if i == 200 {
				break
			}
			tid, err := c.FindRun(ctx, "agent-worker", id, time.Hour)
			if err == nil {
				traceID, runID = tid, id
				break
			}
			if !errors.Is(err, jaeger.ErrNotFound) {
				fmt.Fprintf(out, "  %v\n", err)
				return
			}
		}
		if traceID == "" {
			time.Sleep(time.Second) // spans still on their way
		}
	}
	if traceID == "" {
		fmt.Fprintf(out, "  none of the last %d completed runs is in Jaeger: were they sampled? (OTEL_TRACES_SAMPLER, DEMO_TRACE_RATIO)\n", min(len(ids), 200))
	} else {
		t, err := c.WaitComplete(ctx, traceID, 1500*time.Millisecond, hasRunEnd)
		if err != nil {
			fmt.Fprintf(out, "  fetching trace %s: %v\n", traceID, err)
		} else {
			fmt.Fprintf(out, "  run %s, its trace fetched back from Jaeger (`go run ./examples/trace -jaeger %s %s`):\n\n", runID, s.jaeger.QueryURL, runID)
			jaeger.Waterfall(&lineWriter{out: out, prefix: "  "}, t, jaeger.WaterfallOptions{Collapse: 2, Width: 32})
		}
	}
	s.showExemplar(ctx, c, out)
}

// hasRunEnd: the trace holds a finished agent.run and its last write (the
// final MULTI pipeline), so the worker's spans are in.
func hasRunEnd(t *jaeger.Trace) bool {
	for _, sp := range t.Spans {
		if sp.Name == jaeger.RunSpan && sp.Attr("agent.run.status") != "" {
			return true
		}
	}
	return false
}

// exemplar is one of Prometheus' stored exemplars.
type exemplar struct {
	metric          string
	labels          map[string]string
	value           float64
	at              time.Time
	traceID, spanID string
}

// exemplars returns the exemplars of query over the last 10 minutes, the
// highest values first.
func exemplars(ctx context.Context, promURL, query string) ([]exemplar, error) {
	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   []struct {
			SeriesLabels map[string]string `json:"seriesLabels"`
			Exemplars    []struct {
				Labels    map[string]string `json:"labels"`
				Value     string            `json:"value"`
				Timestamp float64           `json:"timestamp"`
			} `json:"exemplars"`
		} `json:"data"`
	}
	now := time.Now()
	q := url.Values{"query": {query}, "start": {strconv.FormatInt(now.Add(-10*time.Minute).Unix(), 10)}, "end": {strconv.FormatInt(now.Unix(), 10)}}
	if err := getJSON(ctx, promURL+"/api/v1/query_exemplars?"+q.Encode(), &body); err != nil {
		return nil, err
	}
	if body.Status != "success" {
		return nil, fmt.Errorf("prometheus: %s", body.Error)
	}
	var out []exemplar
	for _, series := range body.Data {
		for _, e := range series.Exemplars {
			v, _ := strconv.ParseFloat(e.Value, 64)
			if len(e.Labels["trace_id"]) != 32 {
				continue
			}
			out = append(out, exemplar{metric: series.SeriesLabels["__name__"], labels: series.SeriesLabels, value: v,
				at: time.Unix(0, int64(e.Timestamp*1e9)), traceID: e.Labels["trace_id"], spanID: e.Labels["span_id"]})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].value > out[j].value })
	return out, nil
}

// showExemplar takes the limiter-wait exemplars Prometheus stored (falling
// back to operation durations), the longest first, and prints the first
// whose trace Jaeger has (preferring one inside an agent run), with the path
// from the trace's root to the exemplar's span.
func (s *stack) showExemplar(ctx context.Context, c *jaeger.Client, out io.Writer) {
	if s.promURL == "" {
		fmt.Fprintln(out, "\n  exemplars: Prometheus is not running (make deps installs it)")
		return
	}
	var all []exemplar
	for _, q := range []string{`redisconn_limiter_wait_time_seconds_bucket{redisconn_role="worker"}`, `db_client_operation_duration_seconds_bucket{redisconn_role="worker"}`} {
		ex, err := exemplars(ctx, s.promURL, q)
		if err != nil {
			fmt.Fprintf(out, "\n  exemplars: %v\n", err)
			return
		}
		all = append(all, ex...)
	}
	if len(all) == 0 {
		fmt.Fprintln(out, "\n  exemplars: Prometheus stored none (no sampled span recorded a sample)")
		return
	}
	var chosen *exemplar
	var chosenTrace *jaeger.Trace
	for i := range all {
		if i == 20 {
			break
		}
		t, err := c.Trace(ctx, all[i].traceID)
		if err != nil {
			continue
		}
		if chosen == nil || hasRunEnd(t) && !hasRunEnd(chosenTrace) {
			chosen, chosenTrace = &all[i], t
		}
		if hasRunEnd(t) {
			break
		}
	}
	if chosen == nil {
		fmt.Fprintf(out, "\n  exemplars: Prometheus has %d with trace ids, none of the longest 20 is in Jaeger\n", len(all))
		return
	}
	e := chosen
	var ls []string
	for _, k := range []string{"redisconn_role", "db_operation_name", "le"} {
		if v := e.labels[k]; v != "" {
			ls = append(ls, k+"="+strconv.Quote(v))
		}
	}
	what := "limiter wait"
	if strings.HasPrefix(e.metric, "db_client_operation_duration") {
		what = "operation duration"
	}
	fmt.Fprintf(out, "\n  an exemplar from Prometheus (%s/api/v1/query_exemplars):\n", s.promURL)
	fmt.Fprintf(out, "    %s{%s}  %s %s at %s\n", e.metric, strings.Join(ls, ","), what, jaeger.Dur(time.Duration(e.value*float64(time.Second))), e.at.Format("15:04:05.000"))
	fmt.Fprintf(out, "    trace_id=%s span_id=%s\n", e.traceID, e.spanID)
	fmt.Fprintf(out, "  the same trace from Jaeger (%s/api/traces/%s), the path to that span:\n\n", s.jaeger.QueryURL, e.traceID)
	jaeger.Waterfall(&lineWriter{out: out, prefix: "  "}, chosenTrace, jaeger.WaterfallOptions{Focus: e.spanID, FocusLabel: "the exemplar's span", Width: 32})
}
