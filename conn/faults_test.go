package conn_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redisconn/redisconn/conn"
	"github.com/redisconn/redisconn/internal/redistest"
	"github.com/redisconn/redisconn/telemetry"
)

// Under 500 callers the server is SIGKILLed and restarted on the same port:
// no call outlives its deadline by more than 1 s, operations succeed again
// within 2 s of the restart with the same Worker, and the limiter drains.
func TestRedisRestartUnderLoad(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	w := newWorker(t, config(conn.RoleWorker, srv))
	const callers, deadline = 500, time.Second
	var (
		stop        atomic.Bool
		worstOver   atomic.Int64
		lastFailure atomic.Int64
		firstOK     atomic.Int64 // first success after the restart, unix nanos
		restartedAt atomic.Int64
		wg          sync.WaitGroup
	)
	for i := 0; i < callers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				ctx, cancel := context.WithTimeout(context.Background(), deadline)
				start := time.Now()
				err := w.Incr(ctx, "restart:"+strconv.Itoa(i%50)).Err()
				cancel()
				took := time.Since(start)
				if over := int64(took - deadline); over > worstOver.Load() {
					worstOver.Store(over)
				}
				now := time.Now().UnixNano()
				if err != nil {
					lastFailure.Store(now)
					time.Sleep(10 * time.Millisecond)
					continue
				}
				if r := restartedAt.Load(); r != 0 && now > r {
					firstOK.CompareAndSwap(0, now)
				}
			}
		}()
	}
	time.Sleep(time.Second)
	srv.Kill()
	time.Sleep(time.Second) // callers fail meanwhile
	srv.Restart()
	restartedAt.Store(time.Now().UnixNano())
	waitFor(t, "a success after the restart", func() bool { return firstOK.Load() != 0 })
	time.Sleep(time.Second)
	stop.Store(true)
	wg.Wait()

	if over := time.Duration(worstOver.Load()); over > time.Second {
		t.Errorf("a call outlived its %v deadline by %v", deadline, over)
	}
	if d := time.Duration(firstOK.Load() - restartedAt.Load()); d > 2*time.Second {
		t.Errorf("first success %v after the restart, want within 2s", d)
	}
	info, _ := w.ConnectionInfo(context.Background())
	if info.Limiter.InFlight != 0 || info.Limiter.Waiting != 0 {
		t.Errorf("limiter did not drain: %+v", *info.Limiter)
	}
	t.Logf("worst overrun past the deadline %v; first success %v after the restart",
		time.Duration(worstOver.Load()), time.Duration(firstOK.Load()-restartedAt.Load()))
}

// SIGSTOP for 3 s under 1000 callers with deadlines: every call returns in
// time, the waits show in ConnectionInfo, and service resumes within 2 s of
// SIGCONT.
func TestRedisPauseUnderLoad(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	w := newWorker(t, config(conn.RoleWorker, srv))
	acfg := config(conn.RoleAPI, srv)
	acfg.PoolSize, acfg.PoolTimeout = 4, 100*time.Millisecond
	a := newAPI(t, acfg)
	const callers, deadline = 1000, 500 * time.Millisecond
	var (
		stop      atomic.Bool
		worstOver atomic.Int64
		wg        sync.WaitGroup
		resumedAt atomic.Int64
		firstOK   atomic.Int64
	)
	for i := 0; i < callers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				ctx, cancel := context.WithTimeout(context.Background(), deadline)
				start := time.Now()
				var err error
				if i%10 == 0 {
					err = a.Get(ctx, "pause:k").Err()
				} else {
					err = w.Set(ctx, "pause:k", i, time.Minute).Err()
				}
				cancel()
				if over := int64(time.Since(start) - deadline); over > worstOver.Load() {
					worstOver.Store(over)
				}
				if err == nil {
					if r := resumedAt.Load(); r != 0 {
						firstOK.CompareAndSwap(0, time.Now().UnixNano())
					}
				} else {
					time.Sleep(5 * time.Millisecond)
				}
			}
		}()
	}
	time.Sleep(500 * time.Millisecond)
	srv.Pause()
	time.Sleep(time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	during, _ := w.ConnectionInfo(ctx) // INFO fails while paused; the limiter part is there
	cancel()
	time.Sleep(2 * time.Second)
	srv.Resume()
	resumedAt.Store(time.Now().UnixNano())
	waitFor(t, "a success after SIGCONT", func() bool { return firstOK.Load() != 0 })
	stop.Store(true)
	wg.Wait()

	if over := time.Duration(worstOver.Load()); over > time.Second {
		t.Errorf("a call outlived its %v deadline by %v", deadline, over)
	}
	if during.Limiter.InFlight == 0 || during.Limiter.Waiting+during.Limiter.InFlightCallers < 100 {
		t.Errorf("while paused callers should be waiting, queued or in round trips in flight: %+v", *during.Limiter)
	}
	if d := time.Duration(firstOK.Load() - resumedAt.Load()); d > 2*time.Second {
		t.Errorf("first success %v after SIGCONT, want within 2s", d)
	}
	ai, _ := a.ConnectionInfo(context.Background())
	wi, _ := w.ConnectionInfo(context.Background())
	if ai.Pool.Timeouts == 0 {
		t.Error("the API's tiny pool never timed out while the server was paused")
	}
	if wi.Limiter.InFlight != 0 || wi.Limiter.Waiting != 0 || wi.Limiter.InFlightCallers != 0 {
		t.Errorf("worker limiter after the pause: %+v", *wi.Limiter)
	}
	t.Logf("while paused: %+v; API pool timeouts %d", *during.Limiter, ai.Pool.Timeouts)
}

// With appendfsync always, whatever BatchRPush acknowledged survives a
// SIGKILL, in order; the error names the uncertain chunk; a plain retry of
// values[n:] repeats at most that chunk, and an idempotent retry repeats
// nothing.
func TestAcknowledgedBatchItemsSurviveSIGKILL(t *testing.T) {
	for _, idempotent := range []bool{false, true} {
		t.Run("idempotent="+strconv.FormatBool(idempotent), func(t *testing.T) {
			srv := redistest.Start(t, redistest.Options{AppendFsyncAlways: true})
			cfg := config(conn.RoleWorker, srv)
			cfg.ConnectTimeout = time.Second
			w := newWorker(t, cfg)
			values := make([]any, 200_000)
			for i := range values {
				values[i] = "v" + strconv.Itoa(i)
			}
			ctx := context.Background()
			call := func(ctx context.Context, start int, vs []any) (int, error) {
				if idempotent {
					ctx = conn.WithIdempotentBatch(ctx, "run-7", start)
				}
				return w.BatchRPush(ctx, "durable:list", vs...)
			}
			type res struct {
				n   int
				err error
			}
			done := make(chan res, 1)
			go func() { n, err := call(ctx, 0, values); done <- res{n, err} }()
			time.Sleep(300 * time.Millisecond)
			srv.Kill()
			r := <-done
			var be *conn.BatchError
			if !errors.As(r.err, &be) {
				t.Fatalf("BatchRPush after SIGKILL: %d, %v; want a *BatchError", r.n, r.err)
			}
			n := r.n
			if n == 0 || n%50 != 0 || be.Acknowledged != n {
				t.Fatalf("acknowledged %d (%+v)", n, be)
			}
			uncertain := be.UncertainTo - be.UncertainFrom
			if be.UncertainFrom != n || uncertain > 50 {
				t.Fatalf("uncertain [%d:%d] after n=%d", be.UncertainFrom, be.UncertainTo, n)
			}
			srv.Restart()
			probe := srv.Client(t)
			list := probe.LRange(ctx, "durable:list", 0, -1).Val()
			if len(list) < n || len(list) > n+uncertain {
				t.Fatalf("after restart the list has %d items; acknowledged %d, uncertain %d", len(list), n, uncertain)
			}
			for i := range list {
				if list[i] != values[i] {
					t.Fatalf("list[%d] = %s, want %s: acknowledged items lost or reordered", i, list[i], values[i])
				}
			}
			applied := len(list) - n // of the uncertain chunk, applied before the kill
			waitFor(t, "the worker to reconnect", func() bool { return w.Ping(ctx).Err() == nil })
			m, err := call(ctx, n, values[n:])
			if err != nil || m != len(values)-n {
				t.Fatalf("retry: %d, %v", m, err)
			}
			list = probe.LRange(ctx, "durable:list", 0, -1).Val()
			want := len(values)
			if !idempotent {
				want += applied // a plain retry repeats what of the uncertain chunk was applied
			}
			if len(list) != want {
				t.Fatalf("after the retry the list has %d items, want %d (uncertain chunk applied: %d)", len(list), want, applied)
			}
			// values[:n], then (plain retry only) what of the uncertain chunk
			// was applied before the kill, then values[n:] from the retry.
			expect := append([]any{}, values[:n]...)
			if !idempotent {
				expect = append(expect, values[n:n+applied]...)
			}
			expect = append(expect, values[n:]...)
			for i := range list {
				if list[i] != expect[i] {
					t.Fatalf("after retry list[%d] = %s, want %s", i, list[i], expect[i])
				}
			}
			t.Logf("acknowledged %d of %d before SIGKILL; uncertain %d, of which applied %d", n, len(values), uncertain, applied)
		})
	}
}

func TestIdempotentBatchRejectsBadArguments(t *testing.T) {
	w := newWorker(t, config(conn.RoleWorker, shared))
	for _, ctx := range []context.Context{
		conn.WithIdempotentBatch(context.Background(), "", 0),
		conn.WithIdempotentBatch(context.Background(), "id", -1),
	} {
		if _, err := w.BatchRPush(ctx, "idem:bad", 1); err == nil {
			t.Error("accepted a bad idempotent batch")
		}
	}
	// The same chunk twice is applied once.
	ctx := conn.WithIdempotentBatch(context.Background(), "twice", 0)
	for i := 0; i < 2; i++ {
		if n, err := w.BatchRPush(ctx, "idem:{tag}:list", 1, 2, 3); err != nil || n != 3 {
			t.Fatalf("%d, %v", n, err)
		}
	}
	if got := shared.Client(t).LLen(context.Background(), "idem:{tag}:list").Val(); got != 3 {
		t.Fatalf("list has %d items after pushing the same idempotent batch twice", got)
	}
}

// 100k operations with random deadlines and cancellations: permits never
// leak, and callers without a deadline are never starved.
func TestCancellationStorm(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	cfg := config(conn.RoleWorker, srv)
	cfg.PoolSize, cfg.MaxConcurrentOps = 40, 20
	w := newWorker(t, cfg)
	const goroutines, perG = 1000, 100
	var (
		wg         sync.WaitGroup
		ok, fail   atomic.Int64
		maxPatient atomic.Int64
	)
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			for i := 0; i < perG; i++ {
				ctx, cancel := context.Background(), context.CancelFunc(func() {})
				patient := false
				switch rng.IntN(4) {
				case 0:
					ctx, cancel = context.WithTimeout(ctx, time.Duration(rng.IntN(3000))*time.Microsecond)
				case 1:
					ctx, cancel = context.WithCancel(ctx)
					go func(d time.Duration) { time.Sleep(d); cancel() }(time.Duration(rng.IntN(2000)) * time.Microsecond)
				default:
					patient = true
				}
				start := time.Now()
				var err error
				if i%3 == 0 {
					_, err = w.BatchRPush(ctx, "storm:"+strconv.Itoa(g%10), i, i+1)
				} else {
					err = w.Incr(ctx, "storm:n").Err()
				}
				cancel()
				if err == nil {
					ok.Add(1)
				} else {
					fail.Add(1)
					if patient {
						t.Errorf("a caller without deadline failed: %v", err)
					}
				}
				if patient {
					if d := int64(time.Since(start)); d > maxPatient.Load() {
						maxPatient.Store(d)
					}
				}
			}
		}()
	}
	wg.Wait()
	if !redistest.WaitFor(context.Background(), 5*time.Second, func() bool {
		info, _ := w.ConnectionInfo(context.Background())
		return info.Limiter.InFlight == 0 && info.Limiter.Waiting == 0
	}) {
		info, _ := w.ConnectionInfo(context.Background())
		t.Fatalf("permits leaked: %+v", *info.Limiter)
	}
	info, _ := w.ConnectionInfo(context.Background())
	if wait := time.Duration(maxPatient.Load()); wait > 5*time.Second {
		t.Errorf("a caller without deadline waited %v", wait)
	}
	// All 20 permits still work.
	var pw sync.WaitGroup
	for i := 0; i < 20; i++ {
		pw.Add(1)
		go func() {
			defer pw.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := w.Do(ctx, "blpop", "storm:empty", "0.2").Err(); err != nil && err.Error() != "redis: nil" {
				t.Errorf("after the storm: %v", err)
			}
		}()
	}
	pw.Wait()
	t.Logf("%d succeeded, %d ended by their context; longest wait of a caller without deadline %v; limiter %+v",
		ok.Load(), fail.Load(), time.Duration(maxPatient.Load()), *info.Limiter)
}

// A server at maxclients refuses the connection an operation needs. The
// operation fails with ErrMaxClients as a failure to connect (nothing sent,
// nothing uncertain), not as the "broken pipe" of a connection that go-redis
// took for set up; a batch chunk is tried again like a single command.
func TestServerFullIsAConnectFailure(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{Args: []string{"--maxclients", "4"}})
	ctx := ctxTimeout(t, time.Minute)
	check := srv.Client(t)
	if err := check.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	cfg := config(conn.RoleWorker, srv)
	cfg.PoolSize, cfg.MaxConcurrentOps = 4, 4
	w := newWorker(t, cfg)
	// A blocking pop holds the only connection of the worker's pool shares
	// that serve operations: the next operation needs a new one, which the
	// server, once full, refuses.
	blocked := make(chan error, 1)
	go func() { blocked <- w.BLPop(ctx, 20*time.Second, "full:block").Err() }()
	if !redistest.WaitFor(ctx, 5*time.Second, func() bool {
		s := w.PoolStats()
		return s.TotalConns-s.IdleConns == 1
	}) {
		t.Fatalf("BLPOP did not take the pooled connection: %+v", w.PoolStats())
	}

	clients := redistest.InfoField(t, check, "clients", "connected_clients")
	raw := srv.FillMaxClients(t, 10)
	t.Logf("server full with %d raw connections", len(raw))

	rejected := redistest.InfoField(t, check, "stats", "rejected_connections")
	n, err := w.BatchRPush(ctx, "full:list", 1, 2, 3)
	var be *conn.BatchError
	if n != 0 || !errors.As(err, &be) || !errors.Is(err, conn.ErrMaxClients) {
		t.Fatalf("BatchRPush on a full server = %d, %v; want 0 and a *BatchError wrapping ErrMaxClients", n, err)
	}
	if be.UncertainTo != be.UncertainFrom {
		t.Errorf("a refused connection sent nothing, yet items [%d:%d] are uncertain: %v", be.UncertainFrom, be.UncertainTo, err)
	}
	for _, bad := range []string{"broken pipe", "EOF", "connection reset"} {
		if strings.Contains(err.Error(), bad) {
			t.Errorf("error %q reads %q, not the server's refusal", err, bad)
		}
	}
	if got := redistest.InfoField(t, check, "stats", "rejected_connections") - rejected; got != 4 {
		t.Errorf("the chunk's connection was refused %d times, want 4 (one try and three retries)", got)
	}
	if et := telemetry.ErrorType(err); et != "max_clients" {
		t.Errorf("error.type of a refused connection = %q, want max_clients", et)
	}
	t.Logf("BatchRPush: %v", err)

	if err := w.Get(ctx, "full:k").Err(); !errors.Is(err, conn.ErrMaxClients) {
		t.Errorf("GET on a full server: %v, want ErrMaxClients", err)
	}
	// A pub/sub connection is set up outside any operation; the server's
	// refusal still reads as one.
	ps := w.Subscribe(ctx)
	if err := ps.Subscribe(ctx, "full:channel"); !errors.Is(err, conn.ErrMaxClients) {
		t.Errorf("SUBSCRIBE on a full server: %v, want ErrMaxClients", err)
	} else {
		t.Logf("SUBSCRIBE: %v", err)
	}
	_ = ps.Close()
	if _, err := conn.NewAPI(ctx, config(conn.RoleAPI, srv)); !errors.Is(err, conn.ErrMaxClients) ||
		!strings.Contains(err.Error(), srv.Addr()) || !strings.Contains(err.Error(), "maxclients") {
		t.Errorf("NewAPI on a full server: %v; want ErrMaxClients, naming the address and maxclients", err)
	}

	// Room again: the same Worker succeeds, and the refused batch applied nothing.
	for _, c := range raw {
		_ = c.Close()
	}
	if !redistest.WaitFor(ctx, 5*time.Second, func() bool {
		return redistest.InfoField(t, check, "clients", "connected_clients") <= clients
	}) {
		t.Fatal("the server did not see the raw connections close")
	}
	if n, err := w.BatchRPush(ctx, "full:list", 1, 2, 3); n != 3 || err != nil {
		t.Fatalf("BatchRPush with room again = %d, %v", n, err)
	}
	if got, err := check.LRange(ctx, "full:list", 0, -1).Result(); err != nil || strings.Join(got, ",") != "1,2,3" {
		t.Errorf("list = %v, %v; want [1 2 3]", got, err)
	}
	if err := check.RPush(ctx, "full:block", "x").Err(); err != nil {
		t.Fatal(err)
	}
	if err := <-blocked; err != nil {
		t.Errorf("BLPOP: %v", err)
	}
}
