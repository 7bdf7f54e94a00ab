package conn_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redisconn/redisconn/conn"
	"github.com/redisconn/redisconn/internal/redistest"
	"github.com/redisconn/redisconn/telemetry"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

func sentinelConfig(role conn.Role, s *redistest.Sentinel) conn.Config {
	c := conn.DefaultConfig(role)
	c.SentinelAddrs = s.SentinelAddrs()
	c.SentinelMaster = s.MasterName()
	return c
}

// A Worker and an API on a Sentinel-managed master do what they do on a
// standalone server, and ConnectionInfo and the metrics say where the
// master is and which sentinels answer.
func TestSentinelManagersWork(t *testing.T) {
	s := redistest.StartSentinel(t, redistest.SentinelOptions{})
	ctx := ctxTimeout(t, 30*time.Second)
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	w, err := conn.NewWorker(ctx, sentinelConfig(conn.RoleWorker, s), conn.WithMeterProvider(mp))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Close() })
	api := newAPI(t, sentinelConfig(conn.RoleAPI, s))

	// Coalesced singles, a batch, a Watch transaction, a Conn, pub/sub.
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := w.Incr(ctx, "s:counter").Err(); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	sub := api.Subscribe(ctx, "s:events")
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := w.BatchRPush(ctx, "s:list", items(120)...); err != nil || n != 120 {
		t.Fatalf("BatchRPush: %d, %v", n, err)
	}
	if n, err := w.BatchPublish(ctx, "s:events", items(3)...); err != nil || n != 3 {
		t.Fatalf("BatchPublish: %d, %v", n, err)
	}
	for i := 0; i < 3; i++ {
		msg, err := sub.ReceiveMessage(ctx)
		if err != nil || msg.Payload != "item-"+strconv.Itoa(i) {
			t.Fatalf("message %d: %v %v", i, msg, err)
		}
	}
	err = w.Watch(ctx, func(tx *redis.Tx) error {
		_, err := tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Incr(ctx, "s:counter")
			return nil
		})
		return err
	}, "s:counter")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := api.Get(ctx, "s:counter").Int(); err != nil || got != 51 {
		t.Errorf("counter %d, %v", got, err)
	}
	// What the API wrote is on the master the sentinels report.
	master := s.Master()
	if got, err := master.Client(t).LLen(ctx, "s:list").Result(); err != nil || got != 120 {
		t.Errorf("the master has %d items, %v", got, err)
	}

	ci, err := w.ConnectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	si := ci.Sentinel
	if si == nil {
		t.Fatal("ConnectionInfo has no sentinel object")
	}
	t.Logf("sentinel: %+v", *si)
	if si.MasterName != s.MasterName() || si.MasterAddr != master.Addr() || si.Switches != 0 || si.LastSwitch != nil ||
		si.Quorum != 2 || si.Answering != 3 || len(si.Sentinels) != 3 {
		t.Errorf("sentinel info %+v, master %s", *si, master.Addr())
	}
	for i, n := range si.Sentinels {
		if n.Addr != s.SentinelAddrs()[i] || !n.Answering || n.MasterAddr != master.Addr() || n.Error != "" {
			t.Errorf("sentinel %d: %+v", i, n)
		}
	}
	if ci.Server.RedisVersion == "" || ci.Limiter == nil || ci.Pool.MaxConns != 200 {
		t.Errorf("info %+v", ci)
	}

	// A paused sentinel shows as not answering, within the probe's timeout.
	s.Sentinels()[1].Pause()
	start := time.Now()
	ci, err = w.ConnectionInfo(ctx)
	s.Sentinels()[1].Resume()
	if err != nil {
		t.Fatal(err)
	}
	if si := ci.Sentinel; si.Answering != 2 || si.Sentinels[1].Answering || si.Sentinels[1].Error == "" || si.Quorum != 2 {
		t.Errorf("with sentinel 1 paused: %+v", *si)
	}
	t.Logf("ConnectionInfo with a paused sentinel took %s", time.Since(start))

	// The sentinel signals are served, with the table's names.
	got := map[string]int64{}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		t.Fatal(err)
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				got[m.Name] = d.DataPoints[0].Value
			case metricdata.Gauge[int64]:
				got[m.Name] = d.DataPoints[0].Value
			}
		}
	}
	for _, sig := range telemetry.Signals() {
		if _, ok := got[sig.Name]; sig.SentinelOnly && !ok {
			t.Errorf("%s is not served in Sentinel mode", sig.Name)
		}
	}
	if got[telemetry.SentinelSentinelsAnswering] < 2 || got[telemetry.SentinelQuorum] != 2 || got[telemetry.SentinelMasterSwitches] != 0 ||
		got[telemetry.PubSubConnections] != 0 {
		t.Errorf("metrics %v", got)
	}
	if ps, err := api.ConnectionInfo(ctx); err != nil || ps.PubSub.Active != 1 {
		t.Errorf("the API's pub/sub connection: %+v, %v", ps.PubSub, err)
	}
}

// failoverStats are what callers saw around a master's death.
type failoverStats struct {
	calls, errs, late  atomic.Int64
	firstOK            atomic.Int64 // ns after the kill of the first success after it
	lastErr            atomic.Int64 // ns after the kill of the last error
	slowest            atomic.Int64 // ns
	mu                 sync.Mutex
	kinds              map[string]int
	acked              map[string][]string // list key -> acknowledged items, in order
	incrAcked          map[string]int64
	ackedLost, incrOff int64
}

func (f *failoverStats) errKind(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := telemetry.ErrorType(err)
	var be *conn.BatchError
	if errors.As(err, &be) {
		k = "batch: " + telemetry.ErrorType(be.Err)
		if errors.Is(err, conn.ErrNotReplicated) {
			k = "batch: not replicated"
		}
	}
	f.kinds[k]++
}

// The failover workload: callers with deadlines doing INCR, and callers
// pushing numbered items in batches of 20, against ops; the master is
// killed 1 s in. It returns when the new master has served for 1 s.
type failoverOps struct {
	incr func(ctx context.Context, key string) error
	push func(ctx context.Context, key string, values []any) (int, error)
}

const (
	failoverDeadline = 500 * time.Millisecond
	// failoverBound is how far past its deadline a call may return: the
	// coalescer's deadline spread (10 % of the time left) and scheduling.
	failoverBound = 100 * time.Millisecond
)

func runFailover(t *testing.T, s *redistest.Sentinel, ops failoverOps, beforeKill func()) *failoverStats {
	t.Helper()
	f := &failoverStats{kinds: map[string]int{}, acked: map[string][]string{}, incrAcked: map[string]int64{}}
	f.firstOK.Store(-1)
	var killed atomic.Int64 // UnixNano of the kill; 0 before
	stop := make(chan struct{})
	var wg sync.WaitGroup
	record := func(start time.Time, err error) {
		d := time.Since(start)
		f.calls.Add(1)
		for {
			old := f.slowest.Load()
			if int64(d) <= old || f.slowest.CompareAndSwap(old, int64(d)) {
				break
			}
		}
		if d > failoverDeadline+failoverBound {
			f.late.Add(1)
		}
		k := killed.Load()
		if err != nil {
			f.errs.Add(1)
			f.errKind(err)
			if k != 0 {
				f.lastErr.Store(max(f.lastErr.Load(), time.Now().UnixNano()-k))
			}
			return
		}
		if k != 0 && start.UnixNano() > k {
			f.firstOK.CompareAndSwap(-1, time.Now().UnixNano()-k)
		}
	}
	for i := 0; i < 100; i++ {
		key := "f:incr:" + strconv.Itoa(i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), failoverDeadline)
				start := time.Now()
				err := ops.incr(ctx, key)
				cancel()
				record(start, err)
				if err == nil {
					f.mu.Lock()
					f.incrAcked[key]++
					f.mu.Unlock()
				} else {
					time.Sleep(10 * time.Millisecond)
				}
			}
		}()
	}
	for i := 0; i < 10; i++ {
		key := "f:list:" + strconv.Itoa(i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			next := 0
			for {
				select {
				case <-stop:
					return
				default:
				}
				values := make([]any, 20)
				for j := range values {
					values[j] = strconv.Itoa(next + j)
				}
				ctx, cancel := context.WithTimeout(context.Background(), failoverDeadline)
				start := time.Now()
				n, err := ops.push(ctx, key, values)
				cancel()
				record(start, err)
				f.mu.Lock()
				for _, v := range values[:n] {
					f.acked[key] = append(f.acked[key], v.(string))
				}
				f.mu.Unlock()
				// Numbers are never reused: an uncertain item may be in the list.
				next += len(values)
				if err != nil {
					time.Sleep(10 * time.Millisecond)
				}
			}
		}()
	}
	time.Sleep(time.Second)
	if beforeKill != nil {
		beforeKill()
	}
	old := s.KillMaster()
	killed.Store(time.Now().UnixNano())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	newAddr, err := s.WaitForFailover(ctx, old.Addr())
	if err != nil {
		close(stop)
		wg.Wait()
		t.Fatal(err)
	}
	t.Logf("sentinels promoted %s %s after the kill", newAddr, time.Duration(time.Now().UnixNano()-killed.Load()).Round(time.Millisecond))
	// Callers must succeed on the new master for a while.
	if !redistest.WaitFor(ctx, 20*time.Second, func() bool { return f.firstOK.Load() >= 0 }) {
		t.Errorf("no success within 20s of the failover")
	}
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()

	// Nothing acknowledged lost: on the new master, each list holds its
	// acknowledged items in order (others only where a call was uncertain),
	// and each counter is at least its acknowledged INCRs.
	c := s.Master().Client(t)
	for key, acked := range f.acked {
		list, err := c.LRange(ctx, key, 0, -1).Result()
		if err != nil {
			t.Fatal(err)
		}
		i := 0
		for _, v := range list {
			if i < len(acked) && v == acked[i] {
				i++
			}
		}
		f.ackedLost += int64(len(acked) - i)
	}
	for key, n := range f.incrAcked {
		got, err := c.Get(ctx, key).Int64()
		if err != nil && err != redis.Nil {
			t.Fatal(err)
		}
		if got < n {
			f.incrOff += n - got
		}
	}
	return f
}

func (f *failoverStats) String() string {
	first := "none"
	if v := f.firstOK.Load(); v >= 0 {
		first = time.Duration(v).Round(time.Millisecond).String()
	}
	kinds := make([]string, 0, len(f.kinds))
	for k, n := range f.kinds {
		kinds = append(kinds, fmt.Sprintf("%s=%d", k, n))
	}
	slices.Sort(kinds)
	return fmt.Sprintf("calls %d, errors %d %v, first success after the kill %s, last error %s after it, slowest call %s, past deadline+%s %d, acknowledged items lost %d, acknowledged INCRs lost %d",
		f.calls.Load(), f.errs.Load(), kinds, first, time.Duration(f.lastErr.Load()).Round(time.Millisecond),
		time.Duration(f.slowest.Load()).Round(time.Millisecond), failoverBound, f.late.Load(), f.ackedLost, f.incrOff)
}

// A Worker follows a failover as a plain go-redis FailoverClient does, and
// no caller outlives its deadline by more than the coalescer's bound while
// the master is gone.
func TestSentinelFailoverWorkerAndPlainClient(t *testing.T) {
	t.Run("Worker", func(t *testing.T) {
		s := redistest.StartSentinel(t, redistest.SentinelOptions{})
		w := newWorker(t, sentinelConfig(conn.RoleWorker, s))
		f := runFailover(t, s, failoverOps{
			incr: func(ctx context.Context, key string) error { return w.Incr(ctx, key).Err() },
			push: func(ctx context.Context, key string, values []any) (int, error) {
				return w.BatchRPush(ctx, key, values...)
			},
		}, nil)
		t.Logf("Worker: %s", f)
		if f.late.Load() > 0 {
			t.Errorf("%d calls returned later than deadline + %s (slowest %s)", f.late.Load(), failoverBound, time.Duration(f.slowest.Load()))
		}
		ci, err := w.ConnectionInfo(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		si := ci.Sentinel
		t.Logf("after: %+v", *si)
		if si.Switches < 1 || si.LastSwitch == nil || si.MasterAddr != s.Master().Addr() || si.Answering != 3 {
			t.Errorf("the switch does not show: %+v, master %s", *si, s.Master().Addr())
		}
	})
	t.Run("plain FailoverClient", func(t *testing.T) {
		s := redistest.StartSentinel(t, redistest.SentinelOptions{})
		c := redis.NewFailoverClient(&redis.FailoverOptions{
			MasterName: s.MasterName(), SentinelAddrs: s.SentinelAddrs(), PoolSize: 200, ContextTimeoutEnabled: true,
		})
		t.Cleanup(func() { _ = c.Close() })
		f := runFailover(t, s, failoverOps{
			incr: func(ctx context.Context, key string) error { return c.Incr(ctx, key).Err() },
			push: func(ctx context.Context, key string, values []any) (int, error) {
				if err := c.RPush(ctx, key, values...).Err(); err != nil {
					return 0, err
				}
				return len(values), nil
			},
		}, nil)
		t.Logf("plain FailoverClient: %s", f)
	})
}

// With REDIS_WORKER_ACK_REPLICAS=1, no acknowledged item is lost when the
// master dies with writes its replicas never got; without it, those are
// lost. The replicas are paused (SIGSTOP) and their links cut for the last
// 400 ms of the old master's life, so what it acknowledged then reached no
// replica.
func TestSentinelDurableAcknowledgements(t *testing.T) {
	for _, replicas := range []int{0, 1} {
		t.Run("ack replicas "+strconv.Itoa(replicas), func(t *testing.T) {
			s := redistest.StartSentinel(t, redistest.SentinelOptions{})
			cfg := sentinelConfig(conn.RoleWorker, s)
			cfg.AckReplicas = replicas
			cfg.AckTimeout = 100 * time.Millisecond
			w := newWorker(t, cfg)
			f := runFailover(t, s, failoverOps{
				incr: func(ctx context.Context, key string) error { return w.Incr(ctx, key).Err() },
				push: func(ctx context.Context, key string, values []any) (int, error) {
					return w.BatchRPush(ctx, key, values...)
				},
			}, func() {
				// Stopped replicas still receive into their sockets; cutting
				// their links makes the master's last writes reach no one.
				rs := s.Replicas()
				for _, r := range rs {
					r.Pause()
				}
				if err := s.Master().Client(t).ClientKillByFilter(context.Background(), "TYPE", "replica").Err(); err != nil {
					t.Error(err)
				}
				time.Sleep(400 * time.Millisecond)
				go func() {
					// Resumed once the master is dead, so one can be promoted.
					time.Sleep(100 * time.Millisecond)
					for _, r := range rs {
						r.Resume()
					}
				}()
			})
			t.Logf("ack replicas %d: %s", replicas, f)
			switch {
			case replicas > 0 && f.ackedLost > 0:
				t.Errorf("%d acknowledged items lost with durable acknowledgements", f.ackedLost)
			case replicas > 0 && f.kinds["batch: not replicated"] == 0:
				t.Errorf("no chunk was reported unreplicated while the replicas were paused")
			case replicas == 0 && f.ackedLost == 0:
				t.Errorf("no acknowledged item was lost without durable acknowledgements: the test does not reach the hazard")
			}
		})
	}
}

// TLS reaches the sentinels and the master with one CA file; the master's
// ACL user and the sentinels' own user are separate; no password shows in
// the configuration, ConnectionInfo or an error.
func TestSentinelTLSAndACL(t *testing.T) {
	const masterPW, sentinelPW = "master-pw-1f9", "sentinel-pw-7c2"
	s := redistest.StartSentinel(t, redistest.SentinelOptions{
		Server:           redistest.Options{TLS: true, Username: "app", UserPassword: masterPW},
		SentinelUsername: "watcher",
		SentinelPassword: sentinelPW,
	})
	ctx := ctxTimeout(t, 30*time.Second)
	cfg := sentinelConfig(conn.RoleWorker, s)
	cfg.TLS, cfg.TLSCAFile = true, s.Certs.CACert
	cfg.Username, cfg.Password = "app", masterPW
	cfg.SentinelUsername, cfg.SentinelPassword = "watcher", sentinelPW
	w := newWorker(t, cfg)
	if n, err := w.BatchRPush(ctx, "tls:list", items(60)...); err != nil || n != 60 {
		t.Fatalf("BatchRPush: %d, %v", n, err)
	}
	ci, err := w.ConnectionInfo(ctx)
	if err != nil || ci.Sentinel.Answering != 3 || ci.Sentinel.MasterAddr != s.Master().Addr() {
		t.Fatalf("%+v, %v", ci.Sentinel, err)
	}
	printed := fmt.Sprintf("%v %+v %#v", cfg, cfg, ci)
	for _, pw := range []string{masterPW, sentinelPW} {
		if strings.Contains(printed, pw) {
			t.Errorf("a password is printed: %s", printed)
		}
	}

	// A wrong sentinel password: NewWorker fails, naming the sentinels,
	// without the password.
	bad := cfg
	bad.SentinelPassword = "wrong-pw-0a1"
	bad.ConnectTimeout, bad.SocketTimeout = time.Second, time.Second
	_, err = conn.NewWorker(ctx, bad)
	if err == nil || !strings.Contains(err.Error(), "Redis Sentinels") || !strings.Contains(err.Error(), `user "watcher": check REDIS_SENTINEL_USERNAME / REDIS_SENTINEL_PASSWORD`) ||
		strings.Contains(err.Error(), "wrong-pw-0a1") {
		t.Errorf("wrong sentinel password: %v", err)
	}
	t.Logf("wrong sentinel password: %v", err)
}

// A master name the sentinels do not know fails NewAPI with an error that
// names REDIS_SENTINEL_MASTER.
func TestSentinelUnknownMasterName(t *testing.T) {
	s := redistest.StartSentinel(t, redistest.SentinelOptions{})
	cfg := sentinelConfig(conn.RoleAPI, s)
	cfg.SentinelMaster = "no-such-master"
	cfg.ConnectTimeout, cfg.SocketTimeout = time.Second, time.Second
	_, err := conn.NewAPI(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), "REDIS_SENTINEL_MASTER") || !strings.Contains(err.Error(), `"no-such-master"`) {
		t.Errorf("unknown master name: %v", err)
	}
	t.Logf("unknown master name: %v", err)
}
