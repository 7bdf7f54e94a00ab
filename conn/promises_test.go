package conn_test

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redisconn/redisconn/conn"
	"github.com/redisconn/redisconn/internal/redistest"
)

// The tests in this file check that, to its callers, a Worker behaves as a
// go-redis client does, apart from the queueing it exists for.

// A stalled server must not take a caller's deadline with it, whatever its
// command shares a round trip with: 300 callers with a 200 ms deadline and
// 100 without, the server stopped for 3 s. Each deadline caller must return
// within 250 ms (deadline plus the documented spread plus scheduling).
func TestCoalescedCallersKeepTheirDeadlinesWhenTheServerStalls(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	w := newWorker(t, config(conn.RoleWorker, srv))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	// Callers without a deadline keep the round trips busy throughout.
	for i := 0; i < 100; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				_ = w.Incr(context.Background(), "nodeadline:"+strconv.Itoa(i)).Err()
			}
		}()
	}
	time.Sleep(100 * time.Millisecond)
	srv.Pause()
	paused := time.Now()
	resumed := false
	defer func() {
		if !resumed {
			srv.Resume()
		}
	}()
	time.Sleep(50 * time.Millisecond) // the stall is on: round trips are in flight

	const callers = 300
	took := make([]time.Duration, callers)
	errs := make([]error, callers)
	var dwg sync.WaitGroup
	for i := 0; i < callers; i++ {
		dwg.Add(1)
		go func() {
			defer dwg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			start := time.Now()
			errs[i] = w.Incr(ctx, "deadline:"+strconv.Itoa(i)).Err()
			took[i] = time.Since(start)
		}()
		time.Sleep(time.Duration(i%3) * time.Millisecond) // arrivals spread over the round trips
	}
	dwg.Wait()
	time.Sleep(3*time.Second - time.Since(paused)) // the stall lasts 3 s
	srv.Resume()
	resumed = true
	close(stop)
	wg.Wait()

	var slowest time.Duration
	for i, d := range took {
		slowest = max(slowest, d)
		if errs[i] == nil {
			t.Errorf("caller %d succeeded against a stopped server", i)
		}
	}
	t.Logf("slowest of %d callers with a 200 ms deadline: %v", callers, slowest)
	if slowest > 250*time.Millisecond {
		t.Fatalf("slowest caller with a 200 ms deadline returned after %v, want at most 250 ms", slowest)
	}
	if err := w.Ping(ctxTimeout(t, 5*time.Second)).Err(); err != nil {
		t.Fatalf("after the stall: %v", err)
	}
}

// A command whose reply was read keeps it: when the connection is cut in the
// middle of a round trip, the commands answered before the cut are not sent
// again. The server answers every command before a too-large SET and then
// closes the connection (proto-max-bulk-len); 400 callers each INCR their own
// counter, one call at a time, while another sends such a SET every 20 ms.
// No counter may end above its caller's number of calls, and none below its
// successful calls.
func TestAnsweredCommandsAreNeverSentAgainAfterACutConnection(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{Args: []string{"--proto-max-bulk-len", "1mb"}})
	w := newWorker(t, config(conn.RoleWorker, srv))
	const callers = 400
	calls := make([]int64, callers)
	acked := make([]int64, callers)
	end := time.Now().Add(3 * time.Second)
	var wg sync.WaitGroup
	for i := 0; i < callers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := "counter:" + strconv.Itoa(i)
			for time.Now().Before(end) {
				calls[i]++
				if w.Incr(context.Background(), key).Err() == nil {
					acked[i]++
				}
			}
		}()
	}
	big := strings.Repeat("x", 2<<20)
	var cuts atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		for time.Now().Before(end) {
			if w.Set(context.Background(), "big", big, 0).Err() != nil {
				cuts.Add(1)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	wg.Wait()
	if cuts.Load() < 10 {
		t.Fatalf("only %d big SETs failed: the server did not cut the connections", cuts.Load())
	}
	check := srv.Client(t)
	over, under, extra := 0, 0, int64(0)
	for i := 0; i < callers; i++ {
		got, err := check.Get(context.Background(), "counter:"+strconv.Itoa(i)).Int64()
		if err != nil && err != redis.Nil {
			t.Fatal(err)
		}
		if got > calls[i] {
			over++
			extra += got - calls[i]
		}
		if got < acked[i] {
			under++
		}
	}
	t.Logf("%d connections cut; %d of %d counters above their calls (%d increments nobody asked for), %d below their acknowledged calls",
		cuts.Load(), over, callers, extra, under)
	if over > 0 || under > 0 {
		t.Fatalf("%d counters were applied more often than called (+%d), %d lost acknowledged increments", over, extra, under)
	}
}

// With the default configuration, 300 concurrent Watch transactions run to
// the end: transactions hold connections between commands outside the
// limiter, so they cannot deadlock it against the pool.
func TestConcurrentWatchTransactionsDoNotDeadlockTheLimiter(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	w := newWorker(t, config(conn.RoleWorker, srv))
	const n = 300
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := "watched:" + strconv.Itoa(i%20)
			ctx := ctxTimeout(t, 30*time.Second)
			for {
				err := w.Watch(ctx, func(tx *redis.Tx) error {
					v, err := tx.Get(ctx, key).Int()
					if err != nil && err != redis.Nil {
						return err
					}
					time.Sleep(time.Millisecond) // hold the connection a while
					_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
						p.Set(ctx, key, v+1, 0)
						return nil
					})
					return err
				}, key)
				if err == redis.TxFailedErr {
					continue // another transaction won the key: try again
				}
				errs <- err
				return
			}
		}()
	}
	// Other callers keep every permit busy meanwhile.
	stop := make(chan struct{})
	var load sync.WaitGroup
	for i := 0; i < 200; i++ {
		load.Add(1)
		go func() {
			defer load.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				_ = w.Incr(context.Background(), "load").Err()
			}
		}()
	}
	wg.Wait()
	close(stop)
	load.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("a transaction failed: %v", err)
		}
	}
	total := 0
	for i := 0; i < 20; i++ {
		v, _ := w.Get(context.Background(), "watched:"+strconv.Itoa(i)).Int()
		total += v
	}
	if total != n {
		t.Fatalf("the transactions incremented %d times, want %d", total, n)
	}
	if info, _ := w.ConnectionInfo(context.Background()); info.Pool.Timeouts != 0 {
		t.Fatalf("%d pool timeouts", info.Pool.Timeouts)
	}
}

// A command whose context has already ended returns the context's error
// itself, as go-redis does, coalesced or not, so err == context.Canceled holds.
func TestAnEndedContextReturnsTheContextErrorItself(t *testing.T) {
	for _, coalescing := range []bool{true, false} {
		w, err := conn.NewWorker(context.Background(), config(conn.RoleWorker, shared), conn.WithCoalescing(coalescing))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = w.Close() })
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		for name, err := range map[string]error{
			"GET":   w.Get(ctx, "k").Err(),
			"BLPOP": w.BLPop(ctx, time.Second, "k").Err(),
			"pipeline": func() error {
				_, err := w.Pipelined(ctx, func(p redis.Pipeliner) error { p.Get(ctx, "k"); return nil })
				return err
			}(),
		} {
			if err != context.Canceled {
				t.Errorf("coalescing %v, %s: got %v (%T), want context.Canceled itself", coalescing, name, err, err)
			}
		}
	}
}

// A read timeout while go-redis sets up a connection stays a net.Error that
// times out, and is not called a dial failure.
func TestASetUpTimeoutIsANetErrorNotADialFailure(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	cfg := config(conn.RoleWorker, srv)
	cfg.SocketTimeout = 200 * time.Millisecond
	w := newWorker(t, cfg)
	// The stopped server's kernel still accepts connections, but nothing
	// answers HELLO. One pipeline takes the idle connection (a read timeout);
	// the others dial new ones and time out setting them up.
	srv.Pause()
	defer srv.Resume()
	var wg sync.WaitGroup
	errs := make([]error, 20)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = w.Pipelined(context.Background(), func(p redis.Pipeliner) error { p.Get(context.Background(), "k"); return nil })
		}()
	}
	wg.Wait()
	setups := 0
	for _, err := range errs {
		if err == nil {
			t.Fatal("a pipeline succeeded against a stopped server")
		}
		if _, ok := err.(net.Error); !ok {
			t.Fatalf("got %v (%T), want the error itself to be a net.Error", err, err)
		}
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("got %v (%T), want a net.Error that timed out", err, err)
		}
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			t.Fatalf("a read timeout is called a dial failure: %v", err)
		}
		if strings.Contains(err.Error(), "set-up") {
			setups++
		}
	}
	t.Logf("%d of %d pipelines failed setting up their connection; first error: %v", setups, len(errs), errs[0])
}

// A pool timeout names the manager and says what its pool and limiter held,
// and is still redis.ErrPoolTimeout to errors.Is.
func TestAPoolTimeoutExplainsItself(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	cfg := config(conn.RoleAPI, srv)
	cfg.PoolSize, cfg.PoolTimeout = 1, 100*time.Millisecond
	a := newAPI(t, cfg)
	blocked := make(chan struct{})
	go func() {
		close(blocked)
		_ = a.BLPop(context.Background(), time.Second, "empty").Err()
	}()
	<-blocked
	time.Sleep(50 * time.Millisecond) // BLPOP holds the only connection
	err := a.Get(context.Background(), "k").Err()
	if !errors.Is(err, redis.ErrPoolTimeout) {
		t.Fatalf("got %v, want redis.ErrPoolTimeout", err)
	}
	var pe *conn.PoolTimeoutError
	if !errors.As(err, &pe) {
		t.Fatalf("got %T, want a *conn.PoolTimeoutError", err)
	}
	if pe.Role != conn.RoleAPI || pe.InUse != 1 || pe.MaxConns != 1 {
		t.Fatalf("snapshot %+v, want role api and 1 of 1 connections in use", pe)
	}
	if msg := err.Error(); !strings.Contains(msg, "api") || !strings.Contains(msg, "1 of 1 connections in use") {
		t.Fatalf("message %q does not say which manager and what the pool held", msg)
	}
}
