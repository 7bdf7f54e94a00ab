package redistest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Cluster is a Redis Cluster of real redis-server processes.
type Cluster struct {
	// Masters hold the slots, evenly split; Replicas[i] replicates Masters[i%len(Masters)].
	Masters, Replicas []*Server
}

// ClusterOptions describe a cluster to start.
type ClusterOptions struct {
	Masters           int // default 3
	ReplicasPerMaster int // default 0
	// NodeTimeout is cluster-node-timeout; default 1s so failovers are quick.
	NodeTimeout time.Duration
	// Args are extra redis-server arguments for every node.
	Args []string
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
	for i := 0; i < opts.Masters; i++ {
		c.Masters = append(c.Masters, Start(t, Options{Args: args}))
	}
	for i := 0; i < opts.Masters*opts.ReplicasPerMaster; i++ {
		c.Replicas = append(c.Replicas, Start(t, Options{Args: args}))
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
		if err := clients[0].ClusterMeet(ctx, "127.0.0.1", fmt.Sprint(all[i].Port())).Err(); err != nil {
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

// Addrs are the host:port of every node, usable as cluster seeds.
func (c *Cluster) Addrs() []string {
	var addrs []string
	for _, n := range c.Nodes() {
		addrs = append(addrs, n.Addr())
	}
	return addrs
}
