package conn

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redisconn/redisconn/telemetry"
)

// The hook chain of a manager's client, outermost first. Each hook has one
// job; addHooks is the one place that composes them.
//
//  1. closed: after Close every operation fails with ErrClosed before it
//     waits for anything.
//  2. coalescing (Worker): a coalescable single command joins other callers'
//     commands in a shared round trip. It sits outside the limiter because
//     a round trip, not each command, is one operation: the round trip takes
//     the permit.
//  3. limiter (Worker): one permit per operation that reaches it: a command,
//     a pipeline, a transaction, a coalesced round trip. Outside telemetry, so
//     the time spent waiting is not counted as command time but recorded as
//     the limiter wait.
//  4. coalescing's inner half (Worker): a round trip that has its permit is
//     sent; callers that gave up before that leave it, unsent.
//  5. pool timeout: a pool timeout gets the role and a snapshot of pool and
//     limiter (PoolTimeoutError). Inside the limiter, so the snapshot counts
//     the operation that timed out.
//  6. telemetry: spans, then metrics (per node in a cluster), inside the
//     permit: they measure the round trip as Redis saw it.
//  7. handshake: connection set-up failures become the errors callers
//     branch on (ErrMaxClients, a dial failure, or a *SetupError).
//  8. the user's hooks (AddHook), then go-redis.
//
// What the user's hooks see: every operation as it reaches Redis. A plain
// command is one ProcessHook call; a coalesced round trip is one
// ProcessPipelineHook call holding the commands of its callers (and each is
// sent again in a smaller pipeline when it is retried); pipelines and
// transactions are what they are. A command of a Watch transaction or a Conn
// goes through the Worker's held-connection client (see held.go), which has
// the same hooks except coalescing and the limiter.
func (m *manager) addHooks(c redis.UniversalClient, limited bool) {
	c.AddHook(closedHook{closed: &m.closed})
	if limited && m.coalescer != nil {
		c.AddHook(coalesceHook{c: m.coalescer})
	}
	if limited && m.limiter != nil {
		c.AddHook(limiterHook{l: m.limiter})
	}
	if limited && m.coalescer != nil {
		c.AddHook(coalesceSendHook{c: m.coalescer})
	}
	c.AddHook(poolTimeoutHook{m: m})
	cc, isCluster := c.(*redis.ClusterClient)
	if isCluster {
		c.AddHook(clusterReloadHook{cc: cc, last: new(atomic.Int64)})
	}
	perNode := func(node *redis.Client) {
		if m.tel != nil {
			spans, metrics := m.tel.Hooks(node.Options().Addr, m.operations())
			node.AddHook(spans)
			node.AddHook(metrics)
		}
		node.AddHook(handshakeHook{})
	}
	if isCluster {
		cc.OnNewNode(perNode)
	} else {
		perNode(c.(*redis.Client))
	}
}

// operations tells telemetry what the outer hooks know of an operation.
func (m *manager) operations() telemetry.Operations {
	return telemetry.Operations{LimiterWait: limiterWaitFrom, RoundTrip: roundTripFrom}
}

// closedHook fails every command and pipeline after Close with ErrClosed,
// before it waits for anything.
type closedHook struct{ closed *atomic.Bool }

func (h closedHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h closedHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if h.closed.Load() {
			cmd.SetErr(ErrClosed)
			return ErrClosed
		}
		return next(ctx, cmd)
	}
}

func (h closedHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if h.closed.Load() {
			setErr(cmds, ErrClosed)
			return ErrClosed
		}
		return next(ctx, cmds)
	}
}

// limiterHook runs every command and every pipeline (one operation) under a
// limiter permit, released when the operation returns, and tells the hooks
// inside how long it waited (limiterWaitFrom).
//
// go-redis sets up a new connection (HELLO, AUTH, SELECT, CLIENT SETINFO) by
// sending commands through a copy of the same hooks, on the goroutine of the
// operation that needed the connection, which holds a permit already. Set-up
// commands pass without one: asking could deadlock when every permit is held
// by an operation waiting for its own connection's set-up.
type limiterHook struct{ l *limiter }

func (h limiterHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h limiterHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if telemetry.SetupCommand(cmd) {
			return next(withoutPermit(ctx), cmd)
		}
		waited, err := h.l.Acquire(ctx)
		if err != nil {
			cmd.SetErr(err)
			return err
		}
		defer h.l.Release()
		return next(withLimiterWait(ctx, waited), cmd)
	}
}

func (h limiterHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if telemetry.SetupPipeline(cmds) {
			return next(withoutPermit(ctx), cmds)
		}
		waited, err := h.l.Acquire(ctx)
		if err != nil {
			setErr(cmds, err)
			return err
		}
		defer h.l.Release()
		return next(withLimiterWait(ctx, waited), cmds)
	}
}

// Context values by which the outer hooks describe an operation to the
// telemetry inside them. They carry facts, never decide a path.
type (
	limiterWaitKey struct{}
	roundTripKey   struct{}
)

func withLimiterWait(ctx context.Context, waited time.Duration) context.Context {
	return context.WithValue(ctx, limiterWaitKey{}, waited)
}

// withoutPermit says that the operation in ctx took no permit of its own:
// a connection's set-up runs in the context of the operation that needed
// the connection, whose wait is not the set-up's.
func withoutPermit(ctx context.Context) context.Context {
	if _, ok := limiterWaitFrom(ctx); !ok {
		return ctx
	}
	return context.WithValue(ctx, limiterWaitKey{}, time.Duration(-1))
}

// limiterWaitFrom is how long the operation in ctx waited for its permit;
// false when it took none.
func limiterWaitFrom(ctx context.Context) (time.Duration, bool) {
	d, ok := ctx.Value(limiterWaitKey{}).(time.Duration)
	return d, ok && d >= 0
}

func withRoundTrip(ctx context.Context, rt *roundTrip) context.Context {
	return context.WithValue(ctx, roundTripKey{}, rt)
}

// roundTripFrom describes, for telemetry, the coalesced round trip in ctx;
// nil for any other operation.
func roundTripFrom(ctx context.Context) *telemetry.RoundTrip {
	if rt, ok := ctx.Value(roundTripKey{}).(*roundTrip); ok {
		return &rt.desc
	}
	return nil
}

func setErr(cmds []redis.Cmder, err error) {
	for _, c := range cmds {
		c.SetErr(err)
	}
}
