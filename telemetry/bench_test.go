package telemetry_test

import (
	"context"
	"testing"

	"github.com/redisconn/redisconn/conn"
	"github.com/redisconn/redisconn/internal/redistest"
	"github.com/redisconn/redisconn/otelsetup"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// BenchmarkWorkerTelemetry is one worker RPUSH, from 50 goroutines per CPU,
// with telemetry off and on. "production" is metrics plus tracing with
// Setup's default sampler, ParentBased(TraceIDRatioBased(0.1)), and no parent
// span, so about one operation in ten is sampled; "always" samples all.
// Compare ns/op and allocs/op of the sub-benchmarks of one run.
func BenchmarkWorkerTelemetry(b *testing.B) {
	srv := redistest.Start(b, redistest.Options{})
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	defer mp.Shutdown(context.Background())
	tracer := func(s sdktrace.Sampler) *sdktrace.TracerProvider {
		return sdktrace.NewTracerProvider(sdktrace.WithSampler(s), sdktrace.WithBatcher(tracetest.NewNoopExporter()))
	}
	production := tracer(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(otelsetup.DefaultSampleRatio)))
	always := tracer(sdktrace.AlwaysSample())
	defer production.Shutdown(context.Background())
	defer always.Shutdown(context.Background())

	for _, bc := range []struct {
		name string
		opts []conn.Option
	}{
		{"off", []conn.Option{conn.WithTelemetry(false)}},
		{"metrics", []conn.Option{conn.WithMeterProvider(mp), conn.WithTracerProvider(tracenoop.NewTracerProvider())}},
		{"production", []conn.Option{conn.WithMeterProvider(mp), conn.WithTracerProvider(production)}},
		{"always", []conn.Option{conn.WithMeterProvider(mp), conn.WithTracerProvider(always)}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			cfg := conn.DefaultConfig(conn.RoleWorker)
			cfg.Host, cfg.Port = "127.0.0.1", srv.Port()
			w, err := conn.NewWorker(context.Background(), cfg, bc.opts...)
			if err != nil {
				b.Fatal(err)
			}
			defer w.Close()
			ctx := context.Background()
			b.SetParallelism(50)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := w.RPush(ctx, "bench:telemetry", "v").Err(); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			w.Del(ctx, "bench:telemetry")
		})
	}
}
