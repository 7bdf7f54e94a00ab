package telemetry

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"

	"github.com/redis/go-redis/v9"
)

// ErrorType maps an operation's error to a bounded error.type value: the
// prefix of a server error reply ("WRONGTYPE", "NOSCRIPT", "ERR", ...), or one
// of "timeout", "canceled", "deadline_exceeded", "pool_timeout",
// "pool_exhausted", "closed", "connection_closed", "max_clients" (the server
// refused a new connection at maxclients), "dial", "network", and "_OTHER"
// for anything else. It never contains a key, a value or a message.
func ErrorType(err error) string {
	var re redis.Error
	var ne net.Error
	var op *net.OpError
	var typed interface{ ErrorType() string }
	switch {
	case err == nil:
		return ""
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, context.DeadlineExceeded):
		return "deadline_exceeded"
	case errors.Is(err, redis.ErrPoolTimeout):
		return "pool_timeout"
	case errors.Is(err, redis.ErrPoolExhausted):
		return "pool_exhausted"
	case errors.Is(err, redis.ErrClosed):
		return "closed"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		return "connection_closed"
	case errors.As(err, &re):
		return serverErrorPrefix(err.Error())
	case errors.As(err, &typed):
		return typed.ErrorType()
	case errors.As(err, &op) && op.Op == "dial":
		return "dial"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.As(err, &ne):
		return "network"
	}
	return "_OTHER"
}

// serverErrorPrefix is the leading word of a server error if it looks like a
// Redis error code: upper-case letters, at most 24 of them.
func serverErrorPrefix(msg string) string {
	word, _, _ := strings.Cut(msg, " ")
	if word == "" || len(word) > 24 {
		return "_OTHER"
	}
	for _, r := range word {
		if (r < 'A' || r > 'Z') && r != '_' {
			return "_OTHER"
		}
	}
	return word
}
