package conn

import (
	"container/list"
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// limiter bounds how many operations run at once. It is a counting semaphore
// of weight one per operation, like golang.org/x/sync/semaphore, with the
// guarantees the worker relies on:
//
//   - FIFO: waiters are served in the order they arrived; a newcomer never
//     overtakes a waiter, even when a permit is free at the moment it arrives.
//   - Context-aware: a caller whose context ends while waiting gets the
//     context's error and holds no permit. If a permit was handed to it in the
//     same instant, the permit is passed on to the next waiter, not lost.
//   - Release once: every successful acquire is matched by exactly one
//     release. The hooks pair them with defer, so a failing or panicking
//     operation releases its permit too.
//   - Close: waiters and later callers get ErrClosed; permits already held stay
//     valid until released.
type limiter struct {
	limit int64

	mu       sync.Mutex
	inFlight int64
	waiters  list.List // of *waiter, oldest first
	closed   bool

	// Counters, read without the lock by ConnectionInfo and metrics.
	rejectedCtx    atomic.Int64
	rejectedClosed atomic.Int64
	acquired       atomic.Int64
	waited         atomic.Int64
}

type waiter struct {
	ready chan struct{} // closed when the permit is granted or the limiter closes
	// granted is set under the lock before ready closes; a waiter that gave up
	// reads it to know whether it must hand the permit on.
	granted bool
}

func newLimiter(limit int) *limiter {
	return &limiter{limit: int64(limit)}
}

// acquire waits for a permit in FIFO order. It returns nil once the caller
// holds one, ctx's error if ctx ended first (no permit held), or ErrClosed,
// and how long the caller waited (0 when a permit was free).
func (l *limiter) acquire(ctx context.Context) (time.Duration, error) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		l.rejectedClosed.Add(1)
		return 0, ErrClosed
	}
	if l.inFlight < l.limit && l.waiters.Len() == 0 {
		l.inFlight++
		l.mu.Unlock()
		l.acquired.Add(1)
		return 0, nil
	}
	if err := ctx.Err(); err != nil {
		l.mu.Unlock()
		l.rejectedCtx.Add(1)
		return 0, err
	}
	w := &waiter{ready: make(chan struct{})}
	elem := l.waiters.PushBack(w)
	l.mu.Unlock()
	l.waited.Add(1)
	start := time.Now()

	select {
	case <-w.ready:
		l.mu.Lock()
		granted := w.granted
		l.mu.Unlock()
		if !granted {
			l.rejectedClosed.Add(1)
			return 0, ErrClosed
		}
		l.acquired.Add(1)
		return time.Since(start), nil
	case <-ctx.Done():
		l.mu.Lock()
		if w.granted {
			// Granted in the same instant: give the permit to the next waiter.
			l.inFlight--
			l.grantLocked()
		} else {
			l.waiters.Remove(elem)
			// Leaving may let the waiters behind us go first if permits are free
			// (only possible when we were at the front).
			l.grantLocked()
		}
		closed := l.closed && !w.granted
		l.mu.Unlock()
		if closed {
			l.rejectedClosed.Add(1)
			return 0, ErrClosed
		}
		l.rejectedCtx.Add(1)
		return 0, ctx.Err()
	}
}

// release frees one permit and hands it to the oldest waiter.
func (l *limiter) release() {
	l.mu.Lock()
	if l.inFlight > 0 { // never below zero, even if a caller broke the pairing
		l.inFlight--
	}
	l.grantLocked()
	l.mu.Unlock()
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

// close makes waiters and later callers fail with ErrClosed.
func (l *limiter) close() {
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

// LimiterInfo is the limiter's state in ConnectionInfo.
type LimiterInfo struct {
	// Limit is the most operations that run at once.
	Limit int64 `json:"limit"`
	// InFlight is how many operations hold a permit now.
	InFlight int64 `json:"in_flight"`
	// Waiting is how many callers wait for a permit now.
	Waiting int64 `json:"waiting"`
	// Rejected counts acquisitions that failed: the caller's context ended
	// while waiting, or the manager was closed.
	Rejected int64 `json:"rejected"`
	// RejectedContext and RejectedClosed split Rejected by reason.
	RejectedContext int64 `json:"rejected_context"`
	RejectedClosed  int64 `json:"rejected_closed"`
	// Acquired counts granted permits; Waited, those that had to queue first.
	Acquired int64 `json:"acquired"`
	Waited   int64 `json:"waited"`
}

func (l *limiter) info() LimiterInfo {
	l.mu.Lock()
	inFlight, waiting := l.inFlight, int64(l.waiters.Len())
	l.mu.Unlock()
	rc, rcl := l.rejectedCtx.Load(), l.rejectedClosed.Load()
	return LimiterInfo{
		Limit: l.limit, InFlight: inFlight, Waiting: waiting,
		Rejected: rc + rcl, RejectedContext: rc, RejectedClosed: rcl,
		Acquired: l.acquired.Load(), Waited: l.waited.Load(),
	}
}
