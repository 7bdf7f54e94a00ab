package conn_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redisconn/redisconn/conn"
	"github.com/redisconn/redisconn/internal/rediserr"
	"github.com/redisconn/redisconn/internal/redistest"
	"github.com/redisconn/redisconn/telemetry"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// Network faults through a real fault proxy (Toxiproxy), the short versions
// of the fault x topology matrix that `make test` runs. Topologies: a
// standalone server behind one proxy, a 3-master cluster with a proxy in
// front of every node (announced, so redirections go through the proxies
// too), and a Sentinel deployment (a master and 2 replicas, each behind a
// proxy the sentinels report; the sentinels themselves are reached
// directly); a fault is applied to every proxy of the topology. Clients: a
// Worker, an API, and a plain go-redis client (ContextTimeoutEnabled, pool
// 200) as the baseline, each on keys of its own.
//
// For each (topology, fault, client): the client's workload runs 250 ms, the
// fault is added for 1 s and removed, and the workload goes on for at least
// 250 ms more, until the client's first success after the removal (3 s at
// most). Each client runs alone, and the topologies one after the other:
// together, the reconnection storms of the go-redis clients under a reset
// or a black hole (700-900 new connections a second each, through Toxiproxy,
// under -race) starved the 2-core machine, and every client's calls came
// back up to 400 ms past their deadlines while a 10 ms sleep of the test
// process woke up to 150 ms late; the Worker's the most, as its replies pass
// three goroutines (a node's reader, the flusher, the caller). Alone, the
// same faults left the Worker at most 40 ms past its deadlines.
//
// Workload: 100 callers each INCR their own counter, one call at a time, with
// a deadline of 300, 400 or 500 ms; 4 callers push numbered items (110 a
// call, numbers never reused) with a 500 ms deadline: the Worker with
// BatchRPush (chunks of 50, 50 and 10), the API and plain go-redis with one
// RPUSH of the 110 values.
//
// Invariants, asserted for the Worker and the API (the plain client's numbers
// are in the table only), after each fault:
//   - no command applied twice: each counter <= the INCR calls made for it;
//   - nothing acknowledged lost: each counter >= its acknowledged calls; and a
//     failed call whose INCR was applied is one whose error says it may have
//     been written: counter <= acknowledged + failed calls whose error is
//     neither "not written" (rediserr.NotWritten: the context's own error, a
//     pool timeout, a failed dial or connection set-up) nor a server's
//     error reply;
//   - pushes: every acknowledged item is in its list, in order; no item appears
//     twice unless it was reported uncertain (the Worker: no item twice at
//     all, since a chunk that may have been written is never sent again); no
//     item reported unsent is there;
//   - BatchPublish (the Worker: one publisher of numbered messages, 110 a
//     call, with a subscriber connected to the server directly): every
//     acknowledged message reaches the subscriber, in order; no message
//     arrives twice, none reported unsent arrives, and the messages that
//     arrive do so in the order they were published;
//   - every call returns by its deadline + nfBound (100 ms: the coalescer's
//     spread, max(5 ms, 10 % of the budget), 50 ms for a 500 ms deadline,
//     and scheduling) + nfLagWaits times the scheduling lag measured
//     meanwhile (the "sched lag" column: the longest a runnable goroutine
//     of the test process waited to run, from the runtime's
//     /sched/latencies:seconds, or how late a 10 ms sleep woke, whichever
//     is more; 2-25 ms on a quiet machine, 150 ms and more when other
//     processes share the 2 cores);
//   - recovery: the first call started after the toxic's removal that
//     succeeds ends within nfFirstOKBound (2 s) of the removal; once the load
//     stops, every pooled connection is idle and (Worker) the limiter's
//     waiting, in_flight, in_flight_callers and queued are back to 0 within
//     nfIdleBound; the package's TestMain checks for leaked goroutines;
//   - the Worker's ConnectionInfo tells what happened: its rejected_context
//     grew by at least the INCR calls that failed with the context's own
//     error (refused before anything was written), and by no more than the
//     calls that failed with a context error at all.
//
// One line per (fault, topology, client) is logged, and the whole table is
// logged at the end and written to /tmp/netfaults-table.md.

const (
	nfWarmUpFor   = 400 * time.Millisecond // each client's load before the first fault
	nfLoad        = 250 * time.Millisecond // load before the fault
	nfFaultFor    = time.Second            // how long the fault lasts
	nfRecovery    = 250 * time.Millisecond // load after the fault is removed, at least
	nfRecoveryMax = 3 * time.Second        // load after removal at most, waiting for the first success
	nfBound       = 100 * time.Millisecond // how far past its deadline a call may return, besides the measured scheduling lag
	// nfLagWaits: how many times a call late past its deadline may wait to
	// be scheduled. Starved of CPU (8 busy loops beside the test), a call
	// that returned late had waited after its deadline for the read that
	// hit the deadline to return, for the code after it, for a new
	// connection's set-up replies (HELLO, CLIENT SETNAME, CLIENT SETINFO)
	// and for a ClusterClient's backoff timer: 2-4 waits of up to the
	// scheduling lag each, while a 10 ms sleep alone saw a fraction of the
	// lag (120 ms against 69 waits of 100 ms and more in the runtime's
	// histogram).
	nfLagWaits     = 4
	nfFirstOKBound = 2 * time.Second // first success after the removal, at most
	nfIdleBound    = 3 * time.Second // pools idle and limiter drained after the load stops, at most
	nfIncrCallers  = 100
	nfPushCallers  = 4
	nfPushItems    = 110
	nfPushDeadline = 500 * time.Millisecond
	nfIncrPace     = 50 * time.Millisecond  // an INCR caller's pause after a success
	nfPushPace     = 100 * time.Millisecond // a pusher's pause after each call
	nfErrPause     = 50 * time.Millisecond  // a caller's pause after a failure
	nfTablePath    = "/tmp/netfaults-table.md"
)

// nfTopologies are the topologies of the matrix: a standalone server, a
// 3-master cluster, and a master with 2 replicas and 3 sentinels.
var nfTopologies = []string{"standalone", "cluster", "sentinel"}

// nfIncrDeadline is the deadline of INCR caller i: 300, 400 or 500 ms, so
// that coalesced round trips group callers by deadline.
func nfIncrDeadline(i int) time.Duration {
	return 300*time.Millisecond + time.Duration(i%3)*100*time.Millisecond
}

// nfFault is one fault: run adds its toxics to every proxy, keeps them for
// e.faultFor (doing whatever the fault does meanwhile) and removes them.
type nfFault struct {
	name, about string
	// errors: the fault makes the Worker's calls fail, so a Worker without
	// a single error means the fault did not happen.
	errors bool
	run    func(t *testing.T, e *nfEnv)
}

var nfFaults = []nfFault{
	{
		name: "latency", about: "latency 20 ms ± 10 ms on every chunk, both directions",
		run: func(t *testing.T, e *nfEnv) {
			e.each(t, func(p *redistest.Proxy) string {
				return p.Latency(t, redistest.Upstream, 20*time.Millisecond, 10*time.Millisecond)
			}, func(p *redistest.Proxy) string {
				return p.Latency(t, redistest.Downstream, 20*time.Millisecond, 10*time.Millisecond)
			})
		},
	},
	{
		// At 100 KB/s no client of this workload is slowed: a connection's
		// replies (4-8 bytes an INCR or RPUSH) come at 10-20 KB/s at most, on
		// the Worker's two busiest. In a trial, even 4 KB/s only took its
		// slowest call to 143 ms.
		name: "bandwidth", about: "replies limited to 100 KB/s per connection (slows no client of this workload)",
		run: func(t *testing.T, e *nfEnv) {
			e.each(t, func(p *redistest.Proxy) string { return p.Bandwidth(t, redistest.Downstream, 100) })
		},
	},
	{
		name: "blackhole", about: "timeout toxic 0 downstream: every reply dropped until removed; its removal closes the connections it held",
		errors: true,
		run: func(t *testing.T, e *nfEnv) {
			e.each(t, func(p *redistest.Proxy) string { return p.Timeout(t, redistest.Downstream, 0) })
		},
	},
	{
		// The count is per connection, from its opening or the toxic's
		// re-arming: it reaches the Worker's few busy connections (several
		// cuts a second, inside pipelined replies), not the ~100 connections
		// of the API or the plain client, each of which carries ~100 bytes
		// of replies in 300 ms (a lower count would cut every new
		// connection's set-up, whose HELLO reply is ~140 bytes).
		name: "limit_data", about: "limit_data downstream: each connection cut after 250, 400 or 600 bytes of replies (inside the Worker's pipelined replies; the other clients' connections carry too few bytes to reach it), re-armed every 300 ms",
		errors: true,
		run: func(t *testing.T, e *nfEnv) {
			limits := []int64{250, 400, 600}
			names := make([]string, len(e.proxies))
			for i, p := range e.proxies {
				names[i] = p.LimitData(t, redistest.Downstream, limits[0])
			}
			end := time.Now().Add(e.faultFor)
			for k := 1; time.Now().Before(end); k++ {
				time.Sleep(min(300*time.Millisecond, time.Until(end)))
				if !time.Now().Before(end) {
					break
				}
				for i, p := range e.proxies {
					p.RemoveToxic(t, names[i])
					names[i] = p.LimitData(t, redistest.Downstream, limits[k%len(limits)])
				}
			}
			for i, p := range e.proxies {
				p.RemoveToxic(t, names[i])
			}
		},
	},
	{
		name: "reset_peer", about: "reset_peer 0 downstream: every connection reset (or closed) at its next reply",
		errors: true,
		run: func(t *testing.T, e *nfEnv) {
			e.each(t, func(p *redistest.Proxy) string { return p.ResetPeer(t, redistest.Downstream, 0) })
		},
	},
	{
		name: "slicer", about: "replies cut into 8-byte pieces (4-8 bytes), 50 µs apart",
		run: func(t *testing.T, e *nfEnv) {
			e.each(t, func(p *redistest.Proxy) string { return p.Slicer(t, redistest.Downstream, 8, 0, 50*time.Microsecond) })
		},
	},
	{
		name: "slow_close", about: "slow_close 500 ms downstream while the server closes every client connection (CLIENT KILL TYPE normal) every 300 ms",
		errors: true,
		run: func(t *testing.T, e *nfEnv) {
			names := make([]string, len(e.proxies))
			for i, p := range e.proxies {
				names[i] = p.SlowClose(t, redistest.Downstream, 500*time.Millisecond)
			}
			end := time.Now().Add(e.faultFor)
			for time.Now().Before(end) {
				for _, k := range e.killers {
					ctx, cancel := context.WithTimeout(context.Background(), time.Second)
					err := k.Do(ctx, "client", "kill", "type", "normal", "skipme", "yes").Err()
					cancel()
					if err != nil {
						t.Errorf("CLIENT KILL: %v", err)
					}
				}
				time.Sleep(min(300*time.Millisecond, time.Until(end)))
			}
			for i, p := range e.proxies {
				p.RemoveToxic(t, names[i])
			}
		},
	},
}

// nfEnv is one topology: its proxies, the clients under test, a client that
// reads the results directly (not through the proxies), and direct clients
// to each master.
type nfEnv struct {
	topo    string
	tp      *redistest.Toxiproxy
	proxies []*redistest.Proxy
	check   redis.UniversalClient
	killers []*redis.Client
	clients []*nfClient
	// faultFor is how long a fault lasts: nfFaultFor in the matrix.
	faultFor time.Duration
}

// each adds one toxic per function to every proxy, keeps them e.faultFor and
// removes them.
func (e *nfEnv) each(t *testing.T, adds ...func(p *redistest.Proxy) string) {
	type added struct {
		p    *redistest.Proxy
		name string
	}
	var all []added
	for _, p := range e.proxies {
		for _, add := range adds {
			all = append(all, added{p, add(p)})
		}
	}
	time.Sleep(e.faultFor)
	for _, a := range all {
		a.p.RemoveToxic(t, a.name)
	}
}

// nfClient is a client under test, as the workload uses it.
type nfClient struct {
	name     string
	asserted bool // the invariants are asserted (Worker, API), else logged
	incr     func(ctx context.Context, key string) error
	push     func(ctx context.Context, key string, values []any) nfPush
	// publish is BatchPublish (the Worker only; nil for the others).
	publish func(ctx context.Context, channel string, values []any) nfPush
	pool    func() *redis.PoolStats
	limiter func() *conn.LimiterInfo // nil but for the Worker
	// errorOps counts the failed operations of the client's
	// db.client.operation.duration by error.type (nil for plain go-redis).
	errorOps func() map[string]int64
}

// nfPush is what a push call reported: values[:acked] acknowledged,
// values[from:to] uncertain, the rest not sent.
type nfPush struct {
	acked, from, to int
	err             error
	// bad says how the Worker's error broke BatchRPush's contract (not a
	// *BatchError, or one whose numbers do not add up); empty when it kept it.
	bad string
}

// nfGoRedisPush is the push of a client without batches: one RPUSH of all
// values, atomic: all acknowledged, all uncertain or none sent.
func nfGoRedisPush(c redis.UniversalClient) func(ctx context.Context, key string, values []any) nfPush {
	return func(ctx context.Context, key string, values []any) nfPush {
		err := c.RPush(ctx, key, values...).Err()
		switch {
		case err == nil:
			return nfPush{acked: len(values), from: len(values), to: len(values)}
		case rediserr.MayHaveRun(err):
			return nfPush{to: len(values), err: err}
		}
		return nfPush{err: err}
	}
}

func nfWorker(w *conn.Worker) *nfClient {
	return &nfClient{
		name: "worker", asserted: true,
		incr: func(ctx context.Context, key string) error { return w.Incr(ctx, key).Err() },
		push: func(ctx context.Context, key string, values []any) nfPush {
			n, err := w.BatchRPush(ctx, key, values...)
			return nfBatch(n, err, len(values))
		},
		publish: func(ctx context.Context, channel string, values []any) nfPush {
			n, err := w.BatchPublish(ctx, channel, values...)
			return nfBatch(n, err, len(values))
		},
		pool: w.PoolStats,
		limiter: func() *conn.LimiterInfo {
			// The limiter's figures come before INFO, which an ended
			// context skips.
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			info, _ := w.ConnectionInfo(ctx)
			return info.Limiter
		},
	}
}

// nfBatch is what a batch call (BatchRPush, BatchPublish) of total items
// reported.
func nfBatch(n int, err error, total int) nfPush {
	p := nfPush{acked: n, from: n, to: n, err: err}
	if err == nil {
		return p
	}
	var be *conn.BatchError
	if !errors.As(err, &be) {
		// Take everything unacknowledged as uncertain, and report.
		p.to, p.bad = total, fmt.Sprintf("not a *BatchError: %v", err)
		return p
	}
	if be.Acknowledged != n || be.UncertainFrom != n || be.UncertainTo < be.UncertainFrom || be.UncertainTo > total {
		p.to, p.bad = total, fmt.Sprintf("n %d of %d and %v", n, total, err)
		return p
	}
	p.to = be.UncertainTo
	return p
}

func nfAPI(a *conn.API) *nfClient {
	return &nfClient{
		name: "api", asserted: true,
		incr: func(ctx context.Context, key string) error { return a.Incr(ctx, key).Err() },
		push: nfGoRedisPush(a), pool: a.PoolStats,
	}
}

func nfPlain(c redis.UniversalClient) *nfClient {
	return &nfClient{
		name: "plain go-redis",
		incr: func(ctx context.Context, key string) error { return c.Incr(ctx, key).Err() },
		push: nfGoRedisPush(c), pool: c.PoolStats,
	}
}

// Item states of a pushed list, by item number.
const (
	nfUnsent uint8 = iota
	nfAcked
	nfUncertain
)

// nfRun is one client's workload during one fault, and what came of it.
type nfRun struct {
	c      *nfClient
	prefix string
	// Per INCR caller, written by its goroutine only.
	incrCalls, incrAcked, incrMayRun [nfIncrCallers]int64
	// Per pusher, the state of each item it pushed, by number.
	lists [nfPushCallers][]uint8
	// The publisher's: the state of each message it published, by number,
	// and the numbers the subscriber received, in order (the Worker only).
	pubs     []uint8
	sub      *redis.PubSub
	subDone  chan struct{}
	subErr   error
	received []int // guarded by mu

	calls, errs, errsBefore, unsent, late atomic.Int64
	slowest, worstOver                    atomic.Int64 // ns
	// Failed calls whose error is the context's own (INCR only), and
	// those whose error is or wraps a context error (any call).
	incrCtxOwn, ctxErrs atomic.Int64
	// Pushes whose error broke BatchRPush's contract (nfPush.bad), and the
	// first of them.
	badBatch                  atomic.Int64
	badBatchErr               atomic.Value
	firstOK, lastErr          atomic.Int64 // ns after the removal; -1: none
	peakWaiting, peakInFlight atomic.Int64

	mu    sync.Mutex
	kinds map[string]int
	// late calls by what they were: "300ms ok", "500ms timeout", ...
	lateKinds map[string]int
	// overruns past the deadline of the calls later than nfBound
	overruns []time.Duration
	// timeline: per 100 ms since the load started, calls and errors
	tl [100][2]int

	// Results of verify.
	over, under, beyond                              int
	extra, failedApplied                             int64
	ackedItems, ackedLost, outOfOrder, dups, dupsOut int
	phantoms, uncertainApplied, strange              int
	pubAcked, pubLost, pubOut, pubTwice, pubPhantoms int
	idleAfter                                        time.Duration
	notIdle                                          string
	lag                                              time.Duration // the test process's worst scheduling lag (nfLoadRun.lag)
	before, after                                    redis.PoolStats
	limBefore, limAfter                              conn.LimiterInfo
	opsBefore, opsAfter                              map[string]int64 // errorOps
}

// nfPhases are the fault's times, UnixNano; 0 until they happen.
type nfPhases struct{ begin, fault, removed, lateTimer atomic.Int64 }

func nfAtomicMax(a *atomic.Int64, v int64) {
	for {
		old := a.Load()
		if v <= old || a.CompareAndSwap(old, v) {
			return
		}
	}
}

func (r *nfRun) record(ph *nfPhases, start time.Time, deadline time.Duration, err error, unsent bool) {
	end := time.Now()
	took := end.Sub(start)
	r.calls.Add(1)
	nfAtomicMax(&r.slowest, int64(took))
	nfAtomicMax(&r.worstOver, int64(took-deadline))
	if took > deadline+nfBound {
		r.late.Add(1)
		k := "ok"
		if err != nil {
			k = telemetry.ErrorType(err)
		}
		r.mu.Lock()
		r.lateKinds[fmt.Sprintf("%v %s", deadline, k)]++
		r.overruns = append(r.overruns, took-deadline)
		r.mu.Unlock()
	}
	if f := ph.begin.Load(); f != 0 {
		b := (end.UnixNano() - f) / int64(100*time.Millisecond)
		if b >= 0 && b < int64(len(r.tl)) {
			r.mu.Lock()
			r.tl[b][0]++
			if err != nil {
				r.tl[b][1]++
			}
			r.mu.Unlock()
		}
	}
	removed := ph.removed.Load()
	after := removed != 0 && start.UnixNano() >= removed
	if err == nil {
		if after {
			r.firstOK.CompareAndSwap(-1, end.UnixNano()-removed)
		}
		return
	}
	r.errs.Add(1)
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		r.ctxErrs.Add(1)
	}
	if f := ph.fault.Load(); f == 0 || end.UnixNano() < f {
		r.errsBefore.Add(1)
	}
	if after {
		nfAtomicMax(&r.lastErr, end.UnixNano()-removed)
	}
	kind := telemetry.ErrorType(err)
	if unsent {
		r.unsent.Add(1)
		kind += "*"
	}
	r.mu.Lock()
	r.kinds[kind]++
	r.mu.Unlock()
}

// subscribe subscribes a client of check (not behind the proxies) to the
// publisher's channel, and collects what arrives until verify.
func (r *nfRun) subscribe(check redis.UniversalClient) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r.sub = check.Subscribe(ctx, r.prefix+":p")
	r.subDone = make(chan struct{})
	if _, err := r.sub.Receive(ctx); err != nil {
		r.subErr = err
		close(r.subDone)
		return
	}
	go func() {
		defer close(r.subDone)
		for {
			msg, err := r.sub.ReceiveMessage(context.Background())
			if err != nil {
				return // closed by verify
			}
			n, err := strconv.Atoi(msg.Payload)
			if err != nil {
				n = -1
			}
			r.mu.Lock()
			r.received = append(r.received, n)
			r.mu.Unlock()
		}
	}()
}

// start starts the client's callers; they run until stop closes.
func (r *nfRun) start(wg *sync.WaitGroup, stop <-chan struct{}, ph *nfPhases) {
	stopped := func() bool {
		select {
		case <-stop:
			return true
		default:
			return false
		}
	}
	for i := 0; i < nfIncrCallers; i++ {
		key := r.prefix + ":c:" + strconv.Itoa(i)
		deadline := nfIncrDeadline(i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stopped() {
				ctx, cancel := context.WithTimeout(context.Background(), deadline)
				start := time.Now()
				r.incrCalls[i]++
				err := r.c.incr(ctx, key)
				cancel()
				may := rediserr.MayHaveRun(err)
				switch {
				case err == nil:
					r.incrAcked[i]++
				case may:
					r.incrMayRun[i]++
				case err == context.DeadlineExceeded || err == context.Canceled:
					r.incrCtxOwn.Add(1)
				}
				r.record(ph, start, deadline, err, err != nil && !may)
				if err != nil {
					time.Sleep(nfErrPause)
				} else {
					time.Sleep(nfIncrPace)
				}
			}
		}()
	}
	for j := 0; j < nfPushCallers; j++ {
		key := r.prefix + ":l:" + strconv.Itoa(j)
		r.batches(wg, stopped, ph, &r.lists[j], func(ctx context.Context, values []any) nfPush { return r.c.push(ctx, key, values) })
	}
	if r.c.publish != nil && r.subErr == nil {
		r.batches(wg, stopped, ph, &r.pubs, func(ctx context.Context, values []any) nfPush { return r.c.publish(ctx, r.prefix+":p", values) })
	}
	if r.c.limiter != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				if li := r.c.limiter(); li != nil {
					nfAtomicMax(&r.peakWaiting, li.Waiting)
					nfAtomicMax(&r.peakInFlight, li.InFlight)
				}
			}
		}()
	}
}

// batches starts a caller that sends numbered items (nfPushItems a call,
// numbers never reused) with send until stopped, and notes each item's state
// in states.
func (r *nfRun) batches(wg *sync.WaitGroup, stopped func() bool, ph *nfPhases, states *[]uint8, send func(ctx context.Context, values []any) nfPush) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		for next := 0; !stopped(); next += nfPushItems {
			values := make([]any, nfPushItems)
			for k := range values {
				values[k] = strconv.Itoa(next + k)
			}
			ctx, cancel := context.WithTimeout(context.Background(), nfPushDeadline)
			start := time.Now()
			p := send(ctx, values)
			cancel()
			if p.bad != "" && r.badBatch.Add(1) == 1 {
				r.badBatchErr.Store(p.bad)
			}
			for k := range values {
				*states = append(*states, nfItemState(p, k))
			}
			r.record(ph, start, nfPushDeadline, p.err, p.err != nil && p.to <= p.from)
			time.Sleep(nfPushPace)
		}
	}()
}

// nfItemState is the state of item k of a batch call that reported p.
func nfItemState(p nfPush, k int) uint8 {
	switch {
	case k < p.acked:
		return nfAcked
	case k >= p.from && k < p.to:
		return nfUncertain
	}
	return nfUnsent
}

// waitIdle waits until the client's pools are idle and its limiter drained.
func (r *nfRun) waitIdle() {
	begin := time.Now()
	for {
		s := r.c.pool()
		idle := s.TotalConns == s.IdleConns && s.PendingRequests == 0
		state := fmt.Sprintf("pool %d of %d connections idle, %d requests pending", s.IdleConns, s.TotalConns, s.PendingRequests)
		if r.c.limiter != nil {
			li := r.c.limiter()
			idle = idle && li.InFlight == 0 && li.Waiting == 0 && li.InFlightCallers == 0 && li.Queued == 0
			state += fmt.Sprintf("; limiter in_flight %d, waiting %d, in_flight_callers %d, queued %d",
				li.InFlight, li.Waiting, li.InFlightCallers, li.Queued)
		}
		r.idleAfter = time.Since(begin)
		if idle {
			return
		}
		if r.idleAfter > nfIdleBound {
			r.notIdle = state
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// verify reads the counters and lists directly from the servers and checks
// them against what the callers were told.
func (r *nfRun) verify(t *testing.T, check redis.UniversalClient) {
	ctx := ctxTimeout(t, 30*time.Second)
	for i := 0; i < nfIncrCallers; i++ {
		got, err := check.Get(ctx, r.prefix+":c:"+strconv.Itoa(i)).Int64()
		if err != nil && err != redis.Nil {
			t.Fatalf("reading counter %d of %s: %v", i, r.c.name, err)
		}
		calls, acked, mayRun := r.incrCalls[i], r.incrAcked[i], r.incrMayRun[i]
		if got > calls {
			r.over++
			r.extra += got - calls
		}
		if got < acked {
			r.under++
		}
		if got > acked+mayRun {
			r.beyond++
		}
		r.failedApplied += max(min(got, calls)-acked, 0)
	}
	for j := 0; j < nfPushCallers; j++ {
		list, err := check.LRange(ctx, r.prefix+":l:"+strconv.Itoa(j), 0, -1).Result()
		if err != nil {
			t.Fatalf("reading list %d of %s: %v", j, r.c.name, err)
		}
		states := r.lists[j]
		counts := make([]int, len(states))
		last := -1 // the last acknowledged item met
		for _, v := range list {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || n >= len(states) {
				r.strange++
				continue
			}
			counts[n]++
			if counts[n] == 1 && states[n] == nfAcked {
				if n < last {
					r.outOfOrder++
				}
				last = n
			}
		}
		for n, s := range states {
			if s == nfAcked {
				r.ackedItems++
			}
			switch {
			case s == nfAcked && counts[n] == 0:
				r.ackedLost++
			case s == nfUnsent && counts[n] > 0:
				r.phantoms++
			case s == nfUncertain && counts[n] > 0:
				r.uncertainApplied++
			}
			if counts[n] > 1 {
				r.dups += counts[n] - 1
				if s != nfUncertain {
					r.dupsOut += counts[n] - 1
				}
			}
		}
	}
}

// verifyPublished waits for the subscriber to receive every acknowledged
// message (2 s at most), stops it, and checks what arrived.
func (r *nfRun) verifyPublished() {
	if r.sub == nil {
		return
	}
	for _, s := range r.pubs {
		if s == nfAcked {
			r.pubAcked++
		}
	}
	arrived := func() int {
		r.mu.Lock()
		defer r.mu.Unlock()
		n := 0
		for _, m := range r.received {
			if m >= 0 && m < len(r.pubs) && r.pubs[m] == nfAcked {
				n++
			}
		}
		return n
	}
	for end := time.Now().Add(2 * time.Second); arrived() < r.pubAcked && time.Now().Before(end); {
		time.Sleep(10 * time.Millisecond)
	}
	_ = r.sub.Close()
	<-r.subDone
	seen := make([]int, len(r.pubs))
	last := -1
	for _, m := range r.received {
		if m < 0 || m >= len(r.pubs) {
			r.strange++
			continue
		}
		seen[m]++
		if seen[m] > 1 {
			r.pubTwice++
		} else if m < last {
			r.pubOut++
		}
		last = max(last, m)
	}
	for m, s := range r.pubs {
		switch {
		case s == nfAcked && seen[m] == 0:
			r.pubLost++
		case s == nfUnsent && seen[m] > 0:
			r.pubPhantoms++
		}
	}
}

func nfDur(ns int64) string {
	if ns < 0 {
		return "none"
	}
	return time.Duration(ns).Round(time.Millisecond).String()
}

// kindsString lists the error kinds, most frequent first.
func (r *nfRun) kindsString() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	ks := make([]string, 0, len(r.kinds))
	for k := range r.kinds {
		ks = append(ks, k)
	}
	slices.SortFunc(ks, func(a, b string) int {
		if r.kinds[a] != r.kinds[b] {
			return r.kinds[b] - r.kinds[a]
		}
		return strings.Compare(a, b)
	})
	parts := make([]string, len(ks))
	for i, k := range ks {
		parts[i] = fmt.Sprintf("%s %d", k, r.kinds[k])
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ", ")
}

// lateBeyondLag counts the calls that returned more than nfBound plus
// nfLagWaits times the measured scheduling lag after their deadline.
func (r *nfRun) lateBeyondLag() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, o := range r.overruns {
		if o > nfBound+nfLagWaits*r.lag {
			n++
		}
	}
	return n
}

// rejectedContext is how much the Worker's rejected_context grew.
// failedOps are the failed operations the client's metrics counted during
// the run, by error.type.
func (r *nfRun) failedOps() map[string]int64 {
	ops := map[string]int64{}
	for k, n := range r.opsAfter {
		if d := n - r.opsBefore[k]; d > 0 {
			ops[k] = d
		}
	}
	return ops
}

// checkMetrics compares the failed operations the metrics counted with the
// failures callers saw, leaving out those refused before anything was sent
// (kind "...*": the context's own error in the limiter or the queue, a pool
// timeout), which are no operation. The API's every failed call is an
// operation of its error.type (and a command sent again adds one more); a
// Worker's coalesced round trip is one operation, of the error of its first
// failed command, so only its total is checked.
func (r *nfRun) checkMetrics() string {
	if r.c.errorOps == nil {
		return ""
	}
	ops := r.failedOps()
	r.mu.Lock()
	defer r.mu.Unlock()
	var sent, counted int64
	for k, n := range r.kinds {
		if strings.HasSuffix(k, "*") {
			continue
		}
		sent += int64(n)
		if r.c.limiter == nil && ops[k] < int64(n) {
			return fmt.Sprintf("%d calls failed with error.type %s, but db.client.operation.duration counted %d failed operations of it (%v)", n, k, ops[k], ops)
		}
	}
	for _, n := range ops {
		counted += n
	}
	if sent > 0 && counted == 0 {
		return fmt.Sprintf("%d calls failed after their command was sent, but db.client.operation.duration counted no failed operation", sent)
	}
	return ""
}

func (r *nfRun) rejectedContext() int64 {
	return r.limAfter.RejectedContext - r.limBefore.RejectedContext
}

// cells are the row's table cells, after the fault, topology and client.
func (r *nfRun) cells() []string {
	idle := r.idleAfter.Round(time.Millisecond).String()
	if r.notIdle != "" {
		idle = "NOT IDLE after " + idle + ": " + r.notIdle
	}
	metrics := fmt.Sprintf("new conns %d, pool timeouts %d", r.after.Misses-r.before.Misses, r.after.Timeouts-r.before.Timeouts)
	if r.c.limiter != nil {
		metrics += fmt.Sprintf("; limiter: rejected_context +%d (INCRs failed with the context's own error %d, calls with a context error %d), round trips +%d, peak waiting %d, peak in_flight %d",
			r.rejectedContext(), r.incrCtxOwn.Load(), r.ctxErrs.Load(),
			r.limAfter.CoalescedRoundTrips-r.limBefore.CoalescedRoundTrips, r.peakWaiting.Load(), r.peakInFlight.Load())
	}
	if ops := r.failedOps(); len(ops) > 0 {
		kinds := slices.Sorted(maps.Keys(ops))
		parts := make([]string, len(kinds))
		for i, k := range kinds {
			parts[i] = fmt.Sprintf("%s %d", k, ops[k])
		}
		metrics += "; failed operations by error.type: " + strings.Join(parts, ", ")
	}
	published := "-"
	if r.sub != nil {
		published = fmt.Sprintf("%d / %d / %d / %d of %d", r.pubLost, r.pubOut, r.pubTwice, r.pubPhantoms, r.pubAcked)
	}
	errs := fmt.Sprintf("%d", r.errs.Load())
	if r.errs.Load() > 0 {
		errs += " (" + r.kindsString() + ")"
	}
	if b := r.errsBefore.Load(); b > 0 {
		errs += fmt.Sprintf("; %d before the fault", b)
	}
	return []string{
		strconv.FormatInt(r.calls.Load(), 10),
		errs,
		fmt.Sprintf("%s (+%s)", nfDur(r.slowest.Load()), nfDur(max(r.worstOver.Load(), 0))),
		fmt.Sprintf("%d / %d", r.late.Load(), r.lateBeyondLag()),
		nfDur(r.firstOK.Load()) + " / " + nfDur(r.lastErr.Load()),
		fmt.Sprintf("%d (+%d) / %d / %d", r.over, r.extra, r.under, r.beyond),
		fmt.Sprintf("%d / %d", r.failedApplied, r.uncertainApplied),
		fmt.Sprintf("%d of %d", r.ackedLost+r.outOfOrder, r.ackedItems),
		fmt.Sprintf("%d (of %d)", r.dupsOut, r.dups),
		strconv.Itoa(r.phantoms + r.strange),
		published,
		idle,
		metrics,
		r.lag.Round(time.Millisecond).String(),
	}
}

var nfHeader = []string{
	"fault", "topology", "client", "calls", "errors (kind count; * = reported unsent)",
	"slowest call (+ most past its deadline)", "past deadline+100ms / +100ms+4×sched lag", "first success / last error after removal",
	"counters over calls (+extra) / under acked / over acked+uncertain", "failed INCRs applied / uncertain items present",
	"acked items lost or out of order", "duplicates outside uncertain (all)", "unsent items present",
	"published: acked lost / out of order / twice / unsent arrived",
	"idle after", "metrics, ConnectionInfo", "sched lag",
}

// nfTable collects the rows of every topology.
type nfTable struct {
	mu   sync.Mutex
	rows [][]string
	keys []int // fault index * 100 + topology index * 10 + client index, to sort by
}

func (tb *nfTable) add(key int, row []string) {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	tb.rows = append(tb.rows, row)
	tb.keys = append(tb.keys, key)
}

func (tb *nfTable) markdown() string {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	idx := make([]int, len(tb.rows))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int { return tb.keys[a] - tb.keys[b] })
	var b strings.Builder
	b.WriteString("| " + strings.Join(nfHeader, " | ") + " |\n|")
	for range nfHeader {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	for _, i := range idx {
		b.WriteString("| " + strings.Join(tb.rows[i], " | ") + " |\n")
	}
	b.WriteString("\nFaults (on every proxy of the topology; each client alone: 250 ms of load, the fault for 1 s, removed, then at least 250 ms of load):\n\n")
	for _, f := range nfFaults {
		fmt.Fprintf(&b, "- %s: %s\n", f.name, f.about)
	}
	fmt.Fprintf(&b, "\nPer client: %d INCR callers (deadlines 300/400/500 ms), %d pushers of %d items (deadline %v): Worker BatchRPush, API and plain go-redis one RPUSH; the Worker also one publisher of %d messages a call with BatchPublish, its subscriber connected to the server directly.\n",
		nfIncrCallers, nfPushCallers, nfPushItems, nfPushDeadline, nfPushItems)
	b.WriteString("Errors marked * were reported as not written (the context's own error, a failed dial or set-up, a pool timeout); " +
		"\"over acked+uncertain\" counts counters that hold more increments than their acknowledged calls plus the failed calls that may have been written. " +
		"Sched lag: the longest a runnable goroutine of the test process waited to run during the run (the runtime's /sched/latencies:seconds), or how late a 10 ms sleep woke, whichever is more.\n")
	return b.String()
}

// TestNetFaultsThroughToxiproxy runs every fault on every topology and
// prints the table (see above: one client, one topology at a time).
func TestNetFaultsThroughToxiproxy(t *testing.T) {
	if _, err := redistest.ToxiproxyBinary(); err != nil {
		t.Fatal(err) // make test builds it (make toxiproxy)
	}
	begin := time.Now()
	table := &nfTable{}
	t.Run("matrix", func(t *testing.T) {
		for ti, topo := range nfTopologies {
			t.Run(topo, func(t *testing.T) {
				e := nfSetUp(t, topo)
				for fi, f := range nfFaults {
					t.Run(f.name, func(t *testing.T) {
						for ci, c := range e.clients {
							t.Run(c.name, func(t *testing.T) {
								nfRunFault(t, e, f, ci, func(row []string) { table.add(fi*100+ti*10+ci, row) })
							})
						}
					})
				}
			})
		}
	})
	md := table.markdown()
	t.Logf("network faults, %v in all:\n%s", time.Since(begin).Round(time.Millisecond), md)
	if err := os.WriteFile(nfTablePath, []byte(md), 0o644); err != nil {
		t.Errorf("writing %s: %v", nfTablePath, err)
	}
}

// nfSetUp starts the topology behind a Toxiproxy, and the clients under test.
func nfSetUp(t *testing.T, topo string) *nfEnv {
	tp := redistest.StartToxiproxy(t)
	e := &nfEnv{topo: topo, tp: tp, faultFor: nfFaultFor}
	wcfg, acfg := conn.DefaultConfig(conn.RoleWorker), conn.DefaultConfig(conn.RoleAPI)
	var plain redis.UniversalClient
	switch topo {
	case "standalone":
		srv := redistest.Start(t, redistest.Options{})
		p := tp.Proxy(t, "standalone", srv.Addr())
		e.proxies = []*redistest.Proxy{p}
		wcfg.Host, wcfg.Port = "127.0.0.1", p.Port()
		acfg.Host, acfg.Port = "127.0.0.1", p.Port()
		plain = redis.NewClient(&redis.Options{Addr: p.Addr(), PoolSize: 200, ContextTimeoutEnabled: true})
		e.check = srv.Client(t)
		e.killers = []*redis.Client{srv.Client(t)}
	case "sentinel":
		// The sentinels monitor the servers through the proxies too, so
		// they see every fault: down-after 5 s keeps a fault of at most
		// 1.5 s from starting a failover.
		sn := redistest.StartSentinel(t, redistest.SentinelOptions{Proxy: tp, DownAfter: 5 * time.Second})
		e.proxies = sn.Proxies()
		for _, cfg := range []*conn.Config{&wcfg, &acfg} {
			cfg.SentinelAddrs, cfg.SentinelMaster = sn.SentinelAddrs(), sn.MasterName()
		}
		plain = redis.NewFailoverClient(&redis.FailoverOptions{
			MasterName: sn.MasterName(), SentinelAddrs: sn.SentinelAddrs(), PoolSize: 200, ContextTimeoutEnabled: true,
		})
		master := sn.Master()
		e.check = master.Client(t)
		e.killers = []*redis.Client{master.Client(t)}
	default:
		cl := redistest.StartCluster(t, redistest.ClusterOptions{Masters: 3, Proxy: tp})
		e.proxies = cl.Proxies()
		wcfg.ClusterAddrs, acfg.ClusterAddrs = cl.Addrs(), cl.Addrs()
		plain = redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs(), PoolSize: 200, ContextTimeoutEnabled: true})
		// The check client learns the proxies' addresses from the cluster
		// and dials the nodes behind them, so no toxic reaches it.
		direct := map[string]string{}
		for _, p := range e.proxies {
			direct[p.Addr()] = p.Upstream()
		}
		var d net.Dialer
		check := redis.NewClusterClient(&redis.ClusterOptions{
			Addrs: cl.Addrs(),
			Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
				if up, ok := direct[addr]; ok {
					addr = up
				}
				return d.DialContext(ctx, network, addr)
			},
		})
		t.Cleanup(func() { _ = check.Close() })
		e.check = check
		for _, m := range cl.Masters {
			e.killers = append(e.killers, m.Client(t))
		}
	}
	t.Cleanup(func() { _ = plain.Close() })
	wr, ar := sdkmetric.NewManualReader(), sdkmetric.NewManualReader()
	w, err := conn.NewWorker(context.Background(), wcfg, conn.WithMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(wr))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Close() })
	a, err := conn.NewAPI(context.Background(), acfg, conn.WithMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(ar))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	wc, ac := nfWorker(w), nfAPI(a)
	wc.errorOps, ac.errorOps = nfErrorOps(wr), nfErrorOps(ar)
	e.clients = []*nfClient{wc, ac, nfPlain(plain)}
	nfWarmUp(t, e)
	return e
}

// nfErrorOps counts the failed operations that reader's
// db.client.operation.duration holds, by error.type.
func nfErrorOps(reader *sdkmetric.ManualReader) func() map[string]int64 {
	return func() map[string]int64 {
		var rm metricdata.ResourceMetrics
		out := map[string]int64{}
		if err := reader.Collect(context.Background(), &rm); err != nil {
			out["collect: "+err.Error()] = -1
			return out
		}
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				h, ok := m.Data.(metricdata.Histogram[float64])
				if m.Name != telemetry.OperationDuration || !ok {
					continue
				}
				for _, dp := range h.DataPoints {
					if v, ok := dp.Attributes.Value(telemetry.AttrErrorType); ok {
						out[v.AsString()] += int64(dp.Count)
					}
				}
			}
		}
		return out
	}
}

// nfLoad is the workload of every client of e, running until halt.
type nfLoadRun struct {
	runs  []*nfRun
	ph    nfPhases
	halt  func()
	sched *metrics.Float64Histogram // /sched/latencies:seconds at the start
}

// nfStart starts the workload of the clients on keys under prefix, and a
// probe of the test process's scheduling: how late a 10 ms sleep wakes
// (ph.lateTimer).
func nfStart(clients []*nfClient, prefix string, check redis.UniversalClient) *nfLoadRun {
	l := &nfLoadRun{}
	for _, c := range clients {
		r := &nfRun{c: c, kinds: map[string]int{}, lateKinds: map[string]int{}, prefix: prefix + ":" + strings.ReplaceAll(c.name, " ", "-")}
		r.firstOK.Store(-1)
		r.lastErr.Store(-1)
		if c.publish != nil {
			r.subscribe(check)
		}
		r.before = *c.pool()
		if c.limiter != nil {
			r.limBefore = *c.limiter()
		}
		if c.errorOps != nil {
			r.opsBefore = c.errorOps()
		}
		l.runs = append(l.runs, r)
	}
	var (
		wg   sync.WaitGroup
		stop = make(chan struct{})
		once sync.Once
	)
	l.halt = func() { once.Do(func() { close(stop) }); wg.Wait() }
	l.ph.begin.Store(time.Now().UnixNano())
	for _, r := range l.runs {
		r.start(&wg, stop, &l.ph)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			s := time.Now()
			time.Sleep(10 * time.Millisecond)
			nfAtomicMax(&l.ph.lateTimer, int64(time.Since(s)-10*time.Millisecond))
		}
	}()
	l.sched = nfSchedLatencies()
	return l
}

// lag is the run's scheduling lag so far: the longest a runnable goroutine
// waited to run since the run started (the lower bound of the highest
// bucket of /sched/latencies:seconds that grew; the runtime samples one
// transition in 8), or how late the probe's 10 ms sleep woke, whichever is
// more.
func (l *nfLoadRun) lag() time.Duration {
	now := nfSchedLatencies()
	worst := time.Duration(l.ph.lateTimer.Load())
	for i := len(now.Counts) - 1; i >= 0; i-- {
		if i < len(l.sched.Counts) && now.Counts[i] > l.sched.Counts[i] {
			worst = max(worst, time.Duration(now.Buckets[i]*float64(time.Second)))
			break
		}
	}
	return worst
}

// nfSchedLatencies reads the runtime's histogram of how long goroutines
// waited, runnable, before they ran.
func nfSchedLatencies() *metrics.Float64Histogram {
	s := []metrics.Sample{{Name: "/sched/latencies:seconds"}}
	metrics.Read(s)
	return s[0].Value.Float64Histogram()
}

// nfWarmUp runs each client's workload for a moment before the first
// fault, so that no fault's first phase pays for cold pools, a cold
// Toxiproxy and a cold race detector (in a first try, calls of the first
// second failed and ran late on all three clients).
func nfWarmUp(t *testing.T, e *nfEnv) {
	for _, c := range e.clients {
		l := nfStart([]*nfClient{c}, "nf:warmup", e.check)
		time.Sleep(nfWarmUpFor)
		l.halt()
		r := l.runs[0]
		r.waitIdle()
		t.Logf("warm-up, %s: %d calls, %d errors, slowest %v; scheduling lag up to %v",
			r.c.name, r.calls.Load(), r.errs.Load(), nfDur(r.slowest.Load()), l.lag().Round(time.Millisecond))
	}
}

// nfRunFault runs one client's workload through one fault: load, the
// fault, its removal, recovery; then it checks the invariants and reports
// the client's row. Each client runs alone: run together, the reconnection
// storms of the go-redis clients under a reset or a black hole (700-900 new
// connections a second each, through Toxiproxy, under -race) starved the
// 2-core machine, and every client's calls returned up to 400 ms late
// (a 10 ms sleep of the test process woke up to 150 ms late), the Worker's
// most (its replies pass three goroutines: the node's reader, the flusher,
// the caller); alone, the same faults gave it at most 40 ms past its
// deadline.
func nfRunFault(t *testing.T, e *nfEnv, f nfFault, ci int, report func(row []string)) {
	l := nfStart([]*nfClient{e.clients[ci]}, "nf:"+f.name, e.check)
	defer l.halt()      // on a failure of the fault's own calls too
	defer e.tp.Reset(t) // no toxic outlives a pass, whatever stopped it
	time.Sleep(nfLoad)
	l.ph.fault.Store(time.Now().UnixNano())
	f.run(t, e)
	removed := time.Now()
	l.ph.removed.Store(removed.UnixNano())
	for {
		time.Sleep(20 * time.Millisecond)
		since := time.Since(removed)
		if since >= nfRecoveryMax || (since >= nfRecovery && l.runs[0].firstOK.Load() >= 0) {
			break
		}
	}
	l.halt()

	for _, r := range l.runs {
		r.lag = l.lag()
		r.waitIdle()
		r.after = *r.c.pool()
		if r.c.limiter != nil {
			r.limAfter = *r.c.limiter()
		}
		if r.c.errorOps != nil {
			r.opsAfter = r.c.errorOps()
		}
		r.verify(t, e.check)
		r.verifyPublished()
		row := append([]string{f.name, e.topo, r.c.name}, r.cells()...)
		report(row)
		t.Logf("%s", strings.Join(row, " | "))
		if !r.c.asserted {
			continue
		}
		who := fmt.Sprintf("%s, %s, %s", f.name, e.topo, r.c.name)
		failed := false
		fail := func(format string, args ...any) {
			failed = true
			t.Errorf(who+": "+format, args...)
		}
		if r.over > 0 {
			fail("%d of %d counters above their INCR calls (+%d in all): commands applied twice", r.over, nfIncrCallers, r.extra)
		}
		if r.under > 0 {
			fail("%d of %d counters below their acknowledged INCRs: acknowledged increments lost", r.under, nfIncrCallers)
		}
		if r.beyond > 0 {
			fail("%d of %d counters above their acknowledged INCRs plus the failed ones that may have been written: an INCR whose error says it was not written was applied, or one was applied twice", r.beyond, nfIncrCallers)
		}
		if r.ackedLost > 0 || r.outOfOrder > 0 {
			fail("of %d acknowledged items, %d missing from their lists and %d out of order", r.ackedItems, r.ackedLost, r.outOfOrder)
		}
		if r.dupsOut > 0 {
			fail("%d duplicate items outside any reported uncertain range (%d duplicates in all)", r.dupsOut, r.dups)
		}
		if r.subErr != nil {
			fail("subscribing to the published messages: %v", r.subErr)
		}
		if r.pubLost > 0 || r.pubOut > 0 || r.pubTwice > 0 || r.pubPhantoms > 0 {
			fail("BatchPublish: of %d acknowledged messages %d never arrived; %d arrived out of order, %d twice; %d reported unsent arrived",
				r.pubAcked, r.pubLost, r.pubOut, r.pubTwice, r.pubPhantoms)
		}
		if r.c.limiter != nil && r.dups > 0 {
			fail("%d duplicate items: a BatchRPush chunk was applied twice, though one that may have been written is never sent again", r.dups)
		}
		if n := r.badBatch.Load(); n > 0 {
			fail("%d BatchRPush errors were no *BatchError with consistent numbers, the first: %v", n, r.badBatchErr.Load())
		}
		if r.phantoms > 0 || r.strange > 0 {
			fail("%d items reported not sent are in their lists (and %d items no call pushed)", r.phantoms, r.strange)
		}
		if n := r.lateBeyondLag(); n > 0 {
			fail("%d calls returned more than %v + %d × the scheduling lag (%v) after their deadline (the most: %v past it; slowest call %v)",
				n, nfBound, nfLagWaits, r.lag, time.Duration(r.worstOver.Load()), time.Duration(r.slowest.Load()))
		}
		if ok := r.firstOK.Load(); ok < 0 || time.Duration(ok) > nfFirstOKBound {
			fail("first success %s after the fault was removed, want within %v", nfDur(ok), nfFirstOKBound)
		}
		if bad := r.checkMetrics(); bad != "" {
			fail("%s", bad)
		}
		if r.notIdle != "" {
			fail("not idle %v after the load stopped: %s", nfIdleBound, r.notIdle)
		}
		if rc := r.rejectedContext(); r.c.limiter != nil && (rc < r.incrCtxOwn.Load() || rc > r.ctxErrs.Load()) {
			fail("ConnectionInfo's rejected_context grew by %d; %d INCRs failed with the context's own error and %d calls with a context error",
				rc, r.incrCtxOwn.Load(), r.ctxErrs.Load())
		}
		if f.errors && r.c.limiter != nil && r.errs.Load() == 0 {
			// Checked on the Worker, whose few connections carry every
			// byte: the API's many connections may carry too few to meet
			// limit_data's count.
			fail("no call failed: the fault did not happen")
		}
		if failed {
			var tl []string
			for _, b := range r.tl {
				if b[0] > 0 {
					tl = append(tl, fmt.Sprintf("%d/%d", b[1], b[0]))
				}
			}
			t.Logf("%s: late calls by deadline and outcome %v; errors/calls per 100 ms from the load's start (fault at 10, removed at 20): %s",
				who, r.lateKinds, strings.Join(tl, " "))
		}
	}
}
