package telemetry_test

import (
	"context"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/redisconn/redisconn/conn"
	"github.com/redisconn/redisconn/internal/redistest"
	"github.com/redisconn/redisconn/otelsetup"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// simulateRun is an agent run as the worker does it: a root span, a few
// single commands, a pipeline, and the batched responses and notifications.
func simulateRun(t *testing.T, f *fixture) (root trace.Span) {
	t.Helper()
	ctx, root := f.tel.TracerProvider.Tracer("agent").Start(context.Background(), "agent.run",
		trace.WithAttributes(attribute.String("agent.run.id", "42")))
	defer root.End()
	if err := f.w.Set(ctx, "run:42:lock", "owner", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.w.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Incr(ctx, "run:42:counter")
		p.Expire(ctx, "run:42:counter", 3600e9)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.w.BatchRPush(ctx, "run:42:responses", items(120)...); err != nil {
		t.Fatal(err)
	}
	if _, err := f.w.BatchPublish(ctx, "run:42:new_response", items(60)...); err != nil {
		t.Fatal(err)
	}
	if err := f.w.Del(ctx, "run:42:lock").Err(); err != nil {
		t.Fatal(err)
	}
	return root
}

func spansOf(t *testing.T, f *fixture) tracetest.SpanStubs {
	t.Helper()
	if err := f.tel.TracerProvider.ForceFlush(context.Background()); err != nil {
		t.Fatal(err)
	}
	return f.spans.GetSpans()
}

func attr(s tracetest.SpanStub, key string) (attribute.Value, bool) {
	for _, kv := range s.Attributes {
		if string(kv.Key) == key {
			return kv.Value, true
		}
	}
	return attribute.Value{}, false
}

// One agent run is one trace: every Redis operation of the run is a span
// below "agent.run"; each batch op is one span with its chunks below it.
func TestAgentRunIsOneTrace(t *testing.T) {
	f := newFixture(t, nil)
	root := simulateRun(t, f)
	spans := spansOf(t, f)

	byID := map[trace.SpanID]tracetest.SpanStub{}
	children := map[trace.SpanID][]tracetest.SpanStub{}
	for _, s := range spans {
		if s.SpanContext.TraceID() != root.SpanContext().TraceID() {
			continue // e.g. the worker's start-up PING
		}
		byID[s.SpanContext.SpanID()] = s
		children[s.Parent.SpanID()] = append(children[s.Parent.SpanID()], s)
	}
	var names []string
	for _, s := range children[root.SpanContext().SpanID()] {
		names = append(names, s.Name)
	}
	want := []string{"set", "redis.pipeline incr expire", "BatchRPush", "BatchPublish", "del"}
	if strings.Join(names, ",") != strings.Join(want, ",") {
		t.Fatalf("children of agent.run: %v, want %v", names, want)
	}
	for _, s := range children[root.SpanContext().SpanID()] {
		switch s.Name {
		case "BatchRPush", "BatchPublish":
			size, _ := attr(s, "db.operation.batch.size")
			chunks := children[s.SpanContext.SpanID()]
			wantChunks, wantSize, chunkName := 3, int64(120), "rpush"
			if s.Name == "BatchPublish" {
				wantChunks, wantSize, chunkName = 2, 60, "redis.pipeline publish"
			}
			if size.AsInt64() != wantSize || len(chunks) != wantChunks {
				t.Errorf("%s: batch.size %v with %d chunk spans, want %d with %d", s.Name, size.AsInt64(), len(chunks), wantSize, wantChunks)
			}
			for _, c := range chunks {
				if c.Name != chunkName || c.SpanKind != trace.SpanKindClient {
					t.Errorf("%s chunk span %q kind %v", s.Name, c.Name, c.SpanKind)
				}
				if _, ok := attr(c, "redisconn.limiter.wait_time"); !ok {
					t.Errorf("%s chunk span has no limiter wait", s.Name)
				}
			}
		default:
			if s.SpanKind != trace.SpanKindClient {
				t.Errorf("%s kind %v, want client", s.Name, s.SpanKind)
			}
			if _, ok := attr(s, "redisconn.limiter.wait_time"); !ok {
				t.Errorf("%s span has no limiter wait", s.Name)
			}
			if role, _ := attr(s, "redisconn.role"); role.AsString() != "worker" {
				t.Errorf("%s span role %q", s.Name, role.AsString())
			}
		}
	}
	assertNoData(t, spans)
}

// assertNoData: with statements off, no span names or attributes carry keys,
// values, channel names or the password.
func assertNoData(t *testing.T, spans tracetest.SpanStubs) {
	t.Helper()
	for _, s := range spans {
		texts := []string{s.Name, s.Status.Description}
		for _, kv := range s.Attributes {
			texts = append(texts, kv.Value.Emit())
		}
		for _, e := range s.Events {
			for _, kv := range e.Attributes {
				texts = append(texts, kv.Value.Emit())
			}
		}
		for _, text := range texts {
			for _, secret := range []string{"run:42", "item-", "owner", password} {
				if strings.Contains(text, secret) {
					t.Errorf("span %q carries %q: %q", s.Name, secret, text)
				}
			}
		}
		if _, ok := attr(s, "db.statement"); ok {
			t.Errorf("span %q has a statement though statements are off", s.Name)
		}
	}
}

func TestStatementTextIsOptIn(t *testing.T) {
	f := newFixture(t, nil, conn.WithDBStatement(true))
	simulateRun(t, f)
	found := false
	for _, s := range spansOf(t, f) {
		if v, ok := attr(s, "db.statement"); ok && strings.Contains(v.AsString(), "run:42:lock") {
			found = true
		}
	}
	if !found {
		t.Fatal("WithDBStatement(true) put no statement on the spans")
	}
}

// A failed batch marks its span as failed and says how far it got. A batch
// is traced inside its caller's sampled trace; it starts no trace of its own.
func TestFailedBatchSpanSaysHowFarItGot(t *testing.T) {
	f := newFixture(t, nil)
	if err := f.w.Set(context.Background(), "run:42:wrongtype", "string", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.w.BatchRPush(context.Background(), "run:42:wrongtype", items(10)...); err == nil {
		t.Fatal("RPUSH onto a string succeeded")
	}
	for _, s := range spansOf(t, f) {
		if s.Name == "BatchRPush" {
			t.Fatal("a batch without a trace started one of its own")
		}
	}
	ctx, root := f.tel.TracerProvider.Tracer("agent").Start(context.Background(), "agent.run")
	if _, err := f.w.BatchRPush(ctx, "run:42:wrongtype", items(10)...); err == nil {
		t.Fatal("RPUSH onto a string succeeded")
	}
	root.End()
	for _, s := range spansOf(t, f) {
		if s.Name == "BatchRPush" {
			if n, _ := attr(s, "redisconn.batch.acknowledged"); n.AsInt64() != 0 || s.Status.Code.String() != "Error" {
				t.Errorf("span status %v acknowledged %v", s.Status, n.AsInt64())
			}
			return
		}
	}
	t.Fatal("no BatchRPush span")
}

// In cluster mode the spans and durations come from hooks on every node.
func TestClusterWorkerIsInstrumented(t *testing.T) {
	cluster := redistest.StartCluster(t, redistest.ClusterOptions{Masters: 3})
	spans := tracetest.NewInMemoryExporter()
	tel, err := otelsetup.Setup(context.Background(), otelsetup.WithGlobal(false), otelsetup.WithSpanExporter(spans),
		otelsetup.WithSampler(sdktrace.AlwaysSample()))
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(context.Background())
	cfg := conn.DefaultConfig(conn.RoleWorker)
	cfg.ClusterAddrs = cluster.Addrs()
	w, err := conn.NewWorker(context.Background(), cfg, conn.WithMeterProvider(tel.MeterProvider), conn.WithTracerProvider(tel.TracerProvider))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	f := &fixture{tel: tel, spans: spans, w: w}
	root := simulateRun(t, f)
	var names []string
	for _, s := range spansOf(t, f) {
		switch s.Name {
		case "hello", "client", "redis.pipeline client":
			continue // set-up of connections the run needed first: real, but not the run's commands
		}
		if s.SpanContext.TraceID() == root.SpanContext().TraceID() && s.SpanKind == trace.SpanKindClient {
			names = append(names, s.Name)
		}
	}
	// set, pipeline, 3 rpush chunks, 2 publish chunks, del
	if len(names) != 8 {
		t.Errorf("%d client spans in the run's trace, want 8: %v", len(names), names)
	}
	// Concurrent callers' commands for keys on every node share round trips,
	// which the cluster splits by node: each command is still a span in its
	// caller's trace, and no round trip starts a trace of its own.
	ctx, second := tel.TracerProvider.Tracer("agent").Start(context.Background(), "agent.run")
	var wg sync.WaitGroup
	for i := 0; i < 30; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); _ = w.Incr(ctx, "spread:"+strconv.Itoa(i)).Err() }()
	}
	wg.Wait()
	second.End()
	incrs := 0
	for _, s := range spansOf(t, f) {
		switch tid := s.SpanContext.TraceID(); {
		case tid == second.SpanContext().TraceID() && s.Name == "incr":
			incrs++
		case tid != root.SpanContext().TraceID() && tid != second.SpanContext().TraceID() &&
			strings.HasPrefix(s.Name, "redis.pipeline") && s.Name != "redis.pipeline client" && s.Name != "redis.pipeline ping":
			t.Errorf("a round trip started a trace of its own: %s", s.Name)
		}
	}
	if incrs != 30 {
		t.Errorf("%d incr spans in the callers' trace, want 30", incrs)
	}
	fams := f.families(t)
	var count uint64
	for _, m := range series(t, fams, "db_client_operation_duration_seconds") {
		count += m.Histogram.GetSampleCount()
	}
	if count < 8 || value(series(t, fams, "redisconn_server_maxclients")[0]) != 30000 {
		t.Errorf("cluster metrics: %d durations, maxclients %v", count, value(series(t, fams, "redisconn_server_maxclients")[0]))
	}
	if v := value(series(t, fams, "db_client_connection_max")[0]); v != 600 {
		t.Errorf("connection max %v, want 3 nodes x 200", v)
	}
}

// A coalesced round trip mixes callers: those in a sampled trace, those
// under a parent that is not sampled, and those with no trace at all. Each
// command of a sampled caller gets its span in that caller's trace; the
// others get none, and start no trace of their own. The round trip's
// exemplars lead to one of the sampled traces.
func TestRoundTripSpansOnlyItsSampledCallers(t *testing.T) {
	f := newFixture(t, nil)
	tracer := f.tel.TracerProvider.Tracer("test")
	const callers, each = 150, 10
	unsampled := trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{0xa1}, SpanID: trace.SpanID{0xb1}, Remote: true,
	}))
	roots := map[trace.TraceID]trace.SpanID{}
	ctxs := make([]context.Context, callers)
	for i := range ctxs {
		switch i % 3 {
		case 0:
			ctx, span := tracer.Start(context.Background(), "caller")
			defer span.End()
			roots[span.SpanContext().TraceID()] = span.SpanContext().SpanID()
			ctxs[i] = ctx
		case 1:
			ctxs[i] = unsampled
		default:
			ctxs[i] = context.Background()
		}
	}
	before, err := f.w.ConnectionInfo(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	gate := make(chan struct{})
	for i, ctx := range ctxs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gate
			for range each {
				if err := f.w.Incr(ctx, "mixed:"+strconv.Itoa(i)).Err(); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	close(gate)
	wg.Wait()
	after, err := f.w.ConnectionInfo(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	roundTrips := after.Limiter.CoalescedRoundTrips - before.Limiter.CoalescedRoundTrips
	commands := after.Limiter.CoalescedCommands - before.Limiter.CoalescedCommands
	if commands != callers*each || roundTrips >= commands {
		t.Fatalf("%d commands in %d round trips, want %d commands coalesced", commands, roundTrips, callers*each)
	}

	perTrace := map[trace.TraceID]int{}
	largest := int64(0)
	for _, s := range spansOf(t, f) {
		if s.Name != "incr" {
			continue
		}
		id := s.SpanContext.TraceID()
		parent, ok := roots[id]
		if !ok || s.Parent.SpanID() != parent || s.SpanKind != trace.SpanKindClient {
			t.Fatalf("span %q in trace %s under %s, kind %v: not one of a sampled caller's commands", s.Name, id, s.Parent.SpanID(), s.SpanKind)
		}
		perTrace[id]++
		size, _ := attr(s, "redisconn.pipeline.size")
		largest = max(largest, size.AsInt64())
	}
	for id := range roots {
		if perTrace[id] != each {
			t.Errorf("trace %s has %d incr spans, want %d", id, perTrace[id], each)
		}
	}
	if largest < 2 {
		t.Errorf("no span's round trip carried more than its own command (largest redisconn.pipeline.size %d)", largest)
	}

	// Every exemplar of the round trips' samples leads to a sampled caller.
	exemplar := regexp.MustCompile(`(?m)^redisconn_batch_size_bucket\{[^}]*\} \S+ # \{[^}]*trace_id="([0-9a-f]+)"`)
	found := exemplar.FindAllStringSubmatch(f.scrape(t, true), -1)
	if len(found) == 0 {
		t.Fatal("no exemplar on redisconn_batch_size")
	}
	for _, m := range found {
		id, err := trace.TraceIDFromHex(m[1])
		if _, ok := roots[id]; err != nil || !ok {
			t.Errorf("redisconn_batch_size exemplar leads to trace %s, not a sampled caller's", m[1])
		}
	}
}
