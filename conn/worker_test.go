package conn_test

import (
	"context"
	"errors"
	"runtime"
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

func TestNewWorkerAndAPIUseTheirRoleDefaults(t *testing.T) {
	w := newWorker(t, conn.Config{Host: "127.0.0.1", Port: shared.Port()})
	a := newAPI(t, conn.Config{Host: "127.0.0.1", Port: shared.Port()})
	ctx := ctxTimeout(t, 10*time.Second)

	wi, err := w.ConnectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if wi.Role != conn.RoleWorker || wi.Pool.MaxConns != 200 || wi.Limiter == nil || wi.Limiter.Limit != 100 {
		t.Errorf("worker info: %+v", wi)
	}
	ai, err := a.ConnectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ai.Role != conn.RoleAPI || ai.Pool.MaxConns != 128 || ai.Limiter != nil {
		t.Errorf("api info: %+v", ai)
	}
	if w.Config().BatchSize != 50 {
		t.Errorf("batch size %d", w.Config().BatchSize)
	}
}

// Both managers expose the whole go-redis command surface.
func TestManagersExposeTheGoRedisCommands(t *testing.T) {
	ctx := ctxTimeout(t, 10*time.Second)
	for name, c := range map[string]redis.UniversalClient{
		"worker": newWorker(t, config(conn.RoleWorker, shared)),
		"api":    newAPI(t, config(conn.RoleAPI, shared)),
	} {
		t.Run(name, func(t *testing.T) {
			key := "surface:" + name
			if err := c.Set(ctx, key, "v", time.Minute).Err(); err != nil {
				t.Fatal(err)
			}
			if got, err := c.Get(ctx, key).Result(); err != nil || got != "v" {
				t.Fatalf("GET: %q %v", got, err)
			}
			cmds, err := c.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.Incr(ctx, key+":n")
				p.Incr(ctx, key+":n")
				return nil
			})
			if err != nil || cmds[1].(*redis.IntCmd).Val() != 2 {
				t.Fatalf("MULTI/EXEC: %v", err)
			}
			if err := c.Del(ctx, key, key+":n").Err(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestNewWorkerFailsClearlyWhenRedisIsUnreachable(t *testing.T) {
	port, err := redistest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	cfg := conn.Config{Host: "127.0.0.1", Port: port, ConnectTimeout: time.Second}
	start := time.Now()
	_, err = conn.NewWorker(context.Background(), cfg)
	if err == nil {
		t.Fatal("no error for a closed port")
	}
	want := "cannot reach Redis at 127.0.0.1:" + strconv.Itoa(port)
	if !strings.Contains(err.Error(), want) ||
		!strings.Contains(err.Error(), "connection refused") {
		t.Errorf("error should name the address and the cause: %v", err)
	}
	if elapsed := time.Since(start); elapsed > 30*time.Second {
		t.Errorf("took %v to fail", elapsed)
	}
}

func TestNewWorkerRejectsAConfigOfTheOtherRole(t *testing.T) {
	_, err := conn.NewWorker(context.Background(), config(conn.RoleAPI, shared))
	if err == nil || !strings.Contains(err.Error(), "Config.Role") {
		t.Fatalf("got %v", err)
	}
	_, err = conn.NewWorker(context.Background(), conn.Config{Port: shared.Port(), PoolSize: 5, MaxConcurrentOps: 6})
	if err == nil || !strings.Contains(err.Error(), "Config.MaxConcurrentOps") {
		t.Fatalf("got %v", err)
	}
}

// The limiter bounds operations as the server sees them: while 2000 callers
// run short BLPOPs, the server never has more blocked clients than the limit,
// and it does reach the limit.
func TestWorkerLimiterBoundsConcurrencyAtTheServer(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	const limit, callers = 40, 2000
	cfg := config(conn.RoleWorker, srv)
	cfg.PoolSize, cfg.MaxConcurrentOps = 80, limit
	w := newWorker(t, cfg)
	probe := srv.Client(t)
	ctx := ctxTimeout(t, 60*time.Second)

	var (
		wg      sync.WaitGroup
		done    atomic.Bool
		maxSeen atomic.Int64
		clients atomic.Int64
		errs    atomic.Int64
	)
	sampler := make(chan struct{})
	go func() {
		defer close(sampler)
		for !done.Load() {
			if n := redistest.InfoField(t, probe, "clients", "blocked_clients"); n > maxSeen.Load() {
				maxSeen.Store(n)
			}
			if n := redistest.InfoField(t, probe, "clients", "connected_clients"); n > clients.Load() {
				clients.Store(n)
			}
			if info, err := w.ConnectionInfo(ctx); err == nil && info.Limiter.InFlight > limit {
				t.Errorf("limiter reports %d in flight, limit %d", info.Limiter.InFlight, limit)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	for i := 0; i < callers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A raw BLPOP: the typed method rounds sub-second timeouts up to 1 s.
			err := w.Do(ctx, "blpop", "limiter:empty", "0.05").Err()
			if err != nil && !errors.Is(err, redis.Nil) {
				errs.Add(1)
				t.Errorf("BLPOP: %v", err)
			}
		}()
	}
	wg.Wait()
	done.Store(true)
	<-sampler

	if got := maxSeen.Load(); got > limit {
		t.Fatalf("server saw %d blocked clients, limit %d", got, limit)
	} else if got < limit/2 {
		t.Fatalf("server saw at most %d blocked clients with %d callers: the test did not load the limiter", got, callers)
	}
	// One connection per permit at most, plus the probe and the ConnectionInfo one.
	if got := clients.Load(); got > limit+3 {
		t.Errorf("server saw %d connections for a limit of %d", got, limit)
	}
	info, err := w.ConnectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Limiter.InFlight != 0 || info.Limiter.Waiting != 0 || info.Pool.Timeouts != 0 {
		t.Errorf("after the run: limiter %+v, pool %+v", *info.Limiter, info.Pool)
	}
	if info.Limiter.Acquired < callers {
		t.Errorf("acquired %d permits for %d commands", info.Limiter.Acquired, callers)
	}
	t.Logf("max blocked clients %d (limit %d), max connections %d, permits waited for %d", maxSeen.Load(), limit, clients.Load(), info.Limiter.Waited)
}

// Callers whose context ends while they wait get the context's error and hold
// nothing: in_flight and waiting go back to 0 and the permits still work.
func TestWorkerCancelledWaitersReleaseNothing(t *testing.T) {
	cfg := config(conn.RoleWorker, shared)
	cfg.PoolSize, cfg.MaxConcurrentOps = 2, 1
	w := newWorker(t, cfg)
	ctx := ctxTimeout(t, 30*time.Second)

	holding := make(chan struct{})
	go func() {
		defer close(holding)
		_ = w.Do(ctx, "blpop", "cancel:empty", "1").Err() // holds the only permit ~1s
	}()
	waitFor(t, "the BLPOP to hold the permit", func() bool {
		info, _ := w.ConnectionInfo(ctx)
		return info.Limiter.InFlight == 1
	})
	const waiters = 100
	var wg sync.WaitGroup
	for i := 0; i < waiters; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			wctx, cancel := context.WithTimeout(ctx, time.Duration(10+i)*time.Millisecond)
			defer cancel()
			if i%2 == 1 {
				cancel() // half are cancelled, half time out
			}
			err := w.Get(wctx, "cancel:key").Err()
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				t.Errorf("waiter %d got %v, want the context's error", i, err)
			}
		}()
	}
	wg.Wait()
	<-holding
	// A flusher that queued for the permit on behalf of the (now gone)
	// callers takes it and hands it back at once.
	waitFor(t, "the limiter to be idle", func() bool {
		info, _ := w.ConnectionInfo(ctx)
		return info.Limiter.InFlight == 0 && info.Limiter.Waiting == 0
	})
	info, err := w.ConnectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Limiter.RejectedContext != waiters || info.Limiter.Rejected != waiters {
		t.Fatalf("rejected %d (context %d), want %d", info.Limiter.Rejected, info.Limiter.RejectedContext, waiters)
	}
	if err := w.Set(ctx, "cancel:key", "ok", time.Minute).Err(); err != nil {
		t.Fatalf("the permit was lost: %v", err)
	}
}

// A connection's set-up (HELLO, CLIENT SETINFO) runs inside the permit of the
// command that needed the connection. With a limit of 1 it must not ask for a
// second permit, or the first command would deadlock.
func TestWorkerConnectionSetUpDoesNotNeedASecondPermit(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{Password: "pw"})
	cfg := config(conn.RoleWorker, srv)
	cfg.Password = "pw"
	cfg.PoolSize, cfg.MaxConcurrentOps = 1, 1
	w := newWorker(t, cfg)
	ctx := ctxTimeout(t, 10*time.Second)
	for i := 0; i < 5; i++ {
		if err := w.Ping(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		// Kill the connection so the next command sets up a new one.
		if err := srv.Client(t).ClientKillByFilter(ctx, "type", "normal", "skipme", "yes").Err(); err != nil {
			t.Fatal(err)
		}
	}
	info, err := w.ConnectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Limiter.InFlight != 0 || info.Limiter.Rejected != 0 {
		t.Fatalf("limiter %+v", *info.Limiter)
	}
}

func TestPubSubBypassesTheLimiterAndIsCounted(t *testing.T) {
	cfg := config(conn.RoleWorker, shared)
	cfg.PoolSize, cfg.MaxConcurrentOps = 2, 1
	w := newWorker(t, cfg)
	ctx := ctxTimeout(t, 10*time.Second)

	holding := make(chan struct{})
	go func() {
		defer close(holding)
		_ = w.Do(ctx, "blpop", "pubsub:empty", "1").Err()
	}()
	waitFor(t, "the permit to be held", func() bool {
		info, _ := w.ConnectionInfo(ctx)
		return info.Limiter.InFlight == 1
	})
	// The only permit is held: a subscription must still work.
	sub := w.Subscribe(ctx, "pubsub:ch")
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatalf("subscribe while the limiter is full: %v", err)
	}
	info, err := w.ConnectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.PubSub.Active != 1 {
		t.Errorf("pubsub active = %d, want 1", info.PubSub.Active)
	}
	<-holding
}

// With a tiny pool and a paused server, callers time out waiting for a pooled
// connection, and ConnectionInfo shows it, even though INFO cannot answer.
func TestPoolTimeoutsShowInConnectionInfo(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	cfg := config(conn.RoleAPI, srv)
	cfg.PoolSize = 2
	cfg.PoolTimeout = 100 * time.Millisecond
	cfg.SocketTimeout = 2 * time.Second
	a := newAPI(t, cfg)
	ctx := ctxTimeout(t, 30*time.Second)
	if err := a.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}

	srv.Pause()
	resumed := false
	defer func() {
		if !resumed {
			srv.Resume()
		}
	}()
	var wg sync.WaitGroup
	var poolTimeouts atomic.Int64
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			if err := a.Get(cctx, "paused").Err(); errors.Is(err, redis.ErrPoolTimeout) {
				poolTimeouts.Add(1)
			}
		}()
	}
	wg.Wait()
	ictx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	info, err := a.ConnectionInfo(ictx)
	cancel()
	if err == nil {
		t.Error("ConnectionInfo should report that INFO failed while the server is paused")
	}
	// A pool timeout is sent again (nothing was written), so the pool counts
	// at least one per caller that got one.
	if poolTimeouts.Load() == 0 || int64(info.Pool.Timeouts) < poolTimeouts.Load() {
		t.Errorf("pool timeouts in ConnectionInfo %d, callers saw %d", info.Pool.Timeouts, poolTimeouts.Load())
	}
	srv.Resume()
	resumed = true
	waitFor(t, "recovery after SIGCONT", func() bool { return a.Ping(ctx).Err() == nil })
}

func TestCloseIsIdempotentAndFailsLaterOperations(t *testing.T) {
	for _, role := range []conn.Role{conn.RoleAPI, conn.RoleWorker} {
		t.Run(string(role), func(t *testing.T) {
			ctx := ctxTimeout(t, 10*time.Second)
			var (
				c     redis.UniversalClient
				close func() error
				info  func(context.Context) (conn.ConnectionInfo, error)
			)
			if role == conn.RoleWorker {
				w, err := conn.NewWorker(ctx, config(role, shared))
				if err != nil {
					t.Fatal(err)
				}
				c, close, info = w, w.Close, w.ConnectionInfo
				defer func() {
					if _, err := w.BatchRPush(ctx, "closed", 1, 2); !errors.Is(err, conn.ErrClosed) {
						t.Errorf("BatchRPush after Close: %v", err)
					}
				}()
			} else {
				a, err := conn.NewAPI(ctx, config(role, shared))
				if err != nil {
					t.Fatal(err)
				}
				c, close, info = a, a.Close, a.ConnectionInfo
			}
			if err := c.Ping(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			if err := close(); err != nil {
				t.Fatalf("first Close: %v", err)
			}
			if err := close(); err != nil {
				t.Fatalf("second Close: %v", err)
			}
			if err := c.Get(ctx, "k").Err(); !errors.Is(err, conn.ErrClosed) {
				t.Errorf("GET after Close: %v", err)
			}
			_, err := c.Pipelined(ctx, func(p redis.Pipeliner) error { p.Get(ctx, "k"); return nil })
			if !errors.Is(err, conn.ErrClosed) {
				t.Errorf("pipeline after Close: %v", err)
			}
			if _, err := info(ctx); !errors.Is(err, conn.ErrClosed) {
				t.Errorf("ConnectionInfo after Close: %v", err)
			}
		})
	}
}

func TestCloseFailsLimiterWaiters(t *testing.T) {
	cfg := config(conn.RoleWorker, shared)
	cfg.PoolSize, cfg.MaxConcurrentOps = 2, 1
	w, err := conn.NewWorker(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxTimeout(t, 10*time.Second)
	holding := make(chan struct{})
	go func() {
		defer close(holding)
		_ = w.Do(ctx, "blpop", "close:empty", "3").Err()
	}()
	waitFor(t, "the permit to be held", func() bool {
		info, _ := w.ConnectionInfo(ctx)
		return info.Limiter.InFlight == 1
	})
	errs := make(chan error, 10)
	for i := 0; i < 10; i++ {
		go func() { errs <- w.Get(ctx, "close:k").Err() }()
	}
	waitFor(t, "10 waiters", func() bool {
		info, _ := w.ConnectionInfo(ctx)
		return info.Limiter.Waiting == 10
	})
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		if err := <-errs; !errors.Is(err, conn.ErrClosed) {
			t.Errorf("waiter got %v, want ErrClosed", err)
		}
	}
	<-holding
	info, _ := w.ConnectionInfo(ctx)
	if info.Limiter.RejectedClosed != 10 || info.Limiter.InFlight != 0 {
		t.Errorf("limiter after Close: %+v", *info.Limiter)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	if !redistest.WaitFor(context.Background(), 10*time.Second, cond) {
		t.Fatalf("timed out waiting for %s", what)
	}
}

// A Worker that is used and never closed leaves no more goroutines than a
// go-redis client used the same way (asynq, for one, shares a client between
// its parts, never closes it, and checks for leaks): the coalescing
// flushers stop when nothing is queued.
func TestAnIdleWorkerRunsNoMoreGoroutinesThanAGoRedisClient(t *testing.T) {
	use := func(c redis.UniversalClient) {
		ctx := ctxTimeout(t, 10*time.Second)
		var wg sync.WaitGroup
		for i := 0; i < 50; i++ {
			wg.Add(1)
			go func() { defer wg.Done(); _ = c.Incr(ctx, "idle:n").Err() }()
		}
		wg.Wait()
		_, _ = c.Pipelined(ctx, func(p redis.Pipeliner) error { p.Get(ctx, "idle:n"); return nil })
	}
	// Only goroutines that a client started count: goroutines of earlier
	// tests that end meanwhile must not move the numbers (they made this
	// test flaky when it compared totals).
	started := func(before map[string]bool) (n int, dump string) {
		// Goroutines that end on their own (a flusher, a dial) get a moment.
		for i := 0; ; i++ {
			n, dump = 0, ""
			for id, stack := range goroutines() {
				if !before[id] && isClientGoroutine(stack) {
					n++
					dump += stack + "\n\n"
				}
			}
			if n == 0 || i == 50 {
				return n, dump
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	ids := func() map[string]bool {
		m := map[string]bool{}
		for id := range goroutines() {
			m[id] = true
		}
		return m
	}
	before := ids()
	plain := redis.NewClient(&redis.Options{Addr: shared.Addr()})
	use(plain)
	plainExtra, _ := started(before)
	_ = plain.Close()

	before = ids()
	w := newWorker(t, config(conn.RoleWorker, shared))
	use(w)
	if _, err := w.BatchRPush(context.Background(), "idle:list", 1, 2, 3); err != nil {
		t.Fatal(err)
	}
	workerExtra, dump := started(before)
	t.Logf("goroutines of an idle, unclosed client: go-redis %d, Worker %d", plainExtra, workerExtra)
	if workerExtra > plainExtra {
		t.Errorf("an idle Worker runs %d goroutines, a go-redis client %d:\n%s", workerExtra, plainExtra, dump)
	}
}

// goroutines returns the stack of every goroutine, by goroutine ID.
func goroutines() map[string]string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	m := map[string]string{}
	for _, g := range strings.Split(string(buf), "\n\n") {
		head, _, _ := strings.Cut(g, " [")
		if id, ok := strings.CutPrefix(head, "goroutine "); ok {
			m[id] = g
		}
	}
	return m
}

// isClientGoroutine reports whether a goroutine runs code of go-redis or of
// the library (not of a test or its helpers).
func isClientGoroutine(stack string) bool {
	return strings.Contains(stack, "github.com/redis/go-redis/") ||
		strings.Contains(stack, "github.com/redisconn/redisconn/conn.") ||
		strings.Contains(stack, "github.com/redisconn/redisconn/internal/coalesce.")
}
