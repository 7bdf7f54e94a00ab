package conn

import (
	"context"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redisconn/redisconn/telemetry"
	"go.opentelemetry.io/otel/trace"
)

// coalescer sends the Worker's concurrent single commands together: callers
// queue their command (FIFO) and a few flusher goroutines, each holding one
// limiter permit while it works, send whatever has queued as one pipeline.
// Under load one round trip then carries many callers' commands, which is
// where Redis throughput comes from; with a single caller a command is a
// pipeline of one.
//
// What a caller can rely on is what the limiter promises: commands are sent
// in arrival order, no more round trips run at once than the limit allows, a
// caller whose context ends while its command is queued gets the context's
// error and its command is never sent, and Close fails queued commands with
// ErrClosed. A command already sent completes in Redis even if its caller
// stopped waiting, as with any command.
//
// Only commands issued on the Worker itself are coalesced, and only those
// that are safe in a shared pipeline: not blocking commands (BLPOP, XREAD,
// WAIT, ...), not commands that change connection state (SELECT, MULTI,
// CLIENT, ...), not unknown or module commands. Commands of Watch
// transactions, of a Conn, and explicit pipelines run as they are.
type coalescer struct {
	m        *manager
	maxBatch int

	mu     sync.Mutex
	ready  *sync.Cond
	full   []*generation // FIFO of generations that reached maxBatch
	cur    *generation   // the generation new commands join; nil when none
	queued int           // commands queued and not cancelled
	// sizeHint is the size of the last generation taken: a new generation
	// starts with that capacity, so under steady load it never regrows.
	sizeHint int
	closed   bool
	waiting  int // flushers waiting for a limiter permit

	ctx    context.Context // the flushers' context, ended by close
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// generation is the commands that will be sent together: callers join the
// current generation (FIFO) until it holds maxBatch commands or a flusher
// takes it. Its callers all wait on its one done channel, so a command costs
// no channel of its own and one close wakes the whole pipeline's callers.
type generation struct {
	items   []item
	live    int  // items not cancelled
	noRetry bool // it holds a command go-redis must not send twice (a batch chunk)
	taken   bool // a flusher took it (under mu); items are frozen from then on
	done    chan struct{}
	// Set before done is closed.
	failed         error // instead of sending (ErrClosed)
	sent, answered time.Time
}

type item struct {
	ctx       context.Context
	cmd       redis.Cmder
	at        time.Time // when it was queued
	cancelled bool      // its caller gave up before it was taken (under mu)
}

// coalesceFlushers is how many pipelines of coalesced commands may be in
// flight at once (each holds one permit): more make smaller pipelines and
// more round trips. BenchmarkCoalescing (2 cores, telemetry off): at 100
// callers 1/2/4/8 flushers gave 279k/278k/249k/160k RPUSH/s, at 5000
// callers 412k/460k/498k/494k. Two are as fast as one at 100 callers and
// close to the best at 5000, without putting every coalesced command behind
// one slow pipeline. (A variable only so that the benchmark can vary it.)
var coalesceFlushers = 2

// coalesceMaxBatch bounds one pipeline. Measured with `make bench` S1 (5000
// callers): 128/256/512/1024/2048/4096 gave p99 32/29/28/27-30/34/37 ms and
// 335k/360k/372k/357k-395k/345k/327k RPUSH/s in one series of runs; against
// AutoPipeline in the same runs, 512/768/1024 gave throughput 1.09-1.11x/
// 1.14-1.15x/1.11-1.24x and p99 0.96-0.98x/0.88-0.97x/1.02-1.07x. Fewer,
// larger round trips shorten the queue until a pipeline takes too long to
// write and read; 768 keeps both.
const coalesceMaxBatch = 768

func newCoalescer(m *manager) *coalescer {
	c := &coalescer{m: m, maxBatch: coalesceMaxBatch}
	c.ready = sync.NewCond(&c.mu)
	c.ctx, c.cancel = context.WithCancel(context.Background())
	// The flushers' pipelines start no spans of their own (each command gets
	// its span in its caller's trace instead): an unsampled parent.
	c.ctx = trace.ContextWithSpanContext(c.ctx, trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{0x72, 0x65, 0x64, 0x69, 0x73, 0x63, 0x6f, 0x6e, 0x6e},
		SpanID:  trace.SpanID{0x63, 0x6f, 0x61, 0x6c, 0x65, 0x73, 0x63, 0x65},
	}))
	n := min(coalesceFlushers, m.cfg.MaxConcurrentOps)
	c.wg.Add(n)
	for i := 0; i < n; i++ {
		go c.flusher()
	}
	return c
}

// do queues cmd and waits until it completed, ctx ended, or the manager closed.
func (c *coalescer) do(ctx context.Context, cmd redis.Cmder) error {
	at := time.Now()
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		c.m.limiter.rejectedClosed.Add(1)
		cmd.SetErr(ErrClosed)
		return ErrClosed
	}
	g := c.cur
	if g == nil {
		g = &generation{done: make(chan struct{}), items: make([]item, 0, max(c.sizeHint, 4))}
		c.cur = g
	}
	i := len(g.items)
	g.items = append(g.items, item{ctx: ctx, cmd: cmd, at: at})
	g.live++
	if cmd.NoRetry() {
		g.noRetry = true
	}
	c.queued++
	if len(g.items) >= c.maxBatch {
		c.full = append(c.full, g)
		c.cur = nil
	}
	c.ready.Signal()
	c.mu.Unlock()

	select {
	case <-g.done:
		if g.failed != nil {
			cmd.SetErr(g.failed)
			return g.failed
		}
		c.record(g, i)
		return cmd.Err()
	case <-ctx.Done():
	}
	c.mu.Lock()
	if !g.taken {
		g.items[i].cancelled = true
		g.live--
		c.queued--
		c.mu.Unlock()
		c.m.limiter.rejectedCtx.Add(1)
		err := permitError(ctx.Err())
		cmd.SetErr(err)
		return err
	}
	c.mu.Unlock()
	// Sent already. go-redis writes the reply into cmd until the pipeline
	// ends, which its read deadline bounds (the latest deadline of the batch,
	// see send): wait for it, then report the caller's context error. Redis
	// may have applied the command, as with any command whose reply is lost.
	<-g.done
	if g.failed != nil { // closed before it was sent
		cmd.SetErr(g.failed)
		return g.failed
	}
	c.record(g, i)
	err := cmd.Err()
	if err == nil {
		err = ctx.Err()
		cmd.SetErr(err)
	}
	return err
}

// record adds a sent command's span to its caller's trace when that is
// sampled, on the caller's goroutine (the metrics are the round trip's, see
// send).
func (c *coalescer) record(g *generation, i int) {
	if c.m.tel != nil {
		it := &g.items[i]
		c.m.tel.CoalescedSpan(it.ctx, it.cmd, it.at, g.sent, g.answered, g.live)
	}
}

// queueLen is how many callers wait for their command to be sent.
func (c *coalescer) queueLen() (queued, flushersWaiting int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.queued, c.waiting
}

// takeLocked removes and returns the oldest generation, or nil.
func (c *coalescer) takeLocked() *generation {
	var g *generation
	if len(c.full) > 0 {
		g = c.full[0]
		c.full[0] = nil
		c.full = c.full[1:]
	} else {
		g, c.cur = c.cur, nil
	}
	if g != nil {
		g.taken = true
		c.queued -= g.live
		c.sizeHint = len(g.items)
	}
	return g
}

func (c *coalescer) flusher() {
	defer c.wg.Done()
	held := context.WithValue(c.ctx, heldKey{}, &permit{l: c.m.limiter})
	var buf []redis.Cmder // the commands of a round trip, for its telemetry
	for {
		c.mu.Lock()
		for c.queued == 0 && !c.closed {
			c.ready.Wait()
		}
		if c.closed {
			c.mu.Unlock()
			return
		}
		c.waiting++
		c.mu.Unlock()

		// The permit first, then the batch: until a permit is held, queued
		// commands stay cancellable by their callers.
		_, err := c.m.limiter.acquire(c.ctx)
		c.mu.Lock()
		c.waiting--
		if err != nil { // closed
			c.mu.Unlock()
			// Not a caller's rejection: the queued commands are counted by close.
			c.m.limiter.rejectedClosed.Add(-1)
			return
		}
		// Acquired counts operations: send counts each command of the batch.
		c.m.limiter.acquired.Add(-1)
		g := c.takeLocked()
		c.mu.Unlock()
		if g == nil || g.live == 0 { // taken by the other flusher, or every caller gave up
			c.m.limiter.release()
			if g != nil {
				close(g.done)
			}
			continue
		}
		c.send(held, g, &buf) // releases the permit
	}
}

// send runs one generation as a pipeline, releases the flusher's permit, and
// completes the commands: a caller whose command returned holds nothing.
func (c *coalescer) send(ctx context.Context, g *generation, buf *[]redis.Cmder) {
	g.sent = time.Now()
	if c.m.tel != nil {
		ctx = c.m.tel.SkipOperationRecord(ctx)
	}
	// The pipeline's reads end at the latest deadline of its commands, so a
	// stalled server cannot hold a caller much past its own deadline; with
	// one command without deadline, the socket timeout bounds them.
	var latest time.Time
	for i := range g.items {
		it := &g.items[i]
		if it.cancelled {
			continue
		}
		dl, ok := it.ctx.Deadline()
		if !ok {
			latest = time.Time{}
			break
		}
		if dl.After(latest) {
			latest = dl
		}
	}
	if !latest.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, latest)
		defer cancel()
	}
	err := c.exec(ctx, g)
	if err != nil {
		// A failure before any reply (no connection, a refused AUTH) is not
		// set on the commands by go-redis when it is a server error; do it.
		answered := false
		for i := range g.items {
			if it := &g.items[i]; !it.cancelled && it.cmd.Err() != nil {
				answered = true
				break
			}
		}
		if !answered {
			for i := range g.items {
				if it := &g.items[i]; !it.cancelled {
					it.cmd.SetErr(err)
				}
			}
		}
	}
	g.answered = time.Now()
	c.m.limiter.release()
	c.m.limiter.acquired.Add(int64(g.live))
	if c.m.tel != nil {
		c.recordRoundTrip(g, err, buf)
	}
	close(g.done)
}

// exec sends the generation as one pipeline. go-redis retries a pipeline
// unless it holds a command that must not be sent twice (a batch chunk); for
// those, exec itself sends again, like go-redis and BatchRPush without
// coalescing, when the pipeline could not get a connection: nothing was sent.
func (c *coalescer) exec(ctx context.Context, g *generation) error {
	for attempt := 0; ; attempt++ {
		pipe := c.m.client.Pipeline()
		for i := range g.items {
			if it := &g.items[i]; !it.cancelled {
				_ = pipe.Process(it.ctx, it.cmd)
			}
		}
		_, err := pipe.Exec(ctx)
		if err == nil || !g.noRetry || attempt == chunkRetries || !notConnected(err) {
			return err
		}
		if !sleepBackoff(ctx, attempt) {
			return err
		}
	}
}

// recordRoundTrip records the generation's metrics, once for the round trip
// (telemetry.RecordCoalesced), before its callers return.
func (c *coalescer) recordRoundTrip(g *generation, err error, buf *[]redis.Cmder) {
	cmds := (*buf)[:0]
	defer func() { clear(cmds); *buf = cmds[:0] }()
	var oldest time.Time
	var ctx context.Context
	sampled := false
	for i := range g.items {
		it := &g.items[i]
		if it.cancelled {
			continue
		}
		if ctx == nil {
			ctx, oldest = it.ctx, it.at
			sampled = trace.SpanContextFromContext(ctx).IsSampled()
		} else if !sampled && trace.SpanContextFromContext(it.ctx).IsSampled() {
			ctx, sampled = it.ctx, true // an exemplar that leads to a trace with one of the commands
		}
		cmds = append(cmds, it.cmd)
	}
	c.m.tel.RecordCoalesced(ctx, cmds, oldest, g.sent, g.answered, err)
}

// close stops the flushers and fails every queued command with ErrClosed.
func (c *coalescer) close() {
	c.mu.Lock()
	c.closed = true
	gens := c.full
	if c.cur != nil {
		gens = append(gens, c.cur)
	}
	c.full, c.cur = nil, nil
	queued := c.queued
	c.queued = 0
	for _, g := range gens {
		g.taken = true // nobody cancels into it any more
	}
	c.ready.Broadcast()
	c.mu.Unlock()
	c.cancel()
	c.m.limiter.rejectedClosed.Add(int64(queued))
	for _, g := range gens {
		g.failed = ErrClosed
		close(g.done)
	}
	c.wg.Wait()
}

// coalescable: safe to share a pipeline with other callers' commands.
func coalescable(cmd redis.Cmder) bool {
	switch cmd.Name() {
	case "blpop", "brpop", "brpoplpush", "blmove", "blmpop", "bzpopmin", "bzpopmax", "bzmpop",
		"xread", "xreadgroup", "wait", "waitaof",
		"select", "multi", "exec", "discard", "watch", "unwatch", "auth", "hello", "client", "reset",
		"quit", "readonly", "readwrite", "monitor", "sync", "psync", "subscribe", "psubscribe",
		"ssubscribe", "unsubscribe", "punsubscribe", "sunsubscribe", "shutdown", "debug",
		"failover", "replicaof", "slaveof", "swapdb", "flushall", "flushdb":
		return false
	}
	return telemetry.KnownCommand(cmd.Name())
}
