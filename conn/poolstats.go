package conn

import (
	"context"
	"sync"

	"github.com/redis/go-redis/v9"
)

// The manager's pool is the pools of its clients (see poolShares): the one
// callers use, and on a Worker the wire and the held share. This file is the
// one place that adds them up.

// clients are the manager's clients.
func (m *manager) clients() []redis.UniversalClient {
	cs := []redis.UniversalClient{m.client}
	if m.wire != nil {
		cs = append(cs, m.wire)
	}
	if m.held != nil {
		cs = append(cs, m.held)
	}
	return cs
}

// pool returns the pools' statistics added up.
func (m *manager) pool() redis.PoolStats {
	var sum redis.PoolStats
	for _, c := range m.clients() {
		addPoolStats(&sum, c.PoolStats())
	}
	return sum
}

// maxConns is the most connections the manager's pools open, on nodes
// servers (1 unless a cluster).
func (m *manager) maxConns(nodes int) int { return m.shares.total() * max(nodes, 1) }

func addPoolStats(sum *redis.PoolStats, s *redis.PoolStats) {
	if s == nil {
		return
	}
	sum.Hits += s.Hits
	sum.Misses += s.Misses
	sum.Timeouts += s.Timeouts
	sum.WaitCount += s.WaitCount
	sum.Unusable += s.Unusable
	sum.WaitDurationNs += s.WaitDurationNs
	sum.TotalConns += s.TotalConns
	sum.IdleConns += s.IdleConns
	sum.StaleConns += s.StaleConns
	sum.PendingRequests += s.PendingRequests
	sum.PubSubStats.Active += s.PubSubStats.Active
	sum.PubSubStats.Created += s.PubSubStats.Created
}

// wireNodePools are the wire client's pools of a cluster Worker by node
// address, to add to the nodes of ConnectionInfo.
func (m *manager) wireNodePools(ctx context.Context) map[string]redis.PoolStats {
	pools := map[string]redis.PoolStats{}
	cc, ok := m.wire.(*redis.ClusterClient)
	if !ok {
		return pools
	}
	var mu sync.Mutex
	_ = cc.ForEachShard(ctx, func(_ context.Context, node *redis.Client) error {
		mu.Lock()
		defer mu.Unlock()
		pools[node.Options().Addr] = *node.PoolStats()
		return nil
	})
	return pools
}
