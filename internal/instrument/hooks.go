package instrument

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redisconn/redisconn/telemetry"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// Operations tells the telemetry hooks what the hooks outside them know of
// an operation. Either func may be nil.
type Operations struct {
	// LimiterWait is how long the operation in ctx waited for its limiter
	// permit; false when it took none.
	LimiterWait func(ctx context.Context) (time.Duration, bool)
	// Caller returns the caller of a command of a coalesced round trip, or
	// false when cmd is not one. A pipeline is a round trip when its first
	// command is one, and then every command of it is: a round trip's
	// pipeline carries nothing else. Asked per command, so that a round trip
	// costs no copy of its callers.
	//
	// A round trip's spans and metrics: each command whose caller's trace is
	// sampled gets a CLIENT span in that trace, from the moment the round
	// trip was sent to its answer, with the caller's wait
	// (redisconn.limiter.wait_time) and the round trip's size
	// (redisconn.pipeline.size); the round trip itself starts no span. It is
	// one operation in the metrics, so their cost does not grow with the
	// commands it carries: one db.client.operation.duration sample, named as
	// OpenTelemetry names a batch ("BATCH RPUSH" when its commands share a
	// name, "BATCH" otherwise) with the error.type of its first failed
	// command; one redisconn.limiter.wait_time sample, its oldest command's
	// wait; one redisconn.batch.size sample, its number of commands. Their
	// exemplars point at a sampled caller's trace when there is one.
	Caller func(cmd redis.Cmder) (Caller, bool)
}

// roundTrip reports whether cmds are a coalesced round trip (see Caller).
func (o Operations) roundTrip(cmds []redis.Cmder) bool {
	if len(cmds) == 0 {
		return false
	}
	_, ok := o.Caller(cmds[0])
	return ok
}

// callerOf is the caller of cmd, a command of a round trip.
func (o Operations) callerOf(cmd redis.Cmder) Caller {
	c, _ := o.Caller(cmd)
	return c
}

// Caller is the caller of one command of a coalesced round trip.
type Caller struct {
	// Ctx is the caller's context: its span is the parent of the command's.
	Ctx context.Context
	// Queued is when the caller handed the command over.
	Queued time.Time
	// Call is the same for the commands a caller handed over together (a
	// batch chunk): they make one span.
	Call uint64
}

// Hooks returns the two telemetry hooks of a client (or cluster node) that
// talks to the server at addr, to be added in this order inside the hooks
// that ops reads from:
//
//   - spans: a CLIENT span for every command and pipeline (tracingHook), with
//     the limiter wait as an attribute; a coalesced round trip's commands in
//     their callers' traces instead (Operations.Caller);
//   - metrics: db.client.operation.duration for every operation, the
//     limiter wait, and a round trip's size. Inside the span, so a sampled
//     span becomes the samples' exemplar.
func (in *Instruments) Hooks(addr string, ops Operations) (spans, metrics redis.Hook) {
	if ops.LimiterWait == nil {
		ops.LimiterWait = func(context.Context) (time.Duration, bool) { return 0, false }
	}
	if ops.Caller == nil {
		ops.Caller = func(redis.Cmder) (Caller, bool) { return Caller{}, false }
	}
	return newTracingHook(in, addr, ops), &operationHook{in: in, ops: ops}
}

// operationHook records db.client.operation.duration and the limiter wait
// for every command and pipeline, and a coalesced round trip's size.
type operationHook struct {
	in  *Instruments
	ops Operations
	// batchNames caches "BATCH <name>" for every db.operation.name (a bounded set).
	batchNames sync.Map
}

func (h *operationHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *operationHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if SetupCommand(cmd) {
			return next(ctx, cmd)
		}
		start := time.Now()
		err := next(ctx, cmd)
		h.done(ctx, commandName(cmd.Name()), start, err)
		return err
	}
}

func (h *operationHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if SetupPipeline(cmds) {
			return next(ctx, cmds)
		}
		start := time.Now()
		err := next(ctx, cmds)
		if h.ops.roundTrip(cmds) {
			h.roundTrip(cmds, start, err)
			return err
		}
		name := "PIPELINE"
		if len(cmds) > 0 && cmds[0].Name() == "multi" {
			name = "MULTI"
		}
		h.done(ctx, name, start, err)
		return err
	}
}

func (h *operationHook) done(ctx context.Context, name string, start time.Time, err error) {
	elapsed := time.Since(start).Seconds()
	if waited, ok := h.ops.LimiterWait(ctx); ok {
		h.in.waitTime.Record(ctx, waited.Seconds(), h.in.baseRecord...)
	}
	h.record(ctx, elapsed, name, err)
}

func (h *operationHook) record(ctx context.Context, seconds float64, name string, err error) {
	if err == nil || err == redis.Nil {
		h.in.duration.Record(ctx, seconds, h.in.operationOpts(name)...)
		return
	}
	h.in.duration.Record(ctx, seconds, metric.WithAttributeSet(
		h.in.with(telemetry.AttrOperationName.String(name), telemetry.AttrErrorType.String(telemetry.ErrorType(err)))))
}

// roundTrip records a coalesced round trip as one operation (see
// Operations.Caller).
func (h *operationHook) roundTrip(cmds []redis.Cmder, sent time.Time, err error) {
	elapsed := time.Since(sent).Seconds()
	// One pass: whether the commands share a name, the oldest caller's
	// wait, and a sampled caller's context for the exemplars. A caller's
	// commands are adjacent and share its context and wait.
	c0 := h.ops.callerOf(cmds[0])
	ctx, oldest, call := c0.Ctx, c0.Queued, c0.Call
	sampled := trace.SpanContextFromContext(ctx).IsSampled()
	same := true
	for _, cmd := range cmds[1:] {
		same = same && sameCommand(cmds[0], cmd)
		c := h.ops.callerOf(cmd)
		if c.Call == call {
			continue
		}
		call = c.Call
		if c.Queued.Before(oldest) {
			oldest = c.Queued
		}
		if !sampled && trace.SpanContextFromContext(c.Ctx).IsSampled() {
			ctx, sampled = c.Ctx, true // an exemplar that leads to a trace with one of the commands
		}
	}
	name := ""
	if same {
		name = commandName(cmds[0].Name())
	}
	name = h.batchName(name)
	// Exec's error is the first command's that failed; a nil reply is not a
	// failure, but a later command may have failed.
	if err == redis.Nil {
		err = nil
		for _, c := range cmds {
			if e := c.Err(); e != nil && e != redis.Nil {
				err = e
				break
			}
		}
	}
	h.in.waitTime.Record(ctx, sent.Sub(oldest).Seconds(), h.in.baseRecord...)
	h.in.batchSize.Record(ctx, int64(len(cmds)), h.in.operationOpts(name)...)
	h.record(ctx, elapsed, name, err)
}

// sameCommand reports whether a and b are the same command (Name): at once
// when their first arguments are the same string, as go-redis's own commands
// of one kind are.
func sameCommand(a, b redis.Cmder) bool {
	if x, y := a.Args(), b.Args(); len(x) > 0 && len(y) > 0 {
		if s, ok := x[0].(string); ok {
			if t, ok := y[0].(string); ok && s == t {
				return true
			}
		}
	}
	return a.Name() == b.Name()
}

// SetupCommand reports a command that go-redis sends itself to set up a new
// connection (HELLO, AUTH, SELECT, READONLY, CLIENT SETINFO/SETNAME/TRACKING/
// MAINT_NOTIFICATIONS). The set-up is part of the connection's dial: its
// commands are not operations, so the hooks neither measure nor trace them
// (the dial has its span, redis.dial), and a limiter lets them through.
func SetupCommand(cmd redis.Cmder) bool {
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

// SetupPipeline reports a pipeline of set-up commands only (SetupCommand).
func SetupPipeline(cmds []redis.Cmder) bool {
	for _, c := range cmds {
		if !SetupCommand(c) {
			return false
		}
	}
	return len(cmds) > 0
}

// KnownCommand reports whether name (lower case, as go-redis's Cmder.Name)
// is a Redis command this package knows.
func KnownCommand(name string) bool {
	_, ok := knownCommands[name]
	return ok
}

// batchName is the db.operation.name of a batch of commands named name
// ("" when they differ).
func (h *operationHook) batchName(name string) string {
	if name == "" {
		return "BATCH"
	}
	if b, ok := h.batchNames.Load(name); ok {
		return b.(string)
	}
	b := "BATCH " + name
	h.batchNames.Store(name, b)
	return b
}

// commandName maps a go-redis command name to a bounded db.operation.name.
func commandName(name string) string {
	if n, ok := knownCommands[name]; ok {
		return n
	}
	return "_OTHER"
}
