package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/rueidis"
	"github.com/redisconn/redisconn/conn"
	"github.com/redisconn/redisconn/internal/workload"
	"github.com/redisconn/redisconn/otelsetup"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// value is the 27-byte value every RPUSH writes.
const value = `{"seq":123456,"tok":"abcd"}`

// result of one variant in one round.
type result struct {
	scenario, variant string
	baseline          bool
	items             int64
	elapsed           time.Duration
	p50, p99          time.Duration
	errors            int64
	poolTimeouts      int64
	// cpu is this process's CPU time (user + sys) over the measured run; 0
	// where the load ran elsewhere (redis-benchmark) or was not measured.
	cpu time.Duration
	// serverBusy is the share of one core the benchmark's redis-server used
	// over the variant's run (its INFO used_cpu_user + used_cpu_sys over
	// wall time): near 1, the server's one thread was the bottleneck and no
	// client sending the same commands could go faster. 0 if not measured.
	serverBusy float64
	// lat is every measured call's latency, kept until the round's slices
	// are merged (slices.go); nil where the load measured none itself.
	lat []time.Duration
}

func (r result) perSec() float64 { return float64(r.items) / r.elapsed.Seconds() }

// cpuPerItem is the client's CPU per acknowledged item in microseconds (in
// S1 an item is one RPUSH), 0 when not measured.
func (r result) cpuPerItem() float64 {
	if r.cpu <= 0 || r.items == 0 {
		return 0
	}
	return float64(r.cpu.Nanoseconds()) / 1e3 / float64(r.items)
}

// cpuTime is this process's CPU time so far, user + sys. The redis-server is
// another process, so this is the client side only: the callers, the client
// library under test, the runtime (GC included) and the bench's own timing,
// the same for every variant.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

type variant struct {
	name string
	run  func(ctx context.Context) (result, error)
}

type scenario struct {
	name, title, baseline string
	variants              []variant
	// slices is how many times each variant runs per round, interleaved
	// with the others (see slices.go); 1 for a scenario of fixed size.
	slices int
}

// env holds the clients and telemetry providers the scenarios share.
type env struct {
	addr string
	// replica follows addr during S2's replica variants (nil: left out).
	replica *replica
	plain   *redis.Client
	ap      *redis.AutoPipeliner
	// fd is go-redis's AutoPipeline with FullDuplex: one held connection
	// with a writer and a reader goroutine instead of one batch per round
	// trip. It needs a client of its own (fdClient, same options as plain):
	// a client caches its blocking autopipeliner and the first call's options
	// win, so asking plain for it would return the half-duplex ap.
	fdClient *redis.Client
	fd       *redis.AutoPipeliner
	// rue is rueidis with its defaults (auto-pipelining of concurrent
	// callers), client-side caching off: the strongest Go client peer.
	rue rueidis.Client
	tel *otelsetup.Telemetry // production: Setup's default sampler, spans dropped
	mp  *sdkmetric.MeterProvider
	all *sdktrace.TracerProvider
}

func newEnv(addr string) *env {
	e := &env{addr: addr}
	e.plain = redis.NewClient(&redis.Options{Addr: addr, PoolSize: 200})
	ap, err := e.plain.AutoPipeline()
	if err != nil {
		panic(err) // default options are valid
	}
	e.ap = ap
	// As the FullDuplex doc says: the ordered face (MaxConcurrentBatches 1,
	// not Unordered) of a standalone *Client with a pipeline pool (the
	// default); the blocking face's defaults otherwise, as ap has.
	e.fdClient = redis.NewClient(&redis.Options{Addr: addr, PoolSize: 200})
	fdOpts := redis.DefaultBlockingAutoPipelineOptions()
	fdOpts.FullDuplex = true
	if e.fd, err = e.fdClient.AutoPipelineWithOptions(fdOpts); err != nil {
		panic(err) // the options are valid
	}
	if !e.fd.Config().FullDuplex {
		// Config reports the effective mode: a silent fallback to half
		// duplex would make the row a copy of autopipeline.
		panic("go-redis AutoPipeline: FullDuplex requested but not in effect")
	}
	e.rue, err = rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}, DisableCache: true})
	if err != nil {
		panic(err) // the server was just started and answered
	}
	e.tel, err = otelsetup.Setup(context.Background(), otelsetup.WithGlobal(false), otelsetup.WithServiceName("bench"),
		otelsetup.WithSpanExporter(tracetest.NewNoopExporter()))
	if err != nil {
		panic(err)
	}
	e.mp = sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	e.all = sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()), sdktrace.WithBatcher(tracetest.NewNoopExporter()))
	return e
}

func (e *env) close() {
	_ = e.ap.Close()
	_ = e.fd.Close()
	_ = e.fdClient.Close()
	e.rue.Close()
	_ = e.plain.Close()
	_ = e.tel.Shutdown(context.Background())
	_ = e.mp.Shutdown(context.Background())
	_ = e.all.Shutdown(context.Background())
}

// serverCPU is the CPU time (user + sys) the benchmark's redis-server has
// used since it started, from INFO cpu; 0 if INFO fails.
func (e *env) serverCPU(ctx context.Context) time.Duration {
	info, err := e.plain.Info(ctx, "cpu").Result()
	if err != nil {
		return 0
	}
	var total float64
	for _, l := range strings.Split(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(l), ":")
		if ok && (k == "used_cpu_user" || k == "used_cpu_sys") {
			f, _ := strconv.ParseFloat(v, 64)
			total += f
		}
	}
	return time.Duration(total * float64(time.Second))
}

func (e *env) redisVersion(ctx context.Context) string {
	info, _ := e.plain.Info(ctx, "server").Result()
	for _, l := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "redis_version:"); ok {
			return v
		}
	}
	return "?"
}

// flush empties the benchmark's own ephemeral server between variants.
func (e *env) flush(ctx context.Context) { _ = e.plain.FlushAll(ctx).Err() }

// telemetry settings of a worker.
var (
	telOff     = func(e *env) []conn.Option { return []conn.Option{conn.WithTelemetry(false)} }
	telMetrics = func(e *env) []conn.Option {
		return []conn.Option{conn.WithMeterProvider(e.mp), conn.WithTracerProvider(tracenoop.NewTracerProvider())}
	}
	telProduction = func(e *env) []conn.Option {
		return []conn.Option{conn.WithMeterProvider(e.tel.MeterProvider), conn.WithTracerProvider(e.tel.TracerProvider)}
	}
	telAlways = func(e *env) []conn.Option {
		return []conn.Option{conn.WithMeterProvider(e.mp), conn.WithTracerProvider(e.all)}
	}
)

func (e *env) worker(ctx context.Context, opts []conn.Option, change ...func(*conn.Config)) (*conn.Worker, error) {
	host, port, _ := net.SplitHostPort(e.addr)
	cfg := conn.DefaultConfig(conn.RoleWorker)
	cfg.Host = host
	cfg.Port, _ = strconv.Atoi(port)
	for _, f := range change {
		f(&cfg)
	}
	return conn.NewWorker(ctx, cfg, opts...)
}

// fullDuplex names go-redis's AutoPipeline with FullDuplex in S1.
const fullDuplex = "AutoPipeline full-duplex"

func allScenarios(cfg config, e *env) []scenario {
	// Each timed scenario runs its variants in interleaved slices.
	slices := slicesPerRound(cfg.seconds)
	d := cfg.seconds / time.Duration(slices)
	rpush := func(c redis.Cmdable) func(ctx context.Context, key string) error {
		return func(ctx context.Context, key string) error { return c.RPush(ctx, key, value).Err() }
	}
	single := func(callers int) scenario {
		return scenario{
			name: "S1-" + strconv.Itoa(callers), title: fmt.Sprintf("single RPUSH, %d callers", callers), baseline: "plain", slices: slices,
			variants: []variant{
				{"plain", func(ctx context.Context) (result, error) {
					before := e.plain.PoolStats().Timeouts
					r := load(ctx, callers, d, 1, rpush(e.plain))
					r.poolTimeouts = int64(e.plain.PoolStats().Timeouts - before)
					return r, nil
				}},
				{"autopipeline", func(ctx context.Context) (result, error) {
					return load(ctx, callers, d, 1, rpush(e.ap)), nil
				}},
				{fullDuplex, func(ctx context.Context) (result, error) {
					return load(ctx, callers, d, 1, rpush(e.fd)), nil
				}},
				{"rueidis", func(ctx context.Context) (result, error) {
					return load(ctx, callers, d, 1, func(ctx context.Context, key string) error {
						return e.rue.Do(ctx, e.rue.B().Rpush().Key(key).Element(value).Build()).Error()
					}), nil
				}},
				{"worker", workerLoad(e, telProduction, callers, d, 1, func(w *conn.Worker) func(context.Context, string) error { return rpush(w) })},
			},
		}
	}
	values := make([]any, 50)
	strs := make([]string, 50)
	for i := range values {
		values[i], strs[i] = value, value
	}
	bulk := scenario{
		name: "S2", title: "bulk RPUSH, 50 items per round trip, 50 callers", baseline: "redis-benchmark", slices: slices,
		variants: []variant{
			{"batchrpush", workerLoad(e, telProduction, 50, d, 50, func(w *conn.Worker) func(context.Context, string) error {
				return func(ctx context.Context, key string) error { _, err := w.BatchRPush(ctx, key, values...); return err }
			})},
			{"batchrpush-idem", workerLoad(e, telProduction, 50, d, 50, func(w *conn.Worker) func(context.Context, string) error {
				// Idempotent mode: a marker per chunk, set in the same Lua script.
				var seq atomic.Int64
				return func(ctx context.Context, key string) error {
					ctx = conn.WithIdempotentBatch(ctx, "bench-"+strconv.FormatInt(seq.Add(1), 10), 0)
					_, err := w.BatchRPush(ctx, key, values...)
					return err
				}
			})},
			{"pipelined", func(ctx context.Context) (result, error) {
				return load(ctx, 50, d, 50, func(ctx context.Context, key string) error {
					_, err := e.plain.Pipelined(ctx, func(p redis.Pipeliner) error {
						for _, v := range values {
							p.RPush(ctx, key, v)
						}
						return nil
					})
					return err
				}), nil
			}},
			{"rueidis", func(ctx context.Context) (result, error) {
				// One RPUSH of 50 values per call, as BatchRPush sends per chunk.
				return load(ctx, 50, d, 50, func(ctx context.Context, key string) error {
					return e.rue.Do(ctx, e.rue.B().Rpush().Key(key).Element(strs...).Build()).Error()
				}), nil
			}},
			{"rpush-per-item", func(ctx context.Context) (result, error) {
				return load(ctx, 50, d, 1, rpush(e.plain)), nil
			}},
		},
	}
	if e.replica != nil {
		batch := func(w *conn.Worker) func(context.Context, string) error {
			return func(ctx context.Context, key string) error { _, err := w.BatchRPush(ctx, key, values...); return err }
		}
		// Durable acknowledgements against a real replica, and the same
		// replica without them: the ratio of the two is their cost.
		bulk.variants = append(bulk.variants,
			variant{"batchrpush+replica", func(ctx context.Context) (result, error) {
				return e.replica.attached(ctx, e.plain, workerLoad(e, telProduction, 50, d, 50, batch))
			}},
			variant{"batchrpush ack 1", func(ctx context.Context) (result, error) {
				return e.replica.attached(ctx, e.plain, workerLoad(e, telProduction, 50, d, 50, batch, durable(1)))
			}})
	}
	if _, err := exec.LookPath("redis-benchmark"); err == nil {
		bulk.variants = append(bulk.variants, variant{"redis-benchmark", func(ctx context.Context) (result, error) {
			return redisBenchmark(ctx, e.addr, d)
		}})
	} else {
		bulk.baseline = "pipelined"
	}
	telemetryCost := scenario{
		name: "S3", title: "telemetry cost, single RPUSH, 100 callers", baseline: "off", slices: slices,
		variants: []variant{
			{"off", workerLoad(e, telOff, 100, d, 1, func(w *conn.Worker) func(context.Context, string) error { return rpush(w) })},
			{"metrics", workerLoad(e, telMetrics, 100, d, 1, func(w *conn.Worker) func(context.Context, string) error { return rpush(w) })},
			{"production", workerLoad(e, telProduction, 100, d, 1, func(w *conn.Worker) func(context.Context, string) error { return rpush(w) })},
			{"always", workerLoad(e, telAlways, 100, d, 1, func(w *conn.Worker) func(context.Context, string) error { return rpush(w) })},
		},
	}
	ropt := &redis.Options{Addr: e.addr}
	original := scenario{
		name: "S4", title: fmt.Sprintf("original workload, 16 runs x %d responses, RPUSH + PUBLISH each", cfg.responses), baseline: "before",
		slices: 1, // a fixed workload, not a duration
		variants: []variant{
			{"before", func(ctx context.Context) (result, error) {
				return fromOutcome(workload.Before(ctx, ropt, 16, cfg.responses))
			}},
			{"after", func(ctx context.Context) (result, error) {
				return fromOutcome(workload.After(ctx, ropt, 16, cfg.responses, telProduction(e)...))
			}},
		},
	}
	return []scenario{single(100), single(5000), bulk, telemetryCost, original}
}

func fromOutcome(o workload.Outcome, err error) (result, error) {
	if err != nil {
		return result{}, err
	}
	return result{items: o.Responses, elapsed: o.Elapsed, p50: o.P50, p99: o.P99, errors: o.Errors, poolTimeouts: int64(o.PoolTimeouts)}, nil
}

// workerLoad runs op on a fresh Worker with the given telemetry.
func workerLoad(e *env, tel func(*env) []conn.Option, callers int, d time.Duration, itemsPerOp int,
	op func(*conn.Worker) func(context.Context, string) error, change ...func(*conn.Config)) func(ctx context.Context) (result, error) {
	return func(ctx context.Context) (result, error) {
		w, err := e.worker(ctx, tel(e), change...)
		if err != nil {
			return result{}, err
		}
		defer w.Close()
		r := load(ctx, callers, d, itemsPerOp, op(w))
		info, _ := w.ConnectionInfo(ctx)
		r.poolTimeouts = int64(info.Pool.Timeouts)
		return r, nil
	}
}

// load runs op from callers goroutines for d (each on its own key) and
// measures every call, and the process's CPU from the callers' start to the
// last one's return (goroutine start-up and the latency sort excluded).
func load(ctx context.Context, callers int, d time.Duration, itemsPerOp int, op func(context.Context, string) error) result {
	var (
		wg    sync.WaitGroup
		errs  atomic.Int64
		mu    sync.Mutex
		lat   []time.Duration
		start = time.Now()
	)
	deadline := start.Add(d)
	// Callers start together.
	gate := make(chan struct{})
	for i := 0; i < callers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := "bench:" + strconv.Itoa(i%64)
			own := make([]time.Duration, 0, 256)
			<-gate
			for time.Now().Before(deadline) {
				t0 := time.Now()
				if err := op(ctx, key); err != nil {
					errs.Add(1)
					continue
				}
				own = append(own, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, own...)
			mu.Unlock()
		}()
	}
	cpu0 := cpuTime()
	start = time.Now()
	close(gate)
	wg.Wait()
	elapsed := time.Since(start)
	cpu := cpuTime() - cpu0
	return result{items: int64(len(lat) * itemsPerOp), elapsed: elapsed, lat: lat, errors: errs.Load(), cpu: cpu}
}

func quantiles(d []time.Duration) (p50, p99 time.Duration) {
	if len(d) == 0 {
		return 0, 0
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return d[len(d)/2], d[len(d)*99/100]
}

var rbLine = regexp.MustCompile(`RPUSH: ([0-9.]+) requests per second(?:, p50=([0-9.]+) msec)?`)

// redisBenchmark is the server's ceiling on this machine: redis-benchmark
// -P 50 -c 50 -t rpush, sized to run about d.
func redisBenchmark(ctx context.Context, addr string, d time.Duration) (result, error) {
	host, port, _ := net.SplitHostPort(addr)
	n := int(2_000_000 * d.Seconds())
	out, err := exec.CommandContext(ctx, "redis-benchmark", "-h", host, "-p", port, "-P", "50", "-c", "50",
		"-n", strconv.Itoa(n), "-t", "rpush", "-d", strconv.Itoa(len(value)), "-q").CombinedOutput()
	if err != nil {
		return result{}, fmt.Errorf("redis-benchmark: %v: %s", err, out)
	}
	// -q prints progress with carriage returns; the last line has the result.
	m := rbLine.FindAllStringSubmatch(strings.ReplaceAll(string(out), "\r", "\n"), -1)
	if m == nil {
		return result{}, errors.New("redis-benchmark: no result in: " + string(out))
	}
	last := m[len(m)-1]
	rps, _ := strconv.ParseFloat(last[1], 64)
	p50ms, _ := strconv.ParseFloat(last[2], 64)
	elapsed := time.Duration(float64(n) / rps * float64(time.Second))
	return result{items: int64(n), elapsed: elapsed, p50: time.Duration(p50ms * float64(time.Millisecond))}, nil
}
