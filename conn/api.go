package conn

import (
	"context"

	"github.com/redis/go-redis/v9"
)

// API is the connection manager of a light process: caching and some pub/sub.
// Its pool is REDIS_MAX_CONNECTIONS (default 128) and it has no limiter.
//
// API embeds redis.UniversalClient, so every go-redis command works on it as on
// a plain client, against a standalone server, a Sentinel-managed master or
// a Redis Cluster. Unlike a plain client it never sends a command again
// after the command may have reached Redis: a failure that leaves a
// command's outcome unknown (a reset, a lost reply, a read timeout) is the
// caller's, not a second INCR. A command that certainly did not run (no
// connection could be had or set up, a pool timeout, a refusal such as
// LOADING) goes again after go-redis's backoff, as go-redis would send it.
type API struct {
	redis.UniversalClient
	m *manager
}

// NewAPI connects an API manager. It validates cfg (zero fields take the API
// defaults; Role must be RoleAPI or empty) and checks that the server answers
// PING, failing with an error that names the address otherwise.
func NewAPI(ctx context.Context, cfg Config, opts ...Option) (*API, error) {
	m, err := newManager(ctx, RoleAPI, cfg, opts)
	if err != nil {
		return nil, err
	}
	return &API{UniversalClient: m.client, m: m}, nil
}

// Config returns the configuration in use, defaults filled in.
func (a *API) Config() Config { return a.m.cfg }

// ConnectionInfo returns the pool statistics and the server's client counts
// (INFO). Pool figures are always filled; if INFO fails, the error is returned
// together with them.
func (a *API) ConnectionInfo(ctx context.Context) (ConnectionInfo, error) { return a.m.info(ctx) }

// Clients counts the server's connections by role and by process, from
// their client names, against maxclients (see ClientsInfo, and its cost: on
// demand only).
func (a *API) Clients(ctx context.Context) (ClientsInfo, error) { return a.m.clientsInfo(ctx) }

// AddHook adds a go-redis hook to the API. It sees what a hook on a plain
// go-redis client sees: each operation once, in the caller's context, in
// the order hooks were added, outermost; what it measures includes the
// API's resending of operations that did not run, as a plain client's hook
// includes go-redis's retries. Its DialHook sees every connection the API
// opens.
//
// A hook added to the embedded client directly (a.UniversalClient.AddHook)
// is go-redis's: innermost, so it sees each attempt on its own. Use this
// method.
func (a *API) AddHook(h redis.Hook) { a.m.users.add(h) }

// Close closes the pool. It is idempotent: later calls return nil. Afterwards
// every operation fails with ErrClosed.
func (a *API) Close() error { return a.m.close() }
