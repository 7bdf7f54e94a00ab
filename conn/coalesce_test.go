package conn_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redisconn/redisconn/conn"
	"github.com/redisconn/redisconn/internal/redistest"
)

// Concurrent single commands share round trips: fewer pool checkouts than
// commands, every command applied exactly once, each caller's in order.
func TestCoalescingSharesRoundTripsAndKeepsOrder(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	w := newWorker(t, config(conn.RoleWorker, srv))
	probe := srv.Client(t)
	ctx := ctxTimeout(t, 60*time.Second)
	const callers, each = 200, 50
	before := poolCheckouts(w)
	var wg sync.WaitGroup
	for i := 0; i < callers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := "coalesce:list:" + strconv.Itoa(i)
			for j := 0; j < each; j++ {
				if err := w.RPush(ctx, key, j).Err(); err != nil {
					t.Error(err)
					return
				}
				if err := w.Incr(ctx, "coalesce:counter").Err(); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if got := probe.Get(ctx, "coalesce:counter").Val(); got != strconv.Itoa(callers*each) {
		t.Fatalf("counter %s, want %d: a command was lost or applied twice", got, callers*each)
	}
	for i := 0; i < callers; i++ {
		checkSequence(t, probe, "coalesce:list:"+strconv.Itoa(i), each)
	}
	checkouts := poolCheckouts(w) - before
	if commands := uint32(2 * callers * each); checkouts*2 > commands {
		t.Errorf("%d commands took %d round trips: not coalesced", commands, checkouts)
	}
	if calls := redistest.CommandCalls(t, probe, "incr"); calls != callers*each {
		t.Errorf("server ran INCR %d times, want %d", calls, callers*each)
	}
	t.Logf("%d commands in %d round trips", 2*callers*each, checkouts)
}

// Concurrent BatchRPush callers' chunks share round trips too: fewer pool
// checkouts than chunks, each list whole and in order, each chunk one RPUSH.
func TestBatchRPushChunksAreCoalesced(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	cfg := config(conn.RoleWorker, srv)
	cfg.BatchSize = 10
	w := newWorker(t, cfg)
	probe := srv.Client(t)
	ctx := ctxTimeout(t, 60*time.Second)
	const callers, items, calls = 100, 95, 5 // 10 chunks per call
	before := poolCheckouts(w)
	var wg sync.WaitGroup
	for i := 0; i < callers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := "coalesce:batch:" + strconv.Itoa(i)
			for c := 0; c < calls; c++ {
				values := make([]any, items)
				for j := range values {
					values[j] = c*items + j
				}
				if n, err := w.BatchRPush(ctx, key, values...); n != items || err != nil {
					t.Errorf("BatchRPush = %d, %v", n, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	for i := 0; i < callers; i++ {
		checkSequence(t, probe, "coalesce:batch:"+strconv.Itoa(i), calls*items)
	}
	chunks := callers * calls * 10
	if got := redistest.CommandCalls(t, probe, "rpush"); got != int64(chunks) {
		t.Errorf("server ran RPUSH %d times, want one per chunk: %d", got, chunks)
	}
	checkouts := poolCheckouts(w) - before
	if checkouts*2 > uint32(chunks) {
		t.Errorf("%d chunks took %d round trips: not coalesced", chunks, checkouts)
	}
	t.Logf("%d chunks in %d round trips", chunks, checkouts)
}

// poolCheckouts is how many times w took a pooled connection: one per round
// trip (a command, a pipeline).
func poolCheckouts(w *conn.Worker) uint32 {
	s := w.PoolStats()
	return s.Hits + s.Misses
}

// checkSequence fails unless the list at key is 0, 1, ..., n-1: nothing lost,
// repeated or out of order.
func checkSequence(t *testing.T, probe *redis.Client, key string, n int) {
	t.Helper()
	list, err := probe.LRange(context.Background(), key, 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != n {
		t.Fatalf("%s has %d items, want %d", key, len(list), n)
	}
	for j, v := range list {
		if v != strconv.Itoa(j) {
			t.Fatalf("%s: item %d is %s: commands ran out of order", key, j, v)
		}
	}
}

// A Conn's commands run on its own connection, never in a shared pipeline:
// after SELECT 2 on the Conn, its SET lands in database 2.
func TestConnCommandsAreNotCoalesced(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	w := newWorker(t, config(conn.RoleWorker, srv))
	ctx := ctxTimeout(t, 10*time.Second)
	c, err := w.Conn()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Select(ctx, 2).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.Set(ctx, "coalesce:db2", "v", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if got := c.Get(ctx, "coalesce:db2").Val(); got != "v" {
		t.Fatalf("GET on the Conn: %q", got)
	}
	probe := srv.Client(t)
	if n := probe.Exists(ctx, "coalesce:db2").Val(); n != 0 {
		t.Fatal("the Conn's SET went to database 0: it was coalesced onto another connection")
	}
	// Watch transactions keep their optimistic lock.
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for attempt := 0; attempt < 100; attempt++ {
				err := w.Watch(ctx, func(tx *redis.Tx) error {
					n, err := tx.Get(ctx, "coalesce:watched").Int()
					if err != nil && !errors.Is(err, redis.Nil) {
						return err
					}
					_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
						p.Set(ctx, "coalesce:watched", n+1, time.Minute)
						return nil
					})
					return err
				}, "coalesce:watched")
				if err == nil {
					return
				}
				if !errors.Is(err, redis.TxFailedErr) {
					t.Error(err)
					return
				}
			}
			t.Error("no transaction succeeded in 100 attempts")
		}()
	}
	wg.Wait()
	if got := probe.Get(ctx, "coalesce:watched").Val(); got != "20" {
		t.Fatalf("20 optimistic increments gave %s", got)
	}
}

// A command whose caller gives up while it is queued is never sent.
func TestQueuedCommandWhoseContextEndsIsNeverSent(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	cfg := config(conn.RoleWorker, srv)
	cfg.PoolSize, cfg.MaxConcurrentOps = 2, 1
	w := newWorker(t, cfg)
	ctx := ctxTimeout(t, 10*time.Second)
	holding := make(chan struct{})
	go func() { defer close(holding); _ = w.Do(ctx, "blpop", "coalesce:empty", "0.5").Err() }()
	waitFor(t, "the permit to be held", func() bool {
		info, _ := w.ConnectionInfo(ctx)
		return info.Limiter.InFlight == 1
	})
	qctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	err := w.Incr(qctx, "coalesce:never").Err()
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want the context's error", err)
	}
	<-holding
	time.Sleep(100 * time.Millisecond)
	if n := srv.Client(t).Exists(ctx, "coalesce:never").Val(); n != 0 {
		t.Fatal("a command whose caller gave up while it was queued was sent")
	}
	info, _ := w.ConnectionInfo(ctx)
	if info.Limiter.Waiting != 0 || info.Limiter.InFlight != 0 || info.Limiter.RejectedContext != 1 {
		t.Fatalf("limiter %+v", *info.Limiter)
	}
}

// With coalescing off, single commands take one permit and one round trip each.
func TestCoalescingCanBeTurnedOff(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	w, err := conn.NewWorker(context.Background(), config(conn.RoleWorker, srv), conn.WithCoalescing(false))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	ctx := ctxTimeout(t, 10*time.Second)
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); _ = w.Incr(ctx, "coalesce:off").Err() }()
	}
	wg.Wait()
	info, _ := w.ConnectionInfo(ctx)
	if got := info.Pool.Hits + info.Pool.Misses; got < 51 { // the PING, then 50 INCRs
		t.Fatalf("%d round trips for 51 commands with coalescing off", got)
	}
}
