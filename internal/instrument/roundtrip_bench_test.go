package instrument

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// callerCmd is a command of a coalesced round trip as the Worker's wire
// client sees one: the caller's command with its caller and round trip
// beside it.
type callerCmd struct {
	redis.Cmder
	caller Caller
	round  *RoundTrip
}

// BenchmarkRoundTripTelemetry is what the spans and metrics hooks cost a
// coalesced round trip of single RPUSHes, one caller each, on the providers
// otelsetup.Setup builds (the Prometheus exporter's reader; the sampler
// ParentBased(TraceIDRatioBased)): the work the Worker's flusher does per
// round trip beyond sending it, the whole of what telemetry adds to
// coalesced commands (`make bench`'s S3 measures the same end to end, within
// the noise of a shared machine). 38 and 750 commands are the round trips
// measured with 100 and 5000 callers on a 2-core machine; "unsampled" has
// no caller in a sampled trace (the common case: no spans, only metrics),
// "one sampled" one of them (one span). Reports ns per round trip and per
// command.
func BenchmarkRoundTripTelemetry(b *testing.B) {
	reg := prometheus.NewRegistry()
	exporter, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		b.Fatal(err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter))
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(0.1))),
		sdktrace.WithBatcher(tracetest.NewNoopExporter()))
	b.Cleanup(func() {
		_ = mp.Shutdown(context.Background())
		_ = tp.Shutdown(context.Background())
	})
	in, err := New(Config{Role: "worker", PoolName: "bench", MeterProvider: mp, TracerProvider: tp})
	if err != nil {
		b.Fatal(err)
	}
	ops := Operations{
		RoundTrip: func(cmd redis.Cmder) (RoundTrip, bool) {
			c, ok := cmd.(*callerCmd)
			if !ok {
				return RoundTrip{}, false
			}
			return *c.round, true
		},
		Caller: func(cmd redis.Cmder) Caller { return cmd.(*callerCmd).caller },
	}
	spans, metrics := in.Hooks("127.0.0.1:6379", ops)
	send := func(context.Context, []redis.Cmder) error { return nil }
	hooks := map[string]redis.ProcessPipelineHook{
		"spans":   spans.ProcessPipelineHook(send),
		"metrics": metrics.ProcessPipelineHook(send),
		"both":    spans.ProcessPipelineHook(metrics.ProcessPipelineHook(send)),
	}
	sampled := trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1}, SpanID: trace.SpanID{1}, TraceFlags: trace.FlagsSampled,
	}))
	for _, n := range []int{38, 750} {
		for _, traced := range []string{"unsampled", "one sampled"} {
			cmds := make([]redis.Cmder, n)
			queued := time.Now()
			round := &RoundTrip{Oldest: queued}
			for i := range cmds {
				ctx := context.Background()
				if traced == "one sampled" && i == n/2 {
					ctx = sampled
					round.Sampled++
				}
				cmds[i] = &callerCmd{
					Cmder:  redis.NewIntCmd(ctx, "rpush", "key:"+strconv.Itoa(i%64), "v"),
					caller: Caller{Ctx: ctx, Queued: queued, Call: uint64(i + 1)},
					round:  round,
				}
			}
			for _, name := range []string{"spans", "metrics", "both"} {
				hook := hooks[name]
				b.Run(strconv.Itoa(n)+"/"+traced+"/"+name, func(b *testing.B) {
					b.ReportAllocs()
					for b.Loop() {
						_ = hook(context.Background(), cmds)
					}
					b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/command")
				})
			}
		}
	}
}
