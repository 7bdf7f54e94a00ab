package conn_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redisconn/redisconn/conn"
)

// fifoHook appends to a shared log around each command and pipeline, as
// go-redis's own "Hook fifo" spec does, and records what reached it.
type fifoHook struct {
	name string
	log  *[]string
	mu   *sync.Mutex

	singles   map[string]int // command name -> calls of ProcessHook
	pipelines int
	badType   []string // commands that arrived as a type other than the caller's
	badCtx    int      // INCRs that arrived without the caller's context value
}

type callerKey struct{}

func (h *fifoHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *fifoHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.mu.Lock()
		*h.log = append(*h.log, h.name+"-process-start")
		h.singles[cmd.Name()]++
		switch cmd.Name() {
		case "incr", "rpush":
			if _, ok := cmd.(*redis.IntCmd); !ok {
				h.badType = append(h.badType, cmd.Name())
			}
		}
		if cmd.Name() == "incr" && ctx.Value(callerKey{}) == nil {
			h.badCtx++
		}
		h.mu.Unlock()
		err := next(ctx, cmd)
		h.mu.Lock()
		*h.log = append(*h.log, h.name+"-process-end")
		h.mu.Unlock()
		return err
	}
}

func (h *fifoHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.mu.Lock()
		h.pipelines++
		h.mu.Unlock()
		return next(ctx, cmds)
	}
}

// A hook added with AddHook sees what a hook on a plain go-redis client
// sees: hooks run in the order they were added (go-redis's "Hook fifo"
// spec), each caller's command arrives alone, of its own type, in its
// caller's context, while the Worker still coalesces them into shared round
// trips below; a batch chunk is one RPUSH; after Close the hook sees the
// command fail with ErrClosed.
func TestAddedHooksSeeEachCallersCommandAsOnAPlainClient(t *testing.T) {
	w := newWorker(t, config(conn.RoleWorker, shared))
	var (
		mu  sync.Mutex
		log []string
	)
	h1 := &fifoHook{name: "hook-1", log: &log, mu: &mu, singles: map[string]int{}}
	h2 := &fifoHook{name: "hook-2", log: &log, mu: &mu, singles: map[string]int{}}
	w.AddHook(h1)
	w.AddHook(h2)

	ctx := ctxTimeout(t, 10*time.Second)
	if err := w.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	want := []string{"hook-1-process-start", "hook-2-process-start", "hook-2-process-end", "hook-1-process-end"}
	if len(log) != len(want) {
		t.Fatalf("hooks ran as %v, want %v", log, want)
	}
	for i := range want {
		if log[i] != want[i] {
			t.Fatalf("hooks ran as %v, want %v", log, want)
		}
	}
	mu.Unlock()

	before, _ := w.ConnectionInfo(ctx)
	callerCtx := context.WithValue(ctx, callerKey{}, "caller")
	var wg sync.WaitGroup
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); _ = w.Incr(callerCtx, "chain:n").Err() }()
	}
	wg.Wait()
	if _, err := w.BatchRPush(ctx, "chain:list", 1, 2, 3); err != nil {
		t.Fatal(err)
	}
	after, _ := w.ConnectionInfo(ctx)
	mu.Lock()
	if h1.singles["incr"] != 200 || h2.singles["incr"] != 200 {
		t.Errorf("the hooks saw %d and %d INCRs one by one, want 200 each", h1.singles["incr"], h2.singles["incr"])
	}
	if h1.singles["rpush"] != 1 {
		t.Errorf("the hook saw %d RPUSH commands for one batch chunk, want 1", h1.singles["rpush"])
	}
	if h1.pipelines != 0 {
		t.Errorf("the hook saw %d pipelines; coalesced round trips are the Worker's own", h1.pipelines)
	}
	if len(h1.badType) > 0 || h1.badCtx > 0 {
		t.Errorf("commands reached the hook as another type (%v) or without their caller's context (%d)", h1.badType, h1.badCtx)
	}
	mu.Unlock()
	trips := after.Limiter.CoalescedRoundTrips - before.Limiter.CoalescedRoundTrips
	if trips == 0 || trips >= 200 {
		t.Errorf("%d coalesced round trips for 200 concurrent INCRs and a chunk: the hooks changed the coalescing", trips)
	}

	_ = w.Close()
	mu.Lock()
	calls := h1.singles["get"]
	mu.Unlock()
	if err := w.Get(ctx, "chain:n").Err(); !errors.Is(err, conn.ErrClosed) {
		t.Fatalf("after Close: %v, want ErrClosed", err)
	}
	mu.Lock()
	if h1.singles["get"] != calls+1 {
		t.Errorf("after Close the hook saw %d GETs, want the one that failed", h1.singles["get"]-calls)
	}
	mu.Unlock()
}
