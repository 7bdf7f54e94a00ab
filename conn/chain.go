package conn

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redisconn/redisconn/internal/coalesce"
	"github.com/redisconn/redisconn/internal/instrument"
)

// The hook chains of a manager's clients, outermost first. Each hook has one
// job; this file is the one place that composes them.
//
// The client callers use (the API's, and the Worker's embedded client):
//
//  1. the user's hooks (API.AddHook, Worker.AddHook): each caller's
//     command, of its own type, in its caller's context, once per
//     operation, as on a plain go-redis client. What they measure includes
//     the queueing and the resending below, as a plain client's hook
//     includes the wait for a pooled connection and go-redis's retries.
//  2. closed: after Close every operation fails with ErrClosed before it
//     waits for anything.
//  3. coalescing (Worker): a coalescable single command goes to the
//     coalescer (internal/coalesce), which sends it on the wire client
//     below, with other callers' commands, in a round trip that takes one
//     limiter permit. Nothing of it goes on down this chain.
//  4. session (Worker): a command sent with Do that would change the state
//     of a pooled connection (SELECT, CLIENT SETNAME, ...) fails with an
//     error saying what to use instead (see refuseSession).
//  5. limiter (Worker): one permit per operation: a command, a pipeline, a
//     transaction. A connection's set-up runs inside the permit of the
//     operation that needed the connection (go-redis sends it through these
//     hooks, in that operation's context) and takes none of its own.
//  6. pool timeout: a pool timeout gets the role and a snapshot of pool and
//     limiter (PoolTimeoutError). Inside the limiter, so the snapshot counts
//     the operation that timed out.
//  7. cluster reload (cluster): a network failure asks go-redis to reload
//     the slot map soon.
//  8. resend: an operation goes again only when it certainly did not run
//     (resend.go); inside the permit and the pool timeout's snapshot, as
//     go-redis's own retries would be.
//  9. per server (per node in a cluster): what was written (resend.go),
//     sentinel master, spans, then metrics, then connection set-up errors
//     (handshake).
//  10. hooks added to the embedded client directly (w.UniversalClient.AddHook):
//     innermost, where go-redis puts them; they see the operations that go to
//     Redis on this client, not the coalesced commands.
//
// The Worker's wire client sends the coalescer's round trips: pool timeout,
// cluster reload, then per server spans and metrics (each command in its
// caller's trace, the round trip one operation) and handshake. Its commands
// are the coalescer's wire commands; no user hook sees them (a user's
// DialHook does see its dials).
//
// The Worker's held client (Watch, Conn, INFO; see held.go): the user's
// hooks, closed, pool timeout, resend, then per server.
//
// The Worker's direct client (durable batch chunks, see pipelineOn), which
// shares the pool of the client callers use: closed, pool timeout, then per
// server. pipelineOn runs the user's hooks and takes the permit before it.
func (m *manager) addHooks() {
	if m.direct != nil {
		c := m.direct
		c.AddHook(closedHook{closed: &m.closed})
		c.AddHook(poolTimeoutHook{m: m})
		m.addServerHooks(c, instrument.Operations{LimiterWait: permitWait}, false)
	}
	if m.held != nil {
		c := m.held
		if m.users != nil {
			c.AddHook(m.users)
		}
		c.AddHook(closedHook{closed: &m.closed})
		c.AddHook(poolTimeoutHook{m: m})
		m.addServerHooks(c, instrument.Operations{}, true)
	}
	if m.wire != nil {
		c := m.wire
		if m.users != nil {
			c.AddHook(dialOnly{m.users})
		}
		c.AddHook(poolTimeoutHook{m: m})
		m.addServerHooks(c, wireOperations(), false)
	}
	c := m.client
	if m.users != nil {
		c.AddHook(m.users)
	}
	c.AddHook(closedHook{closed: &m.closed})
	if m.coalesces {
		c.AddHook(coalesceHook{c: m.coalescer})
	}
	if m.limiter != nil {
		c.AddHook(sessionHook{})
		c.AddHook(limiterHook{l: m.limiter})
	}
	c.AddHook(poolTimeoutHook{m: m})
	m.addServerHooks(c, instrument.Operations{LimiterWait: permitWait}, true)
}

// addServerHooks adds the cluster reload hook, the resend hook when the
// client's operations are sent again here (not the coalescer's round trips
// nor batch chunks, which decide it themselves), and, per server, what was
// written, the sentinel master, telemetry and handshake.
func (m *manager) addServerHooks(c redis.UniversalClient, ops instrument.Operations, resend bool) {
	perNode := func(node *redis.Client) {
		node.AddHook(writtenHook{})
		if m.master != nil {
			node.AddHook(masterHook{ms: m.master})
		}
		if m.tel != nil {
			spans, metrics := m.tel.Hooks(node.Options().Addr, ops)
			node.AddHook(spans)
			node.AddHook(metrics)
		}
		node.AddHook(handshakeHook{})
	}
	if cc, ok := c.(*redis.ClusterClient); ok {
		cc.AddHook(clusterReloadHook{cc: cc, last: new(atomic.Int64)})
		if resend {
			// The cluster client sends unsent commands again itself.
			cc.AddHook(resendHook{again: 0})
		}
		cc.OnNewNode(perNode)
		return
	}
	if resend {
		c.AddHook(resendHook{again: defaultMaxRetries})
	}
	perNode(c.(*redis.Client))
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

// coalesceHook hands a coalescable single command to the coalescer, which
// sends it on the wire client with other callers' commands. Everything
// else, pipelines included, goes on down the chain.
type coalesceHook struct{ c *coalesce.Coalescer }

func (h coalesceHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h coalesceHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if !coalescable(cmd) {
			return next(ctx, cmd)
		}
		_, err := h.c.Do(ctx, cmd)
		return err
	}
}

func (h coalesceHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// SessionError is the error of a command sent with Do that would change the
// state of a pooled connection (SELECT, AUTH, HELLO, CLIENT SETNAME,
// SUBSCRIBE, ...): the state would reach whichever caller gets the
// connection next. Nothing was sent. Advice says what to use instead.
type SessionError struct {
	Command string // the command's name, upper case
	Advice  string
}

func (e *SessionError) Error() string {
	return fmt.Sprintf("redisconn: %s would change the state of a pooled connection: %s", e.Command, e.Advice)
}

// sessionHook refuses session commands sent with Do (see refuseSession).
type sessionHook struct{}

func (sessionHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (sessionHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if err := refuseSession(ctx, cmd); err != nil {
			cmd.SetErr(err)
			return err
		}
		return next(ctx, cmd)
	}
}

func (sessionHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, cmd := range cmds {
			if err := refuseSession(ctx, cmd); err != nil {
				setErr(cmds, err)
				return err
			}
		}
		return next(ctx, cmds)
	}
}

// refuseSession refuses a session command sent with Do. go-redis offers its
// stateful commands (Select, Hello, Auth, ClientSetName, ...) as typed
// methods only where it means them to be used: on a Conn, on a Pipeline
// (which runs on one connection), and in its own set-up of a connection,
// including a pub/sub connection's outside any operation's permit. Do is
// the way around that, and on a client it would leave the state on a pooled
// connection for whichever caller gets it next.
func refuseSession(ctx context.Context, cmd redis.Cmder) error {
	if _, viaDo := cmd.(*redis.Cmd); !viaDo || classOf(cmd) != session {
		return nil
	}
	if _, held := permitWait(ctx); held {
		return nil
	}
	return &SessionError{Command: strings.ToUpper(cmd.FullName()), Advice: sessionAdvice(cmd)}
}

// limiterHook runs every command and every pipeline (one operation) under a
// limiter permit, released when the operation returns, and tells the hooks
// inside how long it waited (permitWait). An operation that runs inside
// another's permit (go-redis setting up the connection the other one
// needed, in its context) takes none: asking could deadlock when every
// permit is held by an operation waiting for its own connection's set-up.
type limiterHook struct{ l *limiter }

func (h limiterHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h limiterHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if h.l.heldIn(ctx) {
			return next(ctx, cmd)
		}
		waited, err := h.l.Acquire(ctx)
		if err != nil {
			cmd.SetErr(err)
			return err
		}
		defer h.l.Release()
		return next(h.l.withPermit(ctx, waited), cmd)
	}
}

func (h limiterHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if h.l.heldIn(ctx) {
			return next(ctx, cmds)
		}
		waited, err := h.l.Acquire(ctx)
		if err != nil {
			setErr(cmds, err)
			return err
		}
		defer h.l.Release()
		return next(h.l.withPermit(ctx, waited), cmds)
	}
}

// permitKey is one of the two context values of the chain (the other is
// handshake.go's setupKey): the permit the operation in the context holds.
// It is a fact about the operation (the hooks inside report its wait; its
// connection's set-up runs inside it), never a path.
type permitKey struct{}

type permit struct {
	l      *limiter
	waited time.Duration
}

func (l *limiter) withPermit(ctx context.Context, waited time.Duration) context.Context {
	return context.WithValue(ctx, permitKey{}, permit{l: l, waited: waited})
}

// heldIn reports whether the operation in ctx holds a permit of l.
func (l *limiter) heldIn(ctx context.Context) bool {
	p, ok := ctx.Value(permitKey{}).(permit)
	return ok && p.l == l
}

// permitWait is how long the operation in ctx waited for its permit; false
// when it holds none.
func permitWait(ctx context.Context) (time.Duration, bool) {
	p, ok := ctx.Value(permitKey{}).(permit)
	return p.waited, ok
}

// wireOperations tells the wire client's telemetry of the coalesced round
// trips it sends, whose callers the coalescer marks when they are in a
// sampled trace (manager.go); anything else it sends is a connection's
// set-up.
func wireOperations() instrument.Operations {
	return instrument.Operations{
		RoundTrip: func(cmd redis.Cmder) (instrument.RoundTrip, bool) {
			rt, ok := coalesce.RoundTripOf(cmd)
			return instrument.RoundTrip{Sampled: rt.Marked, Oldest: rt.Oldest}, ok
		},
		Caller: func(cmd redis.Cmder) instrument.Caller {
			c, _ := coalesce.CallerOf(cmd)
			return instrument.Caller{Ctx: c.Ctx, Queued: c.Queued, Call: c.Call}
		},
	}
}

// dialOnly is the DialHook of h alone.
type dialOnly struct{ h redis.Hook }

func (d dialOnly) DialHook(next redis.DialHook) redis.DialHook { return d.h.DialHook(next) }
func (d dialOnly) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return next
}
func (d dialOnly) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func setErr(cmds []redis.Cmder, err error) {
	for _, c := range cmds {
		c.SetErr(err)
	}
}
