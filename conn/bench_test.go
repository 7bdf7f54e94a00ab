package conn_test

import (
	"context"
	"os"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/redisconn/redisconn/conn"
)

// BenchmarkBulkRPush measures how BatchRPush should send a chunk of 50
// values: one variadic RPUSH, or a pipeline of 50 single-value RPUSHes. Both
// are one round trip; the variadic command is also one reply and atomic.
// Run with `make bench`; b.N counts items.
func BenchmarkBulkRPush(b *testing.B) {
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: shared.Addr(), PoolSize: 10})
	defer c.Close()
	values := items(50)
	key := "bench:bulk"

	b.Run("variadic-rpush-50", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i += 50 {
			if err := c.RPush(ctx, key, values...).Err(); err != nil {
				b.Fatal(err)
			}
		}
		c.Del(ctx, key)
	})
	b.Run("pipeline-50-rpush", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i += 50 {
			_, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
				for _, v := range values {
					p.RPush(ctx, key, v)
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
		}
		c.Del(ctx, key)
	})
	b.Run("worker-batchrpush", func(b *testing.B) {
		w, err := conn.NewWorker(ctx, config(conn.RoleWorker, shared))
		if err != nil {
			b.Fatal(err)
		}
		defer w.Close()
		b.ReportAllocs()
		for i := 0; i < b.N; i += 50 {
			if _, err := w.BatchRPush(ctx, key, values...); err != nil {
				b.Fatal(err)
			}
		}
		w.Del(ctx, key)
	})
}

// BenchmarkWorkerParallelRPush is single-value RPUSH from many goroutines
// through the Worker's limiter, next to a plain go-redis client.
func BenchmarkWorkerParallelRPush(b *testing.B) {
	ctx := context.Background()
	if os.Getenv("BENCH_PARALLELISM") == "" {
		b.SetParallelism(50) // 50 x GOMAXPROCS goroutines
	}
	b.Run("plain-go-redis", func(b *testing.B) {
		c := redis.NewClient(&redis.Options{Addr: shared.Addr(), PoolSize: 200})
		defer c.Close()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := c.RPush(ctx, "bench:par", "v").Err(); err != nil {
					b.Error(err)
					return
				}
			}
		})
		c.Del(ctx, "bench:par")
	})
	b.Run("worker", func(b *testing.B) {
		w, err := conn.NewWorker(ctx, config(conn.RoleWorker, shared))
		if err != nil {
			b.Fatal(err)
		}
		defer w.Close()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := w.RPush(ctx, "bench:par", "v").Err(); err != nil {
					b.Error(err)
					return
				}
			}
		})
		w.Del(ctx, "bench:par")
	})
}
