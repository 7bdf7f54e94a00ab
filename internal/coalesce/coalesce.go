// Package coalesce sends concurrent callers' single commands to Redis
// together, in shared round trips, in the manner of rueidis's pipe: each
// caller hands its command over and waits for its own result, a few
// flushers send what has queued as one pipeline, and a command that may have
// been written is never written again.
package coalesce

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redisconn/redisconn/internal/rediserr"
)

// Limiter hands out the permits that bound the round trips in flight. A
// round trip holds one permit from before it is written until its replies
// are read.
type Limiter interface {
	// Acquire waits for a permit. Only a nil error means one is held; the
	// error is ctx.Err() when ctx ended first.
	Acquire(ctx context.Context) (waited time.Duration, err error)
	// Release returns a permit.
	Release()
}

// Config is what a Coalescer is given.
type Config struct {
	// Send sends cmds as one pipeline, one round trip, and returns the
	// pipeline's error. The coalescer hands it the commands with go-redis's
	// retries off (NoRetry), and a context whose deadline is the latest of
	// the callers' deadlines, or none.
	Send func(ctx context.Context, cmds []redis.Cmder) error
	// Limiter bounds the round trips in flight. A caller waiting for its
	// round trip's permit is counted by the coalescer, not by the limiter.
	Limiter Limiter
	// Flushers is how many round trips may be in flight at once (at least 1).
	Flushers int
	// MaxBatch bounds the commands of one round trip (at least 1).
	MaxBatch int
	// MaxRetries bounds how often a command that was not run goes again.
	MaxRetries int
	// AloneOver: a caller whose commands' arguments add up to more bytes
	// than this gets a round trip of its own (0: never). A large value takes
	// long to write and is what a server refuses (proto-max-bulk-len) by
	// closing the connection: alone, it neither delays nor takes down the
	// small commands of other callers.
	AloneOver int
	// Closed is the error of callers refused because the coalescer closed.
	Closed error
	// Mark, when not nil, is asked once per call of Do or DoAll, in the
	// caller's goroutine, whether the caller is one that the hooks of Send's
	// client want to find among a round trip's commands (the Worker's
	// telemetry: a caller in a sampled trace). A round trip counts its
	// marked callers (RoundTripOf), so that hooks need not read the
	// commands of a round trip without one.
	Mark func(ctx context.Context) bool
}

// Coalescer sends concurrent callers' single commands together. Its whole
// contract, to each caller of Do:
//
//   - Its command goes in a round trip after every command it handed over
//     before (Do returns only when the command is done), with commands of
//     other callers unless its arguments are larger than AloneOver. A round
//     trip is one pipeline and holds one limiter permit; it carries at most
//     MaxBatch commands, and at most Flushers round trips are in flight.
//   - Its deadline holds. A round trip carries only commands whose deadlines
//     lie within max(MinDeadlineSpread, 10 % of the time left) of each
//     other, or only commands without a deadline, and reads until the
//     latest of them. So Do returns at most that spread after the caller's
//     deadline (plus scheduling), whatever else is queued.
//   - Until its round trip holds a permit, a caller whose context ends
//     leaves at once with ctx.Err(), and its command is never sent.
//   - A reply that was read is the caller's, even when the connection fails
//     later in the same round trip.
//   - A command that may have been written is never sent again: it gets the
//     failure (Uncertain). A command that certainly was not run goes again,
//     at most MaxRetries times with go-redis's backoff, where go-redis would
//     send a single command again: the server refused it (LOADING,
//     READONLY, ...), or no connection could be had or set up. It goes in a
//     round trip of its own, which its caller may leave, as above, until
//     that round trip holds a permit. A caller's several commands go again
//     only from the first that was not run, and only if none after it ran.
//   - After Close, Do fails at once with Config.Closed; so does every caller
//     whose command was not written yet, a round trip still waiting for a
//     connection included. Round trips on the wire end when their
//     connection does: close the client after the coalescer, then Wait.
//
// Do reports the command's Outcome next to its error, for callers (batch
// operations) that must say what was written.
//
// The coalescer owns its queue, its flushers and its counters; nothing
// outside this package writes them.
type Coalescer struct {
	cfg Config
	// base is the parent of every round trip's context; Close ends it.
	base     context.Context
	stopBase context.CancelFunc

	mu     sync.Mutex
	open   []*generation // not taken yet, oldest first
	closed bool
	// running is how many flushers run. A flusher starts when a command is
	// queued and none runs, another (up to Flushers) when a backlog builds
	// (backlogLocked); each stops when nothing is queued, so an idle
	// coalescer has no goroutine, or when it is more than the backlog wants
	// (surplusLocked).
	running int
	// lastTake is when a flusher last took a generation.
	lastTake time.Time
	// queuedArgs are the arguments of the commands queued (not taken).
	queuedArgs int
	// sizeHint is the size of the last generation taken: a new one without
	// a spare array starts with that capacity.
	sizeHint int
	// spare holds the item arrays of generations whose callers have all
	// read their outcomes (doneReading), for new generations: under steady
	// load a command costs no allocation of its own here, and the garbage
	// collector has that much less to do.
	spare sync.Pool // of *[]item
	// roundTrips holds the buffers of flushers that stopped, for the next
	// to start: flushers come and go with the backlog.
	roundTrips sync.Pool // of *roundTrip
	counts     Counts
	calls      uint64 // calls of DoAll so far: Caller.Call

	wg sync.WaitGroup
}

// Counts are the coalescer's numbers, about callers and round trips. A
// caller is one call of Do or DoAll, however many commands it hands over:
// a batch chunk of 50 commands is one caller, as it is one caller of the
// limiter when it is not coalesced.
type Counts struct {
	// Queued callers wait for a flusher; Unsent callers, for their round
	// trip's permit; Sent callers, for their round trip's replies.
	Queued, Unsent, Sent int64
	// Callers that got an error before their commands (or the rest of
	// them, after some were answered) were written, by reason: their
	// context ended, or the coalescer closed.
	RejectedContext, RejectedClosed int64
	// Round trips sent, and the commands they carried.
	RoundTrips, Commands int64
}

// generation is the commands that will be sent together. Its callers all
// wait on its one done channel, so a command costs no channel of its own
// and one close wakes the whole round trip's callers.
type generation struct {
	items []item
	live  int // callers whose commands are here and who still wait
	args  int // their arguments, while the generation is queued
	// Deadlines: every item's deadline lies in [lo, hi]; the round trip
	// reads until hi. Without deadline, none of its items has one.
	hasDeadline bool
	lo, hi      time.Time
	alone       bool // one caller's large commands; no item joins
	taken       bool // a flusher took it; no item joins from then on
	// decided: its round trip holds a permit, or it failed before that; no
	// caller leaves from then on.
	decided bool
	// cancel ends the round trip's context: when every caller left, its
	// wait for a permit ends.
	cancel context.CancelFunc
	done   chan struct{}
	// read counts the callers that have read their outcomes after done
	// closed; the last of the live ones gives items back (doneReading).
	read atomic.Int32
}

// A command that goes again moves to a new generation of its own round
// trip (requeue), so that the callers whose commands were answered return
// at once, and those waiting for the retry may leave while it backs off.

type item struct {
	wire    wireCmd
	left    bool // its caller left before the round trip had its permit
	outcome Outcome
	// moved is the generation the command went to, at movedTo, to be sent
	// again (it was not run); nil when its outcome is final here.
	moved   *generation
	movedTo int
}

// MinDeadlineSpread is the least spread of deadlines within a round trip.
const MinDeadlineSpread = 5 * time.Millisecond

// openGenerations is how many of the newest open generations a command
// looks at for one whose deadlines match its own.
const openGenerations = 4

// deadlineSpread is how far apart the deadlines of one round trip's
// commands may lie, for a command queued at now whose earliest deadline is
// dl: 10 % of the time left, at least MinDeadlineSpread.
func deadlineSpread(now, dl time.Time) time.Duration {
	return max(dl.Sub(now)/10, MinDeadlineSpread)
}

// New returns a coalescer. Its flushers start when commands are queued.
func New(cfg Config) *Coalescer {
	cfg.Flushers = max(cfg.Flushers, 1)
	cfg.MaxBatch = max(cfg.MaxBatch, 1)
	c := &Coalescer{cfg: cfg}
	c.base, c.stopBase = context.WithCancel(context.Background())
	return c
}

// Do queues cmd and waits until it is done, or ctx ended before its round
// trip held a permit, or the coalescer closed. It returns the command's
// error (also set on cmd) and what became of it on the wire.
func (c *Coalescer) Do(ctx context.Context, cmd redis.Cmder) (Outcome, error) {
	var outcome [1]Outcome
	err := c.DoAll(ctx, []redis.Cmder{cmd}, outcome[:])
	return outcome[0], err
}

// DoAll is Do for several commands of one caller: they go in one round trip,
// in order, and outcomes[i] (len(outcomes) >= len(cmds)) says what became of
// cmds[i]. It returns the first command's error that is not nil, as a
// go-redis pipeline does.
func (c *Coalescer) DoAll(ctx context.Context, cmds []redis.Cmder, outcomes []Outcome) error {
	// In two steps, so that a waiting caller's stack holds only wait's
	// frame: a garbage collection scans the stacks of every waiting caller.
	g, first, err := c.queue(ctx, cmds, outcomes)
	if g == nil {
		return err
	}
	return c.wait(ctx, g, first, cmds, outcomes[:len(cmds)])
}

// queue hands cmds over: it adds them to the generation they join and
// starts a flusher when one is wanted. It returns that generation and where
// in it cmds start; no generation when cmds are none (nil error) or refused
// (the error says why, and is set on cmds): ctx ended, or the coalescer
// closed.
func (c *Coalescer) queue(ctx context.Context, cmds []redis.Cmder, outcomes []Outcome) (*generation, int, error) {
	if len(cmds) == 0 {
		return nil, 0, nil
	}
	if err := ctx.Err(); err != nil {
		// go-redis returns the context's error before it sends anything.
		return nil, 0, c.refuse(cmds, outcomes, err, &c.counts.RejectedContext)
	}
	now := time.Now()
	dl, hasDeadline := ctx.Deadline()
	marked := c.cfg.Mark != nil && c.cfg.Mark(ctx)
	// What is known of cmds alone, before the lock that every caller takes.
	alone := c.cfg.AloneOver > 0 && argBytesOver(cmds, c.cfg.AloneOver)
	args := argCount(cmds)
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, 0, c.refuse(cmds, outcomes, c.cfg.Closed, &c.counts.RejectedClosed)
	}
	var g *generation
	if alone {
		g = c.openLocked(dl, hasDeadline, len(cmds))
		g.alone = true
	} else {
		g = c.joinLocked(now, dl, hasDeadline, len(cmds))
	}
	first := len(g.items)
	c.calls++
	caller := Caller{Ctx: ctx, Queued: now, Call: c.calls, Marked: marked}
	for _, cmd := range cmds {
		g.items = append(g.items, item{wire: wireCmd{Cmder: cmd, caller: caller}})
	}
	g.live++
	c.counts.Queued++
	g.args += args
	c.queuedArgs += args
	if c.running == 0 || (c.running < c.cfg.Flushers && c.backlogLocked(now)) {
		if c.running == 0 {
			c.lastTake = now // the new flusher is about to take
		}
		c.running++
		c.wg.Add(1)
		go c.flusher()
	}
	c.mu.Unlock()
	return g, first, nil
}

// wait waits for the caller's commands, cmds, at g.items[first:] (and, for
// those sent again, in the generations they moved to), and fills outcomes.
// While a generation's round trip does not hold a permit (queued, waiting
// for one, or backing off before a retry), the caller leaves when ctx ends.
func (c *Coalescer) wait(ctx context.Context, g *generation, first int, cmds []redis.Cmder, outcomes []Outcome) error {
	var firstErr error
	done := ctx.Done()
	for len(cmds) > 0 {
		if done == nil {
			// A context that never ends (context.Background): nothing to
			// select, and a plain receive costs less.
			<-g.done
		} else {
			select {
			case <-g.done:
			case <-done:
				if c.leave(g, first, len(cmds)) {
					err := ctx.Err()
					for i, cmd := range cmds {
						cmd.SetErr(err)
						outcomes[i] = Unsent
					}
					if firstErr == nil {
						firstErr = err
					}
					return firstErr
				}
				// Its round trip holds a permit: go-redis may still write
				// the replies into the commands. The round trip reads until
				// the latest deadline of its commands, close to this one.
				<-g.done
			}
		}
		// The commands answered here; the rest (a suffix) moved on together.
		k := 0
		for ; k < len(cmds); k++ {
			it := &g.items[first+k]
			if it.moved != nil {
				break
			}
			outcomes[k] = it.outcome
			if err := it.wire.Cmder.Err(); err != nil && firstErr == nil {
				firstErr = err
			}
		}
		var moved *generation
		if k < len(cmds) {
			it := &g.items[first+k]
			moved, first = it.moved, it.movedTo
		}
		c.doneReading(g)
		g, cmds, outcomes = moved, cmds[k:], outcomes[k:]
	}
	return firstErr
}

// doneReading is called by each caller that waited for g once it has read
// its outcomes, after g.done closed; the last of them gives g's items to
// new generations. No one else reads them then: the flusher is done with g
// before it closes g.done, and g.live is final once g is decided, which it
// is before g.done closes.
func (c *Coalescer) doneReading(g *generation) {
	if int(g.read.Add(1)) < g.live {
		return
	}
	items := g.items
	clear(items)
	items = items[:0]
	g.items = nil
	c.spare.Put(&items)
}

// leave takes a caller's n items of g from first on out of their round
// trip when it does not hold a permit, and counts the caller refused; false
// when it does.
func (c *Coalescer) leave(g *generation, first, n int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if g.decided {
		return false
	}
	for i := first; i < first+n; i++ {
		g.items[i].left = true
	}
	g.live--
	if g.taken {
		c.counts.Unsent--
		if g.live == 0 {
			g.cancel()
		}
	} else {
		c.counts.Queued--
		var args int
		for i := first; i < first+n; i++ {
			args += len(g.items[i].wire.Args())
		}
		g.args -= args
		c.queuedArgs -= args
	}
	c.counts.RejectedContext++
	return true
}

func (c *Coalescer) refuse(cmds []redis.Cmder, outcomes []Outcome, err error, counter *int64) error {
	c.mu.Lock()
	*counter++
	c.mu.Unlock()
	for i, cmd := range cmds {
		cmd.SetErr(err)
		outcomes[i] = Unsent
	}
	return err
}

// argCount is how many arguments cmds have in all.
func argCount(cmds []redis.Cmder) int {
	n := 0
	for _, cmd := range cmds {
		n += len(cmd.Args())
	}
	return n
}

// Flushers beyond the first run only while a backlog wants them: one
// flusher sends larger round trips, which costs less per command (100
// callers on 2 cores: 10-13 % more commands a second, 15 % less CPU each,
// than with a second flusher always at hand), while a backlog of many
// callers wants more round trips in flight, one more for every backlogArgs
// arguments queued (5000 callers: 10 % more with two than one, 5-10 % more
// with four than two), and a round trip that takes long (a stalled server)
// wants another beside it.
const (
	// backlogArgs: commands queued with this many arguments in all make a
	// backlog for one more flusher (a single RPUSH has 3, a batch chunk of
	// 50 items 52).
	backlogArgs = 1024
	// slowRoundTrip: a flusher that took its generation longer ago than this
	// is held up by a slow round trip.
	slowRoundTrip = 5 * time.Millisecond
)

// wantedLocked is how many flushers the commands queued want: one, and one
// more for every backlogArgs arguments.
func (c *Coalescer) wantedLocked() int {
	return 1 + c.queuedArgs/backlogArgs
}

// backlogLocked reports whether the commands queued at now want another
// flusher beside the running ones.
func (c *Coalescer) backlogLocked(now time.Time) bool {
	return c.running < c.wantedLocked() || now.Sub(c.lastTake) > slowRoundTrip
}

// surplusLocked reports whether a flusher about to take a generation is
// one more than the backlog wants; the others take what is queued.
func (c *Coalescer) surplusLocked() bool {
	return c.running > c.wantedLocked()
}

// joinLocked returns the open generation that n commands with deadline dl
// (if hasDeadline) join, opening a new one when none of the newest fits. A
// caller's n commands may exceed MaxBatch only in a generation of their own.
func (c *Coalescer) joinLocked(now, dl time.Time, hasDeadline bool, n int) *generation {
	for k := len(c.open) - 1; k >= max(len(c.open)-openGenerations, 0); k-- {
		g := c.open[k]
		if g.alone || len(g.items)+n > c.cfg.MaxBatch || g.hasDeadline != hasDeadline {
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
	return c.openLocked(dl, hasDeadline, n)
}

// openLocked opens a new generation for n commands with deadline dl.
func (c *Coalescer) openLocked(dl time.Time, hasDeadline bool, n int) *generation {
	var items []item
	if spare, _ := c.spare.Get().(*[]item); spare != nil {
		items = *spare
	}
	if cap(items) < n {
		items = make([]item, 0, max(c.sizeHint, n, 4))
	}
	g := &generation{
		done:        make(chan struct{}),
		items:       items,
		hasDeadline: hasDeadline, lo: dl, hi: dl,
	}
	c.open = append(c.open, g)
	return g
}

// argBytesOver reports whether the arguments of cmds add up to more than
// limit bytes (a number counts 8).
func argBytesOver(cmds []redis.Cmder, limit int) bool {
	n := 0
	for _, cmd := range cmds {
		for _, a := range cmd.Args() {
			switch v := a.(type) {
			case string:
				n += len(v)
			case []byte:
				n += len(v)
			default:
				n += 8
			}
			if n > limit {
				return true
			}
		}
	}
	return false
}

// take removes and returns the oldest generation that has callers, with its
// round trip's context; nil when nothing is queued or the coalescer closed,
// and then the flusher stops.
func (c *Coalescer) take() (*generation, context.Context) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		if len(c.open) == 0 || c.closed || c.surplusLocked() {
			c.running--
			return nil, nil
		}
		g := c.open[0]
		c.open[0] = nil
		c.open = c.open[1:]
		g.taken = true
		c.counts.Queued -= int64(g.live)
		c.queuedArgs -= g.args
		c.sizeHint = len(g.items)
		c.lastTake = time.Now()
		if g.live == 0 {
			g.decided = true
			close(g.done) // every caller left
			continue
		}
		c.counts.Unsent += int64(g.live)
		var ctx context.Context
		if g.hasDeadline {
			ctx, g.cancel = context.WithDeadline(c.base, g.hi)
		} else {
			ctx, g.cancel = context.WithCancel(c.base)
		}
		return g, ctx
	}
}

func (c *Coalescer) flusher() {
	defer c.wg.Done()
	rt, _ := c.roundTrips.Get().(*roundTrip)
	if rt == nil {
		rt = new(roundTrip)
	}
	defer c.roundTrips.Put(rt)
	for {
		g, ctx := c.take()
		if g == nil {
			return
		}
		for attempt := 0; g != nil; attempt++ {
			next, nextCtx := rt.run(ctx, c, g, attempt)
			g.cancel()
			close(g.done)
			if next != nil && !Backoff(nextCtx, attempt) {
				// Every caller left, the latest deadline passed, or Close.
				c.fail(next, nextCtx.Err())
				next.cancel()
				close(next.done)
				next = nil
			}
			g, ctx = next, nextCtx
		}
	}
}

// roundTrip is a flusher's buffer of the commands it sends.
type roundTrip struct {
	wire []redis.Cmder // the *wireCmd of the items sent
	idx  []int         // their items
	info RoundTrip     // of the round trip being sent
}

// run sends the live commands of g as one round trip. It returns the
// generation of the commands to send again (they were not run; see
// Coalescer), already taken, with its context; nil when there are none.
func (rt *roundTrip) run(ctx context.Context, c *Coalescer, g *generation, attempt int) (*generation, context.Context) {
	defer func() {
		clear(rt.wire)
		rt.wire, rt.idx = rt.wire[:0], rt.idx[:0]
	}()
	if _, err := c.cfg.Limiter.Acquire(ctx); err != nil {
		c.fail(g, err)
		return nil, nil
	}
	if !c.admit(g, rt) {
		c.cfg.Limiter.Release()
		return nil, nil // every caller left
	}
	// Close ends the round trip's context: a round trip still waiting for a
	// connection or dialing one stops at once (finish then gives its callers
	// Closed); one on the wire ends when Close closes its connection.
	err := c.cfg.Send(ctx, rt.wire)
	c.cfg.Limiter.Release()
	for k := range rt.wire {
		it := &g.items[rt.idx[k]]
		it.outcome = it.wire.outcome(err)
	}
	next, nextCtx := c.requeue(g, rt, attempt)
	c.finish(g, next)
	return next, nextCtx
}

// requeue moves the commands of g that may go again to a new generation:
// of each caller, the commands from its first one that was not run on,
// when none of those ran (a caller's commands keep their order), and at
// most MaxRetries times. It returns that generation, taken, with its
// context; finish counts its callers. Until g.done is closed no one else
// reads g's items, and no one knows the new generation.
func (c *Coalescer) requeue(g *generation, rt *roundTrip, attempt int) (*generation, context.Context) {
	if attempt >= c.cfg.MaxRetries {
		return nil, nil
	}
	var again []int // items of g that go again
	callers := 0    // whose they are
	for k := 0; k < len(rt.idx); {
		call := g.items[rt.idx[k]].wire.caller.Call
		end := k + 1
		for end < len(rt.idx) && g.items[rt.idx[end]].wire.caller.Call == call {
			end++
		}
		from := k
		for from < end && g.items[rt.idx[from]].outcome != Unsent {
			from++
		}
		all := from < end
		for j := from; j < end && all; j++ {
			it := &g.items[rt.idx[j]]
			all = it.outcome == Unsent && rediserr.Resendable(it.wire.Cmder.Err())
		}
		if all {
			again = append(again, rt.idx[from:end]...)
			callers++
		}
		k = end
	}
	if len(again) == 0 {
		return nil, nil
	}
	next := &generation{
		done:        make(chan struct{}),
		items:       make([]item, 0, len(again)),
		hasDeadline: g.hasDeadline, lo: g.lo, hi: g.hi,
		taken: true,
	}
	var ctx context.Context
	if next.hasDeadline {
		ctx, next.cancel = context.WithDeadline(c.base, next.hi)
	} else {
		ctx, next.cancel = context.WithCancel(c.base)
	}
	for _, i := range again {
		it := &g.items[i]
		next.items = append(next.items, item{wire: it.wire})
		next.items[len(next.items)-1].wire.again()
		it.moved, it.movedTo = next, len(next.items)-1
	}
	next.live = callers
	return next, ctx
}

// admit marks g decided once its round trip holds a permit, and puts the
// commands whose callers still wait in rt, with what rt.info says of them;
// false when none does.
func (c *Coalescer) admit(g *generation, rt *roundTrip) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	g.decided = true
	c.counts.Unsent -= int64(g.live)
	c.counts.Sent += int64(g.live)
	rt.info = RoundTrip{}
	var last uint64 // the last caller counted: a caller's items are adjacent
	for i := range g.items {
		it := &g.items[i]
		if it.left {
			continue
		}
		if c := &it.wire.caller; c.Call != last {
			last = c.Call
			if c.Marked {
				rt.info.Marked++
			}
			if rt.info.Oldest.IsZero() || c.Queued.Before(rt.info.Oldest) {
				rt.info.Oldest = c.Queued
			}
		}
		it.wire.round = &rt.info
		rt.wire = append(rt.wire, &it.wire)
		rt.idx = append(rt.idx, i)
	}
	if len(rt.wire) > 0 {
		c.counts.RoundTrips++
		c.counts.Commands += int64(len(rt.wire))
	}
	return len(rt.wire) > 0
}

// finish takes g's callers off the sent count once its round trip is over,
// and in the same step counts those whose commands go again in next (if
// not nil) as waiting for a permit again (they may leave meanwhile), so a
// snapshot never counts a caller twice. It counts the callers that got an
// error before their commands were written because their time was up or
// the coalescer closed, as a refusal before their round trip went out is.
func (c *Coalescer) finish(g, next *generation) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.counts.Sent -= int64(g.live)
	if next != nil {
		c.counts.Unsent += int64(next.live)
	}
	var counted uint64 // the last caller counted: a caller's items are adjacent
	for i := range g.items {
		it := &g.items[i]
		if it.left || it.moved != nil || it.outcome != Unsent {
			continue
		}
		var counter *int64
		switch err := it.wire.Cmder.Err(); {
		case c.closed && (errors.Is(err, context.Canceled) || errors.Is(err, redis.ErrClosed)):
			// Close ended the round trip before anything was written.
			it.wire.Cmder.SetErr(c.cfg.Closed)
			counter = &c.counts.RejectedClosed
		case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
			counter = &c.counts.RejectedContext
		case errors.Is(err, c.cfg.Closed), errors.Is(err, redis.ErrClosed):
			counter = &c.counts.RejectedClosed
		}
		if call := it.wire.caller.Call; counter != nil && call != counted {
			*counter++
			counted = call
		}
	}
}

// fail ends g's callers, whose round trip could not go out: it got no
// permit or its backoff ended because the coalescer closed, or its context
// ended (every caller left, or the latest deadline passed).
func (c *Coalescer) fail(g *generation, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	// The limiter may have closed before the coalescer did.
	counter := &c.counts.RejectedContext
	if c.closed || errors.Is(err, c.cfg.Closed) {
		err, counter = c.cfg.Closed, &c.counts.RejectedClosed
	}
	g.decided = true
	c.counts.Unsent -= int64(g.live)
	*counter += int64(g.live)
	for i := range g.items {
		if it := &g.items[i]; !it.left {
			it.wire.Cmder.SetErr(err)
		}
	}
}

// Backoff waits before retry attempt+1 (8 ms doubling to 512 ms, as
// go-redis's defaults, with jitter so refused callers do not return in
// step); false if ctx ended.
func Backoff(ctx context.Context, attempt int) bool {
	d := min(RetryBackoffMin<<attempt, RetryBackoffMax)
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

// Retries mirror go-redis's defaults for single commands (backoff from 8 ms
// to 512 ms).
const (
	RetryBackoffMin = 8 * time.Millisecond
	RetryBackoffMax = 512 * time.Millisecond
)

// Close refuses every later Do and every caller whose command was not sent
// yet with Config.Closed, and stops the flushers once their round trips
// end. It is idempotent and does not wait: see Wait.
func (c *Coalescer) Close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	gens := c.open
	c.open = nil
	for _, g := range gens {
		g.taken, g.decided = true, true
		c.counts.Queued -= int64(g.live)
		c.queuedArgs -= g.args
		c.counts.RejectedClosed += int64(g.live)
		for i := range g.items {
			if it := &g.items[i]; !it.left {
				it.wire.Cmder.SetErr(c.cfg.Closed)
			}
		}
	}
	c.mu.Unlock()
	// Round trips waiting for a permit or a backoff end now.
	c.stopBase()
	for _, g := range gens {
		close(g.done)
	}
}

// Wait waits until every flusher has stopped, after Close.
func (c *Coalescer) Wait() { c.wg.Wait() }

// Counts returns a consistent snapshot of the coalescer's numbers.
func (c *Coalescer) Counts() Counts {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.counts
}
