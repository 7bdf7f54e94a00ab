// Package telemetry records what the redisconn managers do as OpenTelemetry
// metrics and traces, and gives applications a one-call Setup that serves
// them: a Prometheus /metrics endpoint with exemplars and an OTLP (or console)
// trace exporter chosen by the standard OTEL_* variables.
//
// The conn package uses Instruments; applications use Setup. The library
// itself never installs an SDK: it records through the providers it is given,
// falling back to the OpenTelemetry globals.
package telemetry

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// ScopeName is the instrumentation scope of every instrument and span.
const ScopeName = "github.com/redisconn/redisconn"

// The instruments, as DESIGN.md lists them. Prometheus names follow the
// official exporter's default translation: dots become underscores, the unit
// "s" adds "_seconds", counters add "_total".
const (
	// LimiterWaitTime: histogram, s. Time an operation waited before it was
	// sent: for its limiter permit, or in the worker's coalescing queue. One
	// sample per operation, that is per round trip: a coalesced pipeline's
	// sample is the wait of its oldest command. 0 when it did not wait.
	LimiterWaitTime = "redisconn.limiter.wait_time"
	// LimiterInFlight: updowncounter. Round trips holding a permit now.
	LimiterInFlight = "redisconn.limiter.in_flight"
	// LimiterWaiting: updowncounter. Callers waiting now, for a permit or in
	// the coalescing queue.
	LimiterWaiting = "redisconn.limiter.waiting"
	// LimiterLimit: gauge. The limiter's size.
	LimiterLimit = "redisconn.limiter.limit"
	// LimiterRejected: counter, attribute reason=context|closed.
	LimiterRejected = "redisconn.limiter.rejected"

	// ConnectionCount: updowncounter, attribute db.client.connection.state=idle|used.
	ConnectionCount = "db.client.connection.count"
	// ConnectionMax: updowncounter. The pool size.
	ConnectionMax = "db.client.connection.max"
	// ConnectionPendingRequests: updowncounter. Callers waiting for a pooled connection.
	ConnectionPendingRequests = "db.client.connection.pending_requests"
	// ConnectionTimeouts: counter. Waits for a pooled connection that timed out.
	ConnectionTimeouts = "db.client.connection.timeouts"
	// PoolHits, PoolMisses, PoolWaits: counters. A free connection was found,
	// was not found (a new one was dialed), had to be waited for.
	PoolHits   = "redisconn.pool.hits"
	PoolMisses = "redisconn.pool.misses"
	PoolWaits  = "redisconn.pool.waits"

	// BatchSize: histogram, {item}, attribute db.operation.name. Items per
	// batch round trip: one sample per BatchRPush/BatchPublish chunk (named
	// RPUSH, PUBLISH) and per coalesced pipeline (commands per round trip,
	// named "BATCH <command>" or "BATCH").
	BatchSize = "redisconn.batch.size"
	// OperationDuration: histogram, s, attributes db.operation.name and, on
	// failure, error.type. One sample per operation (round trip): a command,
	// a pipeline ("PIPELINE", "MULTI"), a batch chunk, or a coalesced
	// pipeline, named as OpenTelemetry's conventions name a batch: "BATCH
	// RPUSH" when its commands share a name, "BATCH" otherwise, with the
	// error.type of its first failed command.
	OperationDuration = "db.client.operation.duration"

	// ServerConnectedClients, ServerMaxClients: gauges; ServerRejectedConnections:
	// counter. Read from INFO, at most once per ServerInfoMaxAge per manager.
	ServerConnectedClients    = "redisconn.server.connected_clients"
	ServerMaxClients          = "redisconn.server.maxclients"
	ServerRejectedConnections = "redisconn.server.rejected_connections"
)

// Attribute keys.
const (
	AttrRole            = attribute.Key("redisconn.role")
	AttrPoolName        = attribute.Key("db.client.connection.pool.name")
	AttrState           = attribute.Key("db.client.connection.state")
	AttrOperationName   = attribute.Key("db.operation.name")
	AttrErrorType       = attribute.Key("error.type")
	AttrReason          = attribute.Key("reason")
	AttrBatchSize       = attribute.Key("db.operation.batch.size")
	AttrLimiterWaitTime = attribute.Key("redisconn.limiter.wait_time")
	AttrDBSystem        = attribute.Key("db.system.name")
)

// Bucket boundaries.
var (
	// DurationBuckets are the OpenTelemetry semantic conventions' boundaries
	// for db.client.operation.duration.
	DurationBuckets = []float64{0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10}
	// LimiterWaitBuckets resolve waits from 10 µs to 10 s.
	LimiterWaitBuckets = []float64{
		0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005,
		0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
		0.1, 0.25, 0.5, 1, 2.5, 5, 10,
	}
	// BatchSizeBuckets cover 1 to 1000 items.
	BatchSizeBuckets = []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000}
)

// ServerInfoMaxAge is how long a manager reuses one INFO reply for the server
// instruments, so that scrapes never load Redis.
const ServerInfoMaxAge = 10 * time.Second

// Config says where and under which names a manager's telemetry goes.
type Config struct {
	// Role is "api" or "worker": the redisconn.role attribute.
	Role string
	// PoolName is the db.client.connection.pool.name attribute; it tells
	// apart the managers of one process.
	PoolName string
	// MeterProvider and TracerProvider default to the OpenTelemetry globals.
	MeterProvider  metric.MeterProvider
	TracerProvider trace.TracerProvider
	// DBStatement puts the command text (keys and values!) on spans. Off by
	// default; turn it on only where the data may be seen by whoever reads
	// the traces.
	DBStatement bool
}

// Instruments are one manager's instruments, created once by New.
type Instruments struct {
	cfg       Config
	meter     metric.Meter
	tracer    trace.Tracer
	base      attribute.Set // role and pool name
	baseKV    []attribute.KeyValue
	spanAttrs []attribute.KeyValue // of spans recorded without a hook (CoalescedSpan)

	waitTime     metric.Float64Histogram
	batchSize    metric.Int64Histogram
	duration     metric.Float64Histogram
	baseRecord   []metric.RecordOption // passed as is: no variadic slice per call
	durationOpts sync.Map              // command name -> []metric.RecordOption

	inFlight, waiting, limit, rejected                      metric.Int64Observable
	connCount, connMax, connPending, connTimeouts           metric.Int64Observable
	poolHits, poolMisses, poolWaits                         metric.Int64Observable
	serverConnected, serverMax, serverRejected              metric.Int64Observable
	idleOpt, usedOpt, rejectedContextOpt, rejectedClosedOpt metric.ObserveOption
	registrationMu                                          sync.Mutex
	registrations                                           []metric.Registration
}

// New creates the instruments of one manager.
func New(cfg Config) (*Instruments, error) {
	if cfg.MeterProvider == nil {
		cfg.MeterProvider = otel.GetMeterProvider()
	}
	if cfg.TracerProvider == nil {
		cfg.TracerProvider = otel.GetTracerProvider()
	}
	in := &Instruments{
		cfg:    cfg,
		meter:  cfg.MeterProvider.Meter(ScopeName),
		tracer: cfg.TracerProvider.Tracer(ScopeName),
		baseKV: []attribute.KeyValue{AttrRole.String(cfg.Role), AttrPoolName.String(cfg.PoolName)},
	}
	in.base = attribute.NewSet(in.baseKV...)
	in.baseRecord = []metric.RecordOption{metric.WithAttributeSet(in.base)}
	in.idleOpt = metric.WithAttributeSet(in.with(AttrState.String("idle")))
	in.usedOpt = metric.WithAttributeSet(in.with(AttrState.String("used")))
	in.rejectedContextOpt = metric.WithAttributeSet(in.with(AttrReason.String("context")))
	in.rejectedClosedOpt = metric.WithAttributeSet(in.with(AttrReason.String("closed")))

	m := in.meter
	var errs []error
	check := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	var err error
	in.waitTime, err = m.Float64Histogram(LimiterWaitTime, metric.WithUnit("s"),
		metric.WithDescription("Time an operation waited for a limiter permit."),
		metric.WithExplicitBucketBoundaries(LimiterWaitBuckets...))
	check(err)
	in.batchSize, err = m.Int64Histogram(BatchSize, metric.WithUnit("{item}"),
		metric.WithDescription("Items carried by one batch round trip."),
		metric.WithExplicitBucketBoundaries(BatchSizeBuckets...))
	check(err)
	in.duration, err = m.Float64Histogram(OperationDuration, metric.WithUnit("s"),
		metric.WithDescription("Duration of Redis commands and pipelines, limiter wait excluded."),
		metric.WithExplicitBucketBoundaries(DurationBuckets...))
	check(err)

	upDown := func(name, unit, desc string) metric.Int64Observable {
		o, err := m.Int64ObservableUpDownCounter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		check(err)
		return o
	}
	counter := func(name, unit, desc string) metric.Int64Observable {
		o, err := m.Int64ObservableCounter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		check(err)
		return o
	}
	gauge := func(name, unit, desc string) metric.Int64Observable {
		o, err := m.Int64ObservableGauge(name, metric.WithUnit(unit), metric.WithDescription(desc))
		check(err)
		return o
	}
	in.inFlight = upDown(LimiterInFlight, "{operation}", "Operations holding a limiter permit.")
	in.waiting = upDown(LimiterWaiting, "{operation}", "Callers waiting for a limiter permit.")
	in.limit = gauge(LimiterLimit, "{operation}", "Most operations the limiter lets run at once.")
	in.rejected = counter(LimiterRejected, "{operation}", "Permit requests refused: the caller's context ended (reason=context) or the manager closed (reason=closed).")
	in.connCount = upDown(ConnectionCount, "{connection}", "Pooled connections by state (idle, used).")
	in.connMax = upDown(ConnectionMax, "{connection}", "Size of the connection pool.")
	in.connPending = upDown(ConnectionPendingRequests, "{request}", "Callers waiting for a pooled connection.")
	in.connTimeouts = counter(ConnectionTimeouts, "{timeout}", "Waits for a pooled connection that timed out.")
	in.poolHits = counter(PoolHits, "{request}", "Requests that found an idle pooled connection.")
	in.poolMisses = counter(PoolMisses, "{request}", "Requests that found no idle pooled connection.")
	in.poolWaits = counter(PoolWaits, "{request}", "Requests that waited for a pooled connection.")
	in.serverConnected = gauge(ServerConnectedClients, "{connection}", "Clients connected to the Redis server (INFO).")
	in.serverMax = gauge(ServerMaxClients, "{connection}", "The Redis server's maxclients (INFO).")
	in.serverRejected = counter(ServerRejectedConnections, "{connection}", "Connections the Redis server refused for maxclients (INFO).")
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return in, nil
}

func (in *Instruments) with(kv ...attribute.KeyValue) attribute.Set {
	return attribute.NewSet(append(append([]attribute.KeyValue{}, in.baseKV...), kv...)...)
}

// Tracer is the tracer of the manager's own spans (batch operations).
func (in *Instruments) Tracer() trace.Tracer { return in.tracer }

// RecordLimiterWait records one granted permit and how long it was waited for.
func (in *Instruments) RecordLimiterWait(ctx context.Context, waited time.Duration) {
	in.waitTime.Record(ctx, waited.Seconds(), in.baseRecord...)
}

// RecordBatchChunk records one batch round trip of n items; op is the Redis
// command ("RPUSH", "PUBLISH").
func (in *Instruments) RecordBatchChunk(ctx context.Context, op string, n int) {
	in.batchSize.Record(ctx, int64(n), in.operationOpts(op)...)
}

// StartBatch starts the parent span of a batch operation; its chunks' command
// spans are its children.
func (in *Instruments) StartBatch(ctx context.Context, name, op string, items int) (context.Context, trace.Span) {
	return in.tracer.Start(ctx, name,
		trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithAttributes(AttrDBSystem.String("redis"), AttrOperationName.String(op), AttrBatchSize.Int(items)),
		trace.WithAttributes(in.baseKV...),
	)
}

// operationOpts returns the cached attributes of a successful operation; op
// comes from a bounded set, so the cache is bounded too.
func (in *Instruments) operationOpts(op string) []metric.RecordOption {
	if o, ok := in.durationOpts.Load(op); ok {
		return o.([]metric.RecordOption)
	}
	o := []metric.RecordOption{metric.WithAttributeSet(in.with(AttrOperationName.String(op)))}
	in.durationOpts.Store(op, o)
	return o
}

// Close unregisters the observable callbacks; later collections no longer
// read this manager.
func (in *Instruments) Close() error {
	in.registrationMu.Lock()
	defer in.registrationMu.Unlock()
	var errs []error
	for _, r := range in.registrations {
		if err := r.Unregister(); err != nil {
			errs = append(errs, err)
		}
	}
	in.registrations = nil
	return errors.Join(errs...)
}
