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

	mu      sync.Mutex
	ready   *sync.Cond
	queue   []*queued // FIFO; head at queue[0]
	closed  bool
	waiting int // flushers waiting for a limiter permit

	ctx    context.Context // the flushers' context, ended by close
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type queued struct {
	ctx    context.Context
	cmd    redis.Cmder
	at     time.Time     // when it was queued
	done   chan struct{} // closed when the command completed or was failed
	taken  bool          // a flusher took it into a pipeline (under mu)
	failed error         // set instead of sending (ErrClosed)
}

// coalesceFlushers is how many pipelines of coalesced commands may be in
// flight at once (each holds one permit): more make smaller pipelines and
// more round trips. BenchmarkCoalescing (2 cores, telemetry off): at 100
// callers 1/2/4/8 flushers gave 440k/418k/355k/296k RPUSH/s, at 5000
// callers all ~450k. Two keep most of the throughput without putting every
// coalesced command behind one slow pipeline. (A variable only so that the
// benchmark can vary it.)
var coalesceFlushers = 2

// coalesceMaxBatch bounds one pipeline.
const coalesceMaxBatch = 256

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
	q := &queued{ctx: ctx, cmd: cmd, at: time.Now(), done: make(chan struct{})}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		c.m.limiter.rejectedClosed.Add(1)
		cmd.SetErr(ErrClosed)
		return ErrClosed
	}
	c.queue = append(c.queue, q)
	c.ready.Signal()
	c.mu.Unlock()

	select {
	case <-q.done:
		if q.failed != nil {
			cmd.SetErr(q.failed)
			return q.failed
		}
		return cmd.Err()
	case <-ctx.Done():
	}
	c.mu.Lock()
	if !q.taken {
		c.removeLocked(q)
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
	<-q.done
	err := cmd.Err()
	if err == nil {
		err = ctx.Err()
		cmd.SetErr(err)
	}
	return err
}

func (c *coalescer) removeLocked(q *queued) {
	for i, x := range c.queue {
		if x == q {
			copy(c.queue[i:], c.queue[i+1:])
			c.queue[len(c.queue)-1] = nil
			c.queue = c.queue[:len(c.queue)-1]
			return
		}
	}
}

// queueLen is how many callers wait for their command to be sent.
func (c *coalescer) queueLen() (queued, flushersWaiting int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.queue), c.waiting
}

func (c *coalescer) flusher() {
	defer c.wg.Done()
	held := context.WithValue(c.ctx, heldKey{}, &permit{l: c.m.limiter})
	for {
		c.mu.Lock()
		for len(c.queue) == 0 && !c.closed {
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
		n := min(len(c.queue), c.maxBatch)
		batch := make([]*queued, n)
		copy(batch, c.queue[:n])
		for _, q := range batch {
			q.taken = true
		}
		rest := copy(c.queue, c.queue[n:])
		clear(c.queue[rest:])
		c.queue = c.queue[:rest]
		c.mu.Unlock()
		if n == 0 { // every queued caller gave up meanwhile
			c.m.limiter.release()
			continue
		}
		c.send(held, batch) // releases the permit
	}
}

// send runs one batch as a pipeline, releases the flusher's permit, and
// completes the commands: a caller whose command returned holds nothing.
func (c *coalescer) send(ctx context.Context, batch []*queued) {
	sent := time.Now()
	if c.m.tel != nil {
		ctx = c.m.tel.SkipOperationRecord(ctx)
	}
	// The pipeline's reads end at the latest deadline of its commands, so a
	// stalled server cannot hold a caller much past its own deadline; with
	// one command without deadline, the socket timeout bounds them.
	var latest time.Time
	for _, q := range batch {
		dl, ok := q.ctx.Deadline()
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
	pipe := c.m.client.Pipeline()
	for _, q := range batch {
		_ = pipe.Process(q.ctx, q.cmd)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		// A failure before any reply (no connection, a refused AUTH) is not
		// set on the commands by go-redis when it is a server error; do it.
		answered := false
		for _, q := range batch {
			if q.cmd.Err() != nil {
				answered = true
				break
			}
		}
		if !answered {
			for _, q := range batch {
				q.cmd.SetErr(err)
			}
		}
	}
	done := time.Now()
	c.m.limiter.release()
	for _, q := range batch {
		if c.m.tel != nil {
			c.m.tel.RecordCoalesced(q.ctx, q.cmd, q.at, sent, done, len(batch))
		}
		c.m.limiter.acquired.Add(1)
		close(q.done)
	}
}

// close stops the flushers and fails every queued command with ErrClosed.
func (c *coalescer) close() {
	c.mu.Lock()
	c.closed = true
	queue := c.queue
	c.queue = nil
	c.ready.Broadcast()
	c.mu.Unlock()
	c.cancel()
	for _, q := range queue {
		q.failed = ErrClosed
		c.m.limiter.rejectedClosed.Add(1)
		close(q.done)
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
