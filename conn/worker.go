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
// context's error and its command is never sent. A reply that was read is
// its caller's, even when the connection fails later in the round trip; a
// command that may have been written is never sent again (it gets the
// failure); a command that certainly did not run goes again where go-redis
// would send a single command again. Blocking commands, commands that
// change connection state, unknown commands, and explicit pipelines are not
// coalesced. WithCoalescing(false) turns it off for single commands (batch
// chunks still share round trips). What a hook added with AddHook sees is in
// AddHook's documentation.
//
// A command sent with Do that would change the state of a pooled
// connection (SELECT, AUTH, HELLO, CLIENT SETNAME, SUBSCRIBE, ...) fails
// with a *SessionError that says what to use instead; Conn is the place for
// them. go-redis's typed stateful commands (on a Pipeline or a Conn) are
// go-redis's, as on a plain client.
//
// Notes on what goes through the limiter:
//
//   - A permit is one round trip: a command that is not coalesced, a
//     coalesced round trip, a pipeline or transaction (Pipelined,
//     TxPipelined), a batch chunk.
//   - Watch and Conn keep a connection between their commands. They use the
//     share of the pool that the limiter does not govern (see held.go), take
//     no permit and are not coalesced, so transactions can never deadlock the
//     limiter against the pool. Use w.Watch and w.Conn, not the embedded
//     *redis.Client's: their coalescable commands would be coalesced onto
//     other connections.
//   - Blocking commands (BLPOP, BRPOP, BLMOVE, XREAD BLOCK, WAIT, ...) hold
//     their permit for as long as they block, because they hold a connection
//     that long; that is what the limiter bounds. Keep their timeouts short on
//     a worker, or give long-blocking consumers their own manager, or they
//     starve the other callers.
//   - Pub/sub (Subscribe, PSubscribe, SSubscribe) uses its own connections
//     outside the pool and the limiter, set up through the held share and
//     counted in ConnectionInfo.PubSub. Publish is an ordinary command.
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

// Clients counts the server's connections by role and by process, from
// their client names, against maxclients (see ClientsInfo, and its cost: on
// demand only). It takes no limiter permit.
func (w *Worker) Clients(ctx context.Context) (ClientsInfo, error) { return w.m.clientsInfo(ctx) }

// Close closes the pool. It is idempotent: later calls return nil. It does
// not wait for the server: callers waiting for a limiter permit or queued
// for a round trip get ErrClosed at once, and so does every later
// operation; operations in flight end with their connection, which Close
// closes (their error is the connection's).
func (w *Worker) Close() error { return w.m.close() }

// AddHook adds a go-redis hook to the Worker. It sees what a hook on a plain
// go-redis client sees: each caller's command, of its own type, in the
// caller's context (ProcessHook), and each pipeline or transaction
// (ProcessPipelineHook), in the order hooks were added, outermost. The
// Worker's own queueing (the coalescing queue, the limiter) happens inside
// it, so the time it measures includes that wait, as a plain client's hook
// includes the wait for a pooled connection. It also sees the connection
// set-up commands go-redis sends for the connections of non-coalesced
// operations (HELLO, AUTH, ...), and its DialHook sees every connection the
// Worker opens. Coalesced round trips are the
// Worker's own affair: no hook of the user sees them as pipelines. Watch
// and Conn run the hook too.
//
// A hook added to the embedded client directly (w.UniversalClient.AddHook)
// is go-redis's: innermost, below the coalescing, so it sees only what
// goes to Redis on its own. Use this method.
func (w *Worker) AddHook(h redis.Hook) { w.m.users.add(h) }

// PoolStats returns the pool's statistics: the Worker's pool shares (see
// Watch) added up.
func (w *Worker) PoolStats() *redis.PoolStats {
	s := w.m.pool()
	return &s
}
