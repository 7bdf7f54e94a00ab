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
// (REDIS_WORKER_MAX_CONNECTIONS) in two:
//
//   - MaxConcurrentOps connections for the operations the limiter governs:
//     every permit holder finds a connection, and never waits for one held
//     by a transaction;
//   - the rest, at least one, for what holds a connection between commands
//     (Watch, Conn) and for diagnostics (ConnectionInfo's INFO, the server
//     metrics), which must answer while the limiter is saturated. These take
//     no permit and are not coalesced; their own pool bounds them, and a
//     caller waits for one of its connections up to REDIS_POOL_TIMEOUT.
//
// In cluster mode go-redis runs Watch on the node that owns the keys, outside
// the cluster client's hooks, so the limiter never meets it there.

// heldPoolSize is the held share of the Worker's pool.
func heldPoolSize(cfg Config) int { return max(cfg.PoolSize-cfg.MaxConcurrentOps, 1) }

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
