package conn_test

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redisconn/redisconn/conn"
	"github.com/redisconn/redisconn/internal/redistest"
)

// needServer fails the test when kind's server is not installed: `make
// deps` installs both (Valkey from bookworm-backports).
func needServer(t *testing.T, kind redistest.Kind) {
	t.Helper()
	if _, err := exec.LookPath(kind.Binary()); err != nil {
		t.Fatalf("%s is not installed: run make deps: %v", kind.Binary(), err)
	}
}

// binaryVersion is the version `<server> --version` prints (v=8.0.1), a
// source other than INFO.
func binaryVersion(t *testing.T, kind redistest.Kind) string {
	t.Helper()
	out, err := exec.Command(kind.Binary(), "--version").Output()
	if err != nil {
		t.Fatalf("%s --version: %v", kind.Binary(), err)
	}
	m := regexp.MustCompile(`\bv=(\S+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("%s --version printed %q", kind.Binary(), out)
	}
	return string(m[1])
}

// ConnectionInfo's server section names the server and its own version;
// redis_version stays as the server reports it (Valkey: the Redis version it
// is compatible with).
func TestConnectionInfoNamesTheServer(t *testing.T) {
	for _, kind := range []redistest.Kind{redistest.Redis, redistest.Valkey} {
		t.Run(string(kind), func(t *testing.T) {
			needServer(t, kind)
			srv := redistest.Start(t, redistest.Options{Server: kind})
			a := newAPI(t, config(conn.RoleAPI, srv))
			ci, err := a.ConnectionInfo(ctxTimeout(t, 10*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			want := binaryVersion(t, kind)
			s := ci.Server
			if s.ServerName != string(kind) || s.ServerVersion != want || s.MaxClients == 0 {
				t.Errorf("server %+v; want server_name %q, server_version %q", s, kind, want)
			}
			switch kind {
			case redistest.Redis:
				if s.RedisVersion != want {
					t.Errorf("redis_version %q, want %q", s.RedisVersion, want)
				}
			case redistest.Valkey:
				// Valkey 8 answers redis_version:7.2.4 for clients that check it.
				if s.RedisVersion != "7.2.4" {
					t.Errorf("redis_version %q, want Valkey's 7.2.4", s.RedisVersion)
				}
			}

			raw, err := json.Marshal(ci)
			if err != nil {
				t.Fatal(err)
			}
			var doc struct {
				Server map[string]any `json:"server"`
			}
			if err := json.Unmarshal(raw, &doc); err != nil {
				t.Fatal(err)
			}
			for k, v := range map[string]string{"server_name": string(kind), "server_version": want, "redis_version": s.RedisVersion} {
				if doc.Server[k] != v {
					t.Errorf("JSON server.%s = %v, want %q (%s)", k, doc.Server[k], v, raw)
				}
			}
		})
	}
}

// On a cluster, each node names its server, and so does the sum: the one
// server the nodes run, or both names, without a version, for a cluster of
// Redis and Valkey nodes (Valkey 8 joins a Redis 7 cluster).
func TestConnectionInfoNamesTheServersOfACluster(t *testing.T) {
	cases := []struct {
		name  string
		kinds []redistest.Kind
	}{
		// REDISTEST_SERVER's. (Two nodes: a node that met no other does
		// not know its own address and reports ":port".)
		{"default", []redistest.Kind{"", ""}},
		{"mixed", []redistest.Kind{redistest.Valkey, redistest.Redis}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, k := range tc.kinds {
				if k != "" {
					needServer(t, k)
				}
			}
			nodes := startClusterOf(t, tc.kinds...)
			cfg := conn.DefaultConfig(conn.RoleAPI)
			cfg.ClusterAddrs = []string{nodes[0].Addr()}
			a := newAPI(t, cfg)
			ci, err := a.ConnectionInfo(ctxTimeout(t, 10*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			if len(ci.Nodes) != len(nodes) {
				t.Fatalf("%d nodes in ConnectionInfo, want %d: %+v", len(ci.Nodes), len(nodes), ci.Nodes)
			}
			names := map[string]bool{}
			for _, n := range nodes {
				names[string(n.Kind())] = true
				want := binaryVersion(t, n.Kind())
				var got *conn.NodeInfo
				for i := range ci.Nodes {
					if ci.Nodes[i].Addr == n.Addr() {
						got = &ci.Nodes[i]
					}
				}
				if got == nil || got.Server.ServerName != string(n.Kind()) || got.Server.ServerVersion != want {
					t.Errorf("node %s (%s %s): %+v; nodes %+v", n.Addr(), n.Kind(), want, got, ci.Nodes)
				}
			}
			s := ci.Server
			if len(names) == 1 {
				k := nodes[0].Kind()
				if s.ServerName != string(k) || s.ServerVersion != binaryVersion(t, k) {
					t.Errorf("server %+v; want %s %s", s, k, binaryVersion(t, k))
				}
			} else if s.ServerName != "redis,valkey" || s.ServerVersion != "" || s.RedisVersion == "" {
				t.Errorf("server %+v; want server_name redis,valkey, no server_version", s)
			}
		})
	}
}

// startClusterOf starts one cluster master per kind ("" is the default) with
// the slots split between them, and waits until every node sees all of them.
func startClusterOf(t *testing.T, kinds ...redistest.Kind) []*redistest.Server {
	t.Helper()
	ctx := ctxTimeout(t, 30*time.Second)
	args := []string{"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "1000"}
	var nodes []*redistest.Server
	var clients []*redis.Client
	for i, k := range kinds {
		n := redistest.Start(t, redistest.Options{Server: k, Args: args})
		c := n.Client(t)
		lo, hi := i*16384/len(kinds), (i+1)*16384/len(kinds)-1
		if err := c.ClusterAddSlotsRange(ctx, lo, hi).Err(); err != nil {
			t.Fatalf("CLUSTER ADDSLOTSRANGE on %s %s: %v", n.Kind(), n.Addr(), err)
		}
		if i > 0 {
			if err := clients[0].ClusterMeet(ctx, "127.0.0.1", fmt.Sprint(n.Port())).Err(); err != nil {
				t.Fatalf("CLUSTER MEET %s: %v", n.Addr(), err)
			}
		}
		nodes, clients = append(nodes, n), append(clients, c)
	}
	if !redistest.WaitFor(ctx, 20*time.Second, func() bool {
		for _, c := range clients {
			info, err := c.ClusterInfo(ctx).Result()
			if err != nil || !strings.Contains(info, "cluster_state:ok") ||
				!strings.Contains(info, fmt.Sprintf("cluster_known_nodes:%d\r", len(kinds))) ||
				!strings.Contains(info, "cluster_slots_ok:16384\r") {
				return false
			}
		}
		return true
	}) {
		t.Fatalf("cluster of %v not ok within 20s", kinds)
	}
	return nodes
}
