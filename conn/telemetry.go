package conn

import (
	"context"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redisconn/redisconn/internal/instrument"
	"github.com/redisconn/redisconn/telemetry"
)

// instruments creates the manager's instruments; addHooks puts their hooks
// in the chain and observe registers the observable ones.
func (m *manager) instruments() (*instrument.Instruments, error) {
	return instrument.New(instrument.Config{
		Role:           string(m.cfg.Role),
		PoolName:       m.poolName(),
		MeterProvider:  m.opts.meterProvider,
		TracerProvider: m.opts.tracerProvider,
		DBStatement:    m.opts.dbStatement,
	})
}

func (m *manager) observe() error {
	src := instrument.Source{Pool: m.poolStats, Server: m.cachedServerStats}
	if m.limiter != nil {
		src.Limiter = m.limiterStats
	}
	if m.probe != nil {
		src.Sentinel = m.sentinelStats
	}
	return m.tel.Observe(src)
}

func (m *manager) poolName() string {
	switch {
	case m.opts.poolName != "":
		return m.opts.poolName
	case m.cluster:
		return "cluster/" + m.cfg.ClusterAddrs[0]
	case m.master != nil:
		return "sentinel/" + m.cfg.SentinelMaster + "/" + strconv.Itoa(m.cfg.DB)
	case m.cfg.URL != "":
		if opt, err := redis.ParseURL(m.cfg.URL); err == nil {
			return opt.Addr + "/" + strconv.Itoa(opt.DB)
		}
	}
	return net.JoinHostPort(m.cfg.Host, strconv.Itoa(m.cfg.Port)) + "/" + strconv.Itoa(m.cfg.DB)
}

// poolStats are the pool's numbers (see poolstats.go).
func (m *manager) poolStats() instrument.PoolStats {
	nodes := 1
	if m.cluster {
		nodes = max(len(m.client.(*redis.ClusterClient).Options().Addrs), 1)
		if n := m.clusterNodes(); n > 0 {
			nodes = n
		}
	}
	s := m.pool()
	return instrument.PoolStats{
		Max:   int64(m.maxConns(nodes)),
		Total: int64(s.TotalConns), Idle: int64(s.IdleConns), Pending: int64(s.PendingRequests),
		Hits: int64(s.Hits), Misses: int64(s.Misses), Waits: int64(s.WaitCount), Timeouts: int64(s.Timeouts),
		PubSub: int64(s.PubSubStats.Active),
	}
}

// clusterNodes counts the nodes the cluster client has connected to.
func (m *manager) clusterNodes() int {
	var n atomic.Int64 // ForEachShard calls fn concurrently
	ctx, cancel := context.WithTimeout(context.Background(), serverInfoTimeout)
	defer cancel()
	_ = m.client.(*redis.ClusterClient).ForEachShard(ctx, func(context.Context, *redis.Client) error {
		n.Add(1)
		return nil
	})
	return int(n.Load())
}

func (m *manager) limiterStats() instrument.LimiterStats {
	i := m.limiterInfo()
	return instrument.LimiterStats{
		Limit: i.Limit, InFlight: i.InFlight, Waiting: i.Waiting,
		RejectedContext: i.RejectedContext, RejectedClosed: i.RejectedClosed,
	}
}

// serverCache keeps the last INFO for the server instruments.
type serverCache struct {
	mu    sync.Mutex
	at    time.Time
	stats instrument.ServerStats
	ok    bool
}

// serverInfoTimeout bounds the INFO a collection may trigger, so a paused
// server delays a scrape by at most this much.
const serverInfoTimeout = 500 * time.Millisecond

// cachedServerStats returns the server numbers, refreshing them with one INFO
// when they are older than telemetry.ServerInfoMaxAge. A failed refresh keeps
// reporting the last good numbers and is retried at the next max age.
func (m *manager) cachedServerStats(ctx context.Context) (instrument.ServerStats, bool) {
	c := &m.server
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.at.IsZero() && time.Since(c.at) < telemetry.ServerInfoMaxAge {
		return c.stats, c.ok
	}
	c.at = time.Now()
	if m.closed.Load() {
		return c.stats, c.ok
	}
	ctx, cancel := context.WithTimeout(ctx, serverInfoTimeout)
	defer cancel()
	var total instrument.ServerStats
	add := func(s ServerInfo) {
		total.ConnectedClients += s.ConnectedClients
		total.MaxClients += s.MaxClients
		total.RejectedConnections += s.RejectedConnections
	}
	var err error
	if cc, ok := m.client.(*redis.ClusterClient); ok {
		var mu sync.Mutex
		err = cc.ForEachShard(ctx, func(ctx context.Context, node *redis.Client) error {
			s, err := serverInfo(ctx, node)
			if err != nil {
				return err
			}
			mu.Lock()
			add(s)
			mu.Unlock()
			return nil
		})
	} else {
		var s ServerInfo
		s, err = serverInfo(ctx, m.diagnostics())
		add(s)
	}
	if err == nil {
		c.stats, c.ok = total, true
	}
	return c.stats, c.ok
}
