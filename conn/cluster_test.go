package conn_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redisconn/redisconn/conn"
	"github.com/redisconn/redisconn/internal/redistest"
)

func TestWorkerOnRedisCluster(t *testing.T) {
	cluster := redistest.StartCluster(t, redistest.ClusterOptions{Masters: 3})
	cfg := conn.DefaultConfig(conn.RoleWorker)
	cfg.ClusterAddrs = cluster.Addrs()[:1] // one seed is enough to find the rest
	cfg.PoolSize, cfg.MaxConcurrentOps = 20, 10
	w := newWorker(t, cfg)
	ctx := ctxTimeout(t, 60*time.Second)

	// Keys spread over all three masters.
	for i := 0; i < 30; i++ {
		key := "cluster:key:" + strconv.Itoa(i)
		if err := w.Set(ctx, key, i, time.Minute).Err(); err != nil {
			t.Fatalf("SET %s: %v", key, err)
		}
	}
	for _, m := range cluster.Masters {
		if n := m.Client(t).DBSize(ctx).Val(); n == 0 {
			t.Errorf("master %s got no keys", m.Addr())
		}
	}

	// Batch ops: lists on different slots, in order.
	for _, key := range []string{"cluster:list:a", "cluster:list:b", "cluster:list:{c}"} {
		n, err := w.BatchRPush(ctx, key, items(230)...)
		if err != nil || n != 230 {
			t.Fatalf("BatchRPush %s = %d, %v", key, n, err)
		}
		list, err := w.LRange(ctx, key, 0, -1).Result()
		if err != nil || len(list) != 230 {
			t.Fatalf("LRANGE %s: %d items, %v", key, len(list), err)
		}
		for i, v := range list {
			if v != "item-"+strconv.Itoa(i) {
				t.Fatalf("%s[%d] = %q", key, i, v)
			}
		}
	}

	// A subscriber on every node receives BatchPublish in order.
	channel := "cluster:events"
	for _, node := range cluster.Masters {
		sub := node.Client(t).Subscribe(ctx, channel)
		defer sub.Close()
		if _, err := sub.Receive(ctx); err != nil {
			t.Fatal(err)
		}
		defer func(addr string) {
			ch := sub.Channel()
			for i := 0; i < 500; i++ {
				select {
				case msg := <-ch:
					if msg.Payload != "item-"+strconv.Itoa(i) {
						t.Errorf("subscriber on %s: message %d is %q", addr, i, msg.Payload)
						return
					}
				case <-ctx.Done():
					t.Errorf("subscriber on %s got %d of 500", addr, i)
					return
				}
			}
		}(node.Addr())
	}
	if n, err := w.BatchPublish(ctx, channel, items(500)...); err != nil || n != 500 {
		t.Fatalf("BatchPublish = %d, %v", n, err)
	}

	info, err := w.ConnectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(info.Nodes) != 3 {
		t.Fatalf("ConnectionInfo has %d nodes, want 3: %+v", len(info.Nodes), info.Nodes)
	}
	var conns uint32
	var clients int64
	for _, n := range info.Nodes {
		if n.Error != "" || n.Pool.MaxConns != 20 || n.Server.RedisVersion == "" || n.Server.MaxClients == 0 {
			t.Errorf("node %+v", n)
		}
		if !strings.HasPrefix(n.Addr, "127.0.0.1:") {
			t.Errorf("node addr %q", n.Addr)
		}
		conns += n.Pool.TotalConns
		clients += n.Server.ConnectedClients
	}
	if info.Pool.MaxConns != 60 || info.Pool.TotalConns != conns || info.Server.ConnectedClients != clients {
		t.Errorf("aggregate pool %+v server %+v; nodes add up to %d conns, %d clients", info.Pool, info.Server, conns, clients)
	}
	if info.Limiter.InFlight != 0 || info.Limiter.Limit != 10 {
		t.Errorf("limiter %+v", *info.Limiter)
	}
}

func TestAPIOnRedisClusterFromEnvironment(t *testing.T) {
	cluster := redistest.StartCluster(t, redistest.ClusterOptions{Masters: 3})
	t.Setenv("REDIS_CLUSTER_ADDRS", strings.Join(cluster.Addrs(), ","))
	cfg, err := conn.LoadConfig(conn.RoleAPI)
	if err != nil {
		t.Fatal(err)
	}
	a := newAPI(t, cfg)
	ctx := ctxTimeout(t, 30*time.Second)
	if err := a.Set(ctx, "cluster:api", "v", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	info, err := a.ConnectionInfo(ctx)
	if err != nil || len(info.Nodes) != 3 || info.Limiter != nil {
		t.Fatalf("info %+v, %v", info, err)
	}
}

// A master of a cluster with replicas is killed: the worker keeps serving
// once its replica takes over, errors stay within the failover window, and
// ConnectionInfo shows the dead node.
func TestClusterFailover(t *testing.T) {
	cluster := redistest.StartCluster(t, redistest.ClusterOptions{Masters: 3, ReplicasPerMaster: 1})
	cfg := conn.DefaultConfig(conn.RoleWorker)
	cfg.ClusterAddrs = cluster.Addrs()
	cfg.PoolSize, cfg.MaxConcurrentOps = 20, 10
	cfg.ConnectTimeout, cfg.SocketTimeout = 500*time.Millisecond, time.Second
	w := newWorker(t, cfg)

	var (
		stop              atomic.Bool
		okN, errN         atomic.Int64
		firstErr, lastErr atomic.Int64 // unix nanos
		lastMsg           atomic.Value
		wg                sync.WaitGroup
	)
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; !stop.Load(); n++ {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				err := w.Incr(ctx, "failover:"+strconv.Itoa((i*31+n)%300)).Err()
				cancel()
				if err != nil {
					now := time.Now().UnixNano()
					lastMsg.Store(err.Error())
					errN.Add(1)
					firstErr.CompareAndSwap(0, now)
					lastErr.Store(now)
					time.Sleep(20 * time.Millisecond)
					continue
				}
				okN.Add(1)
			}
		}()
	}
	time.Sleep(time.Second)
	killed := time.Now()
	victim := cluster.Masters[0]
	victim.Kill()
	// Serving again means: 2 s in a row without an error, within 30 s.
	recovered := redistest.WaitFor(context.Background(), 30*time.Second, func() bool {
		last := lastErr.Load()
		return last != 0 && time.Since(time.Unix(0, last)) > 2*time.Second
	})
	stop.Store(true)
	wg.Wait()
	if !recovered {
		nodes, _ := cluster.Masters[1].Client(t).ClusterNodes(context.Background()).Result()
		t.Fatalf("still failing 30s after the master was killed: %d errors, %d successes; last error %v\n%s",
			errN.Load(), okN.Load(), lastMsg.Load(), nodes)
	}
	window := time.Duration(lastErr.Load() - killed.UnixNano())
	if errN.Load() == 0 {
		t.Fatal("killing a master caused no error at all: the test did not hit the dead node")
	}
	if window > 20*time.Second {
		t.Errorf("errors went on for %v after the kill", window)
	}
	// The reloaded slot map no longer has the dead master: ConnectionInfo
	// lists the five live nodes, with their pools.
	info, err := w.ConnectionInfo(context.Background())
	if err != nil {
		t.Errorf("ConnectionInfo after failover: %v", err)
	}
	for _, n := range info.Nodes {
		if n.Addr == victim.Addr() || n.Error != "" || n.Pool.MaxConns != 20 {
			t.Errorf("node after failover: %+v", n)
		}
	}
	if info.Limiter.InFlight != 0 || len(info.Nodes) != 5 {
		t.Errorf("after failover: %d nodes, limiter %+v", len(info.Nodes), *info.Limiter)
	}
	t.Logf("errors for %v after the kill (%d errors, %d successes)", window, errN.Load(), okN.Load())
}

// A batch chunk that was answered keeps its answer when the rest of its
// round trip fails: a master dies, so the commands of the round trip for its
// slots cannot connect and go-redis's cluster client retries them after a
// backoff, during which the callers' deadline passes (go-redis then sets the
// context's error on every command without an error, the answered chunk
// included). In 32 tries, BatchRPush never reports as unsent items that are
// in the list: every item in the list is acknowledged or in the uncertain
// range. A plain ClusterClient pipeline of the same commands is the baseline.
func TestAWrittenBatchChunkIsNeverReportedUnsentOnACluster(t *testing.T) {
	cluster := redistest.StartCluster(t, redistest.ClusterOptions{Masters: 3, NodeTimeout: 30 * time.Second})
	cfg := conn.DefaultConfig(conn.RoleWorker)
	cfg.ClusterAddrs = cluster.Addrs()
	cfg.ConnectTimeout = 200 * time.Millisecond
	w := newWorker(t, cfg)
	check := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cluster.Addrs(), MaxRetries: -1})
	defer check.Close()
	plain := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cluster.Addrs(), DialTimeout: 200 * time.Millisecond})
	defer plain.Close()
	ctx := ctxTimeout(t, time.Minute)

	// Keys on a master that lives and on the one that dies.
	victim := cluster.Masters[2]
	var live, dead []string
	for i := 0; len(live) < 32 || len(dead) < 8; i++ {
		key := "backoff:" + strconv.Itoa(i)
		node, err := check.MasterForKey(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if node.Options().Addr == victim.Addr() {
			dead = append(dead, key)
		} else {
			live = append(live, key)
		}
	}
	dead = dead[:8]
	// Every connection is made before the kill, so the dead master's fail on use.
	_ = w.Get(ctx, dead[0]).Err()
	_ = plain.Get(ctx, dead[0]).Err()
	victim.Kill()

	wrong, acked, uncertain := 0, 0, 0
	for i := 0; i < 32; i++ {
		key := live[i]
		dctx, cancel := context.WithTimeout(ctx, 40*time.Millisecond)
		var wg sync.WaitGroup
		for _, k := range dead {
			wg.Add(1)
			go func() { defer wg.Done(); _ = w.Get(dctx, k).Err() }()
		}
		n, err := w.BatchRPush(dctx, key, 1, 2, 3, 4, 5)
		wg.Wait()
		cancel()
		got, _ := check.LLen(ctx, key).Result()
		var be *conn.BatchError
		to := int64(n)
		if errors.As(err, &be) {
			to = int64(be.UncertainTo)
		}
		switch {
		case got > to:
			wrong++
			t.Errorf("try %d: LLEN %d, but BatchRPush said %d acknowledged: %v", i, got, n, err)
		case n == 5:
			acked++
		case got <= to && to > int64(n):
			uncertain++
		}
	}
	t.Logf("worker: %d of 32 chunks acknowledged, %d reported uncertain, %d reported unsent though in the list", acked, uncertain, wrong)

	lost := 0
	for i := 0; i < 32; i++ {
		key := "plain:" + live[i]
		dctx, cancel := context.WithTimeout(ctx, 40*time.Millisecond)
		pipe := plain.Pipeline()
		rpush := pipe.RPush(dctx, key, 1, 2, 3, 4, 5)
		for _, k := range dead {
			pipe.Get(dctx, k)
		}
		_, _ = pipe.Exec(dctx)
		cancel()
		if got, _ := check.LLen(ctx, key).Result(); got == 5 && rpush.Err() != nil {
			lost++
		}
	}
	t.Logf("plain ClusterClient pipeline: %d of 32 applied RPUSHes returned an error", lost)
}
