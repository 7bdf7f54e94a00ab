package conn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
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

// ErrMaxClients is the cause of a connection that the Redis server refused
// because it already has maxclients clients. Operations that needed the new
// connection fail with an error wrapping it (errors.Is), marked as a dial
// failure: nothing was sent, and go-redis retries single commands as it
// retries any dial failure (batch chunks are retried the same way).
// Its error.type in metrics and spans is "max_clients".
var ErrMaxClients error = maxClientsError{}

type maxClientsError struct{}

func (maxClientsError) Error() string {
	return "redis server refused the connection: max number of clients reached (raise maxclients or lower the pools of the processes sharing it)"
}

// ErrorType is the error.type of telemetry.ErrorType.
func (maxClientsError) ErrorType() string { return "max_clients" }

// handshakeHook makes a connection that fails while go-redis sets it up a
// dial failure, with the server's reason when it gave one.
//
// Redis answers a connection over maxclients with "-ERR max number of clients
// reached" and closes it. go-redis then either reads that as the reply to
// HELLO, takes it for a server without HELLO and hands the closed connection
// out, or fails writing HELLO ("broken pipe") and returns that error. Either
// way the command that needed the connection fails with an error that looks
// like a command that may have been sent, and says nothing of maxclients.
type handshakeHook struct{}

func (handshakeHook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := next(ctx, network, addr)
		if tc, ok := c.(*net.TCPConn); ok {
			return &farewellConn{TCPConn: tc}, err
		}
		return c, err
	}
}

func (handshakeHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if err == nil || cmd.Name() != "hello" || (isServerError(err) && !redis.IsMaxClientsError(err)) {
			return err
		}
		// A failed HELLO is the set-up of a new connection failing. The error
		// must not be a redis.Error (go-redis would fall back to RESP2 and
		// use the connection), and keeps a *net.OpError with Op "dial" one
		// Unwrap down (go-redis unwraps a set-up error once).
		cause := err
		if redis.IsMaxClientsError(err) || errors.Is(err, ErrMaxClients) {
			cause = ErrMaxClients
		}
		op := &net.OpError{Op: "dial", Net: "tcp", Err: cause}
		var wop *net.OpError
		if errors.As(err, &wop) {
			op.Net, op.Addr = wop.Net, wop.Addr
		}
		err = fmt.Errorf("redisconn: connection set-up: %w", op)
		cmd.SetErr(err)
		return err
	}
}

func (handshakeHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// farewellConn is a TCP connection to Redis that remembers whether the first
// thing the server sent was "-ERR max number of clients reached", and when a
// later write fails because the server closed the connection, reports
// ErrMaxClients instead of a broken pipe. (go-redis retries a HELLO answered
// with that error on the same connection, so the error the command finally
// gets is the retry's broken pipe.) Reads and writes go straight through.
type farewellConn struct {
	*net.TCPConn
	// state: 0 nothing read yet, 1 read, 2 refused with maxclients.
	state atomic.Int32
}

// NetConn returns the TCP connection, for go-redis's connection health check.
func (c *farewellConn) NetConn() net.Conn { return c.TCPConn }

func (c *farewellConn) Read(b []byte) (int, error) {
	n, err := c.TCPConn.Read(b)
	if n > 0 && c.state.Load() == 0 {
		if strings.HasPrefix(string(b[:n]), maxClientsReply) {
			c.state.Store(2)
		} else {
			c.state.Store(1)
		}
	}
	return n, err
}

func (c *farewellConn) Write(b []byte) (int, error) {
	n, err := c.TCPConn.Write(b)
	if err == nil || !(errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET)) {
		return n, err
	}
	refused := c.state.Load() == 2
	if c.state.Load() == 0 {
		// Nothing read yet: what is left to read is the server's last word.
		_ = c.TCPConn.SetReadDeadline(time.Now().Add(5 * time.Millisecond))
		buf := make([]byte, len(maxClientsReply))
		k, _ := io.ReadFull(c.TCPConn, buf)
		refused = string(buf[:k]) == maxClientsReply
	}
	if !refused {
		return n, err
	}
	var op *net.OpError
	if errors.As(err, &op) {
		return n, &net.OpError{Op: op.Op, Net: op.Net, Source: op.Source, Addr: op.Addr, Err: ErrMaxClients}
	}
	return n, ErrMaxClients
}

const maxClientsReply = "-ERR max number of clients reached"
