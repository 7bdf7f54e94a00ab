package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redisconn/redisconn/conn"
)

// contrastRuns is the original workload's shape: 16 concurrent agent runs.
const contrastRuns = 16

// outcome of one side of the comparison.
type outcome struct {
	name         string
	elapsed      time.Duration
	responses    int64
	errors       int64
	poolTimeouts uint32
	p50, p99     time.Duration
	roundTrips   int64
	firstError   string
}

// contrast runs the original workload twice against the same Redis: every
// response one RPUSH and one PUBLISH, each on its own goroutine, through one
// shared go-redis pool of 128 with no limiter ("before"), and the same
// responses through conn.Worker's batch operations ("after").
func contrast(ctx context.Context, ropt *redis.Options, o options, out io.Writer) error {
	fmt.Fprintf(out, "\nbefore/after: %d concurrent runs x %d responses, each response one RPUSH and one PUBLISH\n", contrastRuns, o.responses)
	before, err := runBefore(ctx, ropt, o.responses)
	if err != nil {
		return err
	}
	after, err := runAfter(ctx, ropt, o.responses)
	if err != nil {
		return err
	}
	row := func(k, b, a string) { fmt.Fprintf(out, "  %-30s %-28s %s\n", k, b, a) }
	row("", "before: shared pool 128,", "after: conn.Worker, pool 200,")
	row("", "no limiter, 1 op per item", "limiter 100, batches of 50")
	row("total time", before.elapsed.Round(time.Millisecond).String(), after.elapsed.Round(time.Millisecond).String())
	row("responses/s", perSec(before), perSec(after))
	row("Redis round trips", strconv.FormatInt(before.roundTrips, 10), strconv.FormatInt(after.roundTrips, 10))
	row("errors", strconv.FormatInt(before.errors, 10), strconv.FormatInt(after.errors, 10))
	row("pool timeouts", strconv.FormatUint(uint64(before.poolTimeouts), 10), strconv.FormatUint(uint64(after.poolTimeouts), 10))
	row("response visible after p50", before.p50.Round(time.Millisecond).String(), after.p50.Round(time.Millisecond).String())
	row("response visible after p99", before.p99.Round(time.Millisecond).String(), after.p99.Round(time.Millisecond).String())
	for _, oc := range []outcome{before, after} {
		if oc.firstError != "" {
			fmt.Fprintf(out, "  %s: first error: %s\n", oc.name, oc.firstError)
		}
	}
	return nil
}

func perSec(o outcome) string {
	return strconv.FormatFloat(float64(o.responses)/o.elapsed.Seconds(), 'f', 0, 64)
}

// latencies collects, per response, the time from its run's start until
// Redis acknowledged it.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d time.Duration, n int) {
	l.mu.Lock()
	for i := 0; i < n; i++ {
		l.d = append(l.d, d)
	}
	l.mu.Unlock()
}

func (l *latencies) quantiles() (p50, p99 time.Duration) {
	if len(l.d) == 0 {
		return 0, 0
	}
	sort.Slice(l.d, func(i, j int) bool { return l.d[i] < l.d[j] })
	return l.d[len(l.d)/2], l.d[len(l.d)*99/100]
}

func runBefore(ctx context.Context, ropt *redis.Options, responses int) (outcome, error) {
	opt := *ropt
	opt.PoolSize = conn.DefaultAPIPoolSize // the one pool everything shared
	c := redis.NewClient(&opt)
	defer c.Close()
	if err := c.Ping(ctx).Err(); err != nil {
		return outcome{}, err
	}
	oc := outcome{name: "before"}
	var lat latencies
	var errs atomic.Int64
	var firstErr atomic.Value
	start := time.Now()
	var wg sync.WaitGroup
	for r := 0; r < contrastRuns; r++ {
		key, ch := "demo:before:"+strconv.Itoa(r)+":responses", "demo:before:"+strconv.Itoa(r)+":new_response"
		runStart := time.Now()
		for i := 0; i < responses; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := c.RPush(ctx, key, `{"seq":`+strconv.Itoa(i)+`}`).Err()
				if err == nil {
					err = c.Publish(ctx, ch, i).Err()
				}
				if err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					return
				}
				lat.add(time.Since(runStart), 1)
			}()
		}
	}
	wg.Wait()
	oc.elapsed = time.Since(start)
	if ctx.Err() != nil {
		return oc, ctx.Err()
	}
	oc.errors = errs.Load()
	oc.responses = int64(len(lat.d))
	oc.poolTimeouts = c.PoolStats().Timeouts
	oc.roundTrips = 2 * int64(contrastRuns*responses)
	oc.p50, oc.p99 = lat.quantiles()
	if v := firstErr.Load(); v != nil {
		oc.firstError = v.(string)
	}
	cleanup(c, "demo:before:")
	return oc, nil
}

func runAfter(ctx context.Context, ropt *redis.Options, responses int) (outcome, error) {
	cfg := conn.DefaultConfig(conn.RoleWorker)
	host, port, _ := splitHostPort(ropt.Addr)
	cfg.Host, cfg.Port, cfg.Username, cfg.Password, cfg.DB = host, port, ropt.Username, conn.Secret(ropt.Password), ropt.DB
	if ropt.TLSConfig != nil {
		cfg.TLSConfig = ropt.TLSConfig
	}
	w, err := conn.NewWorker(ctx, cfg, conn.WithTelemetry(false))
	if err != nil {
		return outcome{}, err
	}
	defer w.Close()
	oc := outcome{name: "after"}
	var lat latencies
	var errs atomic.Int64
	var firstErr atomic.Value
	start := time.Now()
	var wg sync.WaitGroup
	for r := 0; r < contrastRuns; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key, ch := "demo:after:"+strconv.Itoa(r)+":responses", "demo:after:"+strconv.Itoa(r)+":new_response"
			runStart := time.Now()
			batch := cfg.BatchSize
			for i := 0; i < responses; i += batch {
				n := min(batch, responses-i)
				values, notes := make([]any, n), make([]any, n)
				for j := range values {
					values[j], notes[j] = `{"seq":`+strconv.Itoa(i+j)+`}`, i+j
				}
				_, err := w.BatchRPush(ctx, key, values...)
				if err == nil {
					_, err = w.BatchPublish(ctx, ch, notes...)
				}
				if err != nil {
					errs.Add(int64(n))
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				lat.add(time.Since(runStart), n)
			}
		}()
	}
	wg.Wait()
	oc.elapsed = time.Since(start)
	if ctx.Err() != nil {
		return oc, ctx.Err()
	}
	info, _ := w.ConnectionInfo(ctx)
	oc.errors = errs.Load()
	oc.responses = int64(len(lat.d))
	oc.poolTimeouts = info.Pool.Timeouts
	if info.PipelinePool != nil {
		oc.poolTimeouts += info.PipelinePool.Timeouts
	}
	oc.roundTrips = 2 * int64(contrastRuns*((responses+cfg.BatchSize-1)/cfg.BatchSize))
	oc.p50, oc.p99 = lat.quantiles()
	if v := firstErr.Load(); v != nil {
		oc.firstError = v.(string)
	}
	cleanup(w, "demo:after:")
	return oc, nil
}

func cleanup(c redis.UniversalClient, prefix string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for r := 0; r < contrastRuns; r++ {
		_ = c.Del(ctx, prefix+strconv.Itoa(r)+":responses").Err()
	}
}

func splitHostPort(addr string) (string, int, error) {
	host, p, err := netSplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	return host, port, err
}
