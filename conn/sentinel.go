package conn

import (
	"context"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redisconn/redisconn/internal/instrument"
	"github.com/redisconn/redisconn/telemetry"
)

// In Sentinel mode every client of a manager is a go-redis failover client
// (redis.NewFailoverClient): it asks the sentinels for the master's address
// when it dials, and drops its connections to the old master when the
// sentinels announce a switch. What the manager adds is what an operator
// needs during a failover, which go-redis only logs:
//
//   - where its connections go now, and how often that changed (master),
//     learned from the connections themselves;
//   - which sentinels answer, and their quorum (probe), asked on demand
//     (ConnectionInfo) or at most once per telemetry.ServerInfoMaxAge (the
//     metrics).

// SentinelInfo is the Sentinel part of ConnectionInfo (Sentinel mode only).
type SentinelInfo struct {
	// MasterName is the name the sentinels monitor (REDIS_SENTINEL_MASTER).
	MasterName string `json:"master_name"`
	// MasterAddr is where the manager's newest connection to the master
	// went; empty before the first one.
	MasterAddr string `json:"master_addr"`
	// Switches counts the changes of MasterAddr the manager has seen since
	// it started; LastSwitch is when it saw the last one.
	Switches   int64      `json:"switches"`
	LastSwitch *time.Time `json:"last_switch,omitempty"`
	// Quorum is the quorum the answering sentinels report for the master
	// (the largest, should they differ); Answering counts the sentinels that
	// answered this call.
	Quorum    int64 `json:"quorum"`
	Answering int64 `json:"answering"`
	// Sentinels has one entry per configured sentinel, in the configured
	// order.
	Sentinels []SentinelNode `json:"sentinels"`
}

// SentinelNode is one sentinel as the manager last asked it.
type SentinelNode struct {
	Addr      string `json:"addr"`
	Answering bool   `json:"answering"`
	// MasterAddr is the master's address as this sentinel reports it.
	MasterAddr string `json:"master_addr,omitempty"`
	// Error says why the sentinel did not answer (never a secret).
	Error string `json:"error,omitempty"`
}

// master records where a manager's connections to the master go. It is
// shared by the manager's clients and safe for concurrent use.
type master struct {
	mu       sync.Mutex
	addr     string
	switches int64
	last     time.Time
}

// dialed records a new connection to addr: a different address than the
// last one is a switch.
func (ms *master) dialed(addr string) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	if addr == ms.addr {
		return
	}
	if ms.addr != "" {
		ms.switches++
		ms.last = time.Now()
	}
	ms.addr = addr
}

func (ms *master) snapshot() (addr string, switches int64, last time.Time) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	return ms.addr, ms.switches, ms.last
}

// masterHook records the remote address of every new connection of a
// failover client: the master go-redis resolved through the sentinels.
type masterHook struct{ ms *master }

func (h masterHook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := next(ctx, network, addr)
		if err == nil && c != nil && c.RemoteAddr() != nil {
			h.ms.dialed(c.RemoteAddr().String())
		}
		return c, err
	}
}

func (masterHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (masterHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// probe asks the configured sentinels about the master. Its clients (one
// connection each) are made at the first probe and closed with the manager.
type probe struct {
	name    string
	addrs   []string
	options func(addr string) *redis.Options

	mu      sync.Mutex
	clients []*redis.SentinelClient
	closed  bool

	// cache serves the metrics: at most one probe per ServerInfoMaxAge.
	cacheMu sync.Mutex
	cacheAt time.Time
	cached  []SentinelNode
	quorum  int64
}

// newProbe makes the probe of the configured sentinels, which connect as
// go-redis's failover client connects to them: SentinelUsername and
// SentinelPassword, and the manager's TLS settings.
func (m *manager) newProbe() (*probe, error) {
	c := m.cfg
	fromURL := false
	if c.URL != "" {
		if opt, err := redis.ParseURL(c.URL); err == nil {
			fromURL = opt.TLSConfig != nil
		}
	}
	tc, err := m.tlsConfig(fromURL)
	if err != nil {
		return nil, err
	}
	return &probe{name: c.SentinelMaster, addrs: c.SentinelAddrs, options: func(addr string) *redis.Options {
		return &redis.Options{
			Addr: addr, Username: c.SentinelUsername, Password: string(c.SentinelPassword), TLSConfig: tc,
			PoolSize: 1, DialTimeout: c.ConnectTimeout, ReadTimeout: c.SocketTimeout, WriteTimeout: c.SocketTimeout,
			ContextTimeoutEnabled: true, MaxRetries: -1,
		}
	}}, nil
}

func (p *probe) sentinels() []*redis.SentinelClient {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	if p.clients == nil {
		for _, a := range p.addrs {
			p.clients = append(p.clients, redis.NewSentinelClient(p.options(a)))
		}
	}
	return p.clients
}

// ask sends SENTINEL MASTER to every sentinel at once and returns what each
// said within serverInfoTimeout, and the largest quorum reported.
func (p *probe) ask(ctx context.Context) ([]SentinelNode, int64) {
	clients := p.sentinels()
	nodes := make([]SentinelNode, len(p.addrs))
	quorums := make([]int64, len(p.addrs))
	var wg sync.WaitGroup
	for i, a := range p.addrs {
		nodes[i].Addr = a
		if clients == nil {
			nodes[i].Error = ErrClosed.Error()
			continue
		}
		wg.Add(1)
		go func(i int, c *redis.SentinelClient) {
			defer wg.Done()
			// A sentinel answers from memory: one that has not answered
			// within this is as good as down for an operator.
			ctx, cancel := context.WithTimeout(ctx, serverInfoTimeout)
			defer cancel()
			m, err := c.Master(ctx, p.name).Result()
			if err != nil {
				nodes[i].Error = err.Error()
				return
			}
			nodes[i].Answering = true
			if ip, port := m["ip"], m["port"]; ip != "" && port != "" {
				nodes[i].MasterAddr = net.JoinHostPort(ip, port)
			}
			quorums[i], _ = strconv.ParseInt(m["quorum"], 10, 64)
		}(i, clients[i])
	}
	wg.Wait()
	var quorum int64
	for _, q := range quorums {
		quorum = max(quorum, q)
	}
	return nodes, quorum
}

// cachedAsk is ask, at most once per telemetry.ServerInfoMaxAge.
func (p *probe) cachedAsk(ctx context.Context) ([]SentinelNode, int64) {
	p.cacheMu.Lock()
	defer p.cacheMu.Unlock()
	if p.cacheAt.IsZero() || time.Since(p.cacheAt) >= telemetry.ServerInfoMaxAge {
		p.cached, p.quorum = p.ask(ctx)
		p.cacheAt = time.Now()
	}
	return p.cached, p.quorum
}

func (p *probe) close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	var first error
	for _, c := range p.clients {
		if err := c.Close(); err != nil && first == nil {
			first = err
		}
	}
	p.clients = nil
	return first
}

// sentinelInfo is ConnectionInfo's Sentinel object, asking the sentinels now.
func (m *manager) sentinelInfo(ctx context.Context) *SentinelInfo {
	nodes, quorum := m.probe.ask(ctx)
	return m.sentinelSnapshot(nodes, quorum)
}

func (m *manager) sentinelSnapshot(nodes []SentinelNode, quorum int64) *SentinelInfo {
	addr, switches, last := m.master.snapshot()
	si := &SentinelInfo{MasterName: m.cfg.SentinelMaster, MasterAddr: addr, Switches: switches, Quorum: quorum, Sentinels: nodes}
	if !last.IsZero() {
		si.LastSwitch = &last
	}
	for _, n := range nodes {
		if n.Answering {
			si.Answering++
		}
	}
	return si
}

// sentinelStats are the Sentinel numbers of the metrics.
func (m *manager) sentinelStats(ctx context.Context) (instrument.SentinelStats, bool) {
	if m.closed.Load() {
		return instrument.SentinelStats{}, false
	}
	si := m.sentinelSnapshot(m.probe.cachedAsk(ctx))
	return instrument.SentinelStats{Switches: si.Switches, Answering: si.Answering, Quorum: si.Quorum}, true
}
