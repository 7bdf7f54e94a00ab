package conn

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redisconn/redisconn/internal/rediserr"
)

// ErrMaxClients is the cause of a connection that the Redis server refused
// because it already has maxclients clients. Operations that needed the new
// connection fail with an error wrapping it (errors.Is), marked as a dial
// failure: nothing was sent, so the operation goes again after a backoff,
// as go-redis sends again after any dial failure (batch chunks and
// coalesced round trips the same way).
// Its error.type in metrics and spans is "max_clients".
var ErrMaxClients error = maxClientsError{}

type maxClientsError struct{}

func (maxClientsError) Error() string {
	return "redis server refused the connection: max number of clients reached (raise maxclients or lower the pools of the processes sharing it)"
}

// ErrorType is the error.type of telemetry.ErrorType.
func (maxClientsError) ErrorType() string { return "max_clients" }

// handshakeHook makes the failed set-up of a connection say that nothing of
// the operation that needed it was written, and a connection refused at
// maxclients a dial failure that says so.
//
// go-redis sets up a new connection inside the operation that needs it: in
// that operation's context, through a copy of the same hooks, it sends HELLO
// and then its set-up pipelines (SELECT, READONLY, CLIENT SETNAME, CLIENT
// SETINFO). A network failure there comes to the operation as a bare read or
// write error, which says the operation's command may have run, although it
// was never written. So the hook marks the context of each operation it
// passes on (setupKey): a command or pipeline that reaches it with that mark
// runs inside another operation, and that is a connection's set-up. Its
// failure, unless it is a reply of the server, becomes a
// rediserr.SetupError (rediserr.NotConnected: not written, sent again where
// go-redis would send it again), and the operation gets that error.
//
// Redis answers a connection over maxclients with "-ERR max number of
// clients reached" and closes it. go-redis then either reads that as the
// reply to HELLO, takes it for a server without HELLO and hands the closed
// connection out, or fails writing HELLO ("broken pipe"). The first case
// becomes a SetupError whose cause is a dial failure wrapping ErrMaxClients
// (never a redis.Error, or go-redis would fall back to RESP2 and use the
// connection); the others, farewellConn's doing.
type handshakeHook struct{}

// setupKey marks the context of an operation that handshakeHook passed on:
// whatever arrives at handshakeHook in it is that operation's connection
// set-up. A fact about the call, like the limiter's permit, never a path.
type setupKey struct{}

func (handshakeHook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := next(ctx, network, addr)
		switch tc := c.(type) {
		case *net.TCPConn:
			return &farewellConn{TCPConn: tc}, err
		case nil:
			return c, err
		default:
			// TLS: go-redis checks the health of a TLS connection by its
			// outer connection only, which has no file descriptor, so this
			// wrapper needs none either.
			return &farewellStream{Conn: tc}, err
		}
	}
}

func (handshakeHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if ctx.Value(setupKey{}) == nil {
			err := next(context.WithValue(ctx, setupKey{}, true), cmd)
			se := setUpFailed(err)
			if se == nil && redis.IsMaxClientsError(err) {
				// The server's first words on a connection set up outside
				// any operation (a pub/sub connection's HELLO).
				se = setUpError(err)
			}
			if se != nil {
				cmd.SetErr(se)
				return se
			}
			return err
		}
		err := next(ctx, cmd)
		if f := setUpFailure(err); f != nil {
			cmd.SetErr(f)
			return f
		}
		return err
	}
}

func (handshakeHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if ctx.Value(setupKey{}) == nil {
			err := next(context.WithValue(ctx, setupKey{}, true), cmds)
			if se := setUpFailed(err); se != nil {
				for _, cmd := range cmds {
					if setUpFailed(cmd.Err()) != nil {
						cmd.SetErr(se)
					}
				}
				return se
			}
			return err
		}
		err := next(ctx, cmds)
		if f := setUpFailure(err); f != nil {
			setErr(cmds, f)
			return f
		}
		return err
	}
}

// setUpFailure is what err, the failure of a command or pipeline of a
// connection's set-up, becomes: nil for no failure, a reply of the server
// (go-redis decides what it means for the set-up: a server without HELLO,
// wrong credentials) and the context's own error; otherwise a SetupError,
// wrapped once more (setUpWrap) because go-redis hands the operation the
// error of a failed set-up unwrapped once.
func setUpFailure(err error) error {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) ||
		(rediserr.Server(err) && !redis.IsMaxClientsError(err)) {
		return nil
	}
	return setUpWrap{setUpError(err)}
}

// setUpError is the SetupError of a set-up that failed with err: a refusal
// at maxclients becomes a dial failure wrapping ErrMaxClients.
func setUpError(err error) *rediserr.SetupError {
	cause := err
	if redis.IsMaxClientsError(err) || errors.Is(err, ErrMaxClients) {
		op := &net.OpError{Op: "dial", Net: "tcp", Err: ErrMaxClients}
		var wop *net.OpError
		if errors.As(err, &wop) {
			op.Net, op.Addr = wop.Net, wop.Addr
		}
		cause = op
	}
	return &rediserr.SetupError{Err: cause}
}

// setUpFailed returns the SetupError in the failure of an operation whose
// connection's set-up failed, or nil. go-redis may have wrapped it ("failed
// to initialize connection options: ..."); the operation gets the
// SetupError itself, which unwraps to the cause.
func setUpFailed(err error) *rediserr.SetupError {
	var se *rediserr.SetupError
	if err == nil || !errors.As(err, &se) {
		return nil
	}
	return se
}

// setUpWrap carries a SetupError through go-redis's unwrapping of a failed
// set-up's error; it never reaches the operation (see setUpFailed).
type setUpWrap struct{ *rediserr.SetupError }

func (w setUpWrap) Unwrap() error { return w.SetupError }

// farewellConn is a TCP connection to Redis that remembers whether the first
// thing the server sent was "-ERR max number of clients reached", and when a
// later write fails because the server closed the connection, reports
// ErrMaxClients instead of a broken pipe. (go-redis retries a HELLO answered
// with that error on the same connection, so the error the command finally
// gets is the retry's broken pipe.) Reads and writes go straight through.
type farewellConn struct {
	*net.TCPConn
	farewell
}

// NetConn returns the TCP connection, for go-redis's connection health check.
func (c *farewellConn) NetConn() net.Conn { return c.TCPConn }

func (c *farewellConn) Read(b []byte) (int, error) { return c.read(c.TCPConn, b) }

func (c *farewellConn) Write(b []byte) (int, error) { return c.write(c.TCPConn, b) }

// farewellStream is farewellConn for a connection that is not a bare TCP
// one (TLS).
type farewellStream struct {
	net.Conn
	farewell
}

func (c *farewellStream) Read(b []byte) (int, error) { return c.read(c.Conn, b) }

func (c *farewellStream) Write(b []byte) (int, error) { return c.write(c.Conn, b) }

// farewell is what a connection to Redis remembers of the server's last
// words (see farewellConn).
type farewell struct {
	// state: 0 nothing read yet, 1 read, 2 refused with maxclients, 3 the
	// server answered with a protocol error, after which it closes the
	// connection.
	state atomic.Int32
}

func (f *farewell) read(conn net.Conn, b []byte) (int, error) {
	n, err := conn.Read(b)
	if n == 0 {
		return n, err
	}
	switch state := f.state.Load(); {
	case state == 0 && strings.HasPrefix(string(b[:n]), maxClientsReply):
		f.state.Store(2)
	case state == 0:
		f.state.Store(1)
	}
	if b[0] == '-' && strings.HasPrefix(string(b[:min(n, len(protocolErrorReply))]), protocolErrorReply) {
		// A command too large for the server (proto-max-bulk-len), alone in
		// its round trip: the server closes the connection after this reply.
		f.state.Store(3)
	}
	return n, err
}

func (f *farewell) write(conn net.Conn, b []byte) (int, error) {
	if f.state.Load() == 3 {
		// Nothing is written to a connection the server is closing: the
		// commands may go again on another.
		return 0, &net.OpError{Op: "write", Net: "tcp", Addr: conn.RemoteAddr(), Err: rediserr.ErrClosedByServer}
	}
	n, err := conn.Write(b)
	if err == nil || !(errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET)) {
		return n, err
	}
	refused := f.state.Load() == 2
	if f.state.Load() == 0 {
		// Nothing read yet: what is left to read is the server's last word.
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Millisecond))
		buf := make([]byte, len(maxClientsReply))
		k, _ := io.ReadFull(conn, buf)
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

const (
	maxClientsReply    = "-ERR max number of clients reached"
	protocolErrorReply = "-ERR Protocol error"
)
