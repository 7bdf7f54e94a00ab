package redistest

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Cluster is a Redis Cluster of real redis-server processes.
type Cluster struct {
	// Masters hold the slots, evenly split; Replicas[i] replicates Masters[i%len(Masters)].
	Masters, Replicas []*Server

	// proxies, with ClusterOptions.Proxy, are the nodes' proxies.
	proxies map[*Server]*Proxy
}

// ClusterOptions describe a cluster to start.
type ClusterOptions struct {
	Masters           int // default 3
	ReplicasPerMaster int // default 0
	// NodeTimeout is cluster-node-timeout; default 1s so failovers are quick.
	NodeTimeout time.Duration
	// Args are extra redis-server arguments for every node.
	Args []string
	// Proxy, when set, puts a proxy of this Toxiproxy in front of every node
	// (ProxyOf) and makes the node announce the proxy's address
	// (cluster-announce-ip 127.0.0.1, cluster-announce-port): CLUSTER SLOTS,
	// CLUSTER SHARDS, CLUSTER NODES and MOVED/ASK redirections name the
	// proxies, so a cluster client seeded with Addrs only ever connects
	// through them, and a toxic on one node's proxy hits the keys of that
	// node's slots. The cluster bus stays direct (cluster-port and
	// cluster-announce-bus-port on a port of its own), so toxics never make
	// nodes fail each other. Replicas replicate through their master's proxy
	// (the address their master announces): a toxic there reaches the
	// replication link too. A killed node's proxy still accepts connections
	// and closes them at once (EOF); Disable the proxy as well for refused
	// connections. Server.Addr stays the node's own, direct address.
	Proxy *Toxiproxy
}

// StartCluster starts the nodes, splits the 16384 slots over the masters,
// attaches the replicas, and waits until every node reports cluster_state:ok.
func StartCluster(t testing.TB, opts ClusterOptions) *Cluster {
	t.Helper()
	if opts.Masters == 0 {
		opts.Masters = 3
	}
	if opts.NodeTimeout == 0 {
		opts.NodeTimeout = time.Second
	}
	args := append([]string{
		"--cluster-enabled", "yes",
		"--cluster-config-file", "nodes.conf",
		"--cluster-node-timeout", fmt.Sprint(opts.NodeTimeout.Milliseconds()),
		"--cluster-require-full-coverage", "no",
	}, opts.Args...)
	c := &Cluster{}
	// busPorts are the nodes' cluster bus ports when they are not port+10000.
	busPorts := map[*Server]int{}
	start := func(role string, i int) *Server {
		nodeOpts := Options{Args: args}
		if opts.Proxy == nil {
			return Start(t, nodeOpts)
		}
		if c.proxies == nil {
			c.proxies = map[*Server]*Proxy{}
		}
		n, p, bus := startProxiedNode(t, opts.Proxy, nodeOpts, fmt.Sprintf("cluster-%s%d", role, i))
		c.proxies[n], busPorts[n] = p, bus
		return n
	}
	for i := 0; i < opts.Masters; i++ {
		c.Masters = append(c.Masters, start("master", i))
	}
	for i := 0; i < opts.Masters*opts.ReplicasPerMaster; i++ {
		c.Replicas = append(c.Replicas, start("replica", i))
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	all := c.Nodes()
	clients := make([]*redis.Client, len(all))
	for i, n := range all {
		clients[i] = redis.NewClient(&redis.Options{Addr: n.Addr(), MaxRetries: -1})
		defer clients[i].Close()
	}
	per := 16384 / opts.Masters
	for i := range c.Masters {
		lo, hi := i*per, (i+1)*per-1
		if i == opts.Masters-1 {
			hi = 16383
		}
		if err := clients[i].ClusterAddSlotsRange(ctx, lo, hi).Err(); err != nil {
			t.Fatalf("redistest: CLUSTER ADDSLOTSRANGE on %s: %v", c.Masters[i].Addr(), err)
		}
	}
	for i := 1; i < len(all); i++ {
		var err error
		if p := c.proxies[all[i]]; p != nil {
			// The announced port, and the bus port, which is not port+10000.
			err = clients[0].Do(ctx, "CLUSTER", "MEET", "127.0.0.1", p.Port(), busPorts[all[i]]).Err()
		} else {
			err = clients[0].ClusterMeet(ctx, "127.0.0.1", fmt.Sprint(all[i].Port())).Err()
		}
		if err != nil {
			t.Fatalf("redistest: CLUSTER MEET %s: %v", all[i].Addr(), err)
		}
	}
	// Every node must know every other before replicas can attach.
	if !WaitFor(ctx, 30*time.Second, func() bool {
		for _, cl := range clients {
			nodes, err := cl.ClusterNodes(ctx).Result()
			if err != nil || strings.Count(strings.TrimSpace(nodes), "\n")+1 != len(all) || strings.Contains(nodes, "handshake") {
				return false
			}
		}
		return true
	}) {
		t.Fatalf("redistest: cluster nodes did not meet within 30s")
	}
	for i, r := range c.Replicas {
		masterID, err := clients[i%opts.Masters].ClusterMyID(ctx).Result()
		if err != nil {
			t.Fatalf("redistest: CLUSTER MYID: %v", err)
		}
		rc := clients[opts.Masters+i]
		if !WaitFor(ctx, 10*time.Second, func() bool { return rc.ClusterReplicate(ctx, masterID).Err() == nil }) {
			t.Fatalf("redistest: CLUSTER REPLICATE on %s: %v", r.Addr(), rc.ClusterReplicate(ctx, masterID).Err())
		}
	}
	if !WaitFor(ctx, 30*time.Second, func() bool { return c.stateOK(ctx, clients) }) {
		t.Fatalf("redistest: cluster did not reach cluster_state:ok within 30s")
	}
	return c
}

// stateOK: every node sees cluster_state:ok and, in CLUSTER SLOTS, all 16384
// slots owned by the masters with their replicas. (cluster_state alone is not
// enough: with cluster-require-full-coverage off it is ok with slots missing.)
func (c *Cluster) stateOK(ctx context.Context, clients []*redis.Client) bool {
	perRange := 1 + len(c.Replicas)/len(c.Masters)
	for _, cl := range clients {
		info, err := cl.ClusterInfo(ctx).Result()
		if err != nil || !strings.Contains(info, "cluster_state:ok") {
			return false
		}
		slots, err := cl.ClusterSlots(ctx).Result()
		if err != nil {
			return false
		}
		covered, masters := 0, map[string]bool{}
		for _, r := range slots {
			if len(r.Nodes) != perRange {
				return false
			}
			for _, n := range r.Nodes {
				if c.proxies != nil && !c.isProxyAddr(n.Addr) {
					return false // not yet the announced address
				}
			}
			covered += int(r.End-r.Start) + 1
			masters[r.Nodes[0].Addr] = true
		}
		if covered != 16384 || len(masters) != len(c.Masters) {
			return false
		}
	}
	for i := range c.Replicas {
		info, err := clients[len(c.Masters)+i].Info(ctx, "replication").Result()
		if err != nil || !strings.Contains(info, "master_link_status:up") {
			return false
		}
	}
	return true
}

// Nodes are the masters followed by the replicas.
func (c *Cluster) Nodes() []*Server {
	return append(append([]*Server{}, c.Masters...), c.Replicas...)
}

// Addrs are the host:port of every node, usable as cluster seeds: with
// ClusterOptions.Proxy the addresses of the nodes' proxies (what the cluster
// announces), else the nodes' own (Server.Addr, which stays direct).
func (c *Cluster) Addrs() []string {
	var addrs []string
	for _, n := range c.Nodes() {
		if p := c.proxies[n]; p != nil {
			addrs = append(addrs, p.Addr())
		} else {
			addrs = append(addrs, n.Addr())
		}
	}
	return addrs
}

// ProxyOf is the proxy in front of node n, or nil when the cluster was
// started without ClusterOptions.Proxy.
func (c *Cluster) ProxyOf(n *Server) *Proxy { return c.proxies[n] }

// Proxies are the nodes' proxies in the order of Nodes, or nil when the
// cluster was started without ClusterOptions.Proxy.
func (c *Cluster) Proxies() []*Proxy {
	if c.proxies == nil {
		return nil
	}
	var ps []*Proxy
	for _, n := range c.Nodes() {
		ps = append(ps, c.proxies[n])
	}
	return ps
}

func (c *Cluster) isProxyAddr(addr string) bool {
	for _, p := range c.proxies {
		if p.Addr() == addr {
			return true
		}
	}
	return false
}

// startProxiedNode starts a cluster node behind a proxy of tp named
// name-<node port>. A node announces its address when it starts, so the
// proxy's port must be known before: it is chosen free first and the proxy
// created on it once the node (its upstream) runs; when the port was taken
// meanwhile, node and ports are chosen again. The bus gets a free port of
// its own too (cluster-port), announced as it is.
func startProxiedNode(t testing.TB, tp *Toxiproxy, opts Options, name string) (*Server, *Proxy, int) {
	t.Helper()
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		ports, err := freePorts(2)
		if err != nil {
			t.Fatalf("redistest: %v", err)
		}
		proxyPort, busPort := ports[0], ports[1]
		nodeOpts := opts
		nodeOpts.Args = append(slices.Clone(opts.Args),
			"--cluster-announce-ip", "127.0.0.1",
			"--cluster-announce-port", strconv.Itoa(proxyPort),
			"--cluster-port", strconv.Itoa(busPort),
			"--cluster-announce-bus-port", strconv.Itoa(busPort),
		)
		n, err := StartProcess(nodeOpts, t.TempDir())
		if err != nil {
			lastErr = err
			continue
		}
		n.t = t
		t.Cleanup(n.Stop)
		listen := net.JoinHostPort("127.0.0.1", strconv.Itoa(proxyPort))
		p, err := tp.createProxy(fmt.Sprintf("%s-%d", name, n.Port()), listen, n.Addr())
		if err != nil {
			lastErr = err
			n.Stop()
			continue
		}
		p.deleteOnCleanup(t)
		return n, p, busPort
	}
	t.Fatalf("redistest: starting a proxied cluster node: %v", lastErr)
	return nil, nil, 0
}

// freePorts returns n distinct loopback ports that were free a moment ago.
func freePorts(n int) ([]int, error) {
	var ports []int
	for len(ports) < n {
		p, err := FreePort()
		if err != nil {
			return nil, err
		}
		if !slices.Contains(ports, p) {
			ports = append(ports, p)
		}
	}
	return ports, nil
}
