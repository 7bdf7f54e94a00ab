// Package instrument records what the redisconn managers do as OpenTelemetry
// metrics and traces: the instruments, created from the table of signals
// (package telemetry), and the go-redis hooks that record them.
//
// It depends on the OpenTelemetry API only. It records through the providers
// it is given, falling back to the OpenTelemetry globals, and never installs
// an SDK.
package instrument

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redisconn/redisconn/telemetry"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

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
	cfg    Config
	meter  metric.Meter
	tracer trace.Tracer
	base   attribute.Set // role and pool name
	baseKV []attribute.KeyValue

	waitTime     metric.Float64Histogram
	batchSize    metric.Int64Histogram
	duration     metric.Float64Histogram
	baseRecord   []metric.RecordOption // passed as is: no variadic slice per call
	durationOpts sync.Map              // command name -> []metric.RecordOption

	inFlight, waiting, limit, rejected                      metric.Int64Observable
	connCount, connMax, connPending, connTimeouts           metric.Int64Observable
	poolHits, poolMisses, poolWaits                         metric.Int64Observable
	serverConnected, serverMax, serverRejected              metric.Int64Observable
	pubsub                                                  metric.Int64Observable
	sentinelSwitches, sentinelAnswering, sentinelQuorum     metric.Int64Observable
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
		meter:  cfg.MeterProvider.Meter(telemetry.ScopeName),
		tracer: cfg.TracerProvider.Tracer(telemetry.ScopeName),
		baseKV: []attribute.KeyValue{telemetry.AttrRole.String(cfg.Role), telemetry.AttrPoolName.String(cfg.PoolName)},
	}
	in.base = attribute.NewSet(in.baseKV...)
	in.baseRecord = []metric.RecordOption{metric.WithAttributeSet(in.base)}
	in.idleOpt = metric.WithAttributeSet(in.with(telemetry.AttrState.String("idle")))
	in.usedOpt = metric.WithAttributeSet(in.with(telemetry.AttrState.String("used")))
	in.rejectedContextOpt = metric.WithAttributeSet(in.with(telemetry.AttrReason.String("context")))
	in.rejectedClosedOpt = metric.WithAttributeSet(in.with(telemetry.AttrReason.String("closed")))

	// Every instrument is created from its entry in the table of signals.
	m := in.meter
	var errs []error
	check := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	var err error
	in.waitTime, err = float64Histogram(m, telemetry.LimiterWaitTime)
	check(err)
	in.batchSize, err = int64Histogram(m, telemetry.BatchSize)
	check(err)
	in.duration, err = float64Histogram(m, telemetry.OperationDuration)
	check(err)
	obs := func(name string) metric.Int64Observable {
		o, err := int64Observable(m, name)
		check(err)
		return o
	}
	in.inFlight = obs(telemetry.LimiterInFlight)
	in.waiting = obs(telemetry.LimiterWaiting)
	in.limit = obs(telemetry.LimiterLimit)
	in.rejected = obs(telemetry.LimiterRejected)
	in.connCount = obs(telemetry.ConnectionCount)
	in.connMax = obs(telemetry.ConnectionMax)
	in.connPending = obs(telemetry.ConnectionPendingRequests)
	in.connTimeouts = obs(telemetry.ConnectionTimeouts)
	in.poolHits = obs(telemetry.PoolHits)
	in.poolMisses = obs(telemetry.PoolMisses)
	in.poolWaits = obs(telemetry.PoolWaits)
	in.serverConnected = obs(telemetry.ServerConnectedClients)
	in.serverMax = obs(telemetry.ServerMaxClients)
	in.serverRejected = obs(telemetry.ServerRejectedConnections)
	in.pubsub = obs(telemetry.PubSubConnections)
	in.sentinelSwitches = obs(telemetry.SentinelMasterSwitches)
	in.sentinelAnswering = obs(telemetry.SentinelSentinelsAnswering)
	in.sentinelQuorum = obs(telemetry.SentinelQuorum)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return in, nil
}

func float64Histogram(m metric.Meter, name string) (metric.Float64Histogram, error) {
	s, err := telemetry.Lookup(name)
	if err != nil {
		return nil, err
	}
	if s.Kind != telemetry.KindHistogram || !s.Float {
		return nil, fmt.Errorf("telemetry: %s is a %s in the table, not a float64 histogram", name, s.Kind)
	}
	return m.Float64Histogram(s.Name, metric.WithUnit(s.Unit), metric.WithDescription(s.Description),
		metric.WithExplicitBucketBoundaries(s.Buckets...))
}

func int64Histogram(m metric.Meter, name string) (metric.Int64Histogram, error) {
	s, err := telemetry.Lookup(name)
	if err != nil {
		return nil, err
	}
	if s.Kind != telemetry.KindHistogram || s.Float {
		return nil, fmt.Errorf("telemetry: %s is a %s in the table, not an int64 histogram", name, s.Kind)
	}
	return m.Int64Histogram(s.Name, metric.WithUnit(s.Unit), metric.WithDescription(s.Description),
		metric.WithExplicitBucketBoundaries(s.Buckets...))
}

func int64Observable(m metric.Meter, name string) (metric.Int64Observable, error) {
	s, err := telemetry.Lookup(name)
	if err != nil {
		return nil, err
	}
	switch s.Kind {
	case telemetry.KindCounter:
		return m.Int64ObservableCounter(s.Name, metric.WithUnit(s.Unit), metric.WithDescription(s.Description))
	case telemetry.KindUpDownCounter:
		return m.Int64ObservableUpDownCounter(s.Name, metric.WithUnit(s.Unit), metric.WithDescription(s.Description))
	case telemetry.KindGauge:
		return m.Int64ObservableGauge(s.Name, metric.WithUnit(s.Unit), metric.WithDescription(s.Description))
	}
	return nil, fmt.Errorf("telemetry: %s is a %s in the table, not an observable", name, s.Kind)
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
//
// Like a coalesced command's span, it is started only inside a sampled trace
// (the caller's, e.g. an agent run's): a batch starts no trace of its own.
// Otherwise StartBatch returns ctx and a span that records nothing, at the
// cost of one context lookup. Attributes are set only on a recording span.
func (in *Instruments) StartBatch(ctx context.Context, name, op string, items int) (context.Context, trace.Span) {
	if !trace.SpanContextFromContext(ctx).IsSampled() {
		return ctx, trace.SpanFromContext(context.Background())
	}
	ctx, span := in.tracer.Start(ctx, name, internalSpan...)
	if span.IsRecording() {
		span.SetAttributes(telemetry.AttrDBSystem.String("redis"), telemetry.AttrOperationName.String(op), telemetry.AttrBatchSize.Int(items))
		span.SetAttributes(in.baseKV...)
	}
	return ctx, span
}

var internalSpan = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindInternal)}

// operationOpts returns the cached attributes of a successful operation; op
// comes from a bounded set, so the cache is bounded too.
func (in *Instruments) operationOpts(op string) []metric.RecordOption {
	if o, ok := in.durationOpts.Load(op); ok {
		return o.([]metric.RecordOption)
	}
	o := []metric.RecordOption{metric.WithAttributeSet(in.with(telemetry.AttrOperationName.String(op)))}
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
