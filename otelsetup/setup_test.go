package otelsetup_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/redisconn/redisconn/conn"
	"github.com/redisconn/redisconn/internal/redistest"
	"github.com/redisconn/redisconn/otelsetup"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// The OTLP HTTP exporter's idle keep-alive connections close on their own.
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)
}

func items(n int) []any {
	v := make([]any, n)
	for i := range v {
		v[i] = "item-" + strconv.Itoa(i)
	}
	return v
}

// An OTLP/HTTP round trip: Setup configured only by OTEL_* variables sends the
// spans of a worker to a receiver started in the test.
func TestOTLPHTTPExportFollowsTheEnvironment(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	var (
		mu       sync.Mutex
		bodies   [][]byte
		requests int
	)
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		requests++
		if r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" {
			t.Errorf("OTLP request %s %s %q", r.Method, r.URL.Path, r.Header.Get("Content-Type"))
		}
		bodies = append(bodies, body)
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer receiver.Close()
	t.Setenv("OTEL_TRACES_EXPORTER", "otlp")
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.URL)
	t.Setenv("OTEL_TRACES_SAMPLER", "always_on")
	t.Setenv("OTEL_SERVICE_NAME", "otlp-roundtrip")

	tel, err := otelsetup.Setup(context.Background(), otelsetup.WithGlobal(false))
	if err != nil {
		t.Fatal(err)
	}
	cfg := conn.DefaultConfig(conn.RoleWorker)
	cfg.Host, cfg.Port = "127.0.0.1", srv.Port()
	w, err := conn.NewWorker(context.Background(), cfg, conn.WithTracerProvider(tel.TracerProvider), conn.WithMeterProvider(tel.MeterProvider))
	if err != nil {
		t.Fatal(err)
	}
	ctx, root := tel.TracerProvider.Tracer("test").Start(context.Background(), "agent.run")
	if _, err := w.BatchRPush(ctx, "otlp:list", items(3)...); err != nil {
		t.Fatal(err)
	}
	root.End()
	_ = w.Close()
	if err := tel.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown (flushes the spans): %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	all := string(joinBytes(bodies))
	for _, want := range []string{"otlp-roundtrip", "agent.run", "BatchRPush", "rpush", root.SpanContext().TraceID().String()} {
		if want == root.SpanContext().TraceID().String() {
			id := root.SpanContext().TraceID()
			want = string(id[:])
		}
		if !strings.Contains(all, want) {
			t.Errorf("the receiver got %d requests without %q", requests, want)
		}
	}
}

func joinBytes(bs [][]byte) []byte {
	var out []byte
	for _, b := range bs {
		out = append(out, b...)
	}
	return out
}

func TestSetupRejectsAnUnknownExporter(t *testing.T) {
	t.Setenv("OTEL_TRACES_EXPORTER", "carrier-pigeon")
	_, err := otelsetup.Setup(context.Background(), otelsetup.WithGlobal(false))
	if err == nil || !strings.Contains(err.Error(), "OTEL_TRACES_EXPORTER") {
		t.Fatalf("got %v", err)
	}
}
