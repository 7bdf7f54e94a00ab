package coalesce

import (
	"context"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redisconn/redisconn/internal/rediserr"
)

// Outcome is what became of one command on the wire, as far as its caller
// can tell.
type Outcome uint8

const (
	// Unsent: nothing of the command was written, or the server refused it
	// without running it. Sending it again cannot apply it twice.
	Unsent Outcome = iota
	// Answered: its reply was read; the command holds it.
	Answered
	// Uncertain: it may have reached Redis, and no reply came back (the
	// connection broke, the read timed out). Redis may or may not have run it.
	Uncertain
)

func (o Outcome) String() string {
	switch o {
	case Answered:
		return "answered"
	case Uncertain:
		return "uncertain"
	}
	return "unsent"
}

// Caller is the caller of one command of a round trip.
type Caller struct {
	// Ctx is the caller's context: telemetry makes its span the parent of the
	// command's.
	Ctx context.Context
	// Queued is when the caller handed the command over.
	Queued time.Time
	// Call is the same for the commands a caller handed over in one call
	// (DoAll), and different for every call.
	Call uint64
}

// wireCmd is a caller's command as it goes to Redis in a round trip. It
// watches what go-redis reports of the command, so that the round trip can
// tell what happened on the wire:
//
//   - go-redis sets the outcome of every reply it reads (SetErr with nil, or
//     with the server's error reply). A final one (rediserr.Final) is the
//     caller's answer and stands: when the connection fails later in the
//     same round trip, go-redis sets that failure on every command whose
//     error is still nil, answered ones included; wireCmd ignores it.
//   - Any other error go-redis sets is a failure of the round trip; unless it
//     is one that happens only before anything is written
//     (rediserr.NotWritten), the command may have reached Redis.
//   - NoRetry is true: go-redis never sends a round trip again itself (it
//     would send the answered commands again too); the coalescer decides
//     what goes again, command by command. Cluster redirections (MOVED, ASK)
//     are still followed by go-redis: the command did not run.
//
// Only the wire client's hooks, which are redisconn's own, see a wireCmd;
// the caller and the hooks it added see its own command.
type wireCmd struct {
	redis.Cmder
	caller  Caller
	final   bool // a final reply was read
	written bool // a failure after which the command may have reached Redis
}

// NoRetry keeps go-redis from sending the round trip again (see wireCmd).
func (w *wireCmd) NoRetry() bool { return true }

// SetErr records what go-redis reports of the command (see wireCmd).
func (w *wireCmd) SetErr(err error) {
	if err == nil || rediserr.Server(err) {
		// A reply was read.
		w.final = rediserr.Final(err)
		w.Cmder.SetErr(err)
		return
	}
	if w.final {
		return // the reply stands
	}
	if !rediserr.NotWritten(err) {
		w.written = true
	}
	w.Cmder.SetErr(err)
}

// outcome classifies the command after its round trip returned sendErr.
func (w *wireCmd) outcome(sendErr error) Outcome {
	err := w.Cmder.Err()
	switch {
	case w.final:
		return Answered
	case w.written:
		return Uncertain
	case err == nil && sendErr != nil:
		// The round trip failed without a word on this command (a hook
		// refused it): take the round trip's error.
		w.SetErr(sendErr)
		return w.outcome(nil)
	case err == nil, rediserr.Server(err) && !rediserr.Refusal(err):
		// A redirection go-redis gave up on is the server's answer too.
		return Answered
	}
	return Unsent
}

// again prepares a command that was not run for another round trip: its
// previous error is cleared, so that go-redis reports the new one.
func (w *wireCmd) again() {
	w.final, w.written = false, false
	w.Cmder.SetErr(nil)
}

// retryable reports whether an unsent command that failed with err goes
// again, where go-redis would send a single command again: the server
// refused it (LOADING, READONLY, ...), or no connection could be had or set
// up. Never when the caller's time is up or the client is closed.
func retryable(err error) bool {
	return rediserr.Refusal(err) || rediserr.NotConnected(err) || errors.Is(err, redis.ErrPoolTimeout)
}

// CallerOf returns the caller of cmd when cmd is a command of a coalesced
// round trip, for the hooks of the client that sends round trips.
func CallerOf(cmd redis.Cmder) (Caller, bool) {
	w, ok := cmd.(*wireCmd)
	if !ok {
		return Caller{}, false
	}
	return w.caller, true
}
