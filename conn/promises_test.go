package conn_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redisconn/redisconn/conn"
	"github.com/redisconn/redisconn/internal/rediserr"
	"github.com/redisconn/redisconn/internal/redistest"
)

// The tests in this file check that, to its callers, a Worker behaves as a
// go-redis client does, apart from the queueing it exists for.

// A stalled server must not take a caller's deadline with it, whatever its
// command shares a round trip with: 300 callers with a 200 ms deadline and
// 100 without, the server (every master of a cluster) stopped for 3 s. Each
// deadline caller must return within 250 ms (deadline plus the documented
// spread plus scheduling), on a standalone server, on a cluster and on a
// Sentinel-managed master.
func TestCoalescedCallersKeepTheirDeadlinesWhenTheServerStalls(t *testing.T) {
	for _, topo := range []string{"standalone", "cluster", "sentinel"} {
		t.Run(topo, func(t *testing.T) {
			var w *conn.Worker
			var servers []*redistest.Server
			switch topo {
			case "standalone":
				srv := redistest.Start(t, redistest.Options{})
				w = newWorker(t, config(conn.RoleWorker, srv))
				servers = []*redistest.Server{srv}
			case "sentinel":
				// The sentinels must not fail over during the stall.
				s := redistest.StartSentinel(t, redistest.SentinelOptions{DownAfter: time.Minute})
				w = newWorker(t, sentinelConfig(conn.RoleWorker, s))
				servers = []*redistest.Server{s.Master()}
			default:
				cl := redistest.StartCluster(t, redistest.ClusterOptions{Masters: 3, NodeTimeout: 10 * time.Second})
				cfg := conn.DefaultConfig(conn.RoleWorker)
				cfg.ClusterAddrs = cl.Addrs()
				w = newWorker(t, cfg)
				servers = cl.Masters
			}
			stallUnderDeadlines(t, w, servers)
		})
	}
}

func stallUnderDeadlines(t *testing.T, w *conn.Worker, servers []*redistest.Server) {
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
	for _, s := range servers {
		s.Pause()
	}
	paused := time.Now()
	resumed := false
	resume := func() {
		if !resumed {
			for _, s := range servers {
				s.Resume()
			}
			resumed = true
		}
	}
	defer resume()
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
	resume()
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

// A command whose reply was read keeps it, and an answered command is never
// sent again: the server answers every command before a too-large SET and
// then closes the connection (proto-max-bulk-len); 400 callers each INCR
// their own counter (keys spread over the slots), one call at a time, while
// another sends such a SET every 20 ms. On a standalone server, with TLS and
// an ACL user, on a 3-master cluster and on a Sentinel-managed master, no
// counter may end above its
// caller's number of calls,
// and none below its acknowledged calls. A plain go-redis client on the same
// workload is the baseline; the log gives, for both, the increments applied
// whose callers were told they failed.
func TestAnsweredCommandsAreNeverSentAgainAfterACutConnection(t *testing.T) {
	args := []string{"--proto-max-bulk-len", "1mb"}
	for _, topo := range []string{"standalone", "tls+acl", "cluster", "sentinel"} {
		t.Run(topo, func(t *testing.T) {
			var worker, plain redis.UniversalClient
			var check redis.UniversalClient
			switch topo {
			case "standalone":
				srv := redistest.Start(t, redistest.Options{Args: args})
				worker = newWorker(t, config(conn.RoleWorker, srv))
				plain = redis.NewClient(&redis.Options{Addr: srv.Addr(), PoolSize: 200})
				check = srv.Client(t)
			case "tls+acl":
				const user, password = "agent", "cut-s3cret"
				srv := redistest.Start(t, redistest.Options{TLS: true, Username: user, UserPassword: password, Args: args})
				cfg := config(conn.RoleWorker, srv)
				cfg.TLS, cfg.TLSCAFile, cfg.Username, cfg.Password = true, srv.Certs.CACert, user, password
				worker = newWorker(t, cfg)
				plain = redis.NewClient(&redis.Options{Addr: srv.Addr(), PoolSize: 200, Username: user, Password: password,
					TLSConfig: srv.Certs.ClientTLSConfig()})
				check = srv.Client(t)
			case "sentinel":
				s := redistest.StartSentinel(t, redistest.SentinelOptions{Server: redistest.Options{Args: args}, DownAfter: time.Minute})
				worker = newWorker(t, sentinelConfig(conn.RoleWorker, s))
				plain = redis.NewFailoverClient(&redis.FailoverOptions{MasterName: s.MasterName(), SentinelAddrs: s.SentinelAddrs(), PoolSize: 200})
				check = s.Master().Client(t)
			default:
				cl := redistest.StartCluster(t, redistest.ClusterOptions{Masters: 3, Args: args})
				cfg := conn.DefaultConfig(conn.RoleWorker)
				cfg.ClusterAddrs = cl.Addrs()
				worker = newWorker(t, cfg)
				plain = redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs(), PoolSize: 200})
				check = redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs(), MaxRetries: -1})
				defer check.Close()
			}
			defer plain.Close()
			for _, c := range []struct {
				name   string
				client redis.UniversalClient
			}{{"worker", worker}, {"plain go-redis", plain}} {
				over, under, extra, failedApplied, errs := cutConnectionWorkload(t, c.client, check, c.name)
				t.Logf("%s %s: %d of 400 counters above their calls (+%d), %d below their acknowledged calls; %d calls failed, of which %d were applied",
					topo, c.name, over, extra, under, errs, failedApplied)
				if c.name == "worker" && (over > 0 || under > 0 || failedApplied > 0) {
					t.Errorf("%d counters were applied more often than called (+%d), %d lost acknowledged increments, %d applied increments reported as failed",
						over, extra, under, failedApplied)
				}
			}
		})
	}
}

// cutConnectionWorkload runs the workload of
// TestAnsweredCommandsAreNeverSentAgainAfterACutConnection on client.
func cutConnectionWorkload(t *testing.T, client, check redis.UniversalClient, prefix string) (over, under int, extra, failedApplied, errs int64) {
	const callers = 400
	calls := make([]int64, callers)
	acked := make([]int64, callers)
	end := time.Now().Add(3 * time.Second)
	var wg sync.WaitGroup
	for i := 0; i < callers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := prefix + ":counter:" + strconv.Itoa(i)
			for time.Now().Before(end) {
				calls[i]++
				if client.Incr(context.Background(), key).Err() == nil {
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
			if client.Set(context.Background(), prefix+":big", big, 0).Err() != nil {
				cuts.Add(1)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	wg.Wait()
	if cuts.Load() < 10 {
		// The fault must have happened for the Worker; the baseline is reported as it ran.
		if prefix == "worker" {
			t.Fatalf("only %d big SETs failed: the server did not cut the connections", cuts.Load())
		}
		t.Logf("%s: only %d big SETs failed", prefix, cuts.Load())
	}
	for i := 0; i < callers; i++ {
		got, err := check.Get(context.Background(), prefix+":counter:"+strconv.Itoa(i)).Int64()
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
		errs += calls[i] - acked[i]
		failedApplied += max(min(got, calls[i])-acked[i], 0)
	}
	return over, under, extra, failedApplied, errs
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

// A connection whose set-up fails (the server accepts it and never answers
// HELLO: it is stopped) carried nothing of the operation that needed it,
// and the operation's failure says so (rediserr.NotWritten; a batch chunk
// unsent, no item uncertain), on a standalone server, a cluster and a
// Sentinel-managed master. The pooled connections are killed first, so the
// callers (a Worker's BatchRPush and coalesced INCR, an API's INCR, 300 ms
// deadlines) dial new ones. After the resume the servers tell: no list or
// counter reported unsent holds anything. (Before, a set-up that timed out
// came to the operation as a bare read timeout: "may have run".) Plain
// go-redis on the same callers is the baseline; it returns the context's
// error after its retries.
func TestAFailedSetUpSaysNothingWasWritten(t *testing.T) {
	for _, topo := range []string{"standalone", "cluster", "sentinel"} {
		t.Run(topo, func(t *testing.T) {
			var wcfg, acfg conn.Config
			var plain redis.UniversalClient
			var servers []*redistest.Server
			switch topo {
			case "standalone":
				srv := redistest.Start(t, redistest.Options{})
				wcfg, acfg = config(conn.RoleWorker, srv), config(conn.RoleAPI, srv)
				plain = redis.NewClient(&redis.Options{Addr: srv.Addr()})
				servers = []*redistest.Server{srv}
			case "sentinel":
				s := redistest.StartSentinel(t, redistest.SentinelOptions{DownAfter: time.Minute})
				wcfg, acfg = sentinelConfig(conn.RoleWorker, s), sentinelConfig(conn.RoleAPI, s)
				plain = redis.NewFailoverClient(&redis.FailoverOptions{MasterName: s.MasterName(), SentinelAddrs: s.SentinelAddrs()})
				servers = []*redistest.Server{s.Master()}
			default:
				cl := redistest.StartCluster(t, redistest.ClusterOptions{Masters: 3, NodeTimeout: 10 * time.Second})
				wcfg, acfg = conn.DefaultConfig(conn.RoleWorker), conn.DefaultConfig(conn.RoleAPI)
				wcfg.ClusterAddrs, acfg.ClusterAddrs = cl.Addrs(), cl.Addrs()
				plain = redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs()})
				servers = cl.Masters
			}
			defer plain.Close()
			w, a := newWorker(t, wcfg), newAPI(t, acfg)
			ctx := ctxTimeout(t, 30*time.Second)
			if err := plain.Ping(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			for _, s := range servers {
				admin := redis.NewClient(&redis.Options{Addr: s.Addr()})
				if err := admin.ClientKillByFilter(ctx, "TYPE", "normal").Err(); err != nil {
					t.Fatal(err)
				}
				_ = admin.Close()
			}
			time.Sleep(50 * time.Millisecond) // the killed connections' EOF reaches the clients
			for _, s := range servers {
				s.Pause()
			}
			resumed := false
			resume := func() {
				if !resumed {
					resumed = true
					for _, s := range servers {
						s.Resume()
					}
				}
			}
			defer resume()

			const callers = 20
			type outcome struct {
				key     string
				incr    bool
				err     error
				unsent  bool // the failure says nothing was written
				mayHave bool // the failure says the command may have run
			}
			var mu sync.Mutex
			var outs []outcome
			add := func(o outcome) { mu.Lock(); outs = append(outs, o); mu.Unlock() }
			var wg sync.WaitGroup
			call := func(f func(ctx context.Context) outcome) {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
					defer cancel()
					add(f(ctx))
				}()
			}
			incr := func(c redis.Cmdable, key string) func(ctx context.Context) outcome {
				return func(ctx context.Context) outcome {
					err := c.Incr(ctx, key).Err()
					return outcome{key: key, incr: true, err: err, unsent: rediserr.NotWritten(err), mayHave: rediserr.MayHaveRun(err)}
				}
			}
			for i := range callers {
				k := "setup:" + strconv.Itoa(i)
				call(func(ctx context.Context) outcome {
					n, err := w.BatchRPush(ctx, k+":w:list", "a", "b", "c")
					var be *conn.BatchError
					if err == nil || !errors.As(err, &be) || n != 0 {
						return outcome{key: k + ":w:list", err: fmt.Errorf("BatchRPush = %d, %v; want 0 and a *BatchError", n, err)}
					}
					return outcome{key: k + ":w:list", err: err, unsent: be.UncertainTo == be.UncertainFrom && rediserr.NotWritten(be.Err),
						mayHave: be.UncertainTo > be.UncertainFrom}
				})
				call(incr(w, k+":w"))
				call(incr(a, k+":a"))
			}
			var base []error
			for i := range callers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
					defer cancel()
					err := plain.Incr(ctx, "setup:"+strconv.Itoa(i)+":plain").Err()
					mu.Lock()
					base = append(base, err)
					mu.Unlock()
				}()
			}
			wg.Wait()
			resume()

			// Every pooled connection was gone, so every caller set up a new
			// one and wrote nothing.
			unsent := 0
			for _, o := range outs {
				switch {
				case o.err == nil:
					t.Errorf("%s succeeded against a stopped server", o.key)
				case o.unsent == o.mayHave:
					t.Errorf("%s: %v (%T): says neither \"not written\" nor \"may have run\", or both", o.key, o.err, o.err)
				case o.unsent:
					unsent++
				default:
					t.Errorf("%s: %v (%T): says it may have run, though its connection's set-up failed", o.key, o.err, o.err)
				}
			}
			// What the servers hold: nothing of what was reported unsent.
			for _, o := range outs {
				if o.err == nil || !o.unsent {
					continue
				}
				var n int64
				var err error
				if o.incr {
					n, err = w.Get(ctx, o.key).Int64()
					if errors.Is(err, redis.Nil) {
						n, err = 0, nil
					}
				} else {
					n, err = w.LLen(ctx, o.key).Result()
				}
				if err != nil {
					t.Fatal(err)
				}
				if n != 0 {
					t.Errorf("%s was reported not written (%v) but holds %d", o.key, o.err, n)
				}
			}
			baseUnsent := 0
			for _, err := range base {
				if rediserr.NotWritten(err) {
					baseUnsent++
				}
			}
			t.Logf("%s: %d of %d failures said nothing was written (first: %v); plain go-redis: %d of %d (first: %v)",
				topo, unsent, len(outs), outs[0].err, baseUnsent, len(base), base[0])
		})
	}
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

// Close does not wait for a stalled server: with 20 coalesced INCRs in
// flight and 20 more queued behind them, Close returns within 100 ms, and
// so does every caller, with ErrClosed or the closed connection's error.
func TestCloseReturnsAtOnceAgainstAStalledServer(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	w, err := conn.NewWorker(context.Background(), config(conn.RoleWorker, srv))
	if err != nil {
		t.Fatal(err)
	}
	srv.Pause()
	defer srv.Resume()
	errs := make(chan error, 40)
	for i := 0; i < 40; i++ {
		go func() { errs <- w.Incr(context.Background(), "close:stalled").Err() }()
	}
	waitFor(t, "40 callers in flight or queued", func() bool {
		// The limiter's figures come before INFO, which the stall holds up.
		ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		defer cancel()
		info, _ := w.ConnectionInfo(ctx)
		return info.Limiter.InFlightCallers+info.Limiter.Waiting == 40 && info.Limiter.InFlightCallers > 0
	})
	start := time.Now()
	if err := w.Close(); err != nil {
		t.Logf("Close: %v", err)
	}
	closed := time.Since(start)
	for i := 0; i < 40; i++ {
		select {
		case err := <-errs:
			if err == nil {
				t.Error("a caller succeeded against a stopped server")
			}
		case <-time.After(time.Second):
			t.Fatalf("%d callers still waiting 1 s after Close", 40-i)
		}
	}
	all := time.Since(start)
	t.Logf("Close returned after %v, every caller after %v", closed, all)
	if all > 100*time.Millisecond {
		t.Errorf("Close and its callers took %v against a stalled server, want at most 100 ms", all)
	}
}

// A command sent with Do that would change the state of a pooled
// connection is refused with an error that says what to use instead, and
// sends nothing; on a Conn it works. Connection set-up (HELLO, AUTH, SELECT
// for REDIS_DB) still runs: the Worker's database is 1 and its password is
// set.
func TestSessionCommandsAreRefusedOnPooledConnections(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{Password: "s3cret-session"})
	cfg := config(conn.RoleWorker, srv)
	cfg.DB, cfg.Password = 1, "s3cret-session"
	w := newWorker(t, cfg)
	ctx := ctxTimeout(t, 10*time.Second)
	for _, args := range [][]any{{"select", 2}, {"client", "setname", "x"}, {"hello", 3}, {"auth", "default", "x"}, {"subscribe", "ch"}} {
		err := w.Do(ctx, args...).Err()
		var se *conn.SessionError
		if !errors.As(err, &se) || se.Advice == "" {
			t.Errorf("Do(%v) = %v, want a *SessionError with advice", args, err)
			continue
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("the error quotes the password: %v", err)
		}
	}
	if err := w.Set(ctx, "db1:key", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	db1 := redis.NewClient(&redis.Options{Addr: srv.Addr(), Password: "s3cret-session", DB: 1})
	defer db1.Close()
	if v, err := db1.Get(ctx, "db1:key").Result(); v != "v" {
		t.Errorf("the Worker's SET is not in database 1: %q, %v", v, err)
	}
	c, err := w.Conn()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.ClientSetName(ctx, "on-a-conn").Err(); err != nil {
		t.Errorf("CLIENT SETNAME on a Conn: %v", err)
	}
	// go-redis's typed stateful commands are go-redis's, as on a plain
	// client: its set-up of a pub/sub connection of the embedded client
	// (HELLO, AUTH, SELECT outside any operation's permit) runs.
	sub := w.UniversalClient.Subscribe(ctx, "session:ch")
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		t.Errorf("Subscribe of the embedded client: %v", err)
	}
}

// Reusing an idempotent batch id for different items fails instead of
// skipping them: the second call's chunks have markers with other
// fingerprints. A retry of the same items is still skipped.
func TestIdempotentBatchIDReusedForOtherItemsFails(t *testing.T) {
	w := newWorker(t, config(conn.RoleWorker, shared))
	ctx := ctxTimeout(t, 10*time.Second)
	key := "idem:reuse:" + strconv.FormatInt(time.Now().UnixNano(), 10)
	batchCtx := conn.WithIdempotentBatch(ctx, "run-1", 0)
	first := make([]any, 120)
	for i := range first {
		first[i] = "a" + strconv.Itoa(i)
	}
	if n, err := w.BatchRPush(batchCtx, key, first...); n != 120 || err != nil {
		t.Fatalf("first call: %d, %v", n, err)
	}
	if n, err := w.BatchRPush(batchCtx, key, first...); n != 120 || err != nil {
		t.Fatalf("a retry of the same items: %d, %v; want them skipped, 120 acknowledged", n, err)
	}
	second := make([]any, 120)
	for i := range second {
		second[i] = "b" + strconv.Itoa(i)
	}
	n, err := w.BatchRPush(batchCtx, key, second...)
	var be *conn.BatchError
	if n != 0 || !errors.Is(err, conn.ErrBatchIDReused) || !errors.As(err, &be) || be.UncertainTo != be.UncertainFrom {
		t.Fatalf("the id reused for other items: %d, %v; want 0 and ErrBatchIDReused in a *BatchError, nothing uncertain", n, err)
	}
	if got, _ := shared.Client(t).LLen(ctx, key).Result(); got != 120 {
		t.Errorf("the list holds %d items, want the first call's 120", got)
	}
	t.Logf("reuse: %v", err)
}
