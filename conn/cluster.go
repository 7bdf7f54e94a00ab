package conn

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redisconn/redisconn/internal/rediserr"
)

// clusterReloadHook makes a cluster client notice a failover quickly.
//
// go-redis reloads the cluster's slot map on MOVED and ASK replies and every
// ClusterStateReloadInterval (60 s by default). When a master dies, commands
// for its slots fail to connect and are retried on the same dead address, so
// no MOVED arrives and the map stays stale for up to a minute after a replica
// took over. This hook asks for a reload (at most every 250 ms) whenever an
// operation fails at the network level.
type clusterReloadHook struct {
	cc   *redis.ClusterClient
	last *atomic.Int64 // unix nanos of the last reload asked for
}

const clusterReloadEvery = 250 * time.Millisecond

func (h clusterReloadHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h clusterReloadHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		h.check(err)
		return err
	}
}

func (h clusterReloadHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		h.check(err)
		return err
	}
}

func (h clusterReloadHook) check(err error) {
	if err == nil || !rediserr.Network(err) {
		return
	}
	now := time.Now().UnixNano()
	last := h.last.Load()
	if now-last < int64(clusterReloadEvery) || !h.last.CompareAndSwap(last, now) {
		return
	}
	h.cc.ReloadState(context.Background()) // asynchronous in go-redis
}
