package conn_test

import (
	"context"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redisconn/redisconn/conn"
	"github.com/redisconn/redisconn/internal/redistest"
)

// soakDuration is REDISCONN_SOAK (a Go duration), 60 s by default.
func soakDuration(t *testing.T) time.Duration {
	if v := os.Getenv("REDISCONN_SOAK"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 15*time.Second {
			t.Fatalf("REDISCONN_SOAK=%q: want a Go duration of at least 15s", v)
		}
		return d
	}
	return 60 * time.Second
}

// 5000 callers with mixed commands, batches and pub/sub for a minute: no
// errors, and the heap at the end at most 1.2x the heap at 10 s.
func TestSoak(t *testing.T) {
	d := soakDuration(t)
	srv := redistest.Start(t, redistest.Options{})
	w := newWorker(t, config(conn.RoleWorker, srv))
	a := newAPI(t, config(conn.RoleAPI, srv))
	var (
		stop     atomic.Bool
		ops      atomic.Int64
		errCount atomic.Int64
		received atomic.Int64
		firstErr atomic.Value
		wg       sync.WaitGroup
	)
	fail := func(err error) {
		errCount.Add(1)
		firstErr.CompareAndSwap(nil, err.Error())
	}
	// Pub/sub on the API: subscribers that must keep receiving.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := 0; i < 4; i++ {
		sub := a.Subscribe(ctx, "soak:events:"+strconv.Itoa(i))
		if _, err := sub.Receive(ctx); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer sub.Close()
			ch := sub.Channel()
			for {
				select {
				case <-ctx.Done():
					return
				case <-ch:
					received.Add(1)
				}
			}
		}()
	}
	var callers sync.WaitGroup
	for i := 0; i < 5000; i++ {
		callers.Add(1)
		go func() {
			defer callers.Done()
			key := "soak:" + strconv.Itoa(i%500)
			batch := []any{"a", "b", "c", "d", "e", "f", "g", "h"}
			for n := 0; !stop.Load(); n++ {
				c, cancel := context.WithTimeout(ctx, 10*time.Second)
				var err error
				switch n % 20 {
				case 0:
					_, err = w.BatchRPush(c, key+":list", batch...)
				case 1:
					_, err = w.BatchPublish(c, "soak:events:"+strconv.Itoa(i%4), batch[:2]...)
				case 2:
					err = w.LTrim(c, key+":list", -100, -1).Err()
				case 3:
					err = a.Get(c, key).Err()
					if err != nil && err.Error() == "redis: nil" {
						err = nil
					}
				case 4, 5, 6:
					err = w.Set(c, key, n, time.Minute).Err()
				default:
					err = w.Incr(c, key+":n").Err()
				}
				cancel()
				ops.Add(1)
				if err != nil {
					fail(err)
				}
			}
		}()
	}
	heapAt := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	time.Sleep(10 * time.Second)
	early := heapAt()
	time.Sleep(d - 11*time.Second)
	late := heapAt()
	stop.Store(true)
	callers.Wait()
	cancel()
	wg.Wait()

	if n := errCount.Load(); n > 0 {
		t.Errorf("%d of %d operations failed; first: %v", n, ops.Load(), firstErr.Load())
	}
	if received.Load() == 0 {
		t.Error("subscribers received nothing")
	}
	if float64(late) > 1.2*float64(early) {
		t.Errorf("heap grew from %d MiB at 10s to %d MiB at the end", early>>20, late>>20)
	}
	info, _ := w.ConnectionInfo(context.Background())
	if info.Limiter.InFlight != 0 || info.Limiter.Waiting != 0 || info.Pool.Timeouts != 0 {
		t.Errorf("after the soak: limiter %+v, pool %+v", *info.Limiter, info.Pool)
	}
	t.Logf("%v: %d operations (%.0f/s), %d messages received, heap %d KiB at 10s, %d KiB at the end",
		d, ops.Load(), float64(ops.Load())/d.Seconds(), received.Load(), early>>10, late>>10)
}
