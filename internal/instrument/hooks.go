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
// an operation. Any func may be nil.
type Operations struct {
	// LimiterWait is how long the operation in ctx waited for its limiter
	// permit; false when it took none.
	LimiterWait func(ctx context.Context) (time.Duration, bool)
	// RoundTrip returns the coalesced round trip cmd is a command of, or
	// false when cmd is not one. A pipeline is a round trip when its first
	// command is one, and then every command of it is: a round trip's
	// pipeline carries nothing else.
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
	// exemplars point at a sampled caller's trace when there is one. On a
	// cluster each node's share of a round trip is such an operation, and
	// its wait sample is the round trip's oldest command's.
	RoundTrip func(cmd redis.Cmder) (RoundTrip, bool)
	// Caller returns the caller of a command of a round trip. Asked per
	// command, so that a round trip costs no copy of its callers, and only
	// of a round trip with a sampled caller.
	Caller func(cmd redis.Cmder) Caller
}

// RoundTrip is what a coalesced round trip says of itself as a whole.
type RoundTrip struct {
	// Sampled is how many of its callers are in a sampled trace: those
	// for whom Sampled was true when they handed their commands over.
	Sampled int
	// Oldest is when the earliest of its commands was handed over.
	Oldest time.Time
}

// Sampled reports whether ctx carries a sampled trace: whether a command of
// a round trip made in ctx gets a span (see Operations.RoundTrip).
func Sampled(ctx context.Context) bool {
	return trace.SpanContextFromContext(ctx).IsSampled()
}

// roundTripOf is the round trip of cmds; false when cmds are not one (see
// RoundTrip).
func (o Operations) roundTripOf(cmds []redis.Cmder) (RoundTrip, bool) {
	if len(cmds) == 0 {
		return RoundTrip{}, false
	}
	return o.RoundTrip(cmds[0])
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
	if ops.RoundTrip == nil {
		ops.RoundTrip = func(redis.Cmder) (RoundTrip, bool) { return RoundTrip{}, false }
	}
	if ops.Caller == nil {
		ops.Caller = func(redis.Cmder) Caller { return Caller{Ctx: context.Background()} }
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
		if rt, ok := h.ops.roundTripOf(cmds); ok {
			h.roundTrip(cmds, rt, start, err)
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
// Operations.RoundTrip).
func (h *operationHook) roundTrip(cmds []redis.Cmder, rt RoundTrip, sent time.Time, err error) {
	elapsed := time.Since(sent).Seconds()
	// The samples' context: a sampled caller's, for the exemplars to lead to
	// a trace with one of the commands. Only a round trip that has one
	// reads its callers.
	ctx := context.Background()
	if rt.Sampled > 0 {
		for _, cmd := range cmds {
			if c := h.ops.Caller(cmd); Sampled(c.Ctx) {
				ctx = c.Ctx
				break
			}
		}
	}
	same := true
	for _, cmd := range cmds[1:] {
		if !sameCommand(cmds[0], cmd) {
			same = false
			break
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
	h.in.waitTime.Record(ctx, sent.Sub(rt.Oldest).Seconds(), h.in.baseRecord...)
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
