package telemetry

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/extra/rediscmd/v9"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// LimiterWaitFunc tells the operation hook how long the operation in ctx
// waited for its limiter permit; false when it took none.
type LimiterWaitFunc func(ctx context.Context) (time.Duration, bool)

// Instrument adds, to a standalone client or to every node of a cluster
// client, the per-command and per-pipeline CLIENT spans (tracingHook) and then
// the operation hook (db.client.operation.duration, limiter wait on the span).
// Call it before the client's first command. waitFrom may be nil.
//
// The hooks go inside whatever hooks the client already has. conn adds its
// limiter first, so spans and durations start once the permit is held; the
// wait is recorded on its own (RecordLimiterWait) and as the span attribute
// redisconn.limiter.wait_time.
func (in *Instruments) Instrument(client redis.UniversalClient, waitFrom LimiterWaitFunc) error {
	if waitFrom == nil {
		waitFrom = func(context.Context) (time.Duration, bool) { return 0, false }
	}
	op := &operationHook{in: in, waitFrom: waitFrom}
	if c, ok := client.(*redis.Client); ok {
		in.spanAttrs = spanAttrs(in, c.Options().Addr)
	} else {
		in.spanAttrs = spanAttrs(in, "")
	}
	add := func(c *redis.Client) {
		c.AddHook(newTracingHook(in, c.Options().Addr))
		c.AddHook(op) // inside the span: its exemplars point at the command
	}
	switch c := client.(type) {
	case *redis.Client:
		add(c)
	case *redis.ClusterClient:
		c.OnNewNode(add)
	default:
		return fmt.Errorf("telemetry: %T is not supported (want *redis.Client or *redis.ClusterClient)", client)
	}
	return nil
}

// operationHook records db.client.operation.duration for every command and
// pipeline, inside the operation's span (so a sampled span becomes the
// sample's exemplar), and puts the limiter wait on that span.
type operationHook struct {
	in       *Instruments
	waitFrom LimiterWaitFunc
}

func (h *operationHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *operationHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		start := time.Now()
		err := next(ctx, cmd)
		h.done(ctx, commandName(cmd.Name()), start, err)
		return err
	}
}

func (h *operationHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		start := time.Now()
		err := next(ctx, cmds)
		name := "PIPELINE"
		if len(cmds) > 0 && cmds[0].Name() == "multi" {
			name = "MULTI"
		}
		h.done(ctx, name, start, err)
		return err
	}
}

func (h *operationHook) done(ctx context.Context, name string, start time.Time, err error) {
	if ctx.Value(skipKey{}) == h.in {
		return
	}
	elapsed := time.Since(start).Seconds()
	if err == nil || err == redis.Nil {
		h.in.duration.Record(ctx, elapsed, h.in.operationOpts(name)...)
	} else {
		h.in.duration.Record(ctx, elapsed, metric.WithAttributeSet(
			h.in.with(AttrOperationName.String(name), AttrErrorType.String(ErrorType(err)))))
	}
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		if waited, ok := h.waitFrom(ctx); ok {
			span.SetAttributes(attribute.Float64(string(AttrLimiterWaitTime), waited.Seconds()))
		}
	}
}

// KnownCommand reports whether name (lower case, as go-redis's Cmder.Name)
// is a Redis command this package knows.
func KnownCommand(name string) bool {
	_, ok := knownCommands[name]
	return ok
}

// skipKey marks a context whose pipeline the operation hook does not record:
// its commands are recorded one by one with RecordCoalesced.
type skipKey struct{}

// SkipOperationRecord returns a context whose commands and pipelines the
// operation hook does not record.
func (in *Instruments) SkipOperationRecord(ctx context.Context) context.Context {
	return context.WithValue(ctx, skipKey{}, in)
}

// RecordCoalesced records one coalesced pipeline: cmds, queued by several
// callers and sent together in one round trip. Like any pipeline it is one
// operation, so the cost of telemetry does not grow with the commands it
// carries:
//
//   - db.client.operation.duration: one sample, sent to done, named as
//     OpenTelemetry's conventions name a batch ("BATCH RPUSH" when the
//     commands share one name, "BATCH" otherwise), with the error.type of
//     the round trip or else of its first failed command;
//   - redisconn.limiter.wait_time: one sample, how long its oldest command
//     waited (oldest to sent);
//   - redisconn.batch.size: its number of commands, under the same name.
//
// ctx should be a sampled caller's context when one is in the batch, so the
// samples' exemplars point at a trace that holds one of the commands.
func (in *Instruments) RecordCoalesced(ctx context.Context, cmds []redis.Cmder, oldest, sent, done time.Time, err error) {
	if len(cmds) == 0 {
		return
	}
	first := cmds[0].Name()
	name := commandName(first)
	for _, c := range cmds[1:] {
		if c.Name() != first {
			name = ""
			break
		}
	}
	name = batchName(name)
	// Exec's error is the first command's that failed; a nil reply is not a
	// failure, but a later command may have failed.
	if err == redis.Nil {
		err = nil
		for _, c := range cmds {
			if e := c.Err(); e != nil && e != redis.Nil {
				err = e
				break
			}
		}
	}
	opts := in.operationOpts(name)
	in.waitTime.Record(ctx, sent.Sub(oldest).Seconds(), in.baseRecord...)
	in.batchSize.Record(ctx, int64(len(cmds)), opts...)
	if err == nil {
		in.duration.Record(ctx, done.Sub(sent).Seconds(), opts...)
	} else {
		in.duration.Record(ctx, done.Sub(sent).Seconds(), metric.WithAttributeSet(
			in.with(AttrOperationName.String(name), AttrErrorType.String(ErrorType(err)))))
	}
}

// batchNames caches "BATCH <name>" for every db.operation.name.
var batchNames sync.Map

// batchName is the db.operation.name of a batch of commands named name
// ("" when they differ).
func batchName(name string) string {
	if name == "" {
		return "BATCH"
	}
	if b, ok := batchNames.Load(name); ok {
		return b.(string)
	}
	b := "BATCH " + name
	batchNames.Store(name, b)
	return b
}

// CoalescedSpan adds, when ctx's trace is sampled, a CLIENT span for cmd, one
// of size commands sent together in a coalesced pipeline, queued at queued,
// sent at sent and answered at done. Unsampled, it costs one context lookup.
func (in *Instruments) CoalescedSpan(ctx context.Context, cmd redis.Cmder, queued, sent, done time.Time, size int) {
	if !trace.SpanContextFromContext(ctx).IsSampled() {
		return
	}
	_, span := in.tracer.Start(ctx, cmd.FullName(), trace.WithSpanKind(trace.SpanKindClient), trace.WithTimestamp(sent))
	if span.IsRecording() {
		span.SetAttributes(in.spanAttrs...)
		span.SetAttributes(
			attribute.Float64(string(AttrLimiterWaitTime), sent.Sub(queued).Seconds()),
			attribute.Int("redisconn.pipeline.size", size),
		)
		if in.cfg.DBStatement {
			span.SetAttributes(attribute.String("db.statement", rediscmd.CmdString(cmd)))
		}
	}
	endAt(span, cmd.Err(), done)
}

// commandName maps a go-redis command name to a bounded db.operation.name.
func commandName(name string) string {
	if n, ok := knownCommands[name]; ok {
		return n
	}
	return "_OTHER"
}
