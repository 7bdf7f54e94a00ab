package conn

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// A Watch transaction or a Conn keeps one connection between its commands.
// Under a limiter that bounds operations, that is a deadlock waiting to
// happen: transactions that hold connections while they wait for a permit,
// and permit holders that wait for a connection, can use up the pool
// between them (300 concurrent Watch transactions on one shared pool of 200
// produced pool timeouts). So a standalone Worker splits its pool
// (REDIS_WORKER_MAX_CONNECTIONS) in three (poolShares):
//
//   - MaxConcurrentOps connections for the operations the limiter governs:
//     every permit holder finds a connection, and never waits for one held
//     by a transaction;
//   - one per coalescing flusher (2) for the coalesced round trips, which
//     take their permits from the same limiter;
//   - the rest, at least one, for what holds a connection between commands
//     (Watch, Conn) and for diagnostics (ConnectionInfo's INFO, the server
//     metrics), which must answer while the limiter is saturated. These take
//     no permit and are not coalesced; their own pool bounds them, and a
//     caller waits for one of its connections up to REDIS_POOL_TIMEOUT.
//
// In cluster mode go-redis runs Watch on the node that owns the keys, outside
// the cluster client's hooks, so the limiter never meets it there.

// shares are the pool sizes of a manager's clients (per node in a cluster).
type shares struct{ limited, wire, held int }

func (s shares) total() int { return s.limited + s.wire + s.held }

// poolShares splits cfg.PoolSize between the clients of a manager of role.
// A standalone Worker opens at most max(PoolSize, MaxConcurrentOps+wire+1)
// connections: the limited share and the wire share serve the permits, and
// the held share has at least one.
// The API has one pool. In a cluster the Worker has no held share (go-redis
// runs Watch on a node's client, outside the limiter) and every node's pool
// serves at most MaxConcurrentOps operations.
func poolShares(cfg Config, role Role, flushers int) shares {
	if role != RoleWorker {
		return shares{limited: cfg.PoolSize}
	}
	wire := max(min(flushers, cfg.MaxConcurrentOps), 1)
	if len(cfg.ClusterAddrs) > 0 {
		return shares{limited: max(cfg.PoolSize-wire, cfg.MaxConcurrentOps), wire: wire}
	}
	return shares{limited: cfg.MaxConcurrentOps, wire: wire, held: max(cfg.PoolSize-cfg.MaxConcurrentOps-wire, 1)}
}

// diagnostics is the client for INFO: the held share on a standalone Worker,
// the client itself otherwise.
func (m *manager) diagnostics() *redis.Client {
	if m.held != nil {
		return m.held
	}
	return m.client.(*redis.Client)
}

// Watch runs fn in a transaction that watches keys, as go-redis's Watch
// does, on a connection of the Worker's held share (see held.go): it takes
// no limiter permit and its commands are not coalesced, so any number of
// concurrent transactions can never deadlock the limiter against the pool.
func (w *Worker) Watch(ctx context.Context, fn func(*redis.Tx) error, keys ...string) error {
	if w.m.held == nil {
		return w.UniversalClient.Watch(ctx, fn, keys...)
	}
	if w.m.closed.Load() {
		return ErrClosed
	}
	return w.m.held.Watch(ctx, fn, keys...)
}

// Conn returns a single connection of the Worker's held share (see Watch),
// for commands that change connection state (SELECT, CLIENT SETNAME, ...).
// Close it to return the connection. Standalone only: in cluster mode it
// returns an error.
func (w *Worker) Conn() (*redis.Conn, error) {
	if w.m.held == nil {
		return nil, fmt.Errorf("redisconn: Worker.Conn: a Redis Cluster has no single connection; use the node's client")
	}
	if w.m.closed.Load() {
		return nil, ErrClosed
	}
	return w.m.held.Conn(), nil
}

// Subscribe subscribes to channels, as go-redis's Subscribe does, on a
// connection of its own outside the pool and the limiter, set up through the
// held share's hooks (see held.go).
func (w *Worker) Subscribe(ctx context.Context, channels ...string) *redis.PubSub {
	return w.pubSubClient().Subscribe(ctx, channels...)
}

// PSubscribe subscribes to channel patterns, as Subscribe does.
func (w *Worker) PSubscribe(ctx context.Context, patterns ...string) *redis.PubSub {
	return w.pubSubClient().PSubscribe(ctx, patterns...)
}

// SSubscribe subscribes to shard channels, as Subscribe does.
func (w *Worker) SSubscribe(ctx context.Context, channels ...string) *redis.PubSub {
	return w.pubSubClient().SSubscribe(ctx, channels...)
}

// pubSubClient is where the Worker's subscriptions set up their connections:
// the held share on a standalone server (a pub/sub connection's set-up runs
// outside any operation's permit), the cluster's node clients otherwise.
func (w *Worker) pubSubClient() redis.UniversalClient {
	if w.m.held != nil {
		return w.m.held
	}
	return w.UniversalClient
}
