package conn

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// waitUntil polls cond for up to 5 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestLimiterServesWaitersInArrivalOrder(t *testing.T) {
	l := newLimiter(1)
	if err := l.take(context.Background()); err != nil {
		t.Fatal(err)
	}
	const n = 50
	var (
		mu    sync.Mutex
		order []int
		wg    sync.WaitGroup
	)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := l.take(context.Background()); err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			l.Release()
		}()
		// Let waiter i queue before waiter i+1 arrives.
		waitUntil(t, "waiter queued", func() bool { return l.info().Waiting == int64(i+1) })
	}
	l.Release()
	wg.Wait()
	for i, got := range order {
		if got != i {
			t.Fatalf("served out of order: %v", order)
		}
	}
}

func TestLimiterNewcomerDoesNotOvertakeWaiters(t *testing.T) {
	l := newLimiter(1)
	_ = l.take(context.Background())
	granted := make(chan struct{})
	go func() {
		_ = l.take(context.Background())
		close(granted)
	}()
	waitUntil(t, "waiter queued", func() bool { return l.info().Waiting == 1 })
	// The moment the permit frees, it belongs to the waiter; a newcomer with an
	// expired context must not get it.
	l.Release()
	<-granted
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := l.take(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("newcomer got %v, want context.Canceled", err)
	}
	if got := l.info(); got.InFlight != 1 || got.Waiting != 0 {
		t.Fatalf("got %+v", got)
	}
}

func TestLimiterCancelledWaiterHoldsNoPermit(t *testing.T) {
	l := newLimiter(2)
	_ = l.take(context.Background())
	_ = l.take(context.Background())
	const n = 100
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), time.Duration(1+i%10)*time.Millisecond)
			defer cancel()
			if err := l.take(ctx); !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("got %v, want context.DeadlineExceeded", err)
			}
		}()
	}
	wg.Wait()
	got := l.info()
	if got.InFlight != 2 || got.Waiting != 0 || got.RejectedContext != n || got.Rejected != n {
		t.Fatalf("after cancelled waiters: %+v", got)
	}
	l.Release()
	l.Release()
	if got := l.info(); got.InFlight != 0 {
		t.Fatalf("in_flight %d after releasing all", got.InFlight)
	}
	// Both permits are usable again.
	_ = l.take(context.Background())
	_ = l.take(context.Background())
}

// A waiter whose context ends at the instant it is granted the permit must
// pass the permit on instead of losing it.
func TestLimiterCancellationRacingAGrantLosesNoPermit(t *testing.T) {
	l := newLimiter(3)
	var wg sync.WaitGroup
	for i := 0; i < 2000; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), time.Duration(i%50)*time.Microsecond)
			defer cancel()
			if l.take(ctx) == nil {
				time.Sleep(time.Duration(i%7) * time.Microsecond)
				l.Release()
			}
		}()
	}
	wg.Wait()
	got := l.info()
	if got.InFlight != 0 || got.Waiting != 0 {
		t.Fatalf("leaked: %+v", got)
	}
	if got.Acquired+got.Rejected != 2000 {
		t.Fatalf("acquired %d + rejected %d != 2000", got.Acquired, got.Rejected)
	}
	for i := 0; i < 3; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		if err := l.take(ctx); err != nil {
			t.Fatalf("permit %d lost: %v", i, err)
		}
		cancel()
	}
}

func TestLimiterNeverExceedsItsLimit(t *testing.T) {
	const limit = 7
	l := newLimiter(limit)
	var (
		mu       sync.Mutex
		cur, top int
		wg       sync.WaitGroup
	)
	for i := 0; i < 500; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := l.take(context.Background()); err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			cur++
			top = max(top, cur)
			mu.Unlock()
			time.Sleep(50 * time.Microsecond)
			mu.Lock()
			cur--
			mu.Unlock()
			l.Release()
		}()
	}
	wg.Wait()
	if top > limit {
		t.Fatalf("%d operations ran at once, limit %d", top, limit)
	}
	if top < limit {
		t.Fatalf("only %d ran at once with 500 callers: the limit %d was never used", top, limit)
	}
}

func TestLimiterCloseFailsWaitersAndNewcomers(t *testing.T) {
	l := newLimiter(1)
	_ = l.take(context.Background())
	errs := make(chan error, 10)
	for i := 0; i < 10; i++ {
		go func() { errs <- l.take(context.Background()) }()
	}
	waitUntil(t, "10 waiters", func() bool { return l.info().Waiting == 10 })
	l.Close()
	l.Close() // idempotent
	for i := 0; i < 10; i++ {
		if err := <-errs; !errors.Is(err, ErrClosed) {
			t.Fatalf("waiter got %v, want ErrClosed", err)
		}
	}
	if err := l.take(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("newcomer got %v, want ErrClosed", err)
	}
	l.Release() // the permit held across Close is still released cleanly
	got := l.info()
	if got.InFlight != 0 || got.Waiting != 0 || got.RejectedClosed != 11 {
		t.Fatalf("got %+v", got)
	}
}

// take is acquire without the wait time.
func (l *limiter) take(ctx context.Context) error {
	_, err := l.Acquire(ctx)
	return err
}

func TestLimiterReportsTheWait(t *testing.T) {
	l := newLimiter(1)
	if waited, err := l.Acquire(context.Background()); err != nil || waited != 0 {
		t.Fatalf("free permit: waited %v, %v", waited, err)
	}
	go func() {
		time.Sleep(20 * time.Millisecond)
		l.Release()
	}()
	waited, err := l.Acquire(context.Background())
	if err != nil || waited < 15*time.Millisecond {
		t.Fatalf("waited %v, %v; want about 20ms", waited, err)
	}
}

// info is the limiter's counts in ConnectionInfo's shape.
func (l *limiter) info() LimiterInfo {
	c := l.counts()
	return LimiterInfo{
		Limit: c.limit, InFlight: c.inFlight, Waiting: c.waiting,
		Rejected: c.rejectedContext + c.rejectedClose, RejectedContext: c.rejectedContext, RejectedClosed: c.rejectedClose,
		Acquired: c.acquired, Waited: c.waited,
	}
}

// go-redis returns the context's error, before anything else, for a context
// that has already ended; so does the limiter, even with a permit free.
func TestLimiterRefusesAnEndedContextEvenWithAFreePermit(t *testing.T) {
	l := newLimiter(1)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := l.Acquire(ctx); err != context.Canceled {
		t.Fatalf("got %v (%T), want context.Canceled itself", err, err)
	}
	if got := l.info(); got.InFlight != 0 || got.RejectedContext != 1 {
		t.Fatalf("got %+v", got)
	}
}

// Releasing a permit that is not held is a bug in the caller: it panics
// instead of letting the limiter run more operations than its limit.
func TestLimiterReleaseWithoutAPermitPanics(t *testing.T) {
	l := newLimiter(2)
	_ = l.take(context.Background())
	l.Release()
	defer func() {
		if recover() == nil {
			t.Fatal("a second Release did not panic")
		}
		if got := l.info(); got.InFlight != 0 {
			t.Fatalf("in_flight %d after the bad Release", got.InFlight)
		}
	}()
	l.Release()
}
