package conn

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
)

// ConnectionInfo is a snapshot of a manager: its pool, its limiter (worker
// only) and the server. The JSON field names are part of the contract
// (DESIGN.md); fields beyond it are additions, never renames.
type ConnectionInfo struct {
	Role Role     `json:"role"`
	Pool PoolInfo `json:"pool"`
	// PubSub counts pub/sub connections, which bypass pool and limiter.
	PubSub PubSubInfo `json:"pubsub"`
	// Limiter is nil for the API, which has none.
	Limiter *LimiterInfo `json:"limiter,omitempty"`
	// Server is read with INFO. In cluster mode it adds up the nodes (counts
	// summed, the lowest versions; see ServerInfo for nodes of two servers).
	Server ServerInfo `json:"server"`
	// Nodes has one entry per cluster node (masters and replicas); empty for a
	// standalone server.
	Nodes []NodeInfo `json:"nodes,omitempty"`
	// Sentinel is set in Sentinel mode: the master, its switches and the
	// sentinels (sentinel.go).
	Sentinel *SentinelInfo `json:"sentinel,omitempty"`
}

// PoolInfo are go-redis pool statistics. Counters (hits, misses, timeouts,
// wait_count, wait_duration_ns, stale_conns) only grow.
type PoolInfo struct {
	MaxConns        int    `json:"max_conns"`
	TotalConns      uint32 `json:"total_conns"`
	IdleConns       uint32 `json:"idle_conns"`
	StaleConns      uint32 `json:"stale_conns"`
	Hits            uint32 `json:"hits"`
	Misses          uint32 `json:"misses"`
	Timeouts        uint32 `json:"timeouts"`
	WaitCount       uint32 `json:"wait_count"`
	WaitDurationNs  int64  `json:"wait_duration_ns"`
	PendingRequests uint32 `json:"pending_requests"`
}

// PubSubInfo counts pub/sub connections.
type PubSubInfo struct {
	Active  uint32 `json:"active"`
	Created uint32 `json:"created"`
}

// ServerInfo are the fields of INFO that tell which server it is and how
// close it is to refusing connections.
type ServerInfo struct {
	// RedisVersion is INFO's redis_version as the server reports it: Valkey
	// reports the Redis version it is compatible with (7.2.4), not its own.
	RedisVersion string `json:"redis_version"`
	// ServerName is which server it is: INFO's server_name ("valkey"), or
	// "redis" when INFO has none, as Redis's has not.
	ServerName string `json:"server_name"`
	// ServerVersion is the server's own version: <server_name>_version
	// (valkey_version), else redis_version. In cluster mode, when the nodes
	// are not all the same server, ServerName lists their names, sorted and
	// joined by commas ("redis,valkey"), and ServerVersion is empty: Nodes
	// tells each node's.
	ServerVersion       string `json:"server_version"`
	ConnectedClients    int64  `json:"connected_clients"`
	BlockedClients      int64  `json:"blocked_clients"`
	MaxClients          int64  `json:"maxclients"`
	RejectedConnections int64  `json:"rejected_connections"`
}

// NodeInfo is one cluster node.
type NodeInfo struct {
	Addr   string     `json:"addr"`
	Pool   PoolInfo   `json:"pool"`
	Server ServerInfo `json:"server"`
	// Error says why Server is empty, e.g. the node is down.
	Error string `json:"error,omitempty"`
}

// LimiterInfo is the Worker's limiter in ConnectionInfo. A permit is one
// operation, that is one round trip to Redis: a command, a pipeline or
// transaction, a batch chunk, or a coalesced round trip that carries many
// callers' commands. A caller is one call that waits for its commands: a
// Get, or one batch chunk of many.
type LimiterInfo struct {
	// Limit is the most round trips that run at once (REDIS_WORKER_MAX_CONCURRENT_OPS).
	Limit int64 `json:"limit"`
	// InFlight is how many round trips hold a permit now.
	InFlight int64 `json:"in_flight"`
	// Waiting is how many callers wait for their command to be sent: for a
	// permit, or queued for a coalesced round trip (a round trip waiting for
	// its permit counts its callers). A caller is one call: a batch chunk of
	// 50 commands counts once.
	Waiting int64 `json:"waiting"`
	// Rejected counts callers (calls, as Waiting) that gave up before their
	// command was sent, or the rest of their commands: their context ended
	// while they waited, or the manager was closed.
	Rejected int64 `json:"rejected"`
	// RejectedContext and RejectedClosed split Rejected by reason.
	RejectedContext int64 `json:"rejected_context"`
	RejectedClosed  int64 `json:"rejected_closed"`
	// Acquired counts permits granted (round trips); Waited, those of them
	// that had to queue for their permit first.
	Acquired int64 `json:"acquired"`
	Waited   int64 `json:"waited"`
	// Queued is how many callers wait in the coalescing queue now (part of
	// Waiting); InFlightCallers, how many callers have commands in
	// coalesced round trips in flight (sent, reply not read yet: behind a
	// stalled server, they are the ones waiting). CoalescedRoundTrips and
	// CoalescedCommands count the round trips the coalescer sent and the
	// commands they carried.
	Queued              int64 `json:"queued"`
	InFlightCallers     int64 `json:"in_flight_callers"`
	CoalescedRoundTrips int64 `json:"coalesced_round_trips"`
	CoalescedCommands   int64 `json:"coalesced_commands"`
}

// limiterInfo adds up the limiter's counts and the coalescer's: the limiter
// counts the callers that wait for a permit of their own, the coalescer the
// callers of round trips.
func (m *manager) limiterInfo() LimiterInfo {
	l := m.limiter.counts()
	c := m.coalescer.Counts()
	li := LimiterInfo{
		Limit: l.limit, InFlight: l.inFlight,
		Waiting:         l.waiting + c.Queued + c.Unsent,
		RejectedContext: l.rejectedContext + c.RejectedContext,
		RejectedClosed:  l.rejectedClose + c.RejectedClosed,
		Acquired:        l.acquired, Waited: l.waited,
		Queued: c.Queued, InFlightCallers: c.Sent,
		CoalescedRoundTrips: c.RoundTrips, CoalescedCommands: c.Commands,
	}
	li.Rejected = li.RejectedContext + li.RejectedClosed
	return li
}

func poolInfo(s *redis.PoolStats, maxConns int) PoolInfo {
	if s == nil {
		return PoolInfo{MaxConns: maxConns}
	}
	return PoolInfo{
		MaxConns: maxConns, TotalConns: s.TotalConns, IdleConns: s.IdleConns, StaleConns: s.StaleConns,
		Hits: s.Hits, Misses: s.Misses, Timeouts: s.Timeouts, WaitCount: s.WaitCount,
		WaitDurationNs: s.WaitDurationNs, PendingRequests: s.PendingRequests,
	}
}

// info builds ConnectionInfo. Pool and limiter are always filled; when INFO
// fails the error is returned with the rest of the snapshot.
func (m *manager) info(ctx context.Context) (ConnectionInfo, error) {
	ci := ConnectionInfo{Role: m.cfg.Role}
	if m.limiter != nil {
		li := m.limiterInfo()
		ci.Limiter = &li
	}
	if m.closed.Load() {
		return ci, ErrClosed
	}
	if !m.cluster {
		if m.probe != nil {
			ci.Sentinel = m.sentinelInfo(ctx)
		}
		m.fillPools(&ci, 1)
		srv, err := serverInfo(ctx, m.diagnostics())
		ci.Server = srv
		if err != nil {
			return ci, fmt.Errorf("redisconn: reading INFO from %s: %w", m.target(), err)
		}
		return ci, nil
	}

	cc := m.client.(*redis.ClusterClient)
	var (
		mu    sync.Mutex
		nodes []NodeInfo
	)
	// Node errors are reported per node; only a failure to reach the cluster
	// at all is an error of the whole call.
	wire := m.wireNodePools(ctx)
	err := cc.ForEachShard(ctx, func(ctx context.Context, node *redis.Client) error {
		addr := node.Options().Addr
		srv, err := serverInfo(ctx, node)
		// After INFO, whose connection counts too.
		s := wire[addr]
		addPoolStats(&s, node.PoolStats())
		n := NodeInfo{Addr: addr, Pool: poolInfo(&s, m.shares.total()), Server: srv}
		if err != nil {
			n.Error = err.Error()
		}
		mu.Lock()
		nodes = append(nodes, n)
		mu.Unlock()
		return nil
	})
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].Addr < nodes[j].Addr })
	ci.Nodes = nodes
	m.fillPools(&ci, len(nodes))
	var nodeErrs []error
	var names []string // the servers the nodes run
	for i, n := range nodes {
		s := &ci.Server
		if n.Error != "" {
			nodeErrs = append(nodeErrs, fmt.Errorf("%s: %s", n.Addr, n.Error))
			continue
		}
		s.ConnectedClients += n.Server.ConnectedClients
		s.BlockedClients += n.Server.BlockedClients
		s.MaxClients += n.Server.MaxClients
		s.RejectedConnections += n.Server.RejectedConnections
		if s.RedisVersion == "" || versionLess(n.Server.RedisVersion, s.RedisVersion) {
			s.RedisVersion = nodes[i].Server.RedisVersion
		}
		if s.ServerVersion == "" || versionLess(n.Server.ServerVersion, s.ServerVersion) {
			s.ServerVersion = n.Server.ServerVersion
		}
		if !slices.Contains(names, n.Server.ServerName) {
			names = append(names, n.Server.ServerName)
		}
	}
	slices.Sort(names)
	ci.Server.ServerName = strings.Join(names, ",")
	if len(names) > 1 {
		ci.Server.ServerVersion = "" // versions of two servers do not compare
	}
	if err != nil {
		return ci, fmt.Errorf("redisconn: reading cluster nodes from %s: %w", m.target(), err)
	}
	if len(nodeErrs) > 0 {
		return ci, fmt.Errorf("redisconn: reading INFO from %d of %d cluster nodes failed: %w", len(nodeErrs), len(nodes), errors.Join(nodeErrs...))
	}
	return ci, nil
}

func (m *manager) fillPools(ci *ConnectionInfo, nodes int) {
	s := m.pool()
	ci.Pool = poolInfo(&s, m.maxConns(nodes))
	ci.PubSub = PubSubInfo{Active: s.PubSubStats.Active, Created: s.PubSubStats.Created}
}

func serverInfo(ctx context.Context, c *redis.Client) (ServerInfo, error) {
	raw, err := c.Info(ctx).Result()
	if err != nil {
		return ServerInfo{}, err
	}
	return parseServerInfo(raw), nil
}

// parseServerInfo reads the fields of ServerInfo from INFO's text.
func parseServerInfo(raw string) ServerInfo {
	var s ServerInfo
	versions := map[string]string{} // the *_version fields
	sc := bufio.NewScanner(strings.NewReader(raw))
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), ":")
		if !ok {
			continue
		}
		if strings.HasSuffix(k, "_version") {
			versions[k] = v
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		switch k {
		case "redis_version":
			s.RedisVersion = v
		case "server_name":
			s.ServerName = v
		case "connected_clients":
			s.ConnectedClients = n
		case "blocked_clients":
			s.BlockedClients = n
		case "maxclients":
			s.MaxClients = n
		case "rejected_connections":
			s.RejectedConnections = n
		}
	}
	if s.ServerName == "" && s.RedisVersion != "" {
		s.ServerName = "redis" // Redis's INFO names no server
	}
	s.ServerVersion = versions[s.ServerName+"_version"]
	if s.ServerVersion == "" {
		s.ServerVersion = s.RedisVersion
	}
	return s
}

// versionLess compares dotted versions numerically ("7.0.15" < "7.2.4").
func versionLess(a, b string) bool {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) && i < len(bs); i++ {
		x, _ := strconv.Atoi(as[i])
		y, _ := strconv.Atoi(bs[i])
		if x != y {
			return x < y
		}
	}
	return len(as) < len(bs)
}
