package main

import (
	"context"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redisconn/redisconn/conn"
	"github.com/redisconn/redisconn/internal/redistest"
)

// A replica of the bench's server, for S2's durable acknowledgements
// (REDIS_WORKER_ACK_REPLICAS): WAIT is measured against a real replica. It
// follows the server only while such a variant runs, so that no other
// variant pays for replication; the dataset is flushed between variants,
// so attaching it is a sync of an empty dataset.
type replica struct {
	srv    *redistest.Server
	client *redis.Client
}

func startReplica(dir string) (*replica, error) {
	srv, err := redistest.StartProcess(redistest.Options{}, dir)
	if err != nil {
		return nil, fmt.Errorf("the replica for S2: %w", err)
	}
	return &replica{srv: srv, client: redis.NewClient(&redis.Options{Addr: srv.Addr()})}, nil
}

func (r *replica) stop() {
	_ = r.client.Close()
	r.srv.Stop()
}

// attached runs f while the replica follows the server at master.
func (r *replica) attached(ctx context.Context, master *redis.Client, f func(context.Context) (result, error)) (result, error) {
	host, port, _ := net.SplitHostPort(master.Options().Addr)
	// No wait before the sync of a new replica (5 s by default).
	if err := master.ConfigSet(ctx, "repl-diskless-sync-delay", "0").Err(); err != nil {
		return result{}, err
	}
	if err := r.client.ReplicaOf(ctx, host, port).Err(); err != nil {
		return result{}, err
	}
	defer r.client.ReplicaOf(context.Background(), "NO", "ONE")
	ready := false
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		info, err := r.client.Info(ctx, "replication").Result()
		if err == nil && strings.Contains(info, "master_link_status:up") {
			ready = true
			break
		}
	}
	if !ready {
		return result{}, fmt.Errorf("the replica for S2 did not sync within 10s")
	}
	return f(ctx)
}

// durable is a Worker config with acknowledgements on n replicas.
func durable(n int) func(*conn.Config) {
	return func(c *conn.Config) { c.AckReplicas = n }
}
