package conn

import (
	"context"

	"github.com/redis/go-redis/v9"
)

// Worker is the connection manager of a heavy process. Its pool is
// REDIS_WORKER_MAX_CONNECTIONS (default 200) and every operation goes through
// a FIFO limiter of REDIS_WORKER_MAX_CONCURRENT_OPS (default 100) permits, so
// no burst of callers can exhaust the pool: callers beyond the limit queue in
// the limiter, in order, and leave it when their context ends.
//
// Worker embeds redis.UniversalClient, so every go-redis command works on it
// as on a plain client, and to its callers it behaves as one, apart from the
// queueing it exists for: a caller's deadline holds, a command whose reply
// arrived is never sent again, and errors are go-redis's own (a context that
// ended returns the context's error; a pool timeout is a *PoolTimeoutError
// that errors.Is(err, redis.ErrPoolTimeout)).
//
// Concurrent single commands are coalesced: callers queue their command and
// a few flushers send what has queued as one pipeline, a round trip holding
// one permit, so under load one round trip carries many callers' commands (a
// lone caller's command is a pipeline of one). Each caller waits for its own
// result and its commands run in its order. A round trip carries only
// commands whose deadlines lie close together (within 10 % of their budget,
// at least 5 ms), so a caller returns at most that long after its deadline. A
// caller whose context ends before its round trip holds a permit gets the
// context's error and its command is never sent. When a round trip fails part way, only
// the commands that certainly did not run are sent again. Blocking commands,
// commands that change connection state, unknown commands, and explicit
// pipelines are not coalesced. WithCoalescing(false) turns it off. The order
// of the Worker's hooks, and what a hook added with AddHook sees, is in
// AddHook's documentation.
//
// Notes on what goes through the limiter:
//
//   - A permit is one round trip: a command that is not coalesced, a
//     coalesced round trip, a pipeline or transaction (Pipelined,
//     TxPipelined), a batch chunk.
//   - Watch and Conn keep a connection between their commands. They use the
//     share of the pool that the limiter does not govern (PoolSize minus
//     MaxConcurrentOps connections, at least one), take no permit and are not
//     coalesced, so transactions can never deadlock the limiter against the
//     pool. Use w.Watch and w.Conn, not the embedded client's Conn.
//   - Blocking commands (BLPOP, BRPOP, BLMOVE, XREAD BLOCK, WAIT, ...) hold
//     their permit for as long as they block, because they hold a connection
//     that long; that is what the limiter bounds. Keep their timeouts short on
//     a worker, or give long-blocking consumers their own manager, or they
//     starve the other callers.
//   - Pub/sub (Subscribe, PSubscribe, SSubscribe) uses its own connections
//     outside the pool and the limiter, counted in ConnectionInfo.PubSub.
//     Publish is an ordinary command and takes a permit.
type Worker struct {
	redis.UniversalClient
	m *manager
}

// NewWorker connects a Worker manager. It validates cfg (zero fields take the
// worker defaults; Role must be RoleWorker or empty; MaxConcurrentOps at most
// PoolSize) and checks that the server answers PING, failing with an error
// that names the address otherwise.
func NewWorker(ctx context.Context, cfg Config, opts ...Option) (*Worker, error) {
	m, err := newManager(ctx, RoleWorker, cfg, opts)
	if err != nil {
		return nil, err
	}
	return &Worker{UniversalClient: m.client, m: m}, nil
}

// Config returns the configuration in use, defaults filled in.
func (w *Worker) Config() Config { return w.m.cfg }

// ConnectionInfo returns pool statistics, the limiter's state and the
// server's client counts (INFO). Pool and limiter figures are always filled; if
// INFO fails, the error is returned together with them. Its INFO does not wait
// for a limiter permit, so it answers while the limiter is saturated.
func (w *Worker) ConnectionInfo(ctx context.Context) (ConnectionInfo, error) { return w.m.info(ctx) }

// Close closes the pool. It is idempotent: later calls return nil. Callers
// waiting for a limiter permit get ErrClosed at once, and so does every later
// operation. Operations already running finish or fail on their own.
func (w *Worker) Close() error { return w.m.close() }

// AddHook adds a go-redis hook to the Worker, innermost: inside the Worker's
// own hooks, which run outermost first as closed check, coalescing, limiter,
// pool-timeout snapshot, telemetry (spans, then metrics), connection set-up
// errors. So the hook sees every operation as it goes to Redis, with its
// permit held and inside its span. A
// coalesced round trip reaches it as one pipeline (ProcessPipelineHook)
// holding its callers' commands; other commands one by one (ProcessHook).
// The hook is added to the held-connection share too (Watch, Conn). Add
// hooks before the Worker is used: a hook added while commands run may miss
// some of them, as in go-redis.
func (w *Worker) AddHook(h redis.Hook) {
	w.UniversalClient.AddHook(h)
	if w.m.held != nil {
		w.m.held.AddHook(h)
	}
}

// PoolStats returns the pool's statistics: on a standalone Worker, both its
// shares added up (see Watch).
func (w *Worker) PoolStats() *redis.PoolStats {
	s := *w.UniversalClient.PoolStats()
	if w.m.held != nil {
		h := w.m.held.PoolStats()
		s.Hits += h.Hits
		s.Misses += h.Misses
		s.Timeouts += h.Timeouts
		s.WaitCount += h.WaitCount
		s.Unusable += h.Unusable
		s.WaitDurationNs += h.WaitDurationNs
		s.TotalConns += h.TotalConns
		s.IdleConns += h.IdleConns
		s.StaleConns += h.StaleConns
		s.PendingRequests += h.PendingRequests
	}
	return &s
}
