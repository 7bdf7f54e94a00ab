package redisotel

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/extra/redisotel/v9"
	"github.com/redis/go-redis/v9"
	"github.com/redisconn/redisconn/internal/instrument"
	"github.com/redisconn/redisconn/internal/redistest"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// workerLike is a client configured as conn.NewWorker configures its own:
// pool 200, 5 s timeouts, context deadlines honoured, pipelines on the pool.
func workerLike(port int) *redis.Client {
	return redis.NewClient(&redis.Options{
		Addr:                  "127.0.0.1:" + strconv.Itoa(port),
		PoolSize:              200,
		ReadTimeout:           5 * time.Second,
		WriteTimeout:          5 * time.Second,
		DialTimeout:           5 * time.Second,
		ContextTimeoutEnabled: true,
		PipelinePoolSize:      -1,
	})
}

// BenchmarkSpanHook is, in mode "roundtrip", one RPUSH ("command") or one pipeline of 10 RPUSH
// ("pipeline10", the shape of the worker's coalesced round trips), from 50
// goroutines per CPU against a real redis-server; in mode "hookonly" the same
// calls end in an innermost hook that answers without a round trip, so ns/op
// is the hooks' own cost (and go-redis's). Both go through:
//
//   - none: no hook;
//   - own: instrument.Instruments.Instrument, that is the span hook plus the
//     operation hook, whose histogram is a no-op meter's here (so "own" pays
//     for a little more than its spans);
//   - redisotel: redisotel.InstrumentTracing(client, WithCallerEnabled(false),
//     WithDBStatement(false)), v9.23.0.
//
// under an SDK TracerProvider (batching to a no-op exporter) that samples
// never ("unsampled": no parent, NeverSample), always ("sampled":
// AlwaysSample), or follows an unsampled parent ("unsampled-parent":
// ParentBased(AlwaysSample) and a caller whose trace is not sampled, as in
// production for nine agent runs in ten).
func BenchmarkSpanHook(b *testing.B) {
	srv := redistest.Start(b, redistest.Options{})
	samplers := []struct {
		name    string
		sampler sdktrace.Sampler
		parent  bool
	}{
		{"unsampled", sdktrace.NeverSample(), false},
		{"sampled", sdktrace.AlwaysSample(), false},
		{"unsampled-parent", sdktrace.ParentBased(sdktrace.AlwaysSample()), true},
	}
	hooks := []struct {
		name    string
		install func(b *testing.B, c *redis.Client, tp trace.TracerProvider)
	}{
		{"own", func(b *testing.B, c *redis.Client, tp trace.TracerProvider) {
			in, err := instrument.New(instrument.Config{Role: "worker", PoolName: c.Options().Addr + "/0",
				MeterProvider: metricnoop.NewMeterProvider(), TracerProvider: tp})
			if err != nil {
				b.Fatal(err)
			}
			spans, metrics := in.Hooks(c.Options().Addr, instrument.Operations{})
			c.AddHook(spans)
			c.AddHook(metrics)
		}},
		{"redisotel", func(b *testing.B, c *redis.Client, tp trace.TracerProvider) {
			if err := redisotel.InstrumentTracing(c, redisotel.WithTracerProvider(tp),
				redisotel.WithCallerEnabled(false), redisotel.WithDBStatement(false)); err != nil {
				b.Fatal(err)
			}
		}},
	}
	workloads := []struct {
		name string
		op   func(ctx context.Context, c *redis.Client) error
	}{
		{"command", func(ctx context.Context, c *redis.Client) error {
			return c.RPush(ctx, "bench:spanhook", "v").Err()
		}},
		{"pipeline10", func(ctx context.Context, c *redis.Client) error {
			_, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
				for range 10 {
					p.RPush(ctx, "bench:spanhook", "v")
				}
				return nil
			})
			return err
		}},
	}
	for _, mode := range []string{"roundtrip", "hookonly"} {
		// finish adds, in mode hookonly, the innermost hook (go-redis runs
		// hooks in the order they were added): every command and pipeline
		// ends there, after the hooks under test, without a round trip.
		finish := func(c *redis.Client) *redis.Client {
			if mode == "hookonly" {
				c.AddHook(shortCircuit{})
			}
			return c
		}
		for _, wl := range workloads {
			b.Run(mode+"/"+wl.name+"/none", func(b *testing.B) {
				run(b, finish(workerLike(srv.Port())), context.Background(), wl.op)
			})
			for _, h := range hooks {
				for _, s := range samplers {
					b.Run(mode+"/"+wl.name+"/"+h.name+"/"+s.name, func(b *testing.B) {
						tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(s.sampler), sdktrace.WithBatcher(tracetest.NewNoopExporter()))
						defer tp.Shutdown(context.Background())
						c := workerLike(srv.Port())
						h.install(b, c, tp)
						finish(c)
						ctx := context.Background()
						if s.parent {
							ctx, _ = tp.Tracer("bench").Start(trace.ContextWithSpanContext(ctx, unsampledRoot()), "agent.run")
						}
						run(b, c, ctx, wl.op)
					})
				}
			}
		}
	}
}

// shortCircuit answers every command and pipeline without sending it, so a
// "hookonly" benchmark measures the hooks and go-redis's command path alone.
type shortCircuit struct{}

func (shortCircuit) DialHook(next redis.DialHook) redis.DialHook { return next }

func (shortCircuit) ProcessHook(redis.ProcessHook) redis.ProcessHook {
	return func(context.Context, redis.Cmder) error { return nil }
}

func (shortCircuit) ProcessPipelineHook(redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(context.Context, []redis.Cmder) error { return nil }
}

// unsampledRoot is a remote parent whose trace is not sampled.
func unsampledRoot() trace.SpanContext {
	return trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
		SpanID:     trace.SpanID{1, 2, 3, 4, 5, 6, 7, 8},
		TraceFlags: 0,
		Remote:     true,
	})
}

func run(b *testing.B, c *redis.Client, ctx context.Context, op func(context.Context, *redis.Client) error) {
	defer c.Close()
	if err := c.Ping(ctx).Err(); err != nil { // the connection is set up before timing starts
		b.Fatal(err)
	}
	b.SetParallelism(50)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := op(ctx, c); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	c.Del(ctx, "bench:spanhook")
}
