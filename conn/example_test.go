package conn_test

import (
	"context"
	"errors"
	"fmt"
	"log"

	"github.com/redis/go-redis/v9"
	"github.com/redisconn/redisconn/conn"
)

// A worker process reads its settings from the environment (REDIS_HOST,
// REDIS_PORT, REDIS_PASSWORD, REDIS_WORKER_MAX_CONNECTIONS, ...) and uses the
// Worker as a go-redis client whose operations never exceed the limiter.
func ExampleNewWorker() {
	ctx := context.Background()
	cfg, err := conn.LoadConfig(conn.RoleWorker)
	if err != nil {
		log.Fatal(err) // names the variable, the value and what is accepted
	}
	w, err := conn.NewWorker(ctx, cfg)
	if err != nil {
		log.Fatal(err) // names the address it could not reach
	}
	defer w.Close()

	if err := w.Set(ctx, "example:greeting", "hello", 0).Err(); err != nil {
		log.Fatal(err)
	}
	fmt.Println(w.Get(ctx, "example:greeting").Val())
	w.Del(ctx, "example:greeting")
	// Output: hello
}

// BatchRPush writes many values in few round trips (50 per RPUSH by default)
// and says exactly how far it got when it fails.
func ExampleWorker_BatchRPush() {
	ctx := context.Background()
	cfg, err := conn.LoadConfig(conn.RoleWorker)
	if err != nil {
		log.Fatal(err)
	}
	w, err := conn.NewWorker(ctx, cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close()

	responses := make([]any, 120)
	for i := range responses {
		responses[i] = fmt.Sprintf(`{"seq":%d}`, i)
	}
	n, err := w.BatchRPush(ctx, "example:responses", responses...)
	var be *conn.BatchError
	if errors.As(err, &be) {
		// values[:n] are stored; retrying responses[n:] repeats at most
		// responses[be.UncertainFrom:be.UncertainTo].
		log.Printf("stored %d, uncertain [%d:%d]: %v", n, be.UncertainFrom, be.UncertainTo, be.Err)
	}
	fmt.Println(n, w.LLen(ctx, "example:responses").Val())
	w.Del(ctx, "example:responses")
	// Output: 120 120
}

// ConnectionInfo shows how close the pool, the limiter and the server are to
// exhaustion; its JSON field names are stable.
func ExampleWorker_ConnectionInfo() {
	ctx := context.Background()
	cfg, err := conn.LoadConfig(conn.RoleWorker)
	if err != nil {
		log.Fatal(err)
	}
	w, err := conn.NewWorker(ctx, cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close()

	info, err := w.ConnectionInfo(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("role=%s pool.max_conns=%d limiter.limit=%d limiter.in_flight=%d server.up=%t\n",
		info.Role, info.Pool.MaxConns, info.Limiter.Limit, info.Limiter.InFlight, info.Server.RedisVersion != "")
	// Output: role=worker pool.max_conns=200 limiter.limit=100 limiter.in_flight=0 server.up=true
}

// An API process gets a pool of 128 and no limiter.
func ExampleNewAPI() {
	ctx := context.Background()
	cfg, err := conn.LoadConfig(conn.RoleAPI)
	if err != nil {
		log.Fatal(err)
	}
	api, err := conn.NewAPI(ctx, cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer api.Close()
	fmt.Println(api.Ping(ctx).Val(), api.Config().PoolSize)
	// Output: PONG 128
}

// Watch runs an optimistic transaction on a connection of the Worker's own
// share for held connections: however many transactions run at once, they
// never deadlock the limiter against the pool.
func ExampleWorker_Watch() {
	ctx := context.Background()
	cfg, err := conn.LoadConfig(conn.RoleWorker)
	if err != nil {
		log.Fatal(err)
	}
	w, err := conn.NewWorker(ctx, cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close()

	const key = "example:balance"
	w.Set(ctx, key, 100, 0)
	err = w.Watch(ctx, func(tx *redis.Tx) error {
		balance, err := tx.Get(ctx, key).Int()
		if err != nil {
			return err
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Set(ctx, key, balance-30, 0)
			return nil
		})
		return err // redis.TxFailedErr if the key changed meanwhile: try again
	}, key)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(w.Get(ctx, key).Val())
	w.Del(ctx, key)
	// Output: 70
}

// commandLog prints each command a caller sends, as a hook on a plain
// go-redis client would.
type commandLog struct{}

func (commandLog) DialHook(next redis.DialHook) redis.DialHook { return next }
func (commandLog) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if c, ok := cmd.(*redis.IntCmd); ok && cmd.Name() == "incr" {
			fmt.Println(cmd.Name(), c.Val())
		}
		return err
	}
}
func (commandLog) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// A hook added with AddHook sees each caller's command, of its own type, in
// the caller's context, even though the Worker sends concurrent callers'
// commands together.
func ExampleWorker_AddHook() {
	ctx := context.Background()
	cfg, err := conn.LoadConfig(conn.RoleWorker)
	if err != nil {
		log.Fatal(err)
	}
	w, err := conn.NewWorker(ctx, cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close()
	w.Del(ctx, "example:hooked")
	w.AddHook(commandLog{})

	w.Incr(ctx, "example:hooked")
	w.Incr(ctx, "example:hooked")
	w.Del(ctx, "example:hooked")
	// Output:
	// incr 1
	// incr 2
}

// A retry of an idempotent batch sends exactly the values that were not
// acknowledged, under the same id and their position in the batch: chunks
// that Redis applied although their reply was lost are skipped, so the list
// holds every value once.
func ExampleWithIdempotentBatch() {
	ctx := context.Background()
	cfg, err := conn.LoadConfig(conn.RoleWorker)
	if err != nil {
		log.Fatal(err)
	}
	w, err := conn.NewWorker(ctx, cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close()
	w.Del(ctx, "example:run-7")

	values := []any{"a", "b", "c"}
	n, err := w.BatchRPush(conn.WithIdempotentBatch(ctx, "run-7", 0), "example:run-7", values...)
	if err != nil {
		// Retry values[n:] as the batch's items from position n on.
		n2, err := w.BatchRPush(conn.WithIdempotentBatch(ctx, "run-7", n), "example:run-7", values[n:]...)
		n += n2
		if err != nil {
			log.Fatal(err)
		}
	}
	fmt.Println(n, w.LRange(ctx, "example:run-7", 0, -1).Val())
	w.Del(ctx, "example:run-7")
	// Output: 3 [a b c]
}
