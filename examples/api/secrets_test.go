package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
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
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// lockedBuffer is a log sink shared by goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Everything the managers and the example services emit during a run, with
// failures on purpose, is captured and searched for the password: logs,
// errors, metrics, spans, ConnectionInfo, HTTP responses, Config printing.
func TestNoSecretInAnythingEmitted(t *testing.T) {
	const password = "Pa55-w0rd-never-printed"
	srv := redistest.Start(t, redistest.Options{Password: password})
	spans := tracetest.NewInMemoryExporter()
	tel, err := otelsetup.Setup(context.Background(), otelsetup.WithGlobal(false), otelsetup.WithSpanExporter(spans),
		otelsetup.WithSampler(sdktrace.AlwaysSample()))
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(context.Background())
	var logs lockedBuffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var emitted []string // errors and printouts
	keep := func(v ...any) {
		for _, x := range v {
			if x != nil {
				emitted = append(emitted, fmt.Sprint(x))
			}
		}
	}

	// Configuration from the environment, as the services load it, printed every way.
	t.Setenv("REDIS_URL", fmt.Sprintf("redis://default:%s@%s/0", password, srv.Addr()))
	apiCfg, err := conn.LoadConfig(conn.RoleAPI)
	if err != nil {
		t.Fatal(err)
	}
	workerCfg, err := conn.LoadConfig(conn.RoleWorker)
	if err != nil {
		t.Fatal(err)
	}
	js, _ := json.Marshal(workerCfg)
	keep(string(js), fmt.Sprintf("%v %+v %#v %s", apiCfg, apiCfg, apiCfg, &apiCfg))
	log.Info("connecting", "config", apiCfg, "worker", workerCfg)

	opts := []conn.Option{conn.WithMeterProvider(tel.MeterProvider), conn.WithTracerProvider(tel.TracerProvider), conn.WithDBStatement(true)}
	api, err := conn.NewAPI(context.Background(), apiCfg, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer api.Close()
	w, err := conn.NewWorker(context.Background(), workerCfg, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { agentrun.Work(ctx, w, 2, agentrun.ProduceOptions{BatchSize: 50}, log); close(done) }()
	defer func() { cancel(); <-done; _ = w.Close() }()
	h := httptest.NewServer(newServer(api, tel, 120, log))
	defer h.Close()

	// A run, streamed; a stop; the cache; the debug and metrics endpoints.
	var bodies []string
	get := func(method, path, body string) {
		req, _ := http.NewRequest(method, h.URL+path, strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		bodies = append(bodies, string(b), fmt.Sprint(resp.Header))
	}
	resp, err := http.Post(h.URL+"/runs", "application/json", strings.NewReader(`{"responses": 300}`))
	if err != nil {
		t.Fatal(err)
	}
	var started struct{ ID string }
	_ = json.NewDecoder(resp.Body).Decode(&started)
	resp.Body.Close()
	get("GET", "/runs/"+started.ID+"/stream", "")
	get("POST", "/runs/"+started.ID+"/stop", "")
	get("GET", "/cache/x", "")
	get("GET", "/debug/connections", "")
	get("GET", "/metrics", "")
	info, err := w.ConnectionInfo(context.Background())
	keep(err)
	ib, _ := json.Marshal(info)
	keep(string(ib), fmt.Sprintf("%+v", info))

	// Failures: a wrong password, a command the server refuses, a stalled server.
	bad := workerCfg
	bad.URL = fmt.Sprintf("redis://default:%s-wrong@%s/0", password, srv.Addr())
	_, err = conn.NewWorker(context.Background(), bad)
	keep(err)
	if err == nil {
		t.Error("a wrong password connected")
	}
	keep(w.Set(context.Background(), "s:str", "v", time.Minute).Err(), w.LPush(context.Background(), "s:str", "x").Err())
	_, err = w.BatchRPush(context.Background(), "s:str", 1, 2, 3)
	keep(err)
	srv.Pause()
	tctx, tcancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	keep(w.Get(tctx, "s:k").Err(), api.Get(tctx, "s:k").Err())
	_, err = api.ConnectionInfo(tctx)
	keep(err)
	tcancel()
	srv.Resume()
	get("GET", "/debug/connections", "")

	_ = tel.TracerProvider.ForceFlush(context.Background())
	for _, s := range spans.GetSpans() {
		emitted = append(emitted, s.Name, s.Status.Description)
		for _, kv := range s.Attributes {
			emitted = append(emitted, string(kv.Key)+"="+kv.Value.Emit())
		}
		for _, e := range s.Events {
			for _, kv := range e.Attributes {
				emitted = append(emitted, kv.Value.Emit())
			}
		}
	}
	emitted = append(emitted, logs.String())
	emitted = append(emitted, bodies...)
	statements := 0
	for _, text := range emitted {
		if strings.Contains(text, password) {
			t.Errorf("the password appears in: %.300s", text)
		}
		if strings.Contains(text, "db.statement=") {
			statements++
		}
	}
	if statements == 0 || len(emitted) < 50 {
		t.Fatalf("captured too little to prove anything: %d texts, %d statements", len(emitted), statements)
	}
	t.Logf("searched %d captured texts (%d bytes of logs, %d spans)", len(emitted), len(logs.String()), len(spans.GetSpans()))
}
