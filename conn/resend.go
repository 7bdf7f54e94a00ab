package conn

import (
	"context"
	"errors"
	"sync"

	"github.com/redis/go-redis/v9"
	"github.com/redisconn/redisconn/internal/coalesce"
	"github.com/redisconn/redisconn/internal/rediserr"
)

// Resending: a command goes to Redis again only when it certainly did not
// run there.
//
// go-redis sends a failed command again after any network failure (an EOF, a
// reset, a read timeout), when the command may already have been applied and
// only its reply was lost: an INCR counts twice, an RPUSH pushes twice. When
// the caller's deadline then passes in the backoff before that resend, the
// caller gets context.DeadlineExceeded for a command that was applied. Its
// cluster client does the same across its redirection loop, whatever
// MaxRetries says.
//
// So every client of a manager has go-redis's own retries off (MaxRetries
// -1), and two hooks take their place:
//
//   - writtenHook, the outermost hook of each server's (each cluster node's)
//     chain, records in the operation's sends the commands whose failure
//     says they may have reached Redis (rediserr.MayHaveRun), and refuses to
//     send such a command again: when the cluster client's loop sends it
//     once more, writtenHook answers errSentBefore without sending, an error
//     the loop does not retry.
//   - resendHook, above the per-server chains, gives each operation its
//     sends, and after a failure returns each recorded command's own
//     failure. An operation none of whose commands ran and whose failure
//     says it may go again (rediserr.Resendable: no connection, a pool
//     timeout, a refusal such as LOADING) goes again after go-redis's
//     backoff, as go-redis would send it, at most again times. If the
//     caller's context ends in the backoff, the caller gets the context's
//     error: nothing was written.
//
// The cluster client sends unsent commands again itself, to another node
// when it must, so in a cluster resendHook sends nothing again (again 0)
// and only restores the failures writtenHook recorded.
//
// The coalescer decides the same way for its round trips (see
// internal/coalesce), and batch chunks in pipelineOn.

// sends is what an operation's attempts wrote: the commands that may have
// reached Redis, each with its failure. Cluster pipelines report from one
// goroutine per node.
type sends struct {
	mu      sync.Mutex
	written map[redis.Cmder]error
}

type sendsKey struct{}

func sendsOf(ctx context.Context) (*sends, bool) {
	s, ok := ctx.Value(sendsKey{}).(*sends)
	return s, ok
}

// record notes the commands whose failure says they may have run.
func (s *sends) record(cmds ...redis.Cmder) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, cmd := range cmds {
		if err := cmd.Err(); rediserr.MayHaveRun(err) {
			if s.written == nil {
				s.written = make(map[redis.Cmder]error)
			}
			if _, ok := s.written[cmd]; !ok {
				s.written[cmd] = err
			}
		}
	}
}

// sent reports whether cmd may have reached Redis in an earlier attempt.
func (s *sends) sent(cmd redis.Cmder) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.written[cmd]
	return ok
}

// restore sets on every recorded command its recorded failure, and returns
// the first command's (in cmds' order); nil when no command was recorded.
func (s *sends) restore(cmds []redis.Cmder) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var first error
	for _, cmd := range cmds {
		if err, ok := s.written[cmd]; ok {
			cmd.SetErr(err)
			if first == nil {
				first = err
			}
		}
	}
	return first
}

// errSentBefore is writtenHook's answer to a command that an earlier
// attempt may have run. resendHook replaces it with that attempt's failure
// before anyone else sees it.
var errSentBefore = errors.New("redisconn: not sent again: an earlier attempt may have run the command")

// writtenHook records the commands that may have reached Redis and never
// sends one again (see above). Without sends in the context (the coalescer's
// round trips, batch chunks) it only passes the operation on.
type writtenHook struct{}

func (writtenHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (writtenHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		s, ok := sendsOf(ctx)
		if !ok {
			return next(ctx, cmd)
		}
		if s.sent(cmd) {
			cmd.SetErr(errSentBefore)
			return errSentBefore
		}
		err := next(ctx, cmd)
		if rediserr.MayHaveRun(err) {
			cmd.SetErr(err)
			s.record(cmd)
		}
		return err
	}
}

func (writtenHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		s, ok := sendsOf(ctx)
		if !ok {
			return next(ctx, cmds)
		}
		fresh := cmds
		for i, cmd := range cmds {
			if s.sent(cmd) {
				// Send the others only (the cluster client retries a
				// node's share whole, redirected commands included).
				fresh = make([]redis.Cmder, 0, len(cmds)-1)
				fresh = append(fresh, cmds[:i]...)
				for _, c := range cmds[i+1:] {
					if !s.sent(c) {
						fresh = append(fresh, c)
					}
				}
				break
			}
		}
		var err error
		if len(fresh) > 0 {
			err = next(ctx, fresh)
			s.record(fresh...)
		}
		if len(fresh) < len(cmds) {
			for _, cmd := range cmds {
				if s.sent(cmd) {
					cmd.SetErr(errSentBefore)
				}
			}
			if err == nil {
				err = errSentBefore
			}
		}
		return err
	}
}

// resendHook gives each operation its sends, returns the recorded failures,
// and sends an operation that certainly did not run again, at most again
// times (see above).
type resendHook struct{ again int }

func (resendHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h resendHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		s := &sends{}
		ctx = context.WithValue(ctx, sendsKey{}, s)
		for attempt := 0; ; attempt++ {
			err := next(ctx, cmd)
			if err == nil {
				return nil
			}
			if w := s.restore([]redis.Cmder{cmd}); w != nil {
				return w
			}
			if attempt == h.again || !rediserr.Resendable(err) {
				return err
			}
			if !coalesce.Backoff(ctx, attempt) {
				cmd.SetErr(ctx.Err())
				return ctx.Err()
			}
			cmd.SetErr(nil)
		}
	}
}

func (h resendHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		s := &sends{}
		ctx = context.WithValue(ctx, sendsKey{}, s)
		for attempt := 0; ; attempt++ {
			err := next(ctx, cmds)
			if err == nil {
				return nil
			}
			if w := s.restore(cmds); w != nil {
				return w
			}
			if attempt == h.again || !noneRan(cmds, err) {
				return err
			}
			if !coalesce.Backoff(ctx, attempt) {
				setErr(cmds, ctx.Err())
				return ctx.Err()
			}
			setErr(cmds, nil)
		}
	}
}

// noneRan reports whether a pipeline that failed with err certainly ran
// none of its commands and may go again: each command failed in a way that
// rediserr.Resendable accepts. A command without an error was answered.
func noneRan(cmds []redis.Cmder, err error) bool {
	if !rediserr.Resendable(err) {
		return false
	}
	for _, cmd := range cmds {
		if !rediserr.Resendable(cmd.Err()) {
			return false
		}
	}
	return true
}
