package coalesce

import (
	"context"
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
	// Marked: Config.Mark marked the caller.
	Marked bool
}

// RoundTrip is what the hooks of the client that sends round trips may know
// of one as a whole (RoundTripOf), without reading its commands one by one.
type RoundTrip struct {
	// Marked is how many of its callers Config.Mark marked.
	Marked int
	// Oldest is when the earliest of its commands was handed over.
	Oldest time.Time
}

// wireCmd is a caller's command as it goes to Redis in a round trip. It
// watches what go-redis reports of the command, so that the round trip can
// tell what happened on the wire:
//
//   - A final reply (rediserr.Final: success, a nil reply, an error reply
//     such as WRONGTYPE) is the caller's answer and stands: when the
//     connection fails later in the same round trip, go-redis sets that
//     failure on every command whose error is still nil, answered ones
//     included; wireCmd ignores it.
//   - A reply that says the command did not run (a refusal such as LOADING,
//     a cluster redirection) and a failure that happens only before anything
//     is written (rediserr.NotWritten) are kept aside, not set on the
//     command: go-redis sets a later failure only on commands whose error is
//     nil, and its cluster client sends redirected commands and those whose
//     connection failed again itself, so a failure of that next attempt must
//     reach the command.
//   - Any other failure means the command may have reached Redis.
//   - NoRetry is true: go-redis never sends a failed round trip again itself
//     (it would send the answered commands again too); the coalescer decides
//     what goes again, command by command.
//
// Only the wire client's hooks, which are redisconn's own, see a wireCmd;
// the caller and the hooks it added see its own command.
type wireCmd struct {
	redis.Cmder
	caller  Caller
	round   *RoundTrip // the round trip it is in, while that is sent
	final   bool       // a final reply was read
	written bool       // a failure after which the command may have reached Redis
	aside   error      // the last refusal, redirection or not-written failure
}

// NoRetry keeps go-redis from sending the round trip again (see wireCmd).
func (w *wireCmd) NoRetry() bool { return true }

// SetErr records what go-redis reports of the command (see wireCmd).
func (w *wireCmd) SetErr(err error) {
	switch {
	case rediserr.Final(err):
		w.final, w.aside = true, nil
		w.Cmder.SetErr(err)
	case w.final:
		// The reply stands.
	case rediserr.Server(err) || rediserr.NotWritten(err):
		w.aside = err
	default:
		w.written = true
		w.Cmder.SetErr(err)
	}
}

// outcome classifies the command after its round trip returned sendErr, and
// sets on it the error its caller gets.
func (w *wireCmd) outcome(sendErr error) Outcome {
	switch {
	case w.final:
		return Answered
	case w.written:
		return Uncertain
	case w.aside != nil:
		w.Cmder.SetErr(w.aside)
		return Unsent
	case sendErr != nil:
		// The round trip failed without a word on this command (a hook
		// refused it): take the round trip's error.
		w.SetErr(sendErr)
		return w.outcome(nil)
	}
	// Nothing was reported: a hook served the command itself.
	return Answered
}

// again prepares a command that was not run for another round trip.
func (w *wireCmd) again() {
	w.final, w.written, w.aside = false, false, nil
	w.Cmder.SetErr(nil)
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

// RoundTripOf returns the round trip cmd is in while it is sent, for the
// hooks of the client that sends round trips; false when cmd is not a
// command of a coalesced round trip.
func RoundTripOf(cmd redis.Cmder) (RoundTrip, bool) {
	w, ok := cmd.(*wireCmd)
	if !ok || w.round == nil {
		return RoundTrip{}, false
	}
	return *w.round, true
}
