//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redisconn/redisconn/conn"
	"github.com/redisconn/redisconn/examples/agentrun"
	"github.com/redisconn/redisconn/internal/redistest"
	"github.com/redisconn/redisconn/otelsetup"
	"github.com/redisconn/redisconn/telemetry"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// Ramps to exhaustion (issue 18): does an alert fire before the first
// caller fails, and by how much?
//
// Each ramp drives real managers against a real redis-server toward one kind
// of exhaustion, step by step, while a real Prometheus scrapes them and
// evaluates the shipped rules. Time is scaled down by rampScale, all of it
// together: production scrapes and evaluates every 15 s (prodInterval) and
// here every 3 s; every `for:` and every range selector of the rules is
// divided by the same factor (in a temporary copy of the rules); and a ramp
// step that would last 15 s in production lasts 3 s. What stays unscaled is
// physics: command latencies, the callers' deadlines, the managers' own
// clocks (the server INFO cache of telemetry.ServerInfoMaxAge, 10 s, which a
// production-paced ramp would see 5 times less of).
//
// For each ramp the test records when each alert went pending and firing,
// when the first caller failed and how, and the lead time (the first firing
// alert to the first error), and prints them in production time (× rampScale)
// with the measured time beside. It fails when no alert fired before the
// first error.
const (
	rampScale    = 5
	prodInterval = 15 * time.Second
	rampInterval = prodInterval / rampScale
	// rampStep is one step of a ramp: 15 s in production.
	rampStep = 15 * time.Second / rampScale
	// rampAfterError is how long a ramp goes on after its first error, to
	// see the alerts that fire then: 2 minutes in production.
	rampAfterError = 2 * time.Minute / rampScale
)

var (
	forRe   = regexp.MustCompile(`(?m)^(\s+for: )(\S+)`)
	rangeRe = regexp.MustCompile(`\[(\d+[smhd])\]`)
	// predict_linear's horizon, in seconds.
	horizonRe = regexp.MustCompile(`(predict_linear\([^\[]+\[[^\]]+\],\s*)(\d+)\)`)
)

// scaleRules divides every `for:`, every range selector and every
// predict_linear horizon of the rules by rampScale.
func scaleRules(rules []byte) []byte {
	scale := func(d string) string {
		v, err := time.ParseDuration(d)
		if err != nil {
			panic(fmt.Sprintf("rules: duration %q: %v", d, err))
		}
		return promDuration(v / rampScale)
	}
	rules = forRe.ReplaceAllFunc(rules, func(m []byte) []byte {
		g := forRe.FindSubmatch(m)
		return append(slices.Clone(g[1]), scale(string(g[2]))...)
	})
	rules = rangeRe.ReplaceAllFunc(rules, func(m []byte) []byte {
		return []byte("[" + scale(string(rangeRe.FindSubmatch(m)[1])) + "]")
	})
	return horizonRe.ReplaceAllFunc(rules, func(m []byte) []byte {
		g := horizonRe.FindSubmatch(m)
		secs, _ := strconv.Atoi(string(g[2]))
		return append(slices.Clone(g[1]), []byte(strconv.Itoa(secs/rampScale)+")")...)
	})
}

// alertTimes are when an alert was first seen pending and firing, since the
// ramp began; -1 when never.
type alertTimes struct{ pending, firing time.Duration }

// timeline polls Prometheus's alerts every 250 ms and keeps when each went
// pending and firing first.
type timeline struct {
	p     *prometheus
	start time.Time
	mu    sync.Mutex
	seen  map[string]*alertTimes
}

func (tl *timeline) run(ctx context.Context) {
	for ctx.Err() == nil {
		if alerts, err := tl.p.alerts(ctx); err == nil {
			now := time.Since(tl.start)
			tl.mu.Lock()
			for _, a := range alerts {
				name := a.Labels["alertname"]
				at := tl.seen[name]
				if at == nil {
					at = &alertTimes{pending: -1, firing: -1}
					tl.seen[name] = at
				}
				if at.pending < 0 {
					at.pending = now // firing implies it was pending
				}
				if a.State == "firing" && at.firing < 0 {
					at.firing = now
				}
			}
			tl.mu.Unlock()
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func (tl *timeline) snapshot() map[string]alertTimes {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	out := map[string]alertTimes{}
	for k, v := range tl.seen {
		out[k] = *v
	}
	return out
}

// rampEnv is one ramp's redis-server, telemetry, Prometheus, and what its
// callers saw.
type rampEnv struct {
	t    *testing.T
	ctx  context.Context
	srv  *redistest.Server
	tel  *otelsetup.Telemetry
	prom *prometheus
	tl   *timeline

	// The ramp's callers: loop starts one, halt stops them all.
	stop  chan struct{}
	wg    sync.WaitGroup
	calls atomic.Int64

	start    time.Time
	mu       sync.Mutex
	firstAt  time.Duration // -1 until a caller failed
	first    string
	failures atomic.Int64
}

func newRampEnv(t *testing.T, server redistest.Options) *rampEnv {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatal("prometheus is not installed: run `make deps` (apt-get install prometheus)")
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	e := &rampEnv{t: t, ctx: ctx, firstAt: -1, stop: make(chan struct{})}
	e.srv = redistest.Start(t, server)
	e.tel, err = otelsetup.Setup(ctx, otelsetup.WithGlobal(false), otelsetup.WithServiceName("ramp"),
		otelsetup.WithSampler(sdktrace.NeverSample()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.tel.Shutdown(context.Background()) })
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: e.tel.Handler()}
	go hs.Serve(l)
	t.Cleanup(func() { _ = hs.Close() })
	e.prom = startPrometheusWith(t, bin, l.Addr().String(), rampInterval, scaleRules)
	return e
}

func (e *rampEnv) opts() []conn.Option {
	return []conn.Option{conn.WithMeterProvider(e.tel.MeterProvider), conn.WithTracerProvider(e.tel.TracerProvider)}
}

// begin waits until Prometheus has the managers' series and no alert is
// pending (a ramp starts healthy), then starts the ramp's clock and the
// alerts' timeline.
func (e *rampEnv) begin() {
	e.t.Helper()
	var why string
	if !redistest.WaitFor(e.ctx, 60*time.Second, func() bool {
		n, err := e.prom.query(e.ctx, "db_client_connection_max")
		if err != nil || n == 0 {
			why = fmt.Sprintf("no db_client_connection_max series (%v)", err)
			return false
		}
		if alerts, err := e.prom.alerts(e.ctx); err != nil || len(alerts) > 0 {
			why = fmt.Sprintf("alerts active before the ramp: %v (%v)", alerts, err)
			return false
		}
		return true
	}) {
		e.t.Fatalf("the ramp cannot start healthy: %s", why)
	}
	e.start = time.Now()
	e.tl = &timeline{p: e.prom, start: e.start, seen: map[string]*alertTimes{}}
	go e.tl.run(e.ctx)
}

// fail records a caller's failure.
func (e *rampEnv) fail(err error) {
	if err == nil {
		return
	}
	e.failures.Add(1)
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.firstAt < 0 {
		e.firstAt, e.first = time.Since(e.start), describe(err)
	}
}

// describe names an error by what callers branch on, and its text.
func describe(err error) string {
	var pte *conn.PoolTimeoutError
	var be *conn.BatchError
	switch {
	case errors.As(err, &be):
		return fmt.Sprintf("%s %d of %d acknowledged: %s", be.Op, be.Acknowledged, be.Total, describe(be.Err))
	case errors.As(err, &pte):
		return "PoolTimeoutError (" + telemetry.ErrorType(err) + ")"
	case errors.Is(err, conn.ErrMaxClients):
		return "ErrMaxClients"
	case errors.Is(err, context.DeadlineExceeded):
		return "context deadline exceeded"
	}
	return telemetry.ErrorType(err) + ": " + err.Error()
}

// over reports whether the ramp may stop: rampAfterError after the first
// error, or at max.
func (e *rampEnv) over(max time.Duration) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := time.Since(e.start)
	return now >= max || (e.firstAt >= 0 && now >= e.firstAt+rampAfterError)
}

// rampRow is one ramp's result.
type rampRow struct {
	ramp, setup string
	firstAt     time.Duration // -1: no caller failed
	first       string
	failures    int64
	alerts      map[string]alertTimes
	took        time.Duration
}

func (e *rampEnv) row(ramp, setup string) rampRow {
	e.mu.Lock()
	defer e.mu.Unlock()
	return rampRow{ramp: ramp, setup: setup, firstAt: e.firstAt, first: e.first, failures: e.failures.Load(),
		alerts: e.tl.snapshot(), took: time.Since(e.start)}
}

// prod writes a measured duration in production time, the measured one
// beside it.
func prod(d time.Duration) string {
	if d < 0 {
		return "never"
	}
	return fmt.Sprintf("%v (%v)", (d * rampScale).Round(time.Second), d.Round(100*time.Millisecond))
}

// signed is prod for a lead time, which is negative when the alert came
// after the error.
func signed(d time.Duration) string {
	if d < 0 {
		return "-" + prod(-d) + " (after the first error)"
	}
	return prod(d)
}

// firstFiring is the alert that fired first, and when.
func (r rampRow) firstFiring() (string, time.Duration) {
	name, at := "", time.Duration(-1)
	for n, a := range r.alerts {
		if a.firing >= 0 && (at < 0 || a.firing < at) {
			name, at = n, a.firing
		}
	}
	return name, at
}

// lead is the first firing alert's lead over the first error (negative:
// it fired after); ok false when no alert fired or no caller failed.
func (r rampRow) lead() (time.Duration, bool) {
	_, at := r.firstFiring()
	if at < 0 || r.firstAt < 0 {
		return 0, false
	}
	return r.firstAt - at, true
}

func (r rampRow) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "ramp %q (%s), %v measured:\n", r.ramp, r.setup, r.took.Round(time.Second))
	fmt.Fprintf(&b, "  first caller error: %s: %s (%d failures in all)\n", prod(r.firstAt), r.first, r.failures)
	names := slices.Sorted(func(yield func(string) bool) {
		for n := range r.alerts {
			if !yield(n) {
				return
			}
		}
	})
	for _, n := range names {
		a := r.alerts[n]
		fmt.Fprintf(&b, "  %-40s pending %-22s firing %s\n", n, prod(a.pending), prod(a.firing))
	}
	if name, at := r.firstFiring(); at >= 0 {
		if l, ok := r.lead(); ok {
			fmt.Fprintf(&b, "  first firing: %s at %s; lead time %s\n", name, prod(at), signed(l))
		} else {
			fmt.Fprintf(&b, "  first firing: %s at %s; no caller failed\n", name, prod(at))
		}
	} else if len(r.alerts) == 0 {
		b.WriteString("  no alert fired or went pending\n")
	} else {
		b.WriteString("  no alert fired\n")
	}
	return b.String()
}

// markdown is the README table's row.
func (r rampRow) markdown() string {
	name, at := r.firstFiring()
	lead := "-"
	if l, ok := r.lead(); ok {
		lead = (l * rampScale).Round(time.Second).String()
	}
	fired := "none"
	if at >= 0 {
		fired = fmt.Sprintf("%s at %v", name, (at * rampScale).Round(time.Second))
	}
	first := "none"
	if r.firstAt >= 0 {
		first = fmt.Sprintf("%v: %s", (r.firstAt * rampScale).Round(time.Second), r.first)
	}
	return fmt.Sprintf("| %s | %s | %s | %s |", r.ramp, fired, lead, first)
}

// checkLead fails the test when no alert fired before the first error.
func checkLead(t *testing.T, r rampRow) {
	t.Helper()
	t.Log(r.String())
	if r.firstAt < 0 {
		t.Errorf("ramp %q: no caller failed in %v: the ramp did not reach exhaustion", r.ramp, r.took.Round(time.Second))
		return
	}
	if l, ok := r.lead(); !ok || l <= 0 {
		t.Errorf("ramp %q: no alert fired before the first caller error", r.ramp)
	}
}

// TestRampsToExhaustion runs each ramp against its own redis-server and
// Prometheus, prints the results, and writes the README's table to
// /tmp/redisconn-ramps.md.
func TestRampsToExhaustion(t *testing.T) {
	var (
		mu   sync.Mutex
		rows []rampRow
	)
	add := func(r rampRow) {
		mu.Lock()
		rows = append(rows, r)
		mu.Unlock()
	}
	t.Run("worker_limiter", func(t *testing.T) { add(rampWorkerLimiter(t)) })
	t.Run("api_pool", func(t *testing.T) { add(rampAPIPool(t)) })
	t.Run("maxclients", func(t *testing.T) { add(rampMaxClients(t)) })
	t.Run("fleet_budget", func(t *testing.T) { add(rampFleetBudget(t)) })
	var b strings.Builder
	b.WriteString("| ramp | first alert to fire (production time) | lead time | first caller error |\n|---|---|---|---|\n")
	for _, r := range rows {
		b.WriteString(r.markdown() + "\n")
	}
	t.Logf("ramps to exhaustion, times in production (scrape and evaluation every %v, the rules' own for:), measured at 1/%d:\n%s",
		prodInterval, rampScale, b.String())
	_ = os.WriteFile("/tmp/redisconn-ramps.md", []byte(b.String()), 0o644)
}

// rampWorkerLimiter: a default Worker (limiter 100, pool 200) against a
// redis-server that a second client puts to sleep (DEBUG SLEEP) in longer
// and longer doses, more and more often (20 ms growing by 10 ms a step,
// duty cycle 10 % growing by 5 % a step to 90 %), while callers doing INCR
// and, one in five, BatchRPush of 60 items, with 250 ms deadlines, grow by
// 20 a step; until callers miss their deadlines in the limiter's queue.
func rampWorkerLimiter(t *testing.T) rampRow {
	// DEBUG SLEEP is off by default since Redis 7.
	e := newRampEnv(t, redistest.Options{Args: []string{"--enable-debug-command", "yes"}})
	cfg := conn.DefaultConfig(conn.RoleWorker)
	cfg.Host, cfg.Port = "127.0.0.1", e.srv.Port()
	w, err := conn.NewWorker(e.ctx, cfg, e.opts()...)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	sleeper := e.srv.Client(t)
	values := make([]any, 60)
	for k := range values {
		values[k] = k
	}
	var step atomic.Int64
	e.begin()
	var sleepErr atomic.Bool
	e.loop(0, func() { // the slow server
		k := step.Load()
		dose := 20*time.Millisecond + time.Duration(k)*10*time.Millisecond
		duty := min(0.10+0.05*float64(k), 0.90)
		err := sleeper.Do(e.ctx, "debug", "sleep", strconv.FormatFloat(dose.Seconds(), 'f', 3, 64)).Err()
		if err != nil && e.ctx.Err() == nil && sleepErr.CompareAndSwap(false, true) {
			t.Errorf("DEBUG SLEEP: %v", err)
		}
		time.Sleep(time.Duration(float64(dose) * (1 - duty) / duty))
	})
	callers := 0
	for k := 0; !e.over(12 * time.Minute / rampScale); k++ {
		step.Store(int64(k))
		for j := 0; j < 20; j++ {
			key, batch := "ramp:w:"+strconv.Itoa(callers), callers%5 == 0
			e.loop(20*time.Millisecond, func() {
				ctx, cancel := context.WithTimeout(e.ctx, 250*time.Millisecond)
				defer cancel()
				if batch {
					_, err := w.BatchRPush(ctx, key+":l", values...)
					e.fail(err)
				} else {
					e.fail(w.Incr(ctx, key).Err())
				}
			})
			callers++
		}
		time.Sleep(rampStep)
	}
	return e.finish("Worker limiter", fmt.Sprintf("%d callers at the end", callers))
}

// stopped reports whether halt was called.
func (e *rampEnv) stopped() bool {
	select {
	case <-e.stop:
		return true
	default:
		return false
	}
}

// loop starts a caller that runs call until halt, pausing pause after each,
// and counts its calls.
func (e *rampEnv) loop(pause time.Duration, call func()) {
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		for !e.stopped() {
			call()
			e.calls.Add(1)
			time.Sleep(pause)
		}
	}()
}

// halt stops the callers and waits for them.
func (e *rampEnv) halt() {
	close(e.stop)
	e.wg.Wait()
}

// finish stops the callers, and returns and checks the ramp's row.
func (e *rampEnv) finish(ramp, setup string) rampRow {
	e.halt()
	r := e.row(ramp, fmt.Sprintf("%s; %d calls", setup, e.calls.Load()))
	checkLead(e.t, r)
	return r
}

// get is a GET that fails the ramp on any error but a nil reply.
func (e *rampEnv) get(c redis.Cmdable, key string, deadline time.Duration) {
	ctx, cancel := context.WithTimeout(e.ctx, deadline)
	defer cancel()
	if err := c.Get(ctx, key).Err(); err != redis.Nil {
		e.fail(err)
	}
}

// rampAPIPool: a default API (pool 128) whose pool timeout is 250 ms
// (REDIS_POOL_TIMEOUT), behind a Toxiproxy whose added latency grows by 5 ms
// a step (replies), while closed-loop callers doing GET (2 s deadline, 20 ms
// between calls) grow by 10 a step; until callers get PoolTimeoutError.
func rampAPIPool(t *testing.T) rampRow {
	e := newRampEnv(t, redistest.Options{})
	tp := redistest.StartToxiproxy(t)
	p := tp.Proxy(t, "ramp-api", e.srv.Addr())
	latency := p.Latency(t, redistest.Downstream, 0, 0)
	cfg := conn.DefaultConfig(conn.RoleAPI)
	cfg.Host, cfg.Port, cfg.PoolTimeout = "127.0.0.1", p.Port(), 250*time.Millisecond
	a, err := conn.NewAPI(e.ctx, cfg, e.opts()...)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	e.begin()
	callers := 0
	for k := 1; !e.over(20 * time.Minute / rampScale); k++ {
		p.UpdateToxic(t, redistest.Toxic{Name: latency, Attributes: map[string]any{"latency": 5 * k}})
		for j := 0; j < 10; j++ {
			key := "ramp:a:" + strconv.Itoa(callers)
			e.loop(20*time.Millisecond, func() { e.get(a, key, 2*time.Second) })
			callers++
		}
		time.Sleep(rampStep)
	}
	return e.finish("API pool", fmt.Sprintf("%d callers at the end", callers))
}

// rampMaxClients: a redis-server with maxclients 120 and more and more API
// processes (managers of their own, pool 16), one every two steps, each with 8
// closed-loop callers (GET, 1 s deadline, 10 ms between calls) that keep
// about 8 connections open; until a new connection is refused
// (ErrMaxClients). The managers' INFO cache (10 s) is not scaled.
func rampMaxClients(t *testing.T) rampRow {
	e := newRampEnv(t, redistest.Options{Args: []string{"--maxclients", "120"}})
	managers := 0
	addManager := func() {
		cfg := conn.DefaultConfig(conn.RoleAPI)
		cfg.Host, cfg.Port, cfg.PoolSize = "127.0.0.1", e.srv.Port(), 16
		a, err := conn.NewAPI(e.ctx, cfg, e.opts()...)
		if err != nil {
			e.fail(err) // refused at maxclients
			return
		}
		t.Cleanup(func() { _ = a.Close() })
		managers++
		for j := 0; j < 8; j++ {
			e.loop(10*time.Millisecond, func() { e.get(a, "ramp:m", time.Second) })
		}
	}
	addManager()
	e.begin()
	for k := 1; !e.over(30 * time.Minute / rampScale); k++ {
		time.Sleep(rampStep)
		if k%2 == 0 {
			addManager()
		}
	}
	return e.finish("server maxclients", fmt.Sprintf("maxclients 120, %d API managers of pool 16 at the end", managers))
}

// rampFleetBudget: a fleet of Workers of pool 30 (limiter 30) on a
// redis-server with maxclients 100, lightly loaded (4 callers each): 2 of them
// at first (a budget of 60 connections), 2 more after a step (120). Once the
// budget alert has fired, plus 2 steps, the server stalls for 3 s (SIGSTOP)
// under 56 more callers per worker sending pipelines (10 s deadlines): every
// limiter's share of the pool fills up, and connections are refused
// (ErrMaxClients).
func rampFleetBudget(t *testing.T) rampRow {
	e := newRampEnv(t, redistest.Options{Args: []string{"--maxclients", "100"}})
	var workers []*conn.Worker
	addWorker := func() {
		cfg := conn.DefaultConfig(conn.RoleWorker)
		cfg.Host, cfg.Port, cfg.PoolSize, cfg.MaxConcurrentOps = "127.0.0.1", e.srv.Port(), 30, 30
		w, err := conn.NewWorker(e.ctx, cfg, e.opts()...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = w.Close() })
		for j := 0; j < 4; j++ {
			key := fmt.Sprintf("ramp:f:%d:%d", len(workers), j)
			e.loop(10*time.Millisecond, func() {
				ctx, cancel := context.WithTimeout(e.ctx, 10*time.Second)
				defer cancel()
				e.fail(w.Incr(ctx, key).Err())
			})
		}
		workers = append(workers, w)
	}
	addWorker()
	addWorker()
	e.begin()
	time.Sleep(rampStep)
	addWorker()
	addWorker()
	stalled := false
	for k := 0; !e.over(40 * time.Minute / rampScale); k++ {
		if a, ok := e.tl.snapshot()["RedisconnFleetOverConnectionBudget"]; ok && a.firing >= 0 && !stalled &&
			time.Since(e.start) >= a.firing+2*rampStep {
			stalled = true
			// An explicit pipeline takes a permit and a connection of the
			// limiter's share of its own (coalesced commands share the few
			// connections of the round trips).
			for wi, w := range workers {
				for j := 0; j < 56; j++ {
					key := fmt.Sprintf("ramp:f:%d:p%d", wi, j)
					e.loop(10*time.Millisecond, func() {
						ctx, cancel := context.WithTimeout(e.ctx, 10*time.Second)
						defer cancel()
						_, err := w.Pipelined(ctx, func(p redis.Pipeliner) error {
							p.Incr(ctx, key)
							return nil
						})
						e.fail(err)
					})
				}
			}
			time.Sleep(rampStep)
			e.srv.Pause()
			time.Sleep(3 * time.Second)
			e.srv.Resume()
		}
		time.Sleep(rampStep)
	}
	return e.finish("fleet over budget", fmt.Sprintf("2 then 4 workers of pool 30 on maxclients 100, stalled 3 s once the budget alert fired: %v", stalled))
}

// TestNoFalseAlarmsUnderHealthyLoad: the demo's load (16 agent runs at once,
// each 200 responses in batches of 50, 20 ms apart, written and announced by a
// default Worker; an API polling each run's status) for 10 minutes in
// production time leaves every alert inactive: none fires, none even goes
// pending.
func TestNoFalseAlarmsUnderHealthyLoad(t *testing.T) {
	e := newRampEnv(t, redistest.Options{})
	wcfg, acfg := conn.DefaultConfig(conn.RoleWorker), conn.DefaultConfig(conn.RoleAPI)
	wcfg.Host, wcfg.Port = "127.0.0.1", e.srv.Port()
	acfg.Host, acfg.Port = "127.0.0.1", e.srv.Port()
	w, err := conn.NewWorker(e.ctx, wcfg, e.opts()...)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	a, err := conn.NewAPI(e.ctx, acfg, e.opts()...)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	e.begin()
	for i := 0; i < 16; i++ {
		e.loop(0, func() {
			job := agentrun.Job{ID: agentrun.NewID(), Responses: 200}
			ctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
			defer cancel()
			if err := agentrun.Enqueue(ctx, a, job, time.Minute); err != nil {
				e.fail(err)
				return
			}
			done := make(chan struct{})
			go func() {
				defer close(done)
				for {
					select {
					case <-done:
						return
					case <-time.After(100 * time.Millisecond):
					}
					if _, err := agentrun.GetStatus(ctx, a, job.ID); err != nil && ctx.Err() == nil {
						e.fail(err)
					}
				}
			}()
			_, err := agentrun.Produce(ctx, w, job, agentrun.ProduceOptions{BatchSize: 50, Delay: 20 * time.Millisecond, TTL: time.Minute})
			e.fail(err)
			done <- struct{}{}
			<-done
		})
	}
	time.Sleep(10 * time.Minute / rampScale)
	e.halt()
	r := e.row("healthy", fmt.Sprintf("%d agent runs", e.calls.Load()))
	t.Log(r.String())
	if r.firstAt >= 0 {
		t.Errorf("a caller failed under the healthy load: %s", r.first)
	}
	for name, at := range r.alerts {
		if at.firing >= 0 {
			t.Errorf("alert %s fired at %s under the healthy load (pending at %s)", name, prod(at.firing), prod(at.pending))
		} else {
			t.Errorf("alert %s went pending at %s under the healthy load (it did not fire)", name, prod(at.pending))
		}
	}
}

// The scaled rules are the shipped ones with every duration divided by
// rampScale, and valid: promtool checks them.
func TestScaledRules(t *testing.T) {
	rules, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	scaled := string(scaleRules(rules))
	for _, want := range []string{"for: 180000ms", "for: 24000ms", "[12000ms]", "[120000ms], 360)"} {
		if !strings.Contains(scaled, want) {
			t.Errorf("scaled rules lack %q", want)
		}
	}
	for _, gone := range []string{"for: 2m", "[1m]", "[10m]", ", 1800)"} {
		if strings.Contains(scaled, gone) {
			t.Errorf("scaled rules still hold %q", gone)
		}
	}
	path := t.TempDir() + "/rules.yml"
	if err := os.WriteFile(path, []byte(scaled), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("promtool", "check", "rules", path).CombinedOutput(); err != nil {
		t.Errorf("promtool check rules on the scaled rules: %v\n%s", err, out)
	}
}
