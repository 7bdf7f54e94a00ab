package conn_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redisconn/redisconn/conn"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// orderHook records where in the chain a hook added with AddHook runs.
type orderHook struct {
	w *conn.Worker

	mu                 sync.Mutex
	singles, pipelines []string // the commands it saw, one by one or as pipelines
	permitHeld         bool     // a permit was held while it saw the BLPOP
	spanName           string   // the span in the BLPOP's context
	roundTripSizes     []int
	calls              atomic.Int64
}

func (h *orderHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *orderHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.calls.Add(1)
		if cmd.Name() == "blpop" {
			info, _ := h.w.ConnectionInfo(context.Background())
			h.mu.Lock()
			h.permitHeld = info.Limiter != nil && info.Limiter.InFlight >= 1
			if s, ok := trace.SpanFromContext(ctx).(interface{ Name() string }); ok {
				h.spanName = s.Name()
			}
			h.mu.Unlock()
		}
		h.mu.Lock()
		h.singles = append(h.singles, cmd.Name())
		h.mu.Unlock()
		return next(ctx, cmd)
	}
}

func (h *orderHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.calls.Add(1)
		h.mu.Lock()
		for _, c := range cmds {
			h.pipelines = append(h.pipelines, c.Name())
		}
		h.roundTripSizes = append(h.roundTripSizes, len(cmds))
		h.mu.Unlock()
		return next(ctx, cmds)
	}
}

// The order of conn/chain.go, seen from a hook added with AddHook: it runs
// inside the limiter (a permit is held) and inside telemetry (the command's
// CLIENT span is in its context), sees a coalesced round trip as one
// pipeline of its callers' commands and never those commands one by one, and
// after Close sees nothing (the closed check is outermost).
func TestAddedHooksSeeOperationsAsTheyGoToRedis(t *testing.T) {
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()))
	defer tp.Shutdown(context.Background())
	w, err := conn.NewWorker(context.Background(), config(conn.RoleWorker, shared), conn.WithTracerProvider(tp))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	h := &orderHook{w: w}
	w.AddHook(h)

	ctx, root := tp.Tracer("test").Start(context.Background(), "root")
	_ = w.BLPop(ctx, 10*time.Millisecond, "chain:empty").Err()
	root.End()
	var wg sync.WaitGroup
	for i := 0; i < 100; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); _ = w.Incr(context.Background(), "chain:n").Err() }()
	}
	wg.Wait()

	h.mu.Lock()
	if !h.permitHeld {
		t.Error("the hook ran without a limiter permit: it is outside the limiter")
	}
	if h.spanName != "blpop" {
		t.Errorf("the span in the hook's context is %q, want the command's CLIENT span \"blpop\": the hook is outside telemetry", h.spanName)
	}
	incrs := 0
	for _, name := range h.pipelines {
		if name == "incr" {
			incrs++
		}
	}
	for _, name := range h.singles {
		if name == "incr" {
			t.Error("a coalesced INCR reached the hook as a single command")
			break
		}
	}
	if incrs != 100 || len(h.roundTripSizes) >= 100 {
		t.Errorf("the hook saw %d INCRs in %d pipelines, want 100 in fewer round trips", incrs, len(h.roundTripSizes))
	}
	h.mu.Unlock()

	_ = w.Close()
	before := h.calls.Load()
	if err := w.Get(context.Background(), "chain:n").Err(); !errors.Is(err, conn.ErrClosed) {
		t.Fatalf("after Close: %v, want ErrClosed", err)
	}
	if h.calls.Load() != before {
		t.Error("after Close the hook still saw a command: the closed check is not outermost")
	}
}
