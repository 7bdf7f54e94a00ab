package conn_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redisconn/redisconn/conn"
	"github.com/redisconn/redisconn/internal/redistest"
)

func items(n int) []any {
	v := make([]any, n)
	for i := range v {
		v[i] = "item-" + strconv.Itoa(i)
	}
	return v
}

// BatchRPush appends every value in order, one RPUSH per chunk of BatchSize,
// as the server counts them.
func TestBatchRPushCountsOrderAndRoundTrips(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	w := newWorker(t, config(conn.RoleWorker, srv))
	probe := srv.Client(t)
	ctx := ctxTimeout(t, 30*time.Second)

	for _, n := range []int{0, 1, 49, 50, 51, 100, 1234} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			key := fmt.Sprintf("batch:rpush:%d", n)
			before := redistest.CommandCalls(t, probe, "rpush")
			got, err := w.BatchRPush(ctx, key, items(n)...)
			if err != nil || got != n {
				t.Fatalf("BatchRPush(%d) = %d, %v", n, got, err)
			}
			if calls := redistest.CommandCalls(t, probe, "rpush") - before; calls != int64((n+49)/50) {
				t.Errorf("%d items took %d RPUSH round trips, want %d", n, calls, (n+49)/50)
			}
			list, err := probe.LRange(ctx, key, 0, -1).Result()
			if err != nil {
				t.Fatal(err)
			}
			if len(list) != n {
				t.Fatalf("LLEN %d, want %d", len(list), n)
			}
			for i, v := range list {
				if v != "item-"+strconv.Itoa(i) {
					t.Fatalf("list[%d] = %q: out of order", i, v)
				}
			}
		})
	}
}

func TestBatchSizeIsConfigurable(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	cfg := config(conn.RoleWorker, srv)
	cfg.BatchSize = 7
	w := newWorker(t, cfg)
	probe := srv.Client(t)
	ctx := ctxTimeout(t, 10*time.Second)
	if n, err := w.BatchRPush(ctx, "batch:size", items(50)...); err != nil || n != 50 {
		t.Fatalf("got %d, %v", n, err)
	}
	if calls := redistest.CommandCalls(t, probe, "rpush"); calls != 8 {
		t.Fatalf("50 items in chunks of 7 took %d round trips, want 8", calls)
	}
	if n, err := w.BatchPublish(ctx, "batch:size", items(15)...); err != nil || n != 15 {
		t.Fatalf("got %d, %v", n, err)
	}
	if calls := redistest.CommandCalls(t, probe, "publish"); calls != 15 {
		t.Fatalf("PUBLISH calls %d, want 15", calls)
	}
}

// Every chunk is one limiter operation, and nothing leaks from the limiter.
func TestBatchChunksTakeOnePermitEach(t *testing.T) {
	w := newWorker(t, config(conn.RoleWorker, shared))
	ctx := ctxTimeout(t, 10*time.Second)
	before, _ := w.ConnectionInfo(ctx)
	if _, err := w.BatchRPush(ctx, t.Name(), items(120)...); err != nil {
		t.Fatal(err)
	}
	if _, err := w.BatchPublish(ctx, t.Name(), items(120)...); err != nil {
		t.Fatal(err)
	}
	after, _ := w.ConnectionInfo(ctx)
	if got := after.Limiter.Acquired - before.Limiter.Acquired; got != 6 {
		t.Errorf("240 items in chunks of 50 took %d permits, want 6", got)
	}
	if after.Limiter.InFlight != 0 {
		t.Errorf("in flight %d", after.Limiter.InFlight)
	}
	_ = w.Del(ctx, t.Name())
}

func TestBatchOpsWithNoItemsMakeNoRoundTrip(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	w := newWorker(t, config(conn.RoleWorker, srv))
	probe := srv.Client(t)
	ctx := ctxTimeout(t, 10*time.Second)
	for _, values := range [][]any{nil, {}} {
		if n, err := w.BatchRPush(ctx, "empty", values...); n != 0 || err != nil {
			t.Errorf("BatchRPush(%v) = %d, %v", values, n, err)
		}
		if n, err := w.BatchPublish(ctx, "empty", values...); n != 0 || err != nil {
			t.Errorf("BatchPublish(%v) = %d, %v", values, n, err)
		}
	}
	if calls := redistest.CommandCalls(t, probe, "rpush") + redistest.CommandCalls(t, probe, "publish"); calls != 0 {
		t.Errorf("empty batches made %d calls", calls)
	}
}

// A subscriber receives every message of BatchPublish, in order.
func TestBatchPublishIsReceivedInOrder(t *testing.T) {
	w := newWorker(t, config(conn.RoleWorker, shared))
	ctx := ctxTimeout(t, 30*time.Second)
	const n = 1000
	channel := "batch:publish:" + t.Name()
	sub := shared.Client(t).Subscribe(ctx, channel)
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := w.BatchPublish(ctx, channel, items(n)...)
	if err != nil || got != n {
		t.Fatalf("BatchPublish = %d, %v", got, err)
	}
	ch := sub.Channel()
	for i := 0; i < n; i++ {
		select {
		case msg := <-ch:
			if msg.Payload != "item-"+strconv.Itoa(i) {
				t.Fatalf("message %d is %q: out of order", i, msg.Payload)
			}
		case <-ctx.Done():
			t.Fatalf("received %d of %d messages", i, n)
		}
	}
}

// A server error stops the batch: what came before is acknowledged, the
// failing chunk is not applied (not uncertain), the rest is not sent.
func TestBatchRPushStopsAtAServerError(t *testing.T) {
	w := newWorker(t, config(conn.RoleWorker, shared))
	ctx := ctxTimeout(t, 10*time.Second)
	key := "batch:wrongtype:" + t.Name()
	if err := w.Set(ctx, key, "a string", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	n, err := w.BatchRPush(ctx, key, items(120)...)
	var be *conn.BatchError
	if !errors.As(err, &be) {
		t.Fatalf("got %d, %v; want a *BatchError", n, err)
	}
	if n != 0 || be.Acknowledged != 0 || be.UncertainTo != be.UncertainFrom || be.Total != 120 || be.Op != "BatchRPush" {
		t.Fatalf("got n=%d %+v", n, be)
	}
	if !redis.HasErrorPrefix(err, "WRONGTYPE") && !errors.As(err, new(redis.Error)) {
		t.Fatalf("cause should be the server's WRONGTYPE: %v", err)
	}
}

func TestBatchStopsWhenTheContextEnds(t *testing.T) {
	w := newWorker(t, config(conn.RoleWorker, shared))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	n, err := w.BatchRPush(ctx, "batch:cancelled", items(10)...)
	var be *conn.BatchError
	if n != 0 || !errors.As(err, &be) || !errors.Is(err, context.Canceled) || be.UncertainTo != be.UncertainFrom {
		t.Fatalf("got %d, %v", n, err)
	}
	if exists := shared.Client(t).Exists(context.Background(), "batch:cancelled").Val(); exists != 0 {
		t.Fatal("a cancelled batch wrote")
	}
}

// When the server stops answering mid-batch, the chunk in flight is reported
// as uncertain and everything before it as acknowledged; a retry of
// values[n:] then completes the list with at most that chunk repeated.
func TestBatchRPushReportsTheUncertainChunk(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	cfg := config(conn.RoleWorker, srv)
	cfg.BatchSize = 10
	w := newWorker(t, cfg)
	probe := srv.Client(t)
	values := items(100)

	// The first chunks go through; then the server pauses and the call's
	// deadline passes while a chunk waits for its reply.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := w.BatchRPush(context.Background(), "batch:uncertain", values[:30]...); err != nil {
		t.Fatal(err)
	}
	srv.Pause()
	n, err := w.BatchRPush(ctx, "batch:uncertain", values[30:]...)
	srv.Resume()
	var be *conn.BatchError
	if !errors.As(err, &be) {
		t.Fatalf("got %d, %v; want a *BatchError", n, err)
	}
	if n != 0 || be.UncertainFrom != 0 || be.UncertainTo != 10 || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got n=%d %v", n, be)
	}
	// Retry what was not acknowledged.
	rctx := ctxTimeout(t, 10*time.Second)
	m, err := w.BatchRPush(rctx, "batch:uncertain", values[30+n:]...)
	if err != nil || m != 70-n {
		t.Fatalf("retry: %d, %v", m, err)
	}
	list, err := probe.LRange(rctx, "batch:uncertain", 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	// values, with the uncertain chunk at most twice.
	want := make([]string, 0, 110)
	for _, v := range values[:40] {
		want = append(want, v.(string))
	}
	if len(list) == 110 { // the paused chunk was applied after all, then retried
		for _, v := range values[30:40] {
			want = append(want, v.(string))
		}
	}
	for _, v := range values[40:] {
		want = append(want, v.(string))
	}
	if len(list) != len(want) {
		t.Fatalf("list has %d items, want %d", len(list), len(want))
	}
	for i := range want {
		if list[i] != want[i] {
			t.Fatalf("list[%d] = %q, want %q", i, list[i], want[i])
		}
	}
	t.Logf("uncertain chunk applied before the retry: %t", len(list) == 110)
}

// A million items go out chunk by chunk: the manager keeps nothing of them.
func TestBatchOfAMillionItemsUsesBoundedMemory(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	w := newWorker(t, config(conn.RoleWorker, srv))
	values := make([]any, 1_000_000)
	for i := range values {
		values[i] = i
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	n, err := w.BatchRPush(context.Background(), "million", values...)
	if err != nil || n != len(values) {
		t.Fatalf("%d, %v", n, err)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if grown := int64(after.HeapAlloc) - int64(before.HeapAlloc); grown > 8<<20 {
		t.Errorf("heap grew by %d MiB across the batch", grown>>20)
	}
	if got := srv.Client(t).LLen(context.Background(), "million").Val(); got != int64(len(values)) {
		t.Fatalf("LLEN %d", got)
	}
	// nil values and nil items do not panic.
	if n, err := w.BatchRPush(context.Background(), "million:nil", nil, nil); err != nil || n != 2 {
		t.Fatalf("nil items: %d, %v", n, err)
	}
	if n, err := w.BatchPublish(context.Background(), "million:nil", nil); err != nil || n != 1 {
		t.Fatalf("nil message: %d, %v", n, err)
	}
	runtime.KeepAlive(values)
}

// refusePipelines is a user's hook that refuses every pipeline without a
// word on its commands (a rate limiter, say).
type refusePipelines struct{}

func (refusePipelines) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (refusePipelines) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (refusePipelines) ProcessPipelineHook(redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(context.Context, []redis.Cmder) error { return errRefusedByHook }
}

var errRefusedByHook = errors.New("refused by the user's hook")

// A BatchPublish chunk that a user's hook refuses is not acknowledged: the
// call returns a *BatchError wrapping the hook's error, nothing uncertain,
// and the subscriber receives nothing.
func TestBatchPublishRefusedByAHookIsNotAcknowledged(t *testing.T) {
	w := newWorker(t, config(conn.RoleWorker, shared))
	ctx := ctxTimeout(t, 10*time.Second)
	sub := w.Subscribe(ctx, "refused:ch")
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	w.AddHook(refusePipelines{})
	n, err := w.BatchPublish(ctx, "refused:ch", "a", "b", "c")
	var be *conn.BatchError
	if n != 0 || !errors.Is(err, errRefusedByHook) || !errors.As(err, &be) || be.UncertainTo != be.UncertainFrom {
		t.Fatalf("BatchPublish refused by a hook = %d, %v; want 0 and a *BatchError wrapping the hook's error, nothing uncertain", n, err)
	}
	rctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if msg, err := sub.ReceiveMessage(rctx); err == nil {
		t.Errorf("the subscriber received %q", msg.Payload)
	}
}
