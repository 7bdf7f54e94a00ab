package conn

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redisconn/redisconn/telemetry"
)

// coalesceHook is the Worker's coalescing, as a go-redis hook: a single
// command that is safe to share a pipeline with other callers' commands
// (coalescable) is handed to the coalescer, which sends it together with the
// commands that other callers queued meanwhile. Everything else, pipelines
// included, goes on to next unchanged.
type coalesceHook struct{ c *coalescer }

func (h coalesceHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h coalesceHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if !coalescable(cmd) {
			return next(ctx, cmd)
		}
		return h.c.do(ctx, cmd)
	}
}

func (h coalesceHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// coalesceSendHook is the coalescing's inner half, right inside the limiter:
// when a coalesced round trip has its permit, it is sent, and from then on
// its callers wait for it. This hook marks that moment and drops the
// commands whose callers gave up before it (their commands are never sent).
// Other pipelines and all commands pass unchanged.
type coalesceSendHook struct{ c *coalescer }

func (h coalesceSendHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h coalesceSendHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (h coalesceSendHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		rt, ok := ctx.Value(roundTripKey{}).(*roundTrip)
		if !ok || !rt.carries(cmds) {
			return next(ctx, cmds)
		}
		send := rt.admit(h.c)
		if len(send) == 0 {
			return nil // every caller gave up
		}
		return next(ctx, send)
	}
}

// coalescer sends concurrent callers' single commands together: callers
// queue their command and a few flushers send what has queued as one
// pipeline, a round trip. Under load one round trip carries hundreds of
// commands, which is where Redis throughput comes from; a lone caller's
// command is a pipeline of one.
//
// What a caller can rely on:
//
//   - Its command is sent after the commands it issued before (a caller
//     waits for each command), in a round trip that holds one limiter permit.
//   - Its deadline holds: a round trip carries only commands whose deadlines
//     lie within deadlineSpread of each other (or commands without deadline,
//     which go-redis bounds by the socket timeout), and reads until the latest
//     of them. So a caller returns at most deadlineSpread after its own
//     deadline, plus scheduling delay, whatever else is waiting.
//   - Until its round trip has a permit and is sent, its context ending
//     returns ctx.Err() at once and the command is never sent. Once sent, the
//     caller waits for the round trip (go-redis writes the reply into the
//     command until it ends), which its deadline bounds as above.
//   - A command whose reply arrived keeps it: a round trip is never re-sent
//     whole. Of the commands without a reply, only those that were certainly
//     not run go again (see retryable), at most MaxRetries times: nothing was
//     written, or the server refused them (LOADING, ...). A command written in
//     a shared round trip whose reply was lost (a cut connection, a timeout)
//     gets the error, because Redis may have run it; a command alone in its
//     round trip is retried as go-redis retries a single command.
//   - Close fails queued commands with ErrClosed; round trips already sent
//     finish.
//
// A round trip is an ordinary pipeline of the Worker's client: go-redis hands
// a hook only the single-command chain, so the coalescer cannot reach the
// pipeline chain inside it directly. Its pipelines pass the closed check and
// coalesceHook's pipeline side untouched (pipelines are never coalesced),
// take their permit in the limiter, are admitted by coalesceSendHook, and go
// on through telemetry and the user's hooks, as any pipeline does. Until it
// is admitted, the pipeline carries queuedCmd stand-ins, so that the outer
// hooks' errors (closed, no permit) reach only callers still waiting.
type coalescer struct {
	client redis.UniversalClient
	// closed is the manager's: a round trip started after Close is refused
	// by the closed check, one started before by the limiter.
	closedManager *atomic.Bool
	maxBatch      int
	maxRetries    int

	mu     sync.Mutex
	ready  *sync.Cond
	open   []*generation // generations not taken yet, oldest first
	queued int           // commands queued and not cancelled
	// unsent callers wait in unsentTrips taken round trips for a permit.
	unsent, unsentTrips int
	// sent callers wait for the reply of their round trip, in flight.
	sent int
	// sizeHint is the size of the last generation taken: a new generation
	// starts with that capacity, so under steady load it never regrows.
	sizeHint int
	closed   bool

	// Callers refused before their command was sent, by reason; of them,
	// the callers of the refused* round trips that the limiter refused a
	// permit, and counted once each.
	rejectedContext, rejectedClose atomic.Int64
	refusedContext, refusedClose   atomic.Int64
	roundTrips, commands           atomic.Int64

	wg sync.WaitGroup
}

// generation is the commands that will be sent together. Its callers all wait
// on its one done channel, so a command costs no channel of its own and one
// close wakes the whole round trip's callers.
type generation struct {
	items []item
	live  int // items not cancelled
	// Deadlines: the round trip reads until hi; every item's deadline lies in
	// [lo, hi]. Without deadline, none of its items has one.
	hasDeadline bool
	lo, hi      time.Time
	taken       bool // a flusher took it (under mu); no item joins from then on
	sent        bool // its round trip was admitted (under mu); no caller leaves from then on
	// cancel ends its round trip's context (under mu): a round trip that
	// every caller gave up on stops waiting for its permit.
	cancel context.CancelFunc
	done   chan struct{}
	failed error // set before done is closed when it was never sent (ErrClosed)
}

type item struct {
	telemetry.Caller
	cmd       redis.Cmder
	cancelled bool // its caller gave up before its round trip was sent (under mu)
	stand     queuedCmd
}

// queuedCmd stands for a command in its round trip's pipeline until the
// round trip is admitted (coalesceSendHook): an error that an outer hook sets
// on the pipeline (closed, no permit) reaches the command only if its caller
// still waits, so a caller that gave up owns its command alone.
type queuedCmd struct {
	redis.Cmder
	c *coalescer
	g *generation
	i int
}

// SetErr sets err on the command unless its caller gave up.
func (q *queuedCmd) SetErr(err error) {
	q.c.mu.Lock()
	defer q.c.mu.Unlock()
	if !q.g.items[q.i].cancelled {
		q.Cmder.SetErr(err)
	}
}

// Coalescing parameters, chosen by measurement (make bench, BenchmarkCoalescing).
const (
	// coalesceFlushers is how many round trips of coalesced commands may be
	// in flight at once. At 100 callers 1/2/4/8 flushers gave 279k/278k/249k/
	// 160k RPUSH/s, at 5000 callers 412k/460k/498k/494k (2 cores): two are as
	// fast as one at 100 callers and close to the best at 5000, without
	// putting every coalesced command behind one slow round trip.
	coalesceFlushers = 2
	// coalesceMaxBatch bounds one round trip. Against AutoPipeline at 5000
	// callers, 512/768/1024 gave p99 0.96-0.98x/0.88-0.97x/1.02-1.07x:
	// fewer, larger round trips shorten the queue until one takes too long to
	// write and read.
	coalesceMaxBatch = 768
	// openGenerations is how many of the newest open generations a command
	// looks at for one whose deadlines match its own.
	openGenerations = 4
	// minDeadlineSpread is the least spread of deadlines within a round trip.
	minDeadlineSpread = 5 * time.Millisecond
)

// deadlineSpread is how far apart the deadlines of one round trip's commands
// may lie, for a command queued at now whose earliest deadline is dl: 10 %
// of the time left, at least minDeadlineSpread. A caller thus returns at
// most that long after its own deadline.
func deadlineSpread(now, dl time.Time) time.Duration {
	return max(dl.Sub(now)/10, minDeadlineSpread)
}

func newCoalescer(client redis.UniversalClient, closed *atomic.Bool, flushers, maxRetries int) *coalescer {
	c := &coalescer{client: client, closedManager: closed, maxBatch: coalesceMaxBatch, maxRetries: maxRetries}
	c.ready = sync.NewCond(&c.mu)
	c.wg.Add(flushers)
	for i := 0; i < flushers; i++ {
		go c.flusher()
	}
	return c
}

// do queues cmd and waits until it completed, ctx ended while it was queued,
// or the Worker closed.
func (c *coalescer) do(ctx context.Context, cmd redis.Cmder) error {
	if err := ctx.Err(); err != nil {
		// go-redis returns the context's error before it sends anything.
		c.rejectedContext.Add(1)
		cmd.SetErr(err)
		return err
	}
	now := time.Now()
	dl, hasDeadline := ctx.Deadline()
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		c.rejectedClose.Add(1)
		cmd.SetErr(ErrClosed)
		return ErrClosed
	}
	g := c.joinLocked(now, dl, hasDeadline)
	i := len(g.items)
	g.items = append(g.items, item{Caller: telemetry.Caller{Ctx: ctx, Queued: now}, cmd: cmd})
	g.live++
	c.queued++
	c.ready.Signal()
	c.mu.Unlock()

	select {
	case <-g.done:
		return c.result(g, cmd)
	case <-ctx.Done():
	}
	c.mu.Lock()
	if !g.sent {
		g.items[i].cancelled = true
		g.live--
		if g.taken {
			c.unsent--
			if g.live == 0 && g.cancel != nil {
				g.cancel()
			}
		} else {
			c.queued--
		}
		c.mu.Unlock()
		c.rejectedContext.Add(1)
		err := ctx.Err()
		cmd.SetErr(err)
		return err
	}
	c.mu.Unlock()
	// Sent: go-redis may still write the reply into cmd. The round trip
	// reads until the latest deadline of its commands, close to this one.
	<-g.done
	return c.result(g, cmd)
}

func (c *coalescer) result(g *generation, cmd redis.Cmder) error {
	if g.failed != nil {
		cmd.SetErr(g.failed)
		return g.failed
	}
	return cmd.Err()
}

// joinLocked returns the open generation a command with deadline dl (if
// hasDeadline) joins, opening a new one when none of the newest fits.
func (c *coalescer) joinLocked(now, dl time.Time, hasDeadline bool) *generation {
	for k := len(c.open) - 1; k >= max(len(c.open)-openGenerations, 0); k-- {
		g := c.open[k]
		if len(g.items) >= c.maxBatch || g.hasDeadline != hasDeadline {
			continue
		}
		if !hasDeadline {
			return g
		}
		lo, hi := g.lo, g.hi
		if dl.Before(lo) {
			lo = dl
		}
		if dl.After(hi) {
			hi = dl
		}
		if hi.Sub(lo) <= deadlineSpread(now, lo) {
			g.lo, g.hi = lo, hi
			return g
		}
	}
	g := &generation{
		done:        make(chan struct{}),
		items:       make([]item, 0, max(c.sizeHint, 4)),
		hasDeadline: hasDeadline, lo: dl, hi: dl,
	}
	c.open = append(c.open, g)
	return g
}

// take removes and returns the oldest generation, waiting for one; nil
// after close.
func (c *coalescer) take() *generation {
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		for len(c.open) == 0 && !c.closed {
			c.ready.Wait()
		}
		if c.closed {
			return nil
		}
		g := c.open[0]
		c.open[0] = nil
		c.open = c.open[1:]
		g.taken = true
		c.queued -= g.live
		c.sizeHint = len(g.items)
		if g.live > 0 {
			c.unsent += g.live
			c.unsentTrips++
			return g
		}
		g.sent = true
		close(g.done) // every caller gave up
	}
}

func (c *coalescer) flusher() {
	defer c.wg.Done()
	var rt roundTrip
	for {
		g := c.take()
		if g == nil {
			return
		}
		rt.send(c, g)
		close(g.done)
	}
}

// roundTrip is a flusher's buffers for the commands of one generation, and
// what the hooks inside learn of it from its context: coalesceSendHook
// admits it, telemetry reads desc.
type roundTrip struct {
	g       *generation
	pipe    []redis.Cmder // what the flusher hands the pipeline: stand-ins, then the commands
	idx     []int         // the items of cmds
	cmds    []redis.Cmder
	callers []telemetry.Caller
	wire    []redis.Cmder // what goes on from coalesceSendHook
	desc    telemetry.RoundTrip
}

// carries reports whether cmds is this round trip's pipeline (and not, say,
// the set-up of a connection it needed, which runs in its context).
func (rt *roundTrip) carries(cmds []redis.Cmder) bool {
	return len(cmds) > 0 && len(cmds) == len(rt.pipe) && cmds[0] == rt.pipe[0]
}

// admit marks the round trip sent, drops the commands whose callers gave up
// (the first time), and returns what goes to Redis: go-redis's own retries
// off, since go-redis would send a failed pipeline again whole, answered
// commands included (its retries are decided per pipeline, and one command
// that refuses retries turns them off for all).
func (rt *roundTrip) admit(c *coalescer) []redis.Cmder {
	g := rt.g
	c.mu.Lock()
	if !g.sent {
		g.sent = true
		c.unsent -= g.live
		c.unsentTrips--
		c.sent += g.live
		n := 0
		for k, i := range rt.idx {
			if !g.items[i].cancelled {
				rt.idx[n], rt.cmds[n], rt.callers[n] = i, rt.cmds[k], rt.callers[k]
				n++
			}
		}
		clear(rt.cmds[n:])
		clear(rt.callers[n:])
		rt.idx, rt.cmds, rt.callers = rt.idx[:n], rt.cmds[:n], rt.callers[:n]
	}
	c.mu.Unlock()
	rt.wire = append(rt.wire[:0], rt.cmds...)
	if len(rt.wire) > 0 {
		rt.wire[0] = noRetry{rt.wire[0]}
	}
	rt.desc.Callers, rt.desc.Cmds = rt.callers, rt.wire
	return rt.wire
}

// send sends the generation's live commands, and sends again those that got
// no reply where that is safe (see coalescer).
func (rt *roundTrip) send(c *coalescer, g *generation) {
	rt.g = g
	rt.pipe, rt.idx, rt.cmds, rt.callers = rt.pipe[:0], rt.idx[:0], rt.cmds[:0], rt.callers[:0]
	var (
		ctx    context.Context
		cancel context.CancelFunc
	)
	if g.hasDeadline {
		ctx, cancel = context.WithDeadline(context.Background(), g.hi)
	} else {
		ctx, cancel = context.WithCancel(context.Background())
	}
	defer cancel()
	c.mu.Lock()
	for i := range g.items {
		if it := &g.items[i]; !it.cancelled {
			it.stand = queuedCmd{Cmder: it.cmd, c: c, g: g, i: i}
			rt.pipe = append(rt.pipe, &it.stand)
			rt.idx = append(rt.idx, i)
			rt.cmds = append(rt.cmds, it.cmd)
			rt.callers = append(rt.callers, it.Caller)
		}
	}
	g.cancel = cancel
	if g.live == 0 {
		cancel()
	}
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		if g.sent {
			c.sent -= g.live
		}
		c.mu.Unlock()
		clear(rt.pipe)
		clear(rt.cmds)
		clear(rt.callers)
		clear(rt.wire)
		rt.g = nil
	}()
	if len(rt.pipe) == 0 {
		rt.settle(c, nil, false)
		return
	}
	ctx = withRoundTrip(ctx, rt)
	for attempt := 0; ; attempt++ {
		closedBefore := c.closedManager.Load()
		err := rt.exec(ctx, c.client)
		if rt.settle(c, err, !closedBefore) {
			return
		}
		c.roundTrips.Add(1)
		c.commands.Add(int64(len(rt.cmds)))
		if err == nil || attempt >= c.maxRetries {
			return
		}
		// Keep the commands that got no reply and may go again.
		n, alone := 0, len(rt.cmds) == 1
		for i, cmd := range rt.cmds {
			if e := cmd.Err(); !answered(e) && retryable(cmd, e, alone) && rt.callers[i].Ctx.Err() == nil {
				rt.cmds[n], rt.callers[n] = cmd, rt.callers[i]
				n++
			}
		}
		clear(rt.cmds[n:])
		clear(rt.callers[n:])
		rt.cmds, rt.callers = rt.cmds[:n], rt.callers[:n]
		if n == 0 || !sleepBackoff(ctx, attempt) {
			return
		}
		rt.pipe = append(rt.pipe[:0], rt.cmds...)
	}
}

// settle accounts for a round trip that was never admitted (the limiter
// refused it a permit, or the Worker closed) and reports whether that was so:
// its remaining callers have the error already (through their stand-ins).
// viaLimiter says that a refusal came from the limiter, which counted it.
func (rt *roundTrip) settle(c *coalescer, err error, viaLimiter bool) bool {
	g := rt.g
	c.mu.Lock()
	if g.sent {
		c.mu.Unlock()
		return false
	}
	g.sent = true
	n := int64(g.live)
	c.unsent -= g.live
	c.unsentTrips--
	c.sent += g.live // what send's deferred accounting takes off again
	c.mu.Unlock()
	// Its callers count as refused, not the round trip.
	switch {
	case err == nil:
	case errors.Is(err, ErrClosed):
		c.rejectedClose.Add(n)
		if viaLimiter {
			c.refusedClose.Add(1)
		}
	default: // the limiter: the context ended
		c.rejectedContext.Add(n)
		c.refusedContext.Add(1)
	}
	return true
}

// exec sends rt.pipe as one pipeline of the Worker's client.
func (rt *roundTrip) exec(ctx context.Context, client redis.UniversalClient) error {
	pipe := client.Pipeline()
	for _, cmd := range rt.pipe {
		_ = pipe.Process(ctx, cmd)
	}
	_, err := pipe.Exec(ctx)
	if err == nil || err == redis.Nil || !rt.g.sent {
		return err
	}
	// A failure before any reply that is a server error (a refused AUTH while
	// setting up the connection) is not set on the commands by go-redis.
	for _, cmd := range rt.cmds {
		if cmd.Err() != nil {
			return err
		}
	}
	for _, cmd := range rt.cmds {
		cmd.SetErr(err)
	}
	return err
}

// answered reports whether a command's outcome is its reply: success, a nil
// reply, or a server error other than a refusal that go-redis retries (the
// server did not run the command).
func answered(err error) bool {
	return err == nil || err == redis.Nil || (isServerError(err) && !retryableRefusal(err))
}

// retryable reports whether a command that failed with err and has no reply
// may be sent again. Never a command that must not be sent twice (a batch
// chunk: its batch sends it again, only when nothing was written). Always
// when nothing was written: the connection could not be had or set up, or
// the server replied that it did not run the command (LOADING, READONLY,
// ...). A command written without a reply coming back may have been applied
// by Redis: alone in its round trip, it goes again where go-redis would
// send a single command again (network errors, timeouts); sharing a round
// trip it does not, because the replies lost with the connection may be
// those of commands Redis had already run (a server that closes a connection
// on a bad command answers the commands before it, and a connection cut
// while the round trip was written loses all their replies).
func retryable(cmd redis.Cmder, err error, alone bool) bool {
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, ErrClosed), errors.Is(err, redis.ErrClosed):
		return false
	case cmd.NoRetry():
		return false
	case notConnected(err), errors.Is(err, redis.ErrPoolTimeout), retryableRefusal(err):
		return true
	case !alone:
		return false
	}
	var ne net.Error
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		(errors.As(err, &ne) && ne.Timeout())
}

// retryableRefusal: server replies that say the command was not run, which
// go-redis retries (LOADING, READONLY, MASTERDOWN, CLUSTERDOWN, TRYAGAIN,
// NOREPLICAS, max number of clients).
func retryableRefusal(err error) bool {
	if !isServerError(err) {
		return false
	}
	s := err.Error()
	for _, p := range []string{"LOADING ", "READONLY ", "MASTERDOWN ", "CLUSTERDOWN ", "TRYAGAIN ", "NOREPLICAS ", "ERR max number of clients reached"} {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// sleepBackoff waits before retry attempt+1 (8 ms doubling to 512 ms, as
// go-redis's defaults, with jitter so refused callers do not return in
// step); false if ctx ended.
func sleepBackoff(ctx context.Context, attempt int) bool {
	d := min(retryBackoffMin<<attempt, retryBackoffMax)
	d = d/2 + rand.N(d/2+1)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Retries mirror go-redis's defaults for single commands (MaxRetries 3,
// backoff from 8 ms to 512 ms).
const (
	defaultMaxRetries = 3
	retryBackoffMin   = 8 * time.Millisecond
	retryBackoffMax   = 512 * time.Millisecond
)

// close stops the flushers and fails every queued command with ErrClosed.
func (c *coalescer) close() {
	c.mu.Lock()
	c.closed = true
	gens := c.open
	c.open = nil
	queued := c.queued
	c.queued = 0
	for _, g := range gens {
		g.taken = true // nobody cancels into it any more
	}
	c.ready.Broadcast()
	c.mu.Unlock()
	c.rejectedClose.Add(int64(queued))
	for _, g := range gens {
		g.failed = ErrClosed
		close(g.done)
	}
	c.wg.Wait()
}

// coalescerCounts is what ConnectionInfo and the metrics read.
type coalescerCounts struct {
	queued, unsent, unsentTrips    int64
	sent                           int64
	rejectedContext, rejectedClose int64
	refusedContext, refusedClose   int64
	roundTrips, commands           int64
}

func (c *coalescer) counts() coalescerCounts {
	c.mu.Lock()
	queued, unsent, trips, sent := int64(c.queued), int64(c.unsent), int64(c.unsentTrips), int64(c.sent)
	c.mu.Unlock()
	return coalescerCounts{
		queued: queued, unsent: unsent, unsentTrips: trips, sent: sent,
		rejectedContext: c.rejectedContext.Load(), rejectedClose: c.rejectedClose.Load(),
		refusedContext: c.refusedContext.Load(), refusedClose: c.refusedClose.Load(),
		roundTrips: c.roundTrips.Load(), commands: c.commands.Load(),
	}
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
