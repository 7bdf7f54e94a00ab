package conn

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/redis/go-redis/v9"
	"github.com/redisconn/redisconn/internal/coalesce"
	"github.com/redisconn/redisconn/internal/rediserr"
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

// noRetry keeps go-redis from sending a command again after a failure: a
// chunk sent by pipelineOn (BatchPublish to a cluster node, a durable
// BatchRPush chunk) that may have been written must not be applied twice.
// The coalescer's round trips have their own. It wraps the command only
// inside pipelineOn, after the user's hooks have seen the command itself.
type noRetry struct{ redis.Cmder }

func (noRetry) NoRetry() bool { return true }

// BatchRPush appends values to the list at key in chunks of Config.BatchSize:
// each chunk is one variadic RPUSH, applied by Redis all or nothing. Chunks
// are sent by the coalescer: concurrent callers' chunks (and, with
// coalescing on, their single commands) share round trips and limiter
// permits, and a chunk that may have been written is never sent again. A
// hook added with AddHook sees each chunk as one RPUSH command. It returns
// how many values Redis acknowledged; when that is fewer than len(values)
// the error is a *BatchError saying which values are uncertain. Chunks are
// sent one after another, so the list receives values in order. No values:
// (0, nil) and no round trip.
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
		outcome, err := w.push(ctx, key, redis.NewIntCmd(ctx, args...))
		if err != nil {
			return 0, outcome == coalesce.Uncertain, err
		}
		return len(chunk), false, nil
	})
}

// ErrNotReplicated is the cause of a BatchRPush that stopped at a chunk the
// master applied but WAIT did not confirm on Config.AckReplicas replicas
// within Config.AckTimeout: the chunk is reported uncertain, never
// acknowledged (a failover now could lose it, or it may already be on
// them).
var ErrNotReplicated = errors.New("redisconn: write not confirmed on enough replicas")

// push sends the write of one BatchRPush chunk (RPUSH, or the idempotent
// script), which goes to key's node, and says what became of it. With
// Config.AckReplicas it is durable: the write and a WAIT go on one
// connection in one round trip of their own, outside the coalescer, whose
// round trips must not wait for replicas; the write counts as answered only
// when WAIT confirms the replicas.
func (w *Worker) push(ctx context.Context, key string, write redis.Cmder) (coalesce.Outcome, error) {
	need := w.m.cfg.AckReplicas
	if need == 0 {
		return w.m.send(ctx, write)
	}
	timeout := w.m.cfg.AckTimeout
	if dl, ok := ctx.Deadline(); ok {
		// WAIT answers by the caller's deadline; 0 would mean forever.
		timeout = max(min(timeout, time.Until(dl)), time.Millisecond)
	}
	wait := redis.NewIntCmd(ctx, "wait", need, timeout.Milliseconds())
	outcomes := make([]coalesce.Outcome, 2)
	err := w.m.pipelineOn(ctx, func(ctx context.Context) (*redis.Client, error) {
		if cc, ok := w.m.client.(*redis.ClusterClient); ok {
			return cc.MasterForKey(ctx, key)
		}
		return w.m.direct, nil
	}, []redis.Cmder{write, wait}, outcomes)
	switch {
	case outcomes[0] != coalesce.Answered || write.Err() != nil:
		// The write failed, or may have: as without WAIT.
		if werr := write.Err(); werr != nil {
			err = werr
		}
		return outcomes[0], err
	case wait.Err() != nil:
		return coalesce.Uncertain, wait.Err()
	case wait.Val() < int64(need):
		return coalesce.Uncertain, fmt.Errorf("%w: WAIT confirmed %d of %d replicas within %s", ErrNotReplicated, wait.Val(), need, timeout)
	}
	return coalesce.Answered, nil
}

// send sends cmd as a chunk of a batch: through the user's hooks, then the
// coalescer. It reports what became of cmd on the wire.
func (m *manager) send(ctx context.Context, cmd redis.Cmder) (coalesce.Outcome, error) {
	var outcome coalesce.Outcome
	err := m.users.ProcessHook(func(ctx context.Context, cmd redis.Cmder) error {
		var err error
		outcome, err = m.coalescer.Do(ctx, cmd)
		return err
	})(ctx, cmd)
	return outcome, err
}

// sendAll is send for several commands that go in one round trip, in order;
// outcomes[i] says what became of cmds[i].
func (m *manager) sendAll(ctx context.Context, cmds []redis.Cmder, outcomes []coalesce.Outcome) error {
	return m.users.ProcessPipelineHook(func(ctx context.Context, cmds []redis.Cmder) error {
		return m.coalescer.DoAll(ctx, cmds, outcomes)
	})(ctx, cmds)
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
// Each chunk is written by one Lua script that keeps a marker (EX
// IdempotentBatchTTL) holding a fingerprint of the chunk's items, and
// pushes the chunk only if the marker is new. A marker that exists with the
// same fingerprint is a chunk pushed before, and is skipped; one with
// another fingerprint means the id was used for different items, and the
// call fails with ErrBatchIDReused instead of skipping them. Markers are
// keyed by id and position and share the list's hash slot.
func WithIdempotentBatch(ctx context.Context, id string, start int) context.Context {
	return context.WithValue(ctx, idempotentKey{}, idempotentBatch{id: id, start: start, ttl: IdempotentBatchTTL})
}

// ErrBatchIDReused is the cause of a BatchRPush whose idempotent batch id
// (WithIdempotentBatch) was used before, at the same position, for
// different items: a retry must send exactly the values[n:] of the call it
// retries. Nothing of the chunk was pushed.
var ErrBatchIDReused = errors.New("redisconn: idempotent batch id reused for different items")

func (ib idempotentBatch) validate() error {
	switch {
	case ib.id == "":
		return &ConfigError{Name: "WithIdempotentBatch id", Value: "", Accepted: "a non-empty batch id"}
	case ib.start < 0:
		return &ConfigError{Name: "WithIdempotentBatch start", Value: strconv.Itoa(ib.start), Accepted: "the position of values[0] in the batch, 0 or more"}
	}
	return nil
}

// idempotentPush pushes ARGV[2..] onto KEYS[1] if the marker KEYS[2] is
// new, and sets the marker to the chunk's fingerprint (SHA-1 of its items,
// each prefixed with its length). It returns the list length, -1 when the
// same chunk was pushed before, -2 when the marker holds another chunk's
// fingerprint (markers of redisconn before fingerprints hold "1" and count
// as the same chunk). RPUSH is called in slices of 1000 to stay within
// Lua's stack.
var idempotentPushSHA = redis.NewScript(idempotentPushSrc).Hash()

const idempotentPushSrc = `
local parts = {}
for i = 2, #ARGV do
  parts[#parts + 1] = #ARGV[i] .. ':' .. ARGV[i]
end
local fp = redis.sha1hex(table.concat(parts))
local prev = redis.call('GET', KEYS[2])
if prev then
  if prev == fp or prev == '1' then
    return -1
  end
  return -2
end
redis.call('SET', KEYS[2], fp, 'EX', ARGV[1])
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
		cmd, outcome, err := w.runScript(ctx, idempotentPushSrc, idempotentPushSHA, keys, args)
		if err != nil {
			return 0, outcome == coalesce.Uncertain, err
		}
		if n, _ := cmd.Int64(); n == -2 {
			return 0, false, fmt.Errorf("%w: batch id %q, items at position %d", ErrBatchIDReused, ib.id, pos)
		}
		pos += len(chunk)
		return len(chunk), false, nil
	})
}

// runScript runs a script with EVALSHA, falling back to EVAL when the
// server does not have it cached, never sending again a command that may
// have been written.
func (w *Worker) runScript(ctx context.Context, src, sha string, keys []string, args []any) (*redis.Cmd, coalesce.Outcome, error) {
	build := func(name, body string) *redis.Cmd {
		a := make([]any, 0, 3+len(keys)+len(args))
		a = append(a, name, body, len(keys))
		for _, k := range keys {
			a = append(a, k)
		}
		return redis.NewCmd(ctx, append(a, args...)...)
	}
	cmd := build("evalsha", sha)
	outcome, err := w.push(ctx, keys[0], cmd)
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		// Not run: the script was not cached. Send it whole.
		cmd = build("eval", src)
		outcome, err = w.push(ctx, keys[0], cmd)
	}
	return cmd, outcome, err
}

// BatchPublish publishes messages on channel, in order, in chunks of
// Config.BatchSize: each chunk is one pipeline of PUBLISH commands (one round
// trip, one limiter permit), and a chunk that may have been written is never
// sent again. It returns how many messages Redis acknowledged; when that is
// fewer than len(messages) the error is a *BatchError. On a standalone
// server chunks are sent by the coalescer, as BatchRPush's are. In cluster
// mode every chunk goes to the node that owns the channel's hash slot, so
// subscribers anywhere in the cluster receive the messages in order.
// No messages: (0, nil) and no round trip.
func (w *Worker) BatchPublish(ctx context.Context, channel string, messages ...any) (int, error) {
	return w.batch(ctx, "BatchPublish", "PUBLISH", messages, func(ctx context.Context, chunk []any) (int, bool, error) {
		cmds := make([]redis.Cmder, len(chunk))
		for i, msg := range chunk {
			cmds[i] = redis.NewIntCmd(ctx, "publish", channel, msg)
		}
		outcomes := make([]coalesce.Outcome, len(chunk))
		var err error
		if cc, ok := w.m.client.(*redis.ClusterClient); ok {
			err = w.publishOnNode(ctx, cc, channel, cmds, outcomes)
		} else {
			err = w.m.sendAll(ctx, cmds, outcomes)
		}
		if err == nil {
			return len(chunk), false, nil
		}
		// Replies arrive in order: the leading successes are acknowledged.
		acked := 0
		for acked < len(cmds) && outcomes[acked] == coalesce.Answered && cmds[acked].Err() == nil {
			acked++
		}
		// Of the others, any that was answered without error or that may have
		// been written makes the rest uncertain.
		uncertain := false
		for i := acked; i < len(cmds); i++ {
			if outcomes[i] == coalesce.Uncertain || (outcomes[i] == coalesce.Answered && cmds[i].Err() == nil) {
				uncertain = true
			}
		}
		if acked < len(cmds) && cmds[acked].Err() != nil {
			err = cmds[acked].Err()
		}
		return acked, uncertain, err
	})
}

// publishOnNode sends a chunk of PUBLISH commands to the node that owns
// channel's hash slot. A keyless PUBLISH would go to any node, chunk by
// chunk, and the cluster bus does not order messages of different nodes.
func (w *Worker) publishOnNode(ctx context.Context, cc *redis.ClusterClient, channel string, cmds []redis.Cmder, outcomes []coalesce.Outcome) error {
	return w.m.pipelineOn(ctx, func(ctx context.Context) (*redis.Client, error) {
		return cc.MasterForKey(ctx, channel)
	}, cmds, outcomes)
}

// pipelineOn sends cmds as one pipeline on one connection of the client
// node returns (a cluster node's, or the Worker's direct client), through
// the user's hooks, under one limiter permit, and says what became of each
// command. It is for what the coalescer must not carry: a chunk that must
// reach one node, and a chunk that holds its connection (WAIT). A
// pipeline that may have been written is never sent again; one that
// certainly was not goes again where go-redis would send it again (no
// connection), at most defaultMaxRetries times, after go-redis's backoff.
func (m *manager) pipelineOn(ctx context.Context, node func(context.Context) (*redis.Client, error), cmds []redis.Cmder, outcomes []coalesce.Outcome) error {
	return m.users.ProcessPipelineHook(func(ctx context.Context, cmds []redis.Cmder) error {
		c, err := node(ctx)
		if err != nil {
			setErr(cmds, err)
			for i := range cmds {
				outcomes[i] = coalesce.Unsent
			}
			return err
		}
		for attempt := 0; ; attempt++ {
			err := m.pipelineOnce(ctx, c, cmds, outcomes)
			if err == nil || outcomes[0] != coalesce.Unsent || attempt == defaultMaxRetries ||
				!rediserr.NotConnected(err) || !coalesce.Backoff(ctx, attempt) {
				return err
			}
			// Nothing was written: clear the failure, so that the next
			// attempt's is the one the commands report.
			setErr(cmds, nil)
		}
	})(ctx, cmds)
}

// pipelineOnce sends cmds to c as one pipeline under one permit and says
// what became of each. c's chain has neither the user's hooks nor the
// limiter's: pipelineOn runs the first, and the permit is taken here.
func (m *manager) pipelineOnce(ctx context.Context, c *redis.Client, cmds []redis.Cmder, outcomes []coalesce.Outcome) error {
	waited, err := m.limiter.Acquire(ctx)
	if err != nil {
		setErr(cmds, err)
		for i := range outcomes[:len(cmds)] {
			outcomes[i] = coalesce.Unsent
		}
		return err
	}
	pipe := c.Pipeline()
	for _, cmd := range cmds {
		_ = pipe.Process(ctx, noRetry{cmd})
	}
	_, err = pipe.Exec(m.limiter.withPermit(ctx, waited))
	m.limiter.Release()
	// go-redis sets a failure on every command without a reply; only a
	// failure before anything was written leaves the chunk unsent.
	written := rediserr.MayHaveRun(err)
	for i, cmd := range cmds {
		switch e := cmd.Err(); {
		case rediserr.Final(e):
			outcomes[i] = coalesce.Answered
		case written:
			outcomes[i] = coalesce.Uncertain
		default:
			outcomes[i] = coalesce.Unsent
		}
	}
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
		acked, uncertain, err := send(ctx, values[done:end])
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
