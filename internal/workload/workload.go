// Package workload is the original design note's workload, shared by the
// demo and the benchmark program: concurrent agent runs, each writing its
// responses to a list and announcing them on a channel, once through one
// shared pool without a limiter ("before") and once through conn.Worker
// ("after").
package workload

import (
	"context"
	"net"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redisconn/redisconn/conn"
)

// Outcome of one side of the comparison.
type Outcome struct {
	Name         string
	Elapsed      time.Duration
	Responses    int64 // acknowledged
	Errors       int64 // responses that failed
	PoolTimeouts uint32
	P50, P99     time.Duration // from its run's start until a response was acknowledged
	RoundTrips   int64
	FirstError   string
}

// tally counts one side's acknowledged responses (with their latencies) and
// failed ones (with the first error), from many goroutines.
type tally struct {
	lat      latencies
	errs     atomic.Int64
	firstErr atomic.Value
}

func (t *tally) fail(n int, err error) {
	t.errs.Add(int64(n))
	t.firstErr.CompareAndSwap(nil, err.Error())
}

func (t *tally) fill(oc *Outcome) {
	oc.Errors = t.errs.Load()
	oc.Responses = int64(len(t.lat.d))
	oc.P50, oc.P99 = t.lat.quantiles()
	if v := t.firstErr.Load(); v != nil {
		oc.FirstError = v.(string)
	}
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

// Before runs the original design's problem: every response one RPUSH and one
// PUBLISH on its own goroutine, all runs at once, through one shared go-redis
// pool of 128 (the API's default) with no limiter.
func Before(ctx context.Context, ropt *redis.Options, runs, responses int) (Outcome, error) {
	opt := *ropt
	opt.PoolSize = conn.DefaultAPIPoolSize // the one pool everything shared
	c := redis.NewClient(&opt)
	defer c.Close()
	if err := c.Ping(ctx).Err(); err != nil {
		return Outcome{}, err
	}
	oc := Outcome{Name: "before"}
	var t tally
	start := time.Now()
	var wg sync.WaitGroup
	for r := 0; r < runs; r++ {
		key, ch := "workload:before:"+strconv.Itoa(r)+":responses", "workload:before:"+strconv.Itoa(r)+":new_response"
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
					t.fail(1, err)
					return
				}
				t.lat.add(time.Since(runStart), 1)
			}()
		}
	}
	wg.Wait()
	oc.Elapsed = time.Since(start)
	if ctx.Err() != nil {
		return oc, ctx.Err()
	}
	t.fill(&oc)
	oc.PoolTimeouts = c.PoolStats().Timeouts
	oc.RoundTrips = 2 * int64(runs*responses)
	cleanup(c, "workload:before:", runs)
	return oc, nil
}

// After runs the same responses through a conn.Worker (defaults), each run
// writing BatchRPush and BatchPublish chunks one after another. opts are
// passed to NewWorker (telemetry off unless given providers).
func After(ctx context.Context, ropt *redis.Options, runs, responses int, opts ...conn.Option) (Outcome, error) {
	cfg := conn.DefaultConfig(conn.RoleWorker)
	host, port, _ := splitHostPort(ropt.Addr)
	cfg.Host, cfg.Port, cfg.Username, cfg.Password, cfg.DB = host, port, ropt.Username, conn.Secret(ropt.Password), ropt.DB
	if ropt.TLSConfig != nil {
		cfg.TLSConfig = ropt.TLSConfig
	}
	if len(opts) == 0 {
		opts = []conn.Option{conn.WithTelemetry(false)}
	}
	w, err := conn.NewWorker(ctx, cfg, opts...)
	if err != nil {
		return Outcome{}, err
	}
	defer w.Close()
	oc := Outcome{Name: "after"}
	var t tally
	checkouts := func() int64 { s := w.PoolStats(); return int64(s.Hits) + int64(s.Misses) }
	before := checkouts()
	start := time.Now()
	var wg sync.WaitGroup
	for r := 0; r < runs; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key, ch := "workload:after:"+strconv.Itoa(r)+":responses", "workload:after:"+strconv.Itoa(r)+":new_response"
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
					t.fail(n, err)
					continue
				}
				t.lat.add(time.Since(runStart), n)
			}
		}()
	}
	wg.Wait()
	oc.Elapsed = time.Since(start)
	if ctx.Err() != nil {
		return oc, ctx.Err()
	}
	// Every round trip checks out one pooled connection: a chunk, or a
	// coalesced pipeline that carried several runs' chunks.
	oc.RoundTrips = checkouts() - before
	info, _ := w.ConnectionInfo(ctx)
	t.fill(&oc)
	oc.PoolTimeouts = info.Pool.Timeouts
	cleanup(w, "workload:after:", runs)
	return oc, nil
}

func cleanup(c redis.UniversalClient, prefix string, runs int) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for r := 0; r < runs; r++ {
		_ = c.Del(ctx, prefix+strconv.Itoa(r)+":responses").Err()
	}
}

func splitHostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	return host, port, err
}
