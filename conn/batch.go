package conn

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/redis/go-redis/v9"
	"github.com/redisconn/redisconn/telemetry"
)

// BatchError is the error of a batch operation that did not get every item
// acknowledged. It says exactly where the batch stopped:
//
//   - values[:Acknowledged] were acknowledged by Redis, in order, and are never
//     lost or reordered by the manager;
//   - values[UncertainFrom:UncertainTo] were sent but their reply never came
//     (the connection was cut, the server died, the deadline passed): Redis may
//     or may not have applied them. Empty when UncertainFrom == UncertainTo;
//   - the rest were not sent.
//
// So a plain retry of values[Acknowledged:] repeats at most the uncertain items.
type BatchError struct {
	Op            string // "BatchRPush" or "BatchPublish"
	Total         int    // how many items the call was given
	Acknowledged  int
	UncertainFrom int
	UncertainTo   int
	Err           error // the cause; errors.Is/As see through BatchError to it
}

func (e *BatchError) Error() string {
	msg := fmt.Sprintf("redisconn: %s: %d of %d items acknowledged", e.Op, e.Acknowledged, e.Total)
	if e.UncertainTo > e.UncertainFrom {
		msg += fmt.Sprintf(", items [%d:%d] uncertain (sent, reply lost: they may have been applied)", e.UncertainFrom, e.UncertainTo)
	}
	return msg + ": " + e.Err.Error()
}

// Unwrap returns the cause.
func (e *BatchError) Unwrap() error { return e.Err }

// noRetry keeps go-redis from re-sending a command whose reply was lost: a
// re-sent RPUSH would append its values a second time, after the caller was
// told nothing about the first. go-redis still retries a command it never
// wrote (a dial error, a stale pooled connection), which is safe.
type noRetry struct{ redis.Cmder }

func (noRetry) NoRetry() bool { return true }

// BatchRPush appends values to the list at key in chunks of Config.BatchSize:
// each chunk is one variadic RPUSH, applied by Redis all or nothing. A chunk
// is a single command to the Worker's hooks: it is coalesced like any other,
// so concurrent callers' chunks share round trips and limiter permits (with
// coalescing off, each chunk is one round trip and one permit). It returns how many values
// Redis acknowledged; when that is fewer than len(values) the error is a
// *BatchError saying which values are uncertain. Chunks are sent one after
// another, so the list receives values in order. No values: (0, nil) and no
// round trip.
//
// Variadic RPUSH was chosen over a pipeline of single RPUSHes by measurement
// (BenchmarkBulkRPush): about twice the items per second, and a chunk is atomic.
//
// With a context from WithIdempotentBatch, every chunk is pushed together
// with a marker (one Lua script, atomic) and a chunk whose marker exists is
// skipped, so retrying values[n:] after a failure gives exactly values.
func (w *Worker) BatchRPush(ctx context.Context, key string, values ...any) (int, error) {
	if ib, ok := ctx.Value(idempotentKey{}).(idempotentBatch); ok {
		if err := ib.validate(); err != nil {
			return 0, err
		}
		return w.batchRPushIdempotent(ctx, ib, key, values)
	}
	return w.batch(ctx, "BatchRPush", "RPUSH", values, func(ctx context.Context, chunk []any) (int, bool, error) {
		args := make([]any, 0, 2+len(chunk))
		args = append(args, "rpush", key)
		args = append(args, chunk...)
		if err := w.m.client.Process(ctx, noRetry{redis.NewIntCmd(ctx, args...)}); err != nil {
			return 0, maybeSent(err), err
		}
		return len(chunk), false, nil
	})
}

// idempotentKey carries an idempotentBatch in a context.
type idempotentKey struct{}

type idempotentBatch struct {
	id    string
	start int
	ttl   time.Duration
}

// IdempotentBatchTTL is how long the per-chunk markers of an idempotent batch
// live: retries must happen within it.
const IdempotentBatchTTL = 24 * time.Hour

// WithIdempotentBatch returns a context that makes BatchRPush exactly-once
// across retries: id names the whole batch (the caller chooses it, e.g. the
// agent run's id and the list), start is the position of values[0] in it
// (0 on the first call, the acknowledged count n on a retry of values[n:]).
// Each chunk is written by one Lua script that sets a marker
// (SET NX EX, IdempotentBatchTTL) and pushes the chunk only if the marker was
// new; markers are keyed by id and position and share the list's hash slot.
func WithIdempotentBatch(ctx context.Context, id string, start int) context.Context {
	return context.WithValue(ctx, idempotentKey{}, idempotentBatch{id: id, start: start, ttl: IdempotentBatchTTL})
}

func (ib idempotentBatch) validate() error {
	switch {
	case ib.id == "":
		return &ConfigError{Name: "WithIdempotentBatch id", Value: "", Accepted: "a non-empty batch id"}
	case ib.start < 0:
		return &ConfigError{Name: "WithIdempotentBatch start", Value: strconv.Itoa(ib.start), Accepted: "the position of values[0] in the batch, 0 or more"}
	}
	return nil
}

// idempotentPush pushes ARGV[2..] onto KEYS[1] if the marker KEYS[2] is new;
// it returns the list length, or -1 when the chunk was pushed before. RPUSH is
// called in slices of 1000 to stay within Lua's stack.
var idempotentPushSHA = redis.NewScript(idempotentPushSrc).Hash()

const idempotentPushSrc = `
if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[1]) then
  return -1
end
local n = 0
for i = 2, #ARGV, 1000 do
  n = redis.call('RPUSH', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
return n`

// markerKey is the marker of the chunk at position pos, in the hash slot of key.
func markerKey(key, id string, pos int) string {
	tag := key
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			tag = key[i+1 : i+1+j]
		}
	}
	return "redisconn:batch:{" + tag + "}:" + id + ":" + strconv.Itoa(pos)
}

func (w *Worker) batchRPushIdempotent(ctx context.Context, ib idempotentBatch, key string, values []any) (int, error) {
	ttl := strconv.Itoa(int(ib.ttl / time.Second))
	pos := ib.start
	return w.batch(ctx, "BatchRPush", "RPUSH", values, func(ctx context.Context, chunk []any) (int, bool, error) {
		args := make([]any, 0, 1+len(chunk))
		args = append(args, ttl)
		args = append(args, chunk...)
		keys := []string{key, markerKey(key, ib.id, pos)}
		err := w.runScript(ctx, idempotentPushSrc, idempotentPushSHA, keys, args)
		if err != nil {
			return 0, maybeSent(err), err
		}
		pos += len(chunk)
		return len(chunk), false, nil
	})
}

// runScript runs a script with EVALSHA, falling back to EVAL when the
// server does not have it cached, never re-sending a command that was sent.
func (w *Worker) runScript(ctx context.Context, src, sha string, keys []string, args []any) error {
	build := func(name, body string) *redis.Cmd {
		a := make([]any, 0, 3+len(keys)+len(args))
		a = append(a, name, body, len(keys))
		for _, k := range keys {
			a = append(a, k)
		}
		return redis.NewCmd(ctx, append(a, args...)...)
	}
	cmd := build("evalsha", sha)
	err := w.m.client.Process(ctx, noRetry{cmd})
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		// Not run: the script was not cached. Send it whole.
		cmd = build("eval", src)
		err = w.m.client.Process(ctx, noRetry{cmd})
	}
	return err
}

// BatchPublish publishes messages on channel, in order, in chunks of
// Config.BatchSize: each chunk is one pipeline of PUBLISH commands (one round
// trip, one limiter permit). It returns how many messages Redis acknowledged;
// when that is fewer than len(messages) the error is a *BatchError. In cluster
// mode every chunk goes to the node that owns the channel's hash slot, so
// subscribers anywhere in the cluster receive the messages in order.
// No messages: (0, nil) and no round trip.
func (w *Worker) BatchPublish(ctx context.Context, channel string, messages ...any) (int, error) {
	return w.batch(ctx, "BatchPublish", "PUBLISH", messages, func(ctx context.Context, chunk []any) (int, bool, error) {
		var pipe redis.Pipeliner
		if cc, ok := w.m.client.(*redis.ClusterClient); ok {
			// A keyless PUBLISH would go to any node, chunk by chunk, and the
			// cluster bus does not order messages of different nodes. The
			// node's client has no limiter hook: the chunk takes its permit
			// here.
			node, err := cc.MasterForKey(ctx, channel)
			if err != nil {
				return 0, false, err
			}
			waited, err := w.m.limiter.Acquire(ctx)
			if err != nil {
				return 0, false, err
			}
			defer w.m.limiter.Release()
			ctx = withLimiterWait(ctx, waited)
			pipe = node.Pipeline()
		} else {
			pipe = w.m.client.Pipeline()
		}
		cmds := make([]*redis.IntCmd, len(chunk))
		for i, msg := range chunk {
			cmds[i] = redis.NewIntCmd(ctx, "publish", channel, msg)
			_ = pipe.Process(ctx, noRetry{cmds[i]})
		}
		execErr := execPipe(ctx, pipe)
		if execErr == nil {
			return len(chunk), false, nil
		}
		// Replies arrive in order: the leading successes are acknowledged.
		// After a transport error go-redis marks every command failed, so
		// the whole chunk counts as uncertain, which is the safe side.
		acked := 0
		for _, c := range cmds {
			if c.Err() != nil {
				break
			}
			acked++
		}
		var firstErr error = execErr
		if acked < len(cmds) {
			firstErr = cmds[acked].Err()
		}
		// A server error reply on one PUBLISH (the server answered; the rest of
		// the pipeline still ran) leaves the later ones applied or not: uncertain.
		uncertain := maybeSent(firstErr) || (isServerError(firstErr) && acked < len(cmds)-1)
		return acked, uncertain, firstErr
	})
}

func execPipe(ctx context.Context, pipe redis.Pipeliner) error {
	_, err := pipe.Exec(ctx)
	return err
}

// chunkFunc sends one chunk. It returns how many leading items Redis
// acknowledged, whether any of the others may have been applied, and the error.
type chunkFunc func(ctx context.Context, chunk []any) (acked int, uncertain bool, err error)

// batch drives a batch operation: chunking, stopping at the first failure
// with a *BatchError. Each chunk goes through the Worker's hooks as one
// command or pipeline, so it takes a permit (or joins a coalesced round
// trip) like any other. With telemetry, the operation is one span (op, with
// db.operation.batch.size) whose children are the chunks.
func (w *Worker) batch(ctx context.Context, op, cmdName string, values []any, send chunkFunc) (n int, err error) {
	total := len(values)
	if total == 0 {
		return 0, nil
	}
	if w.m.tel != nil {
		var span trace.Span
		ctx, span = w.m.tel.StartBatch(ctx, op, cmdName, total)
		defer func() {
			if !span.IsRecording() {
				span.End()
				return
			}
			span.SetAttributes(attribute.Int("redisconn.batch.acknowledged", n))
			if err != nil {
				// The error type, not the message: messages can quote arguments.
				et := telemetry.ErrorType(errors.Unwrap(err))
				span.SetAttributes(telemetry.AttrErrorType.String(et))
				span.SetStatus(codes.Error, "stopped after "+strconv.Itoa(n)+" of "+strconv.Itoa(total)+" items: "+et)
			}
			span.End()
		}()
	}
	size := w.m.cfg.BatchSize
	done := 0
	fail := func(err error, acked, uncertainTo int) (int, error) {
		n := done + acked
		if cerr := contextErr(ctx); cerr != nil && !errors.Is(err, cerr) {
			// A deadline that passes during the read surfaces as an i/o
			// timeout; say that it was the caller's deadline.
			err = fmt.Errorf("%w: %w", cerr, err)
		}
		e := &BatchError{Op: op, Total: total, Acknowledged: n, UncertainFrom: n, UncertainTo: n, Err: err}
		if uncertainTo > n {
			e.UncertainTo = uncertainTo
		}
		return n, e
	}
	for done < total {
		end := min(done+size, total)
		if w.m.closed.Load() {
			return fail(ErrClosed, 0, 0)
		}
		if err := ctx.Err(); err != nil {
			return fail(err, 0, 0)
		}
		if w.m.tel != nil {
			w.m.tel.RecordBatchChunk(ctx, cmdName, end-done)
		}
		acked, uncertain, err := w.sendChunk(ctx, send, values[done:end])
		if err != nil {
			to := 0
			if uncertain {
				to = end
			}
			return fail(err, acked, to)
		}
		done = end
	}
	return done, nil
}

// sendChunk sends a chunk, and sends it again (up to chunkRetries times, with
// backoff) when it failed before anything was written: the connection it
// needed could not be set up (a dial failure, or the server refusing the
// connection with ErrMaxClients). go-redis retries single commands on such
// failures; chunks opt out of its retries, because a chunk whose reply was
// lost must not be sent twice, so the batch retries the safe case itself.
func (w *Worker) sendChunk(ctx context.Context, send chunkFunc, chunk []any) (acked int, uncertain bool, err error) {
	for attempt := 0; ; attempt++ {
		acked, uncertain, err = send(ctx, chunk)
		if err == nil || uncertain || acked > 0 || attempt == defaultMaxRetries || !notConnected(err) || w.m.closed.Load() {
			return acked, uncertain, err
		}
		if !sleepBackoff(ctx, attempt) {
			return acked, uncertain, err
		}
	}
}

// notConnected reports a failure to set up the connection a command needed:
// nothing was written, so sending again is safe.
func notConnected(err error) bool {
	var op *net.OpError
	var se *setupError
	return (errors.As(err, &op) && op.Op == "dial") || errors.As(err, &se)
}

// contextErr is ctx.Err(), and DeadlineExceeded as soon as the deadline has
// passed: the socket's read deadline (set from ctx) can fire a moment before
// the context's own timer.
func contextErr(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
		return context.DeadlineExceeded
	}
	return nil
}

// maybeSent reports whether a failed command may have reached Redis. It is
// false only for failures known to happen before anything is written: the
// caller's context ended while it waited, manager or client closed, no pooled
// connection, the connection could not be set up, or a server error reply
// (the server refused the command, it did not apply it).
func maybeSent(err error) bool {
	switch {
	case err == nil,
		// go-redis, the limiter and the coalescer return the context's own
		// error only before anything is written; a deadline that passes
		// during the read is an i/o timeout.
		err == context.Canceled, err == context.DeadlineExceeded,
		errors.Is(err, ErrClosed),
		errors.Is(err, redis.ErrClosed),
		errors.Is(err, redis.ErrPoolTimeout),
		errors.Is(err, redis.ErrPoolExhausted),
		isServerError(err),
		notConnected(err):
		return false
	}
	return true
}

func isServerError(err error) bool {
	var re redis.Error
	return errors.As(err, &re)
}
