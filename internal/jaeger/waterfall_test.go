package jaeger

import (
	"bytes"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// run builds the shape of an agent run's trace: the API's request span, its
// two commands, agent.run with n BatchRPush spans (one RPUSH chunk each, the
// third one failed), and the final pipeline.
func run(n int) *Trace {
	t0 := time.Unix(1700000000, 0)
	at := func(us int) time.Time { return t0.Add(time.Duration(us) * time.Microsecond) }
	t := &Trace{ID: "0af7651916cd43dd8448eb211c80319c"}
	add := func(id, parent, name, svc, kind string, start, dur int, attrs map[string]any) {
		if attrs == nil {
			attrs = map[string]any{}
		}
		s := &Span{TraceID: t.ID, SpanID: id, ParentID: parent, Name: name, Service: svc, Kind: kind,
			Start: at(start), Duration: time.Duration(dur) * time.Microsecond, Attrs: attrs}
		s.Error = attrs["otel.status_code"] == "ERROR"
		t.Spans = append(t.Spans, s)
	}
	add("a", "", "POST /runs", "agent-api", "server", 0, 1000, map[string]any{"http.response.status_code": int64(202)})
	add("b", "a", "set", "agent-api", "client", 100, 300, nil)
	add("c", "a", "rpush", "agent-api", "client", 500, 300, nil)
	add("r", "a", "agent.run", "agent-worker", "internal", 1200, 10000, map[string]any{
		"agent.run.id": "e9547952d9ce22b8", "agent.run.responses": int64(50 * n), "agent.run.status": "completed"})
	for i := range n {
		id := strconv.Itoa(i)
		attrs := map[string]any{"db.operation.batch.size": int64(50)}
		chunk := map[string]any{"redisconn.limiter.wait_time": 0.000012, "redisconn.pipeline.size": int64(3)}
		if i == 2 {
			chunk["otel.status_code"], chunk["error.type"] = "ERROR", "WRONGTYPE"
		}
		add("p"+id, "r", "BatchRPush", "agent-worker", "internal", 1300+i*100, 80, attrs)
		add("q"+id, "p"+id, "rpush", "agent-worker", "client", 1310+i*100, 60, chunk)
	}
	add("z", "r", "redis.pipeline multi rpush expire publish del exec", "agent-worker", "client", 11000, 150,
		map[string]any{"db.operation.batch.size": int64(7), "redisconn.limiter.wait_time": 0.0})
	return t
}

func TestWaterfallShowsTreeTimesAndRedisDetails(t *testing.T) {
	var b bytes.Buffer
	Waterfall(&b, run(3), WaterfallOptions{Width: 20})
	out := b.String()
	t.Logf("\n%s", out)
	for _, want := range []string{
		"trace 0af7651916cd43dd8448eb211c80319c: 11 spans in 11.20ms, services agent-api (3), agent-worker (8)",
		"POST /runs", "HTTP 202",
		"└─ agent.run", "run e9547952d9ce22b8, 150 responses, completed",
		"├─ BatchRPush", "50 items",
		"│  └─ rpush", "coalesced, pipeline of 3, wait 12µs",
		"ERROR WRONGTYPE",
		"7 commands, wait 0",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("waterfall lacks %q", want)
		}
	}
	// Every bar is the same width, inside its frame.
	for _, line := range strings.Split(strings.TrimSpace(out), "\n")[2:] {
		j := strings.LastIndex(line, "│")
		i := strings.LastIndex(line[:max(j, 0)], "│")
		if i < 0 || j <= i || utf8.RuneCountInString(line[i:j]) != 21 {
			t.Errorf("bad bar in %q", line)
		}
	}
}

func TestWaterfallCollapsesRepeatsButNotErrors(t *testing.T) {
	var b bytes.Buffer
	Waterfall(&b, run(10), WaterfallOptions{Collapse: 2})
	out := b.String()
	t.Logf("\n%s", out)
	if n := strings.Count(out, "├─ BatchRPush"); n != 3 { // two first ones, the failed third
		t.Errorf("%d BatchRPush lines shown, want 3:\n%s", n, out)
	}
	if !strings.Contains(out, "⋮ 7 more BatchRPush") || !strings.Contains(out, "350 items, 7 spans below, max wait 12µs") {
		t.Errorf("no summary line of the 7 hidden BatchRPush:\n%s", out)
	}
	if !strings.Contains(out, "ERROR WRONGTYPE") {
		t.Errorf("the failed chunk is hidden:\n%s", out)
	}
}

func TestWaterfallFocusShowsThePathToASpan(t *testing.T) {
	var b bytes.Buffer
	Waterfall(&b, run(5), WaterfallOptions{Focus: "p3", FocusLabel: "exemplar"})
	out := b.String()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	// Header, column names, POST /runs, agent.run, BatchRPush (focused), its rpush.
	if len(lines) != 6 || !strings.Contains(lines[4], "◀ exemplar") || !strings.Contains(lines[5], "rpush") {
		t.Errorf("focus on one BatchRPush:\n%s", out)
	}
}

func TestParseTracesReadsJaegerJSON(t *testing.T) {
	body := []byte(`{"data":[{"traceID":"0af7651916cd43dd8448eb211c80319c","spans":[
	 {"traceID":"0af7651916cd43dd8448eb211c80319c","spanID":"b","operationName":"rpush","references":[{"refType":"CHILD_OF","traceID":"0af7651916cd43dd8448eb211c80319c","spanID":"a"}],
	  "startTime":1700000000000200,"duration":50,"tags":[{"key":"span.kind","type":"string","value":"client"},{"key":"redisconn.limiter.wait_time","type":"float64","value":1.5e-05},
	  {"key":"redisconn.pipeline.size","type":"int64","value":4},{"key":"error","type":"bool","value":true},{"key":"error.type","type":"string","value":"WRONGTYPE"}],"logs":[],"processID":"p2"},
	 {"traceID":"0af7651916cd43dd8448eb211c80319c","spanID":"a","operationName":"agent.run","references":[],"startTime":1700000000000000,"duration":900,"tags":[],"processID":"p1"}],
	 "processes":{"p1":{"serviceName":"agent-api","tags":[]},"p2":{"serviceName":"agent-worker","tags":[{"key":"host.name","type":"string","value":"h"}]}}}],"errors":null}`)
	ts, err := parseTraces(body)
	if err != nil || len(ts) != 1 || len(ts[0].Spans) != 2 {
		t.Fatalf("parseTraces: %v %v", ts, err)
	}
	root, child := ts[0].Spans[0], ts[0].Spans[1]
	if root.Name != "agent.run" || root.ParentID != "" || root.Service != "agent-api" || root.Kind != "internal" {
		t.Errorf("root: %+v", root)
	}
	if child.ParentID != "a" || child.Service != "agent-worker" || child.Kind != "client" || !child.Error ||
		child.Duration != 50*time.Microsecond || child.Start.Sub(root.Start) != 200*time.Microsecond {
		t.Errorf("child: %+v", child)
	}
	if w, ok := child.Float("redisconn.limiter.wait_time"); !ok || w != 1.5e-05 {
		t.Errorf("wait: %v", child.Attrs)
	}
	if child.Attrs["redisconn.pipeline.size"] != int64(4) || child.Resource["host.name"] != "h" || child.Resource["service.name"] != "agent-worker" {
		t.Errorf("attributes: %v %v", child.Attrs, child.Resource)
	}
	if _, err := parseTraces([]byte(`{"data":[],"errors":[{"code":404,"msg":"trace not found"}]}`)); err != ErrNotFound {
		t.Errorf("a 404 answer: %v", err)
	}
}
