// Package rediserr classifies the errors of go-redis operations by what they
// say about the wire: whether anything was written, whether the server
// answered, whether sending again is safe. It is the one place redisconn
// decides these facts; conn and the coalescer both ask it.
package rediserr

import (
	"context"
	"errors"
	"io"
	"net"

	"github.com/redis/go-redis/v9"
)

// Server reports whether err is a reply of the server (an error reply such
// as WRONGTYPE or LOADING): the server read the command and answered it.
func Server(err error) bool {
	var re redis.Error
	return errors.As(err, &re)
}

// Refusal reports a server reply that says the command was not run and may
// be sent again: LOADING, READONLY, MASTERDOWN, CLUSTERDOWN, TRYAGAIN,
// NOREPLICAS, and "max number of clients reached". go-redis sends a single
// command again on these; so does the coalescer.
func Refusal(err error) bool {
	return Server(err) && (redis.IsLoadingError(err) || redis.IsReadOnlyError(err) ||
		redis.IsMasterDownError(err) || redis.IsClusterDownError(err) || redis.IsTryAgainError(err) ||
		redis.IsNoReplicasError(err) || redis.IsMaxClientsError(err))
}

// Redirect reports a cluster redirection (MOVED, ASK): the command was not
// run on this node, and go-redis's cluster client sends it to the right one.
func Redirect(err error) bool {
	if !Server(err) {
		return false
	}
	_, moved := redis.IsMovedError(err)
	_, ask := redis.IsAskError(err)
	return moved || ask
}

// Final reports whether err is the outcome of a command the server ran, or
// answered for good: no error, a nil reply, or a server error reply that is
// neither a refusal nor a redirection.
func Final(err error) bool {
	return err == nil || err == redis.Nil || (Server(err) && !Refusal(err) && !Redirect(err))
}

// NotConnected reports a failure to get a connection ready for the command:
// the dial failed, the connection's set-up did (SetupError), or the server
// had closed the connection (ErrClosedByServer). Nothing of the command was
// written.
func NotConnected(err error) bool {
	var op *net.OpError
	var se *SetupError
	return (errors.As(err, &op) && op.Op == "dial") || errors.As(err, &se) || errors.Is(err, ErrClosedByServer)
}

// ErrClosedByServer is the cause of a write refused before anything was
// written, because the server answered the connection's last command with
// a protocol error and closes the connection.
var ErrClosedByServer = errors.New("the server closes this connection after a protocol error")

// NotWritten reports failures that go-redis returns only before it writes
// anything of a command: the context ended while the command waited (for a
// connection, a permit, or a backoff between attempts of which none ran:
// a deadline that passes during a read is an i/o timeout), the client is
// closed, no pooled connection could be had, or the connection could not be
// set up. It holds when go-redis's own retries are off, as they are on every
// client of redisconn: go-redis's retry loop returns the context's error
// from a backoff that follows a command it may have written.
func NotWritten(err error) bool {
	return err == context.Canceled || err == context.DeadlineExceeded ||
		errors.Is(err, redis.ErrClosed) || errors.Is(err, redis.ErrPoolTimeout) ||
		errors.Is(err, redis.ErrPoolExhausted) || NotConnected(err)
}

// MayHaveRun reports a failure after which the command may have reached
// Redis and run there, its reply lost: neither a reply of the server nor a
// failure before anything was written. Such a command is never sent again.
func MayHaveRun(err error) bool {
	return err != nil && !Server(err) && !NotWritten(err)
}

// Resendable reports whether a command that failed with err and certainly
// did not run may be sent again, where go-redis would send it again: the
// server refused it (LOADING, READONLY, ...), or no connection could be had
// or set up. Never when the caller's time is up or the client is closed.
func Resendable(err error) bool {
	return Refusal(err) || NotConnected(err) || errors.Is(err, redis.ErrPoolTimeout)
}

// Network reports a failure of the connection itself: the server could not
// be reached or the connection broke.
func Network(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed)
}

// SetupError is a connection that failed while go-redis set it up (HELLO,
// AUTH, SELECT, CLIENT SETINFO): nothing of the operation that needed the
// connection was written. It is a net.Error, timing out when its cause did,
// and unwraps to the cause.
type SetupError struct{ Err error }

func (e *SetupError) Error() string { return "redisconn: connection set-up: " + e.Err.Error() }

// Unwrap returns the cause.
func (e *SetupError) Unwrap() error { return e.Err }

// Timeout reports whether the set-up timed out.
func (e *SetupError) Timeout() bool {
	var ne net.Error
	return errors.As(e.Err, &ne) && ne.Timeout()
}

// Temporary is part of net.Error: a failed set-up may succeed on a new connection.
func (e *SetupError) Temporary() bool { return true }
