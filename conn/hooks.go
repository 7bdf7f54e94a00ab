package conn

import (
	"context"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

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
// limiter permit. It is added before any other hook that measures operations,
// so they run inside the permit, and the time spent waiting for it is not
// counted as command time.
//
// go-redis sets up a new connection (HELLO, AUTH, SELECT, CLIENT SETINFO) by
// sending commands through the same hooks, on the goroutine and context of the
// command that needed the connection. That command already holds a permit,
// which the context carries (heldKey), so set-up traffic passes without asking
// for a second one: asking could deadlock when every permit is held by a
// command waiting for its own connection set-up. Set-up commands issued
// without a permit in the context (a pub/sub connection's handshake) pass too:
// they belong to connections that the limiter does not govern.
type limiterHook struct{ m *manager }

// A chain built while the manager adds its hooks is the Worker's own; chains
// built later belong to clones (a Watch transaction, a Conn, a connection's
// set-up), whose commands must run on their own connection and are never
// coalesced.

// heldKey marks a context whose operation holds a permit; the value is the
// *permit, which names its limiter (so a second manager's limiter is not
// bypassed) and how long it was waited for (for the operation's span).
type heldKey struct{}

type permit struct {
	l      *limiter
	waited time.Duration
}

func heldPermit(ctx context.Context, l *limiter) (*permit, bool) {
	p, _ := ctx.Value(heldKey{}).(*permit)
	return p, p != nil && p.l == l
}

func (h limiterHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h limiterHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	var co *coalescer
	if h.m.building.Load() {
		co = h.m.coalescer
	}
	return func(ctx context.Context, cmd redis.Cmder) error {
		if _, held := heldPermit(ctx, h.m.limiter); held || isSetupCmd(cmd) {
			return next(ctx, cmd)
		}
		if co != nil && coalescable(cmd) {
			return co.do(ctx, cmd)
		}
		ctx, err := h.m.acquire(ctx)
		if err != nil {
			cmd.SetErr(err)
			return err
		}
		defer h.m.limiter.release()
		return next(ctx, cmd)
	}
}

func (h limiterHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if _, held := heldPermit(ctx, h.m.limiter); held || allSetupCmds(cmds) {
			return next(ctx, cmds)
		}
		ctx, err := h.m.acquire(ctx)
		if err != nil {
			setErr(cmds, err)
			return err
		}
		defer h.m.limiter.release()
		return next(ctx, cmds)
	}
}

// acquire takes a permit for one operation, records the wait, and returns the
// context that carries the permit. The caller must release it exactly once.
func (m *manager) acquire(ctx context.Context) (context.Context, error) {
	waited, err := m.limiter.acquire(ctx)
	if err != nil {
		return ctx, permitError(err)
	}
	if m.tel != nil {
		m.tel.RecordLimiterWait(ctx, waited)
	}
	return context.WithValue(ctx, heldKey{}, &permit{l: m.limiter, waited: waited}), nil
}

// limiterWait tells telemetry how long the operation in ctx waited.
func (m *manager) limiterWait(ctx context.Context) (time.Duration, bool) {
	if m.limiter == nil {
		return 0, false
	}
	p, held := heldPermit(ctx, m.limiter)
	if !held {
		return 0, false
	}
	return p.waited, true
}

// withoutLimiter lets diagnostics (ConnectionInfo's INFO) through the limiter,
// so they answer when it is saturated: exactly when someone asks.
func withoutLimiter(ctx context.Context, l *limiter) context.Context {
	if l == nil {
		return ctx
	}
	return context.WithValue(ctx, heldKey{}, &permit{l: l})
}

// limiterWaitError is a failed permit acquisition: the caller's context ended
// while it waited, or the manager closed. Nothing was sent to Redis.
type limiterWaitError struct{ err error }

func (e *limiterWaitError) Error() string {
	return "redisconn: waiting for a limiter permit: " + e.err.Error()
}
func (e *limiterWaitError) Unwrap() error { return e.err }

func permitError(err error) error {
	if err == ErrClosed {
		return err
	}
	return &limiterWaitError{err: err}
}

// isSetupCmd reports connection set-up commands that go-redis sends itself.
func isSetupCmd(cmd redis.Cmder) bool {
	switch cmd.Name() {
	case "hello", "auth", "select", "readonly":
		return true
	case "client":
		args := cmd.Args()
		if len(args) > 1 {
			if sub, ok := args[1].(string); ok {
				switch strings.ToLower(sub) {
				case "setinfo", "setname", "tracking", "maint_notifications":
					return true
				}
			}
		}
	}
	return false
}

func allSetupCmds(cmds []redis.Cmder) bool {
	for _, c := range cmds {
		if !isSetupCmd(c) {
			return false
		}
	}
	return len(cmds) > 0
}

func setErr(cmds []redis.Cmder, err error) {
	for _, c := range cmds {
		c.SetErr(err)
	}
}
