package conn

import (
	"container/list"
	"context"
	"sync"
	"time"
)

// limiter is a FIFO counting semaphore of permits, one per operation (a
// round trip to Redis), in the manner of golang.org/x/sync/semaphore. It is
// what bounds the Worker's operations in flight, so that they never ask the
// pool for more connections than it has.
//
// Its whole contract:
//
//   - Acquire takes one permit. Waiters are served in the order they called
//     Acquire; a caller never overtakes a waiter, even when a permit is free
//     at the moment it arrives.
//   - A caller whose context has ended before Acquire is called, or ends
//     while it waits, gets ctx.Err() (the context's own error, unwrapped) and
//     holds no permit. If a permit was handed to it in the same instant, the
//     permit goes to the next waiter; it is never lost.
//   - After Close, waiters and later callers get ErrClosed. Permits already
//     held stay valid until released.
//   - Counters: acquired and waited count every permit granted. waiting and
//     rejected count the callers of Acquire; a round trip of coalesced
//     callers takes its permit through roundTripPermits, which the limiter
//     does not count as a caller, because the coalescer counts its callers.
//   - Every successful Acquire must be matched by exactly one Release.
//     Release without a held permit is a bug in the caller and panics, as in
//     x/sync/semaphore: a silent underflow would let the limiter run more
//     operations than its limit.
//
// The limiter owns its counters; nothing outside this file writes them.
type limiter struct {
	limit int64

	mu       sync.Mutex
	inFlight int64
	waiters  list.List // of *waiter, oldest first
	// waiting counts the waiters that are callers (not round trips).
	waiting int64
	closed  bool

	// Counters (under mu): permits granted, of which after a wait, and
	// Acquire calls refused by reason.
	acquired, waited               int64
	rejectedContext, rejectedClose int64
}

type waiter struct {
	counted bool          // a caller, not a round trip (see roundTripPermits)
	ready   chan struct{} // closed when the permit is granted or the limiter closes
	// granted is set under the lock before ready closes; a waiter that gave up
	// reads it to know whether it must hand the permit on.
	granted bool
}

func newLimiter(limit int) *limiter {
	return &limiter{limit: int64(limit)}
}

// Acquire waits for a permit in FIFO order. It returns how long the caller
// waited (0 when a permit was free) and nil once the caller holds a permit;
// ctx.Err() if ctx ended first; ErrClosed after Close. Only a nil error
// means a permit is held.
func (l *limiter) Acquire(ctx context.Context) (time.Duration, error) {
	return l.acquire(ctx, true)
}

// acquire is Acquire; counted says that the caller counts in waiting and
// rejected.
func (l *limiter) acquire(ctx context.Context, counted bool) (time.Duration, error) {
	var one int64
	if counted {
		one = 1
	}
	l.mu.Lock()
	switch {
	case l.closed:
		l.rejectedClose += one
		l.mu.Unlock()
		return 0, ErrClosed
	case ctx.Err() != nil:
		l.rejectedContext += one
		l.mu.Unlock()
		return 0, ctx.Err()
	case l.inFlight < l.limit && l.waiters.Len() == 0:
		l.inFlight++
		l.acquired++
		l.mu.Unlock()
		return 0, nil
	}
	w := &waiter{counted: counted, ready: make(chan struct{})}
	elem := l.waiters.PushBack(w)
	l.waiting += one
	l.mu.Unlock()
	start := time.Now()

	select {
	case <-w.ready:
		l.mu.Lock()
		defer l.mu.Unlock()
		l.waiting -= one
		if !w.granted {
			l.rejectedClose += one
			return 0, ErrClosed
		}
		l.acquired++
		l.waited++
		return time.Since(start), nil
	case <-ctx.Done():
		l.mu.Lock()
		defer l.mu.Unlock()
		l.waiting -= one
		if w.granted {
			// Granted in the same instant: hand the permit to the next waiter.
			l.inFlight--
		} else if !l.closed {
			l.waiters.Remove(elem)
		}
		// Leaving the front may let the waiters behind go when permits are free.
		l.grantLocked()
		if l.closed && !w.granted {
			l.rejectedClose += one
			return 0, ErrClosed
		}
		l.rejectedContext += one
		return 0, ctx.Err()
	}
}

// roundTripPermits is the limiter as the coalescer sees it: a round trip's
// permit, whose callers the coalescer counts.
type roundTripPermits struct{ l *limiter }

func (p roundTripPermits) Acquire(ctx context.Context) (time.Duration, error) {
	return p.l.acquire(ctx, false)
}

func (p roundTripPermits) Release() { p.l.Release() }

// Release returns one permit, which goes to the oldest waiter. It panics if
// no permit is held.
func (l *limiter) Release() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.inFlight <= 0 {
		panic("redisconn: limiter: Release without a held permit")
	}
	l.inFlight--
	l.grantLocked()
}

// grantLocked hands free permits to waiters in order.
func (l *limiter) grantLocked() {
	for l.inFlight < l.limit {
		front := l.waiters.Front()
		if front == nil {
			return
		}
		w := l.waiters.Remove(front).(*waiter)
		w.granted = true
		l.inFlight++
		close(w.ready)
	}
}

// Close makes waiters and later callers fail with ErrClosed. It is idempotent.
func (l *limiter) Close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	l.closed = true
	for e := l.waiters.Front(); e != nil; e = l.waiters.Front() {
		close(l.waiters.Remove(e).(*waiter).ready)
	}
}

// limiterCounts is a consistent snapshot of the limiter.
type limiterCounts struct {
	limit, inFlight, waiting       int64
	acquired, waited               int64
	rejectedContext, rejectedClose int64
}

func (l *limiter) counts() limiterCounts {
	l.mu.Lock()
	defer l.mu.Unlock()
	return limiterCounts{
		limit: l.limit, inFlight: l.inFlight, waiting: l.waiting,
		acquired: l.acquired, waited: l.waited,
		rejectedContext: l.rejectedContext, rejectedClose: l.rejectedClose,
	}
}
