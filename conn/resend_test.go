package conn_test

import (
	"context"
	"errors"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redisconn/redisconn/conn"
	"github.com/redisconn/redisconn/internal/redistest"
)

// countHook counts the operations that reach it: the commands named only
// (all when empty), and every pipeline.
type countHook struct {
	only               string
	singles, pipelines atomic.Int64
}

func (h *countHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *countHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if h.only == "" || cmd.Name() == h.only {
			h.singles.Add(1)
		}
		return next(ctx, cmd)
	}
}

func (h *countHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.pipelines.Add(1)
		return next(ctx, cmds)
	}
}

// An API sends a command again when it certainly did not run (here: the
// server is gone, every dial is refused), after go-redis's backoff, as
// go-redis would; a hook added with AddHook sees the operation once, as a
// hook on a plain client does, and a hook on the embedded client sees each
// attempt.
func TestAPISendsAgainWhatCertainlyDidNotRun(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	a := newAPI(t, config(conn.RoleAPI, srv))
	outer, inner := &countHook{}, &countHook{}
	a.AddHook(outer)
	a.UniversalClient.AddHook(inner)
	srv.Kill()

	ctx := ctxTimeout(t, 10*time.Second)
	err := a.Incr(ctx, "resend:n").Err()
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "dial" {
		t.Fatalf("INCR with the server gone: %v, want the dial's error", err)
	}
	_, err = a.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Incr(ctx, "resend:n")
		p.Incr(ctx, "resend:m")
		return nil
	})
	if !errors.As(err, &op) || op.Op != "dial" {
		t.Fatalf("pipeline with the server gone: %v, want the dial's error", err)
	}
	if s, p := outer.singles.Load(), outer.pipelines.Load(); s != 1 || p != 1 {
		t.Errorf("the hook added with AddHook saw %d commands and %d pipelines, want 1 and 1", s, p)
	}
	// go-redis's default: 3 retries after the first attempt.
	if s, p := inner.singles.Load(), inner.pipelines.Load(); s != 4 || p != 4 {
		t.Errorf("the embedded client's hook saw %d attempts of the command and %d of the pipeline, want 4 and 4", s, p)
	}

	// The context ends in the backoff between attempts: its own error,
	// since nothing was written.
	short, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
	defer cancel()
	if err := a.Incr(short, "resend:n").Err(); !errors.Is(err, context.DeadlineExceeded) && !errors.As(err, &op) {
		t.Errorf("INCR whose deadline passes while the server is gone: %v", err)
	}
}

// A command that may have reached Redis is never sent again, by the API
// nor by a Worker's commands that are not coalesced (coalesced ones: the
// fault matrix, TestNetFaultsThroughToxiproxy). Here a proxy swallows every
// reply (Toxiproxy's timeout toxic) and, 200 ms later, closes the
// connections it held: the INCR ran, its reply is lost, and the connection
// ends with an EOF. The manager reports the failure and the counter holds
// one increment. Plain go-redis, the baseline, sends the INCR again on a new
// connection and the counter holds two.
func TestNothingThatMayHaveRunIsSentAgain(t *testing.T) {
	tp := redistest.StartToxiproxy(t)
	for _, topo := range []string{"standalone", "cluster", "sentinel"} {
		t.Run(topo, func(t *testing.T) {
			var (
				proxies []*redistest.Proxy
				masters []*redistest.Server
				plain   redis.UniversalClient
			)
			acfg, wcfg := conn.DefaultConfig(conn.RoleAPI), conn.DefaultConfig(conn.RoleWorker)
			if topo == "standalone" {
				srv := redistest.Start(t, redistest.Options{})
				p := tp.Proxy(t, "resend-"+strconv.Itoa(srv.Port()), srv.Addr())
				proxies, masters = []*redistest.Proxy{p}, []*redistest.Server{srv}
				acfg.Host, acfg.Port = "127.0.0.1", p.Port()
				wcfg.Host, wcfg.Port = "127.0.0.1", p.Port()
				plain = redis.NewClient(&redis.Options{Addr: p.Addr(), ContextTimeoutEnabled: true})
			} else if topo == "sentinel" {
				sn := redistest.StartSentinel(t, redistest.SentinelOptions{Proxy: tp, DownAfter: 5 * time.Second})
				proxies, masters = sn.Proxies(), []*redistest.Server{sn.Master()}
				for _, cfg := range []*conn.Config{&acfg, &wcfg} {
					cfg.SentinelAddrs, cfg.SentinelMaster = sn.SentinelAddrs(), sn.MasterName()
				}
				plain = redis.NewFailoverClient(&redis.FailoverOptions{MasterName: sn.MasterName(), SentinelAddrs: sn.SentinelAddrs(), ContextTimeoutEnabled: true})
			} else {
				cl := redistest.StartCluster(t, redistest.ClusterOptions{Proxy: tp})
				proxies, masters = cl.Proxies(), cl.Masters
				acfg.ClusterAddrs, wcfg.ClusterAddrs = cl.Addrs(), cl.Addrs()
				plain = redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs(), ContextTimeoutEnabled: true})
			}
			t.Cleanup(func() { _ = plain.Close() })
			a := newAPI(t, acfg)
			w, err := conn.NewWorker(context.Background(), wcfg, conn.WithCoalescing(false))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = w.Close() })
			for _, m := range []struct {
				name     string
				c        redis.UniversalClient
				embedded redis.UniversalClient
			}{{"api", a, a.UniversalClient}, {"worker", w, w.UniversalClient}} {
				t.Run(m.name, func(t *testing.T) {
					ctx := ctxTimeout(t, 30*time.Second)
					key, plainKey := "resend:"+m.name, "resend:plain:"+m.name
					count := func(key string) (n int64) {
						for _, s := range masters {
							v, _ := s.Client(t).Get(ctx, key).Int64()
							n += v
						}
						return n
					}
					// Connections to the keys' servers are open before the fault.
					for _, c := range []redis.UniversalClient{m.c, plain} {
						for _, k := range []string{key, plainKey} {
							if err := c.Incr(ctx, k).Err(); err != nil {
								t.Fatal(err)
							}
						}
					}
					n0, plain0 := count(key), count(plainKey)
					inner := &countHook{only: "incr"}
					if cc, ok := m.embedded.(*redis.ClusterClient); ok {
						if err := cc.ForEachShard(ctx, func(_ context.Context, n *redis.Client) error {
							n.AddHook(inner)
							return nil
						}); err != nil {
							t.Fatal(err)
						}
					} else {
						m.embedded.AddHook(inner)
					}

					for _, p := range proxies {
						p.Timeout(t, redistest.Downstream, 0)
					}
					var err, plainErr error
					var wg sync.WaitGroup
					wg.Add(2)
					go func() { defer wg.Done(); err = m.c.Incr(ctx, key).Err() }()
					go func() { defer wg.Done(); plainErr = plain.Incr(ctx, plainKey).Err() }()
					time.Sleep(200 * time.Millisecond)
					tp.Reset(t) // closes the connections the toxic held
					wg.Wait()
					n, plainN := count(key)-n0, count(plainKey)-plain0
					t.Logf("one INCR whose reply was lost: applied %d times, sent %d times (%v); plain go-redis's applied %d times (%v)",
						n, inner.singles.Load(), err, plainN, plainErr)
					if n != 1 {
						t.Errorf("the INCR was applied %d times, want 1", n)
					} else if err == nil {
						t.Fatal("the INCR succeeded: the fault did not happen")
					}
					if s := inner.singles.Load(); s != 1 {
						t.Errorf("the INCR was sent %d times, want 1", s)
					}
				})
			}
		})
	}
}
