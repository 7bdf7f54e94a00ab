package main

// S5 fleet: what one machine's fleet of worker processes does to ONE
// redis-server when the server stalls. The parent starts a redis-server of its
// own, re-executes this binary N times as fleet members (benchFleetEnv holds
// the member's spec), each running one manager with its own callers doing a
// worker mix (INCR or RPUSH, each call with a 1-2 s deadline), stops the
// server with SIGSTOP for a few seconds under load and resumes it with
// SIGCONT. The same run is made with default conn Workers, with plain go-redis
// clients (redis.NewClient, PoolSize 200, no limiter) as the baseline, and
// with the same plain clients plus ContextTimeoutEnabled, so that they give up
// at the callers' deadlines as the Worker does (go-redis's default waits for
// its ReadTimeout, 3 s, whatever the deadline).
//
// The parent measures the server's side on a dedicated raw connection that
// sends INFO every 50 ms (one request in flight at most: while the server is
// stopped the reply is simply late, and the connection is never redialled, so
// the poller adds no connections of its own): connected_clients (idle, under
// load just before the stop, the peak) and total_connections_received (new
// connections over the run and from the stop to the end). The members report
// over stdout, one JSON line each: calls that succeeded on time, succeeded
// late (more than 10 % of their budget past their deadline) and failed, per
// 100 ms bucket, the errors by kind, the last error's time, and how far past
// its deadline the slowest call returned.
//
// Children never outlive the parent: they get SIGKILL when it dies
// (Pdeathsig), exit when their stdin (a pipe from the parent) closes, exit on
// their own after a fixed lifetime, and the parent kills and reaps them on
// every return path, as it stops the server.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redisconn/redisconn/conn"
	"github.com/redisconn/redisconn/internal/redistest"
)

// benchFleetEnv, when set, makes the bench binary a fleet member; its value is
// the member's spec as JSON. It is for the parent's use only.
const benchFleetEnv = "REDISCONN_BENCH_FLEET_MEMBER"

const (
	fleetWorker = "worker"         // default conn.Worker per member
	fleetPlain  = "plain go-redis" // redis.NewClient, PoolSize 200, no limiter
	// fleetPlainCtx is plain go-redis that honours the callers' deadlines on
	// the socket (ContextTimeoutEnabled), as the Worker does.
	fleetPlainCtx = "plain, ctx t/o"

	fleetBucket      = 100 * time.Millisecond // members count calls per bucket
	fleetPollEvery   = 50 * time.Millisecond  // the parent's INFO poll
	fleetMinDeadline = time.Second            // each call's deadline: uniform in [min, max)
	fleetMaxDeadline = 2 * time.Second
)

// fleetConfig is the S5 setup.
type fleetConfig struct {
	procs, callers, runs int
	warm, stall, after   time.Duration
}

func newFleetConfig(cfg config) (fleetConfig, error) {
	// The load before the stop is long enough for the plain clients' start
	// (some 1600-2000 connections dialled at once, on 2 cores) to settle:
	// with deadlines on the socket it takes 1.5-2 s.
	fc := fleetConfig{procs: 8, callers: 300, runs: cfg.rounds, warm: 5 * time.Second, stall: 3 * time.Second, after: 10 * time.Second}
	if cfg.quick {
		// 250 callers: still more than a plain pool of 200, so its callers
		// queue for connections as they do at 300.
		fc = fleetConfig{procs: 8, callers: 250, runs: 1, warm: 3 * time.Second, stall: 3 * time.Second, after: 5 * time.Second}
	}
	for _, o := range []struct {
		name string
		dst  *int
		max  int
	}{{"BENCH_FLEET_PROCS", &fc.procs, 64}, {"BENCH_FLEET_CALLERS", &fc.callers, 5000}, {"BENCH_FLEET_RUNS", &fc.runs, 20}} {
		v := os.Getenv(o.name)
		if v == "" {
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > o.max {
			return fc, fmt.Errorf("%s=%q: want a whole number from 1 to %d", o.name, v, o.max)
		}
		*o.dst = n
	}
	if v := os.Getenv("BENCH_FLEET_STALL"); v != "" {
		sec, err := strconv.ParseFloat(v, 64)
		if err != nil || sec < 0.1 || sec > 60 {
			return fc, fmt.Errorf("BENCH_FLEET_STALL=%q: want seconds from 0.1 to 60", v)
		}
		fc.stall = time.Duration(sec * float64(time.Second))
	}
	return fc, nil
}

// ---------------------------------------------------------------- member side

// memberSpec is what the parent tells a member (benchFleetEnv).
type memberSpec struct {
	Index    int    `json:"index"`
	Addr     string `json:"addr"`
	Kind     string `json:"kind"`
	Callers  int    `json:"callers"`
	Buckets  int    `json:"buckets"`
	Lifetime int64  `json:"lifetime_ns"` // the member exits on its own after this
}

// memberMsg is one line a member writes to stdout.
type memberMsg struct {
	Ready  bool          `json:"ready,omitempty"`
	Report *memberReport `json:"report,omitempty"`
}

type memberReport struct {
	Index   int              `json:"index"`
	OK      int64            `json:"ok"`
	Errors  int64            `json:"errors"`
	Kinds   map[string]int64 `json:"kinds"`
	LastErr int64            `json:"last_error_unix_ns"` // 0: none
	// MaxOverrun is how far past its deadline the slowest call returned.
	MaxOverrun   int64   `json:"max_overrun_ns"`
	Late         int64   `json:"late"`
	OKBuckets    []int64 `json:"ok_buckets"` // on time
	LateBuckets  []int64 `json:"late_buckets"`
	ErrBuckets   []int64 `json:"err_buckets"`
	PoolTimeouts uint32  `json:"pool_timeouts"`
	PoolMisses   uint32  `json:"pool_misses"` // go-redis pool: connections it had to open
}

// fleetMember runs one member and returns the process's exit code. Anything it
// has to say besides its two JSON lines goes to stderr, which the parent
// shows when the member fails.
func fleetMember(specJSON string) int {
	var spec memberSpec
	if err := json.Unmarshal([]byte(specJSON), &spec); err != nil {
		fmt.Fprintf(os.Stderr, "fleet member: bad %s: %v\n", benchFleetEnv, err)
		return 2
	}
	if spec.Lifetime <= 0 || spec.Buckets <= 0 || spec.Callers <= 0 {
		fmt.Fprintf(os.Stderr, "fleet member: incomplete spec %s\n", specJSON)
		return 2
	}
	// Never linger: a member that outlives its planned run ends itself.
	time.AfterFunc(time.Duration(spec.Lifetime), func() {
		fmt.Fprintf(os.Stderr, "fleet member %d: lifetime of %v exceeded, exiting\n", spec.Index, time.Duration(spec.Lifetime))
		os.Exit(3)
	})
	// Commands from the parent, one a line; the end of stdin means the
	// parent is gone, and so is the member.
	cmds := make(chan string, 4)
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			cmds <- strings.TrimSpace(sc.Text())
		}
		fmt.Fprintf(os.Stderr, "fleet member %d: stdin closed (the bench that started it is gone), exiting\n", spec.Index)
		os.Exit(4)
	}()

	ctx := context.Background()
	var (
		c           redis.Cmdable
		pool        func() *redis.PoolStats
		closeClient func() error
	)
	switch spec.Kind {
	case fleetWorker:
		host, port, err := net.SplitHostPort(spec.Addr)
		if err != nil {
			fmt.Fprintf(os.Stderr, "fleet member: address %q: %v\n", spec.Addr, err)
			return 2
		}
		cfg := conn.DefaultConfig(conn.RoleWorker)
		cfg.Host = host
		cfg.Port, _ = strconv.Atoi(port)
		w, err := conn.NewWorker(ctx, cfg)
		if err != nil {
			fmt.Fprintf(os.Stderr, "fleet member: %v\n", err)
			return 1
		}
		c, pool, closeClient = w, w.PoolStats, w.Close
	case fleetPlain, fleetPlainCtx:
		p := redis.NewClient(&redis.Options{Addr: spec.Addr, PoolSize: 200, ContextTimeoutEnabled: spec.Kind == fleetPlainCtx})
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := p.Ping(pctx).Err()
		cancel()
		if err != nil {
			fmt.Fprintf(os.Stderr, "fleet member: PING %s: %v\n", spec.Addr, err)
			return 1
		}
		c, pool, closeClient = p, p.PoolStats, p.Close
	default:
		fmt.Fprintf(os.Stderr, "fleet member: unknown kind %q\n", spec.Kind)
		return 2
	}
	out := json.NewEncoder(os.Stdout)
	if err := out.Encode(memberMsg{Ready: true}); err != nil {
		return 1
	}

	var epoch int64
	for epoch == 0 {
		cmd := <-cmds
		v, ok := strings.CutPrefix(cmd, "start ")
		if !ok {
			fmt.Fprintf(os.Stderr, "fleet member: expected start, got %q\n", cmd)
			return 2
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			fmt.Fprintf(os.Stderr, "fleet member: bad start %q\n", cmd)
			return 2
		}
		epoch = n
	}

	rec := newMemberRecorder(spec, epoch)
	var (
		stop atomic.Bool
		wg   sync.WaitGroup
	)
	for i := 0; i < spec.Callers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(spec.Index), uint64(i)))
			counter := fmt.Sprintf("fleet:%d:counter:%d", spec.Index, i%32)
			list := fmt.Sprintf("fleet:%d:list:%d", spec.Index, i%32)
			for !stop.Load() {
				d := fleetMinDeadline + time.Duration(rng.Int64N(int64(fleetMaxDeadline-fleetMinDeadline)))
				t0 := time.Now()
				cctx, cancel := context.WithTimeout(ctx, d)
				var err error
				if rng.IntN(2) == 0 {
					err = c.Incr(cctx, counter).Err()
				} else {
					err = c.RPush(cctx, list, value).Err()
				}
				cancel()
				rec.record(time.Now(), d, time.Since(t0)-d, err)
				// The work between two operations: up to 2 ms.
				time.Sleep(time.Duration(rng.Int64N(int64(2 * time.Millisecond))))
			}
		}()
	}
	for cmd := range cmds {
		if cmd == "stop" {
			break
		}
	}
	stop.Store(true)
	// Calls in flight end by their deadline (2 s) or soon after.
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(10 * time.Second):
		fmt.Fprintf(os.Stderr, "fleet member %d: callers still running 10s after stop; reporting anyway\n", spec.Index)
	}
	r := rec.report()
	if s := pool(); s != nil {
		r.PoolTimeouts, r.PoolMisses = s.Timeouts, s.Misses
	}
	if err := out.Encode(memberMsg{Report: r}); err != nil {
		return 1
	}
	_ = closeClient()
	return 0
}

// memberRecorder counts a member's calls; the callers share it.
type memberRecorder struct {
	spec       memberSpec
	epoch      int64
	ok, errs   []atomic.Int64
	late       []atomic.Int64
	lastErr    atomic.Int64
	maxOverrun atomic.Int64
	mu         sync.Mutex
	kinds      map[string]int64
}

func newMemberRecorder(spec memberSpec, epoch int64) *memberRecorder {
	r := &memberRecorder{spec: spec, epoch: epoch, kinds: map[string]int64{}}
	r.ok, r.errs, r.late = make([]atomic.Int64, spec.Buckets), make([]atomic.Int64, spec.Buckets), make([]atomic.Int64, spec.Buckets)
	r.maxOverrun.Store(math.MinInt64)
	return r
}

// lateBy is how far past its deadline a call may return and still be on
// time: what the Worker promises for coalesced calls (10 % of the budget,
// at least 5 ms), so 100-200 ms here.
func lateBy(budget time.Duration) time.Duration { return max(5*time.Millisecond, budget/10) }

// record counts one call that took budget + overrun.
func (r *memberRecorder) record(end time.Time, budget, overrun time.Duration, err error) {
	ns := end.UnixNano()
	b := int((ns - r.epoch) / int64(fleetBucket))
	b = max(0, min(b, len(r.ok)-1))
	for {
		cur := r.maxOverrun.Load()
		if int64(overrun) <= cur || r.maxOverrun.CompareAndSwap(cur, int64(overrun)) {
			break
		}
	}
	if err == nil {
		if overrun > lateBy(budget) {
			r.late[b].Add(1) // succeeded, but long after its caller gave up
		} else {
			r.ok[b].Add(1)
		}
		return
	}
	r.errs[b].Add(1)
	for {
		cur := r.lastErr.Load()
		if ns <= cur || r.lastErr.CompareAndSwap(cur, ns) {
			break
		}
	}
	k := errorKind(err)
	r.mu.Lock()
	if _, seen := r.kinds[k]; !seen && len(r.kinds) >= 12 {
		k = "other"
	}
	r.kinds[k]++
	r.mu.Unlock()
}

func (r *memberRecorder) report() *memberReport {
	rep := &memberReport{Index: r.spec.Index, LastErr: r.lastErr.Load(), MaxOverrun: r.maxOverrun.Load(),
		OKBuckets: make([]int64, len(r.ok)), LateBuckets: make([]int64, len(r.ok)), ErrBuckets: make([]int64, len(r.ok))}
	if rep.MaxOverrun == math.MinInt64 {
		rep.MaxOverrun = 0
	}
	for i := range r.ok {
		rep.OKBuckets[i], rep.LateBuckets[i], rep.ErrBuckets[i] = r.ok[i].Load(), r.late[i].Load(), r.errs[i].Load()
		rep.OK += rep.OKBuckets[i]
		rep.Late += rep.LateBuckets[i]
		rep.Errors += rep.ErrBuckets[i]
	}
	r.mu.Lock()
	rep.Kinds = r.kinds
	r.mu.Unlock()
	return rep
}

// errorKind names an error's kind for the report.
func errorKind(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, redis.ErrPoolTimeout):
		return "pool timeout"
	case errors.Is(err, conn.ErrMaxClients) || redis.IsMaxClientsError(err):
		return "max clients"
	case errors.Is(err, context.DeadlineExceeded):
		return "context deadline exceeded"
	case errors.Is(err, context.Canceled):
		return "context canceled"
	case errors.Is(err, conn.ErrClosed) || errors.Is(err, redis.ErrClosed):
		return "closed"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, syscall.EPIPE):
		return "broken pipe"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "EOF"
	case errors.As(err, &ne) && ne.Timeout():
		return "i/o timeout"
	}
	msg := err.Error()
	if len(msg) > 60 {
		msg = msg[:60]
	}
	return "other: " + msg
}

// ---------------------------------------------------------------- parent side

// fleetRun is one run of one variant.
type fleetRun struct {
	Variant string `json:"variant"`
	// connected_clients: after the members connected (idle), under load
	// just before the stop, and the highest sample from the start of the load
	// to its end. The parent's poll connection is one of them.
	IdleClients int64 `json:"clients_idle"`
	LoadClients int64 `json:"clients_under_load"`
	PeakClients int64 `json:"clients_peak"`
	// total_connections_received deltas: from the start of the load (members
	// connected) to its end, and from the stop to the end.
	NewConns      int64 `json:"new_connections"`
	NewConnsStall int64 `json:"new_connections_from_stop"`
	OK            int64 `json:"ok"`
	Errors        int64 `json:"errors"`
	ErrorsBefore  int64 `json:"errors_before_stop"`
	// Kinds: error kind -> count, over all members.
	Kinds map[string]int64 `json:"error_kinds"`
	// LastErrorMs is the last error's time after the resume (negative: the
	// last one came while the server was stopped); null without errors.
	LastErrorMs *float64 `json:"last_error_after_resume_ms"`
	// Late calls succeeded, but more than 10 % of their budget (100-200 ms)
	// after their deadline, when their caller had long given up.
	Late int64 `json:"late"`
	// RecoverMs is from the resume to the start of the first 100 ms bucket
	// from which on, to the end of the run, every call succeeded on time
	// (no error, no late call, some calls); null when that did not happen
	// within the run.
	RecoverMs       *float64 `json:"recovered_after_resume_ms"`
	MaxOverrunMs    float64  `json:"max_overrun_past_deadline_ms"`
	OpsBefore       float64  `json:"calls_per_sec_before_stop"`
	OpsAfter        float64  `json:"calls_per_sec_end"`
	PoolTimeouts    int64    `json:"pool_timeouts"`
	PoolMisses      int64    `json:"pool_misses"`
	Samples         int      `json:"info_samples"`
	LongestSilentMs float64  `json:"longest_info_gap_ms"`
	// The fleet's calls per 100 ms bucket from the start of the load, and
	// when the stop, the resume and the end came (ms from the start).
	StopMs     float64 `json:"stop_ms"`
	ResumeMs   float64 `json:"resume_ms"`
	EndMs      float64 `json:"end_ms"`
	OKSeries   []int64 `json:"ok_per_100ms"`
	LateSeries []int64 `json:"late_per_100ms"`
	ErrSeries  []int64 `json:"errors_per_100ms"`
	// Clients: connected_clients per INFO sample, ms from the start.
	Clients [][2]int64 `json:"connected_clients_samples"`
}

// fleetResult is S5 in the JSON results.
type fleetResult struct {
	Scenario      string  `json:"scenario"`
	Title         string  `json:"title"`
	Procs         int     `json:"processes"`
	Callers       int     `json:"callers_per_process"`
	StallSeconds  float64 `json:"stall_seconds"`
	WarmSeconds   float64 `json:"load_before_stop_seconds"`
	AfterSeconds  float64 `json:"load_after_resume_seconds"`
	DeadlineRange string  `json:"deadlines"`
	// Rows: per variant, medians over the runs, with every run.
	Rows []fleetRow `json:"rows"`
}

type fleetRow struct {
	Variant       string           `json:"variant"`
	IdleClients   float64          `json:"clients_idle"`
	LoadClients   float64          `json:"clients_under_load"`
	PeakClients   float64          `json:"clients_peak"`
	NewConns      float64          `json:"new_connections"`
	NewConnsStall float64          `json:"new_connections_from_stop"`
	Errors        float64          `json:"errors"`
	Late          float64          `json:"late"`
	ErrorsBefore  float64          `json:"errors_before_stop"`
	Kinds         map[string]int64 `json:"error_kinds_all_runs"`
	LastErrorMs   *float64         `json:"last_error_after_resume_ms"`
	RecoverMs     *float64         `json:"recovered_after_resume_ms"` // null: not recovered in some run
	MaxOverrunMs  float64          `json:"max_overrun_past_deadline_ms"`
	OpsBefore     float64          `json:"calls_per_sec_before_stop"`
	OpsAfter      float64          `json:"calls_per_sec_end"`
	Runs          []fleetRun       `json:"runs"`
}

// runFleet runs S5: every variant fc.runs times, alternating which goes
// first, each run on a redis-server of its own under dir.
func runFleet(ctx context.Context, fc fleetConfig, dir string) (*fleetResult, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("S5 fleet: finding this program to start members: %w", err)
	}
	// Ctrl-C or SIGTERM during S5 ends it through the same clean-up as an
	// error: members killed, server stopped.
	ctx, stopSignals := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stopSignals()

	res := &fleetResult{
		Scenario: "S5", Procs: fc.procs, Callers: fc.callers, StallSeconds: fc.stall.Seconds(),
		WarmSeconds: fc.warm.Seconds(), AfterSeconds: fc.after.Seconds(),
		DeadlineRange: fmt.Sprintf("%v-%v", fleetMinDeadline, fleetMaxDeadline),
		Title: fmt.Sprintf("fleet: %d processes x %d callers (INCR/RPUSH, %v-%v deadlines), redis-server stopped %v (SIGSTOP)",
			fc.procs, fc.callers, fleetMinDeadline, fleetMaxDeadline, fc.stall),
	}
	variants := []string{fleetWorker, fleetPlain, fleetPlainCtx}
	runs := map[string][]fleetRun{}
	for r := 0; r < fc.runs; r++ {
		for k := range variants {
			v := variants[(k+r)%len(variants)]
			start := time.Now()
			fr, err := fleetOnce(ctx, fc, exe, filepath.Join(dir, fmt.Sprintf("fleet-%d-%d", r, k)), v)
			if err != nil {
				if ctx.Err() != nil {
					return nil, fmt.Errorf("S5 fleet, %s, run %d: interrupted by a signal; members and server stopped", v, r+1)
				}
				return nil, fmt.Errorf("S5 fleet, %s, run %d: %w", v, r+1, err)
			}
			runs[v] = append(runs[v], fr)
			fmt.Printf("  S5 %s run %d done in %v\n", v, r+1, time.Since(start).Round(time.Millisecond))
		}
	}
	for _, v := range variants {
		res.Rows = append(res.Rows, summarizeFleet(v, runs[v]))
	}
	return res, nil
}

// fleetMemberProc is one running member.
type fleetMemberProc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	msgs   chan memberMsg // closed when its stdout ends
	stderr *tailBuffer
	done   chan struct{} // closed when the process has been reaped
	err    error         // Wait's error, after done
}

func (m *fleetMemberProc) describe() string {
	tail := strings.TrimSpace(m.stderr.String())
	if tail == "" {
		return "no output on stderr"
	}
	return "stderr: " + tail
}

// tailBuffer keeps the last 4 KiB written to it.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > 4096 {
		t.buf = append([]byte(nil), t.buf[len(t.buf)-4096:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// fleetOnce is one run of one variant on a fresh redis-server.
func fleetOnce(ctx context.Context, fc fleetConfig, exe, dir, kind string) (fr fleetRun, err error) {
	fr.Variant = kind
	srv, err := redistest.StartProcess(redistest.Options{}, dir)
	if err != nil {
		return fr, err
	}
	defer srv.Stop() // SIGKILL: also ends a stopped server
	pid := srv.Pid()

	poll, err := startInfoPoller(srv.Addr())
	if err != nil {
		return fr, err
	}
	defer poll.close()

	// Every member, on every return path, is killed and reaped.
	var members []*fleetMemberProc
	defer func() {
		for _, m := range members {
			select {
			case <-m.done:
			default:
				_ = m.cmd.Process.Kill()
			}
		}
		for _, m := range members {
			<-m.done
		}
	}()

	total := fc.warm + fc.stall + fc.after
	spec := memberSpec{Addr: srv.Addr(), Kind: kind, Callers: fc.callers,
		Buckets: int((total+5*time.Second)/fleetBucket) + 1, Lifetime: int64(total + 90*time.Second)}
	for i := 0; i < fc.procs; i++ {
		spec.Index = i
		m, err := startMember(exe, spec)
		if err != nil {
			return fr, err
		}
		members = append(members, m)
	}
	// All members connected and ready.
	readyBy := time.After(30 * time.Second)
	for i, m := range members {
		select {
		case msg, ok := <-m.msgs:
			if !ok || !msg.Ready {
				<-m.done
				return fr, fmt.Errorf("member %d did not start (%v); %s", i, m.err, m.describe())
			}
		case <-readyBy:
			return fr, fmt.Errorf("member %d not ready within 30s; %s", i, m.describe())
		case <-ctx.Done():
			return fr, ctx.Err()
		}
	}
	idle, err := poll.fresh(ctx, time.Now(), 5*time.Second)
	if err != nil {
		return fr, err
	}

	epoch := time.Now()
	for i, m := range members {
		if _, err := fmt.Fprintf(m.stdin, "start %d\n", epoch.UnixNano()); err != nil {
			return fr, fmt.Errorf("starting member %d: %w; %s", i, err, m.describe())
		}
	}
	sleep := func(d time.Duration) error {
		select {
		case <-time.After(d):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err := sleep(fc.warm); err != nil {
		return fr, err
	}
	stalledAt := time.Since(epoch)
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		return fr, fmt.Errorf("SIGSTOP to redis-server (pid %d): %w", pid, err)
	}
	stopped := true
	defer func() {
		if stopped {
			_ = syscall.Kill(pid, syscall.SIGCONT)
		}
	}()
	// The stall lasts fc.stall even when interrupted: a server left
	// stopped is killed by srv.Stop anyway.
	stallErr := sleep(fc.stall)
	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		return fr, fmt.Errorf("SIGCONT to redis-server (pid %d): %w", pid, err)
	}
	stopped = false
	resumedAt := time.Since(epoch)
	if stallErr != nil {
		return fr, stallErr
	}
	if err := sleep(fc.after); err != nil {
		return fr, err
	}
	endAt := time.Since(epoch)
	for i, m := range members {
		if _, err := fmt.Fprintln(m.stdin, "stop"); err != nil {
			return fr, fmt.Errorf("stopping member %d: %w; %s", i, err, m.describe())
		}
	}
	var reports []*memberReport
	reportBy := time.After(30 * time.Second)
	for i, m := range members {
		select {
		case msg, ok := <-m.msgs:
			if !ok || msg.Report == nil {
				<-m.done
				return fr, fmt.Errorf("member %d ended without its report (%v); %s", i, m.err, m.describe())
			}
			reports = append(reports, msg.Report)
		case <-reportBy:
			return fr, fmt.Errorf("member %d sent no report within 30s of stop; %s", i, m.describe())
		case <-ctx.Done():
			return fr, ctx.Err()
		}
	}
	for i, m := range members {
		select {
		case <-m.done:
			if m.err != nil {
				return fr, fmt.Errorf("member %d: %v; %s", i, m.err, m.describe())
			}
		case <-time.After(15 * time.Second):
			return fr, fmt.Errorf("member %d did not exit within 15s of its report; %s", i, m.describe())
		}
	}

	samples, longestGap := poll.snapshot()
	if err := poll.failure(); err != nil {
		return fr, err
	}
	fr.Samples, fr.LongestSilentMs = len(samples), ms(longestGap)
	at := func(d time.Duration) (infoSample, bool) { // the last sample received before epoch+d
		var last infoSample
		found := false
		for _, s := range samples {
			if s.at.Sub(epoch) < d {
				last, found = s, true
			}
		}
		return last, found
	}
	beforeStop, ok1 := at(stalledAt)
	end, ok2 := at(endAt)
	if !ok1 || !ok2 {
		return fr, errors.New("the INFO poller has no sample before the stop or the end")
	}
	fr.IdleClients, fr.LoadClients = idle.clients, beforeStop.clients
	fr.NewConns = end.received - idle.received
	fr.NewConnsStall = end.received - beforeStop.received
	for _, s := range samples {
		if d := s.at.Sub(epoch); d >= 0 && d < endAt {
			fr.PeakClients = max(fr.PeakClients, s.clients)
		}
	}

	nb := spec.Buckets
	okB, lateB, errB := make([]int64, nb), make([]int64, nb), make([]int64, nb)
	fr.Kinds = map[string]int64{}
	var lastErr int64
	for _, r := range reports {
		for i := 0; i < nb && i < len(r.OKBuckets) && i < len(r.LateBuckets) && i < len(r.ErrBuckets); i++ {
			okB[i] += r.OKBuckets[i]
			lateB[i] += r.LateBuckets[i]
			errB[i] += r.ErrBuckets[i]
		}
		fr.OK += r.OK
		fr.Late += r.Late
		fr.Errors += r.Errors
		for k, n := range r.Kinds {
			fr.Kinds[k] += n
		}
		lastErr = max(lastErr, r.LastErr)
		fr.MaxOverrunMs = math.Max(fr.MaxOverrunMs, ms(time.Duration(r.MaxOverrun)))
		fr.PoolTimeouts += int64(r.PoolTimeouts)
		fr.PoolMisses += int64(r.PoolMisses)
	}
	stallB := int(stalledAt / fleetBucket) // buckets before this one are wholly before the stop
	for i := 0; i < stallB && i < nb; i++ {
		fr.ErrorsBefore += errB[i]
	}
	if lastErr > 0 {
		v := ms(time.Duration(lastErr-epoch.UnixNano()) - resumedAt)
		fr.LastErrorMs = &v
	}
	// Calls a second before the stop: the median bucket of the second half
	// of the load before it; at the end: the median of the last half of the
	// time after the resume.
	perSec := float64(time.Second / fleetBucket)
	fr.OpsBefore = medianInts(okB[stallB/2:stallB]) * perSec
	resumeB, lastB := int(resumedAt/fleetBucket), min(int(endAt/fleetBucket)-1, nb-1) // lastB: the last whole bucket
	fr.OpsAfter = medianInts(okB[(resumeB+lastB)/2:lastB+1]) * perSec
	fr.StopMs, fr.ResumeMs, fr.EndMs = ms(stalledAt), ms(resumedAt), ms(endAt)
	fr.OKSeries, fr.LateSeries, fr.ErrSeries = okB[:lastB+1], lateB[:lastB+1], errB[:lastB+1]
	for _, s := range samples {
		if d := s.at.Sub(epoch); d >= 0 && d < endAt {
			fr.Clients = append(fr.Clients, [2]int64{d.Milliseconds(), s.clients})
		}
	}
	from := -1
	for b := lastB; b >= resumeB; b-- {
		if errB[b] != 0 || lateB[b] != 0 || okB[b] == 0 {
			break
		}
		from = b
	}
	if from >= 0 {
		v := math.Max(0, ms(time.Duration(from)*fleetBucket-resumedAt))
		fr.RecoverMs = &v
	}
	return fr, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func medianInts(v []int64) float64 {
	f := make([]float64, len(v))
	for i, x := range v {
		f[i] = float64(x)
	}
	return median(f)
}

// startMember re-executes this program as fleet member spec.Index.
func startMember(exe string, spec memberSpec) (*fleetMemberProc, error) {
	b, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), benchFleetEnv+"="+string(b))
	// SIGKILL when the parent dies, however it dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	m := &fleetMemberProc{cmd: cmd, msgs: make(chan memberMsg, 2), stderr: &tailBuffer{}, done: make(chan struct{})}
	cmd.Stderr = m.stderr
	if m.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting fleet member %d (%s): %w", spec.Index, exe, err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64*1024), 16<<20)
		for sc.Scan() {
			var msg memberMsg
			if err := json.Unmarshal(sc.Bytes(), &msg); err != nil {
				fmt.Fprintf(m.stderr, "\n[parent] unreadable line from member: %.200q\n", sc.Text())
				continue
			}
			m.msgs <- msg
		}
		_, _ = io.Copy(io.Discard, stdout)
		close(m.msgs)
		m.err = cmd.Wait()
		close(m.done)
	}()
	return m, nil
}

// infoSample is one INFO reply as received by the parent.
type infoSample struct {
	at                time.Time
	clients, received int64
}

// infoPoller sends INFO every fleetPollEvery on one raw connection, with
// at most one request in flight, so a stopped server only delays its samples.
type infoPoller struct {
	c       net.Conn
	replies chan infoSample
	quit    chan struct{}
	wg      sync.WaitGroup

	mu         sync.Mutex
	samples    []infoSample
	longestGap time.Duration
	err        error
}

func startInfoPoller(addr string) (*infoPoller, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return nil, fmt.Errorf("INFO poller: %w", err)
	}
	p := &infoPoller{c: c, replies: make(chan infoSample), quit: make(chan struct{})}
	p.wg.Add(2)
	go p.read()
	go p.loop()
	return p, nil
}

func (p *infoPoller) fail(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err == nil {
		p.err = err
	}
}

func (p *infoPoller) failure() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// read parses the RESP2 bulk-string replies of INFO.
func (p *infoPoller) read() {
	defer p.wg.Done()
	r := bufio.NewReaderSize(p.c, 64*1024)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			select {
			case <-p.quit:
			default:
				p.fail(fmt.Errorf("INFO poller: reading: %w", err))
			}
			return
		}
		n, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "$")))
		if !strings.HasPrefix(line, "$") || err != nil || n < 0 {
			p.fail(fmt.Errorf("INFO poller: unexpected reply %q", strings.TrimSpace(line)))
			return
		}
		body := make([]byte, n+2)
		if _, err := io.ReadFull(r, body); err != nil {
			p.fail(fmt.Errorf("INFO poller: reading: %w", err))
			return
		}
		s := infoSample{at: time.Now(), clients: -1, received: -1}
		for _, l := range bytes.Split(body, []byte("\n")) {
			k, v, ok := strings.Cut(strings.TrimSpace(string(l)), ":")
			if !ok {
				continue
			}
			switch k {
			case "connected_clients":
				s.clients, _ = strconv.ParseInt(v, 10, 64)
			case "total_connections_received":
				s.received, _ = strconv.ParseInt(v, 10, 64)
			}
		}
		if s.clients < 0 || s.received < 0 {
			p.fail(errors.New("INFO poller: INFO has no connected_clients or total_connections_received"))
			return
		}
		select {
		case p.replies <- s:
		case <-p.quit:
			return
		}
	}
}

func (p *infoPoller) loop() {
	defer p.wg.Done()
	t := time.NewTicker(fleetPollEvery)
	defer t.Stop()
	var (
		outstanding bool
		sent        time.Time
	)
	send := func() {
		_ = p.c.SetWriteDeadline(time.Now().Add(time.Second))
		if _, err := p.c.Write([]byte("INFO\r\n")); err != nil {
			p.fail(fmt.Errorf("INFO poller: writing: %w", err))
			return
		}
		outstanding, sent = true, time.Now()
	}
	send()
	for {
		select {
		case <-p.quit:
			return
		case s := <-p.replies:
			p.mu.Lock()
			p.samples = append(p.samples, s)
			p.longestGap = max(p.longestGap, s.at.Sub(sent))
			p.mu.Unlock()
			outstanding = false
		case <-t.C:
			if !outstanding {
				send()
			}
		}
	}
}

// fresh waits for a sample received after t.
func (p *infoPoller) fresh(ctx context.Context, t time.Time, timeout time.Duration) (infoSample, error) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if err := p.failure(); err != nil {
			return infoSample{}, err
		}
		p.mu.Lock()
		if n := len(p.samples); n > 0 && p.samples[n-1].at.After(t) {
			s := p.samples[n-1]
			p.mu.Unlock()
			return s, nil
		}
		p.mu.Unlock()
		select {
		case <-time.After(10 * time.Millisecond):
		case <-ctx.Done():
			return infoSample{}, ctx.Err()
		}
	}
	return infoSample{}, fmt.Errorf("INFO poller: no reply within %v", timeout)
}

// snapshot returns the samples so far and the longest wait for a reply.
func (p *infoPoller) snapshot() ([]infoSample, time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]infoSample(nil), p.samples...), p.longestGap
}

func (p *infoPoller) close() {
	close(p.quit)
	_ = p.c.Close()
	p.wg.Wait()
}

// summarizeFleet gives a variant's medians over its runs.
func summarizeFleet(variant string, runs []fleetRun) fleetRow {
	r := fleetRow{Variant: variant, Runs: runs, Kinds: map[string]int64{}}
	col := func(f func(fleetRun) float64) float64 {
		var v []float64
		for _, x := range runs {
			v = append(v, f(x))
		}
		return median(v)
	}
	r.IdleClients = col(func(x fleetRun) float64 { return float64(x.IdleClients) })
	r.LoadClients = col(func(x fleetRun) float64 { return float64(x.LoadClients) })
	r.PeakClients = col(func(x fleetRun) float64 { return float64(x.PeakClients) })
	r.NewConns = col(func(x fleetRun) float64 { return float64(x.NewConns) })
	r.NewConnsStall = col(func(x fleetRun) float64 { return float64(x.NewConnsStall) })
	r.Errors = col(func(x fleetRun) float64 { return float64(x.Errors) })
	r.Late = col(func(x fleetRun) float64 { return float64(x.Late) })
	r.ErrorsBefore = col(func(x fleetRun) float64 { return float64(x.ErrorsBefore) })
	r.MaxOverrunMs = col(func(x fleetRun) float64 { return x.MaxOverrunMs })
	r.OpsBefore = col(func(x fleetRun) float64 { return x.OpsBefore })
	r.OpsAfter = col(func(x fleetRun) float64 { return x.OpsAfter })
	var last, rec []float64
	for _, x := range runs {
		for k, n := range x.Kinds {
			r.Kinds[k] += n
		}
		if x.LastErrorMs != nil {
			last = append(last, *x.LastErrorMs)
		}
		if x.RecoverMs != nil {
			rec = append(rec, *x.RecoverMs)
		}
	}
	if len(last) > 0 {
		v := median(last)
		r.LastErrorMs = &v
	}
	if len(rec) == len(runs) && len(rec) > 0 {
		v := median(rec)
		r.RecoverMs = &v
	}
	return r
}

func printFleet(f *fleetResult) {
	if f == nil {
		return
	}
	runs := 0
	if len(f.Rows) > 0 {
		runs = len(f.Rows[0].Runs)
	}
	med := ""
	if runs > 1 {
		med = fmt.Sprintf(", medians of %d runs", runs)
	}
	fmt.Printf("\n%s  %s%s\n", f.Scenario, f.Title, med)
	line := "  %-15s %7s %7s %7s %9s %9s %7s %7s %10s %10s %8s %8s %8s\n"
	fmt.Printf(line, "variant", "clients", "clients", "peak", "new conns", "new conns", "errors", "late", "last error", "recovered", "overrun", "calls/s", "calls/s")
	fmt.Printf(line, "", "idle", "loaded", "clients", "(run)", "(stop-)", "", "calls", "(resume+)", "(resume+)", "(max)", "before", "end")
	notIn := fmt.Sprintf(">%gs", f.AfterSeconds)
	for _, r := range f.Rows {
		fmt.Printf("  %-15s %7.0f %7.0f %7.0f %9.0f %9.0f %7.0f %7.0f %10s %10s %8s %8.0f %8.0f\n", r.Variant,
			r.IdleClients, r.LoadClients, r.PeakClients, r.NewConns, r.NewConnsStall, r.Errors, r.Late,
			fleetMs(r.LastErrorMs, "none"), fleetMs(r.RecoverMs, notIn), fleetMs(&r.MaxOverrunMs, ""), r.OpsBefore, r.OpsAfter)
	}
	for _, r := range f.Rows {
		before := ""
		if r.ErrorsBefore > 0 {
			before = fmt.Sprintf("; %.0f of them before the stop, while the fleet started", r.ErrorsBefore)
		}
		fmt.Printf("  %s errors by kind: %s%s\n", r.Variant, kindsString(r.Kinds), before)
		if len(r.Runs) > 1 {
			var per []string
			for _, x := range r.Runs {
				per = append(per, fmt.Sprintf("%d new conns, peak %d, %d errors, %d late, recovered %s", x.NewConns, x.PeakClients,
					x.Errors, x.Late, fleetMs(x.RecoverMs, notIn)))
			}
			fmt.Printf("    runs: %s\n", strings.Join(per, "; "))
		}
	}
	fmt.Printf("  (clients count the bench's INFO connection; new conns: total_connections_received from the start of\n" +
		"   the load or from the stop to the end; late: succeeded more than 10 %% of the budget past the deadline;\n" +
		"   recovered: from then on every call succeeded on time, in 100 ms buckets; overrun: the slowest call past its deadline)\n")
}

func fleetMs(v *float64, none string) string {
	if v == nil {
		return none
	}
	d := time.Duration(*v * float64(time.Millisecond))
	if d < 0 {
		return "-" + (-d).Round(time.Millisecond).String()
	}
	return d.Round(time.Millisecond).String()
}

func kindsString(k map[string]int64) string {
	if len(k) == 0 {
		return "none"
	}
	names := make([]string, 0, len(k))
	for n := range k {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool {
		return k[names[i]] > k[names[j]] || k[names[i]] == k[names[j]] && names[i] < names[j]
	})
	var parts []string
	for _, n := range names {
		parts = append(parts, fmt.Sprintf("%s %d", n, k[n]))
	}
	return strings.Join(parts, ", ")
}
