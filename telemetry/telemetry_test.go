package telemetry_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/redis/go-redis/v9"
	"github.com/redisconn/redisconn/conn"
	"github.com/redisconn/redisconn/internal/redistest"
	"github.com/redisconn/redisconn/otelsetup"
	"github.com/redisconn/redisconn/telemetry"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
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

const password = "tr0ub4dor-and-3"

// fixture is a worker on a password-protected server with Setup's SDK and an
// in-memory span exporter, sampling every trace.
type fixture struct {
	srv   *redistest.Server
	tel   *otelsetup.Telemetry
	spans *tracetest.InMemoryExporter
	w     *conn.Worker
}

func newFixture(t *testing.T, mutate func(*conn.Config), opts ...conn.Option) *fixture {
	t.Helper()
	f := &fixture{srv: redistest.Start(t, redistest.Options{Password: password}), spans: tracetest.NewInMemoryExporter()}
	tel, err := otelsetup.Setup(context.Background(),
		otelsetup.WithServiceName("telemetry-test"),
		otelsetup.WithSpanExporter(f.spans),
		otelsetup.WithSampler(sdktrace.AlwaysSample()),
		otelsetup.WithGlobal(false),
	)
	if err != nil {
		t.Fatal(err)
	}
	f.tel = tel
	t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	cfg := conn.DefaultConfig(conn.RoleWorker)
	cfg.Host, cfg.Port, cfg.Password = "127.0.0.1", f.srv.Port(), password
	if mutate != nil {
		mutate(&cfg)
	}
	opts = append([]conn.Option{conn.WithMeterProvider(tel.MeterProvider), conn.WithTracerProvider(tel.TracerProvider)}, opts...)
	w, err := conn.NewWorker(context.Background(), cfg, opts...)
	if err != nil {
		t.Fatal(err)
	}
	f.w = w
	t.Cleanup(func() { _ = w.Close() })
	return f
}

// scrape fetches /metrics; openMetrics asks for the OpenMetrics format, as
// Prometheus does.
func (f *fixture) scrape(t *testing.T, openMetrics bool) string {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	if openMetrics {
		req.Header.Set("Accept", "application/openmetrics-text;version=1.0.0")
	}
	rec := httptest.NewRecorder()
	f.tel.Handler().ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("/metrics: %d %s", rec.Code, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); openMetrics != strings.Contains(ct, "openmetrics") {
		t.Fatalf("content type %q", ct)
	}
	return rec.Body.String()
}

func (f *fixture) families(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(f.scrape(t, false)))
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

// series returns the samples of a family for one role.
func series(t *testing.T, fams map[string]*dto.MetricFamily, name string) []*dto.Metric {
	t.Helper()
	fam, ok := fams[name]
	if !ok {
		t.Fatalf("family %s is missing", name)
	}
	return fam.Metric
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.Label {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	}
	return 0
}

// The families of DESIGN.md's table, with their Prometheus types: the
// contract that the table of signals (and so the exporter's translation of
// it) must keep.
var designFamilies = map[string]dto.MetricType{
	"redisconn_limiter_wait_time_seconds":         dto.MetricType_HISTOGRAM,
	"redisconn_limiter_in_flight":                 dto.MetricType_GAUGE,
	"redisconn_limiter_waiting":                   dto.MetricType_GAUGE,
	"redisconn_limiter_limit":                     dto.MetricType_GAUGE,
	"redisconn_limiter_rejected_total":            dto.MetricType_COUNTER,
	"db_client_connection_count":                  dto.MetricType_GAUGE,
	"db_client_connection_max":                    dto.MetricType_GAUGE,
	"db_client_connection_pending_requests":       dto.MetricType_GAUGE,
	"db_client_connection_timeouts_total":         dto.MetricType_COUNTER,
	"redisconn_pool_hits_total":                   dto.MetricType_COUNTER,
	"redisconn_pool_misses_total":                 dto.MetricType_COUNTER,
	"redisconn_pool_waits_total":                  dto.MetricType_COUNTER,
	"redisconn_batch_size":                        dto.MetricType_HISTOGRAM,
	"db_client_operation_duration_seconds":        dto.MetricType_HISTOGRAM,
	"redisconn_server_connected_clients":          dto.MetricType_GAUGE,
	"redisconn_server_maxclients":                 dto.MetricType_GAUGE,
	"redisconn_server_rejected_connections_total": dto.MetricType_COUNTER,
	// Issue 16 (asked of DESIGN.md in its closing note).
	"redisconn_pubsub_connections":             dto.MetricType_GAUGE,
	"redisconn_sentinel_master_switches_total": dto.MetricType_COUNTER,
	"redisconn_sentinel_sentinels_answering":   dto.MetricType_GAUGE,
	"redisconn_sentinel_quorum":                dto.MetricType_GAUGE,
}

// The table of signals names exactly DESIGN.md's families, with their types.
func TestSignalTableIsDesignMD(t *testing.T) {
	got := map[string]dto.MetricType{}
	for _, sig := range telemetry.Signals() {
		if sig.Description == "" || sig.Unit == "" {
			t.Errorf("%s has no description or unit", sig.Name)
		}
		if (sig.Kind == telemetry.KindHistogram) != (len(sig.Buckets) > 0) {
			t.Errorf("%s: %s with %d buckets", sig.Name, sig.Kind, len(sig.Buckets))
		}
		if _, dup := got[sig.PrometheusName()]; dup {
			t.Errorf("%s is in the table twice", sig.PrometheusName())
		}
		got[sig.PrometheusName()] = dto.MetricType(dto.MetricType_value[strings.ToUpper(sig.PrometheusType())])
	}
	for name, typ := range designFamilies {
		if g, ok := got[name]; !ok || g != typ {
			t.Errorf("DESIGN.md's %s (%v): the table gives %v (present %v)", name, typ, g, ok)
		}
	}
	for name := range got {
		if _, ok := designFamilies[name]; !ok {
			t.Errorf("the table's %s is not in DESIGN.md", name)
		}
	}
	h := telemetry.Signals()[0]
	if want := []string{"redisconn_limiter_wait_time_seconds_bucket", "redisconn_limiter_wait_time_seconds_sum", "redisconn_limiter_wait_time_seconds_count"}; strings.Join(h.PrometheusSeries(), ",") != strings.Join(want, ",") {
		t.Errorf("histogram series %v", h.PrometheusSeries())
	}
}

func TestEveryDesignMetricIsServedWithItsTypeAndLabels(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	const singles, batchItems, batchSize = 37, 260, 50

	var wg sync.WaitGroup
	for i := 0; i < singles; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f.w.RPush(ctx, "metrics:list", "value-"+strconv.Itoa(i)).Err(); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if _, err := f.w.BatchRPush(ctx, "metrics:batch", items(batchItems)...); err != nil {
		t.Fatal(err)
	}
	if _, err := f.w.BatchPublish(ctx, "metrics:channel", items(batchItems)...); err != nil {
		t.Fatal(err)
	}
	_ = f.w.Get(ctx, "metrics:missing").Err() // redis.Nil is not an error
	_ = f.w.Incr(ctx, "metrics:list").Err()   // WRONGTYPE
	chunks := 2 * ((batchItems + batchSize - 1) / batchSize)
	// Single commands and batch chunks are coalesced: the singles, the RPUSH
	// chunks, the PUBLISH commands of the BatchPublish chunks (each chunk's
	// in one round trip), GET and INCR went in round trips of one or more
	// commands. Each coalesced round trip is one operation. NewWorker's PING
	// went on the held share, without a permit.
	coalesced := singles + chunks/2 + batchItems + 2

	fams := f.families(t)
	inTable := map[string]bool{}
	for _, sig := range telemetry.Signals() {
		name := sig.PrometheusName()
		inTable[name] = true
		if sig.SentinelOnly {
			if _, ok := fams[name]; ok {
				t.Errorf("%s is served by a manager that is not in Sentinel mode", name)
			}
			continue
		}
		fam, ok := fams[name]
		if !ok {
			t.Errorf("family %s (%s) is missing", name, sig.Name)
			continue
		}
		if typ := strings.ToLower(fam.GetType().String()); typ != sig.PrometheusType() {
			t.Errorf("%s has type %v, the table says %s", name, typ, sig.PrometheusType())
		}
		if fam.GetHelp() != sig.Description {
			t.Errorf("%s HELP %q, the table says %q", name, fam.GetHelp(), sig.Description)
		}
		carries := map[string]bool{"otel_scope_name": true, "otel_scope_version": true, "otel_scope_schema_url": true}
		for _, l := range sig.PrometheusLabels() {
			carries[l] = true
		}
		for _, m := range fam.Metric {
			if label(m, "redisconn_role") != "worker" || !strings.HasPrefix(label(m, "db_client_connection_pool_name"), "127.0.0.1:") {
				t.Errorf("%s series without role or pool name: %v", name, m.Label)
			}
			for _, l := range m.Label {
				if !carries[l.GetName()] {
					t.Errorf("%s carries label %s, which the table does not list", name, l.GetName())
				}
			}
		}
	}
	for name := range fams {
		if (strings.HasPrefix(name, "redisconn_") || strings.HasPrefix(name, "db_client_")) && !inTable[name] {
			t.Errorf("family %s is served but not in the table of signals", name)
		}
	}

	one := func(name string) *dto.Metric {
		t.Helper()
		ms := series(t, fams, name)
		if len(ms) != 1 {
			t.Fatalf("%s: %d series, want 1", name, len(ms))
		}
		return ms[0]
	}
	if v := value(one("redisconn_limiter_in_flight")); v != 0 {
		t.Errorf("in_flight %v after the workload", v)
	}
	if v := value(one("redisconn_limiter_waiting")); v != 0 {
		t.Errorf("waiting %v after the workload", v)
	}
	if v := value(one("redisconn_limiter_limit")); v != 100 {
		t.Errorf("limit %v", v)
	}
	var chunkCount, chunkSum, roundTrips, coalescedSum float64
	for _, m := range series(t, fams, "redisconn_batch_size") {
		switch op := label(m, "db_operation_name"); {
		case op == "RPUSH" || op == "PUBLISH":
			chunkCount += float64(m.Histogram.GetSampleCount())
			chunkSum += m.Histogram.GetSampleSum()
		case strings.HasPrefix(op, "BATCH"):
			roundTrips += float64(m.Histogram.GetSampleCount())
			coalescedSum += m.Histogram.GetSampleSum()
		default:
			t.Errorf("batch op %q", op)
		}
	}
	if chunkCount != float64(chunks) || chunkSum != 2*batchItems {
		t.Errorf("batch size count %v sum %v, want %d chunks of %d items", chunkCount, chunkSum, chunks, 2*batchItems)
	}
	if roundTrips < 5 || roundTrips > float64(coalesced) || coalescedSum != float64(coalesced) {
		t.Errorf("coalesced round trips %v carrying %v commands, want %d commands in 4 to %d round trips", roundTrips, coalescedSum, coalesced, coalesced)
	}
	if got := one("redisconn_limiter_wait_time_seconds").Histogram.GetSampleCount(); got != uint64(roundTrips) {
		t.Errorf("limiter wait count %d, want one per operation: %v round trips", got, roundTrips)
	}
	ops := map[string]uint64{}
	var batchOps uint64
	for _, m := range series(t, fams, "db_client_operation_duration_seconds") {
		key := label(m, "db_operation_name")
		if strings.HasPrefix(key, "BATCH") {
			batchOps += m.Histogram.GetSampleCount()
		}
		if et := label(m, "error_type"); et != "" {
			key += "/" + et
		}
		ops[key] += m.Histogram.GetSampleCount()
	}
	if ops["BATCH PUBLISH"] != uint64(chunks/2) || ops["PING"] != 1 ||
		ops["BATCH GET"] != 1 || ops["BATCH INCR/WRONGTYPE"] != 1 || batchOps != uint64(roundTrips) {
		t.Errorf("operation durations by name: %v", ops)
	}
	if v := value(series(t, fams, "redisconn_server_maxclients")[0]); v != 10000 {
		t.Errorf("server maxclients %v", v)
	}
	if v := value(series(t, fams, "redisconn_server_connected_clients")[0]); v < 1 {
		t.Errorf("server connected clients %v", v)
	}
	var used, idle float64
	for _, m := range series(t, fams, "db_client_connection_count") {
		switch label(m, "db_client_connection_state") {
		case "used":
			used = value(m)
		case "idle":
			idle = value(m)
		default:
			t.Errorf("connection state %q", label(m, "db_client_connection_state"))
		}
	}
	if used != 0 || idle < 1 || value(one("db_client_connection_max")) != 200 {
		t.Errorf("connections used %v idle %v", used, idle)
	}
	if value(one("redisconn_pool_hits_total"))+value(one("redisconn_pool_misses_total")) < 10 {
		t.Error("pool hits and misses not counted")
	}

	// Nothing a caller sent, nor the password, is in any label.
	for name, fam := range fams {
		for _, m := range fam.Metric {
			for _, l := range m.Label {
				v := l.GetValue()
				if strings.Contains(v, "metrics:") || strings.Contains(v, "value-") || strings.Contains(v, "item-") || strings.Contains(v, password) {
					t.Errorf("%s label %s=%q carries data", name, l.GetName(), v)
				}
			}
		}
	}
}

func items(n int) []any {
	v := make([]any, n)
	for i := range v {
		v[i] = "item-" + strconv.Itoa(i)
	}
	return v
}

// Limiter rejections and waits show in the metrics while callers queue.
func TestLimiterSaturationIsVisible(t *testing.T) {
	f := newFixture(t, func(c *conn.Config) { c.PoolSize, c.MaxConcurrentOps = 4, 2 })
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); _ = f.w.Do(ctx, "blpop", "sat:empty", "0.5").Err() }()
	}
	waitFor(t, "both permits held", func() bool {
		i, _ := f.w.ConnectionInfo(ctx)
		return i.Limiter.InFlight == 2
	})
	for i := 0; i < 5; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
			defer cancel()
			_ = f.w.Get(c, "sat:k").Err()
		}()
	}
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); _ = f.w.Get(ctx, "sat:k").Err() }()
	}
	waitFor(t, "callers waiting", func() bool {
		fams := f.families(t)
		return value(series(t, fams, "redisconn_limiter_waiting")[0]) >= 3 &&
			value(series(t, fams, "redisconn_limiter_in_flight")[0]) == 2
	})
	wg.Wait()
	fams := f.families(t)
	var rejected float64
	for _, m := range series(t, fams, "redisconn_limiter_rejected_total") {
		if label(m, "reason") == "context" {
			rejected = value(m)
		}
	}
	if rejected != 5 {
		t.Errorf("rejected (reason=context) = %v, want 5", rejected)
	}
	h := series(t, fams, "redisconn_limiter_wait_time_seconds")[0].Histogram
	if h.GetSampleSum() < 0.3 { // three callers waited most of 0.5 s
		t.Errorf("limiter wait sum %vs, want the queued callers' waits", h.GetSampleSum())
	}
}

// With a tiny pool and a paused server, the pool timeout counter rises.
func TestPoolTimeoutsAreCounted(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	tel, err := otelsetup.Setup(context.Background(), otelsetup.WithGlobal(false), otelsetup.WithSpanExporter(tracetest.NewInMemoryExporter()))
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(context.Background())
	cfg := conn.DefaultConfig(conn.RoleAPI)
	cfg.Host, cfg.Port, cfg.PoolSize, cfg.PoolTimeout = "127.0.0.1", srv.Port(), 1, 50*time.Millisecond
	a, err := conn.NewAPI(context.Background(), cfg, conn.WithMeterProvider(tel.MeterProvider), conn.WithTracerProvider(tel.TracerProvider))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	f := &fixture{tel: tel}
	before := value(series(t, f.families(t), "db_client_connection_timeouts_total")[0])
	srv.Pause()
	var wg sync.WaitGroup
	for i := 0; i < 5; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel()
			_ = a.Get(ctx, "k").Err()
		}()
	}
	wg.Wait()
	srv.Resume()
	fams := f.families(t)
	after := value(series(t, fams, "db_client_connection_timeouts_total")[0])
	if after <= before {
		t.Fatalf("pool timeouts %v -> %v while the pool was exhausted", before, after)
	}
	var timeouts uint64
	for _, m := range series(t, fams, "db_client_operation_duration_seconds") {
		if et := label(m, "error_type"); et != "" {
			timeouts += m.Histogram.GetSampleCount()
		}
	}
	if timeouts == 0 {
		t.Error("failed operations carry no error_type")
	}
}

// Histogram samples taken inside a sampled span carry its trace in the
// OpenMetrics exposition.
func TestExemplarsCarryTheTrace(t *testing.T) {
	f := newFixture(t, nil)
	ctx, root := f.tel.TracerProvider.Tracer("test").Start(context.Background(), "agent.run")
	if _, err := f.w.BatchRPush(ctx, "exemplar:list", items(10)...); err != nil {
		t.Fatal(err)
	}
	if err := f.w.Set(ctx, "exemplar:k", "v", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	root.End()
	traceID := root.SpanContext().TraceID().String()
	text := f.scrape(t, true)
	for _, family := range []string{"db_client_operation_duration_seconds_bucket", "redisconn_limiter_wait_time_seconds_bucket", "redisconn_batch_size_bucket"} {
		re := regexp.MustCompile(`(?m)^` + family + `\{[^}]*\} \S+ # \{[^}]*trace_id="` + traceID + `"[^}]*\}`)
		if !re.MatchString(text) {
			t.Errorf("no exemplar of trace %s on %s", traceID, family)
		}
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	if !redistest.WaitFor(context.Background(), 10*time.Second, cond) {
		t.Fatalf("timed out waiting for %s", what)
	}
}

func TestErrorTypeIsBounded(t *testing.T) {
	for err, want := range map[error]string{
		context.Canceled: "canceled",
		fmt.Errorf("x: %w", context.DeadlineExceeded): "deadline_exceeded",
		redis.ErrPoolTimeout:                          "pool_timeout",
		redis.ErrClosed:                               "closed",
		io.EOF:                                        "connection_closed",
		errors.New("something odd happened"):          "_OTHER",
	} {
		if got := telemetry.ErrorType(err); got != want {
			t.Errorf("ErrorType(%v) = %q, want %q", err, got, want)
		}
	}
}
