package instrument

import (
	"context"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/extra/rediscmd/v9"
	"github.com/redis/go-redis/v9"
	"github.com/redisconn/redisconn/telemetry"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// tracingHook makes every command and pipeline a CLIENT span, shaped like
// redisotel's (the same span names: the command's full name, "redis.pipeline
// <commands>", "redis.dial"; db.system, server.address, server.port), at a
// fraction of the cost, which is what lets tracing stay on in production
// (BenchmarkWorkerTelemetry):
//
//   - under a parent span that is not sampled, no span is started at all:
//     every SDK sampler in common use (ParentBased, the default) would drop it;
//   - attributes are set only on recording spans, from slices built once;
//   - the command text (keys and values) goes on spans only when asked
//     (Config.DBStatement), with AUTH/HELLO secrets masked;
//   - a failure sets the status to error.type, never the error's text, which
//     can quote arguments.
//
// Connection set-up (HELLO, AUTH, SELECT, CLIENT SETINFO, ...; see
// SetupCommand) is not traced: it is part of the dial, which has its span.
type tracingHook struct {
	tracer    trace.Tracer
	attrs     []attribute.KeyValue
	statement bool
	ops       Operations
}

var clientSpan = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient)}

func newTracingHook(in *Instruments, addr string, ops Operations) *tracingHook {
	return &tracingHook{tracer: in.tracer, attrs: spanAttrs(in, addr), statement: in.cfg.DBStatement, ops: ops}
}

// spanAttrs are the attributes of every CLIENT span to the server at addr.
func spanAttrs(in *Instruments, addr string) []attribute.KeyValue {
	attrs := append([]attribute.KeyValue{attribute.String("db.system", "redis"), telemetry.AttrDBSystem.String("redis")}, in.baseKV...)
	if host, port, err := net.SplitHostPort(addr); err == nil {
		attrs = append(attrs, attribute.String("server.address", host))
		if p, err := strconv.Atoi(port); err == nil {
			attrs = append(attrs, attribute.Int("server.port", p))
		}
	}
	return attrs
}

// unsampledParent: the caller's trace exists and is not being recorded.
func unsampledParent(ctx context.Context) bool {
	sc := trace.SpanContextFromContext(ctx)
	return sc.IsValid() && !sc.IsSampled()
}

func (h *tracingHook) start(ctx context.Context, name string) (context.Context, trace.Span) {
	ctx, span := h.tracer.Start(ctx, name, clientSpan...)
	if span.IsRecording() {
		span.SetAttributes(h.attrs...)
		if waited, ok := h.ops.LimiterWait(ctx); ok {
			span.SetAttributes(telemetry.AttrLimiterWaitTime.Float64(waited.Seconds()))
		}
	}
	return ctx, span
}

func end(span trace.Span, err error) {
	markError(span, err)
	span.End()
}

func endAt(span trace.Span, err error, at time.Time) {
	markError(span, err)
	span.End(trace.WithTimestamp(at))
}

func markError(span trace.Span, err error) {
	if err != nil && err != redis.Nil && span.IsRecording() {
		et := telemetry.ErrorType(err)
		span.SetAttributes(telemetry.AttrErrorType.String(et))
		span.SetStatus(codes.Error, et)
	}
}

func (h *tracingHook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if unsampledParent(ctx) {
			return next(ctx, network, addr)
		}
		ctx, span := h.start(ctx, "redis.dial")
		conn, err := next(ctx, network, addr)
		end(span, err)
		return conn, err
	}
}

func (h *tracingHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if unsampledParent(ctx) || SetupCommand(cmd) {
			return next(ctx, cmd)
		}
		ctx, span := h.start(ctx, cmd.FullName())
		if h.statement && span.IsRecording() {
			span.SetAttributes(attribute.String("db.statement", rediscmd.CmdString(cmd)))
		}
		err := next(ctx, cmd)
		end(span, err)
		return err
	}
}

func (h *tracingHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if rt, ok := h.ops.roundTripOf(cmds); ok {
			sent := time.Now()
			err := next(ctx, cmds)
			if rt.Sampled > 0 {
				h.roundTrip(cmds, sent, time.Now())
			}
			return err
		}
		if unsampledParent(ctx) || SetupPipeline(cmds) {
			return next(ctx, cmds)
		}
		ctx, span := h.start(ctx, "redis.pipeline "+pipelineSummary(cmds))
		if span.IsRecording() {
			span.SetAttributes(attribute.Int("db.redis.num_cmd", len(cmds)), telemetry.AttrBatchSize.Int(len(cmds)))
			if h.statement {
				_, text := rediscmd.CmdsString(cmds)
				span.SetAttributes(attribute.String("db.statement", text))
			}
		}
		err := next(ctx, cmds)
		end(span, err)
		return err
	}
}

// roundTrip gives each caller of a coalesced round trip whose trace is
// sampled a CLIENT span in that trace, from sent to done (see
// Operations.RoundTrip): its command's, or "redis.pipeline ..." for a
// caller that handed over several commands at once (a batch chunk). Only a
// round trip with a sampled caller comes here; its unsampled callers cost
// one context lookup each.
func (h *tracingHook) roundTrip(cmds []redis.Cmder, sent, done time.Time) {
	next := h.ops.Caller(cmds[0])
	for i := 0; i < len(cmds); {
		// A caller's commands are adjacent: cmds[i:j]. Each command's
		// caller is looked up once.
		c, j := next, i+1
		for ; j < len(cmds); j++ {
			if next = h.ops.Caller(cmds[j]); next.Call != c.Call {
				break
			}
		}
		group := cmds[i:j]
		i = j
		if !Sampled(c.Ctx) || SetupCommand(group[0]) {
			continue
		}
		name := group[0].FullName()
		if len(group) > 1 {
			name = "redis.pipeline " + pipelineSummary(group)
		}
		_, span := h.tracer.Start(c.Ctx, name, trace.WithSpanKind(trace.SpanKindClient), trace.WithTimestamp(sent))
		var err error
		for _, cmd := range group {
			if e := cmd.Err(); e != nil && e != redis.Nil {
				err = e
				break
			}
		}
		if span.IsRecording() {
			span.SetAttributes(h.attrs...)
			span.SetAttributes(
				telemetry.AttrLimiterWaitTime.Float64(sent.Sub(c.Queued).Seconds()),
				attribute.Int("redisconn.pipeline.size", len(cmds)),
			)
			if len(group) > 1 {
				span.SetAttributes(attribute.Int("db.redis.num_cmd", len(group)), telemetry.AttrBatchSize.Int(len(group)))
			}
			if h.statement {
				if len(group) > 1 {
					_, text := rediscmd.CmdsString(group)
					span.SetAttributes(attribute.String("db.statement", text))
				} else {
					span.SetAttributes(attribute.String("db.statement", rediscmd.CmdString(group[0])))
				}
			}
		}
		endAt(span, err, done)
	}
}

// pipelineSummary names the distinct commands of a pipeline, in order, as
// redisotel does ("incr expire"), at most 10 of them.
func pipelineSummary(cmds []redis.Cmder) string {
	var b strings.Builder
	seen := make(map[string]bool, 4)
	for _, c := range cmds {
		name := c.FullName()
		if seen[name] {
			continue
		}
		if len(seen) == 10 {
			b.WriteString(" ...")
			break
		}
		seen[name] = true
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(name)
	}
	return b.String()
}
