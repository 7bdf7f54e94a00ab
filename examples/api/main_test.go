package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redisconn/redisconn/conn"
	"github.com/redisconn/redisconn/examples/agentrun"
	"github.com/redisconn/redisconn/internal/redistest"
	"github.com/redisconn/redisconn/otelsetup"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// platform is the API (over HTTP) and two workers, against a real redis-server.
type platform struct {
	srv   *httptest.Server
	api   *conn.API
	tel   *otelsetup.Telemetry
	spans *tracetest.InMemoryExporter
}

func newPlatform(t *testing.T, delay time.Duration) *platform {
	t.Helper()
	redisSrv := redistest.Start(t, redistest.Options{})
	spans := tracetest.NewInMemoryExporter()
	tel, err := otelsetup.Setup(context.Background(), otelsetup.WithGlobal(false), otelsetup.WithSpanExporter(spans))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	opts := []conn.Option{conn.WithMeterProvider(tel.MeterProvider), conn.WithTracerProvider(tel.TracerProvider)}
	apiCfg := conn.DefaultConfig(conn.RoleAPI)
	apiCfg.Host, apiCfg.Port = "127.0.0.1", redisSrv.Port()
	api, err := conn.NewAPI(context.Background(), apiCfg, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = api.Close() })

	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wcfg := conn.DefaultConfig(conn.RoleWorker)
		wcfg.Host, wcfg.Port = "127.0.0.1", redisSrv.Port()
		w, err := conn.NewWorker(context.Background(), wcfg, opts...)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			agentrun.Work(ctx, w, 4, agentrun.ProduceOptions{BatchSize: 50, Delay: delay}, log)
			_ = w.Close()
		}()
	}
	t.Cleanup(func() { cancel(); wg.Wait() })

	srv := httptest.NewServer(newServer(api, tel, 200, log))
	t.Cleanup(srv.Close)
	return &platform{srv: srv, api: api, tel: tel, spans: spans}
}

func (p *platform) start(t *testing.T, body string) string {
	t.Helper()
	resp, err := http.Post(p.srv.URL+"/runs", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("POST /runs: %d %s", resp.StatusCode, b)
	}
	var out struct{ ID string }
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.ID == "" {
		t.Fatalf("POST /runs body: %v", err)
	}
	return out.ID
}

type event struct {
	name string
	resp agentrun.Response
}

// stream reads the run's SSE stream; onEvent may return false to stop reading.
func (p *platform) stream(t *testing.T, ctx context.Context, id string, onEvent func(event) bool) []event {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.srv.URL+"/runs/"+id+"/stream", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var events []event
	var cur event
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			cur.name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &cur.resp); err != nil {
				t.Fatalf("data is not a response: %q", line)
			}
		case line == "":
			events = append(events, cur)
			if onEvent != nil && !onEvent(cur) {
				return events
			}
			cur = event{}
		}
	}
	return events
}

func checkInOrder(t *testing.T, events []event) {
	t.Helper()
	for i, e := range events {
		if e.resp.Seq != i {
			t.Fatalf("event %d has seq %d: out of order or missing", i, e.resp.Seq)
		}
	}
}

func TestStreamDeliversEveryResponseInOrderAndEnds(t *testing.T) {
	p := newPlatform(t, time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	id := p.start(t, `{"responses": 1234}`)
	events := p.stream(t, ctx, id, nil)
	if len(events) != 1235 {
		t.Fatalf("%d events, want 1234 responses and the end", len(events))
	}
	checkInOrder(t, events)
	last := events[len(events)-1]
	if last.name != "end" || last.resp.Status != "completed" {
		t.Fatalf("last event %+v", last)
	}
	// A client arriving after the run ended catches up from the list and ends.
	again := p.stream(t, ctx, id, nil)
	if len(again) != 1235 || again[1234].resp.Status != "completed" {
		t.Fatalf("late stream: %d events", len(again))
	}
	checkInOrder(t, again)
	ttl := p.api.TTL(ctx, agentrun.ResponsesKey(id)).Val()
	if ttl < 23*time.Hour || ttl > 24*time.Hour {
		t.Errorf("responses TTL %v, want 24h", ttl)
	}
	if n := p.api.Exists(ctx, agentrun.LockKey(id)).Val(); n != 0 {
		t.Error("the run lock was not released")
	}
	resp, err := http.Get(p.srv.URL + "/runs/" + id)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st agentrun.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil || st.Status != "completed" || st.Responses != 1234 {
		t.Errorf("GET /runs/{id}: %+v %v", st, err)
	}
}

func TestManyConcurrentRunsAllComplete(t *testing.T) {
	p := newPlatform(t, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	const runs = 12
	var wg sync.WaitGroup
	for i := 0; i < runs; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := p.start(t, `{"responses": 500}`)
			events := p.stream(t, ctx, id, nil)
			if len(events) != 501 || events[500].resp.Status != "completed" {
				t.Errorf("run %s: %d events", id, len(events))
				return
			}
			checkInOrder(t, events)
		}()
	}
	wg.Wait()
}

func TestStopEndsARunEarly(t *testing.T) {
	p := newPlatform(t, 2*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	id := p.start(t, `{"responses": 200000}`)
	stopped := false
	events := p.stream(t, ctx, id, func(e event) bool {
		if e.resp.Seq == 100 && !stopped {
			stopped = true
			resp, err := http.Post(p.srv.URL+"/runs/"+id+"/stop", "", nil)
			if err != nil || resp.StatusCode != http.StatusAccepted {
				t.Errorf("stop: %v %v", err, resp)
			}
		}
		return true
	})
	last := events[len(events)-1]
	if last.name != "end" || last.resp.Status != "stopped" || len(events) >= 200000 {
		t.Fatalf("after STOP: %d events, last %+v", len(events), last)
	}
	checkInOrder(t, events)
	// Stopping a run that is over is a 404.
	resp, _ := http.Post(p.srv.URL+"/runs/"+id+"/stop", "", nil)
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("stop after the end: %d", resp.StatusCode)
	}
}

// A client that goes away mid-stream leaves no subscription behind.
func TestClientDisconnectReleasesTheSubscription(t *testing.T) {
	p := newPlatform(t, 5*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	id := p.start(t, `{"responses": 100000}`)
	p.stream(t, ctx, id, func(e event) bool { return e.resp.Seq < 60 })
	cancel()
	if !redistest.WaitFor(context.Background(), 10*time.Second, func() bool {
		info, _ := p.api.ConnectionInfo(context.Background())
		return info.PubSub.Active == 0
	}) {
		info, _ := p.api.ConnectionInfo(context.Background())
		t.Fatalf("pub/sub connections still active: %+v", info.PubSub)
	}
	resp, _ := http.Post(p.srv.URL+"/runs/"+id+"/stop", "", nil)
	resp.Body.Close()
}

func TestMetricsConnectionsCacheAndErrors(t *testing.T) {
	p := newPlatform(t, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	id := p.start(t, "") // the default number of responses
	if events := p.stream(t, ctx, id, nil); len(events) != 201 {
		t.Fatalf("default run: %d events", len(events))
	}

	get := func(path string) (*http.Response, string) {
		resp, err := http.Get(p.srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	resp, body := get("/metrics")
	if resp.StatusCode != 200 || !strings.Contains(body, `redisconn_role="api"`) || !strings.Contains(body, "redisconn_limiter_wait_time_seconds") {
		t.Errorf("/metrics: %d, api and worker series missing", resp.StatusCode)
	}
	resp, body = get("/debug/connections")
	var info conn.ConnectionInfo
	if err := json.Unmarshal([]byte(body), &info); err != nil || resp.StatusCode != 200 || info.Role != conn.RoleAPI || info.Pool.MaxConns != 128 {
		t.Errorf("/debug/connections: %d %v %s", resp.StatusCode, err, body)
	}
	r1, v1 := get("/cache/answer")
	r2, v2 := get("/cache/answer")
	if r1.Header.Get("X-Cache") != "miss" || r2.Header.Get("X-Cache") != "hit" || v1 != v2 {
		t.Errorf("cache: %s %q then %s %q", r1.Header.Get("X-Cache"), v1, r2.Header.Get("X-Cache"), v2)
	}
	if resp, _ := get("/runs/nope/stream"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown run stream: %d", resp.StatusCode)
	}
	for _, body := range []string{`{"responses": -1}`, `{"responses": "many"}`, `not json`} {
		resp, err := http.Post(p.srv.URL+"/runs", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("POST /runs %s: %d", body, resp.StatusCode)
		}
	}
	if resp, _ := get("/healthz"); resp.StatusCode != 200 {
		t.Errorf("/healthz %d", resp.StatusCode)
	}
}
