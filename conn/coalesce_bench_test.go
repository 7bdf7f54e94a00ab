package conn

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redisconn/redisconn/internal/redistest"
)

// BenchmarkCoalescing is single RPUSH from many callers through a Worker
// with 1, 2, 4 and 8 flushers: the reason coalesceFlushers is what it is.
// Reports items/s; run with -benchtime 1x (each run lasts 2 s).
func BenchmarkCoalescing(b *testing.B) {
	srv, err := redistest.StartProcess(redistest.Options{}, b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Stop()
	for _, callers := range []int{100, 5000} {
		for _, flushers := range []int{1, 2, 4, 8} {
			b.Run(fmt.Sprintf("callers=%d/flushers=%d", callers, flushers), func(b *testing.B) {
				cfg := DefaultConfig(RoleWorker)
				cfg.Host, cfg.Port = "127.0.0.1", srv.Port()
				w, err := NewWorker(context.Background(), cfg, WithTelemetry(false), withFlushers(flushers))
				if err != nil {
					b.Fatal(err)
				}
				defer w.Close()
				var n atomic.Int64
				var wg sync.WaitGroup
				cpu0 := cpuTime()
				deadline := time.Now().Add(2 * time.Second)
				for i := 0; i < callers; i++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for time.Now().Before(deadline) {
							if w.RPush(context.Background(), "bench:co:"+strconv.Itoa(i%64), "v").Err() == nil {
								n.Add(1)
							}
						}
					}()
				}
				wg.Wait()
				b.ReportMetric(float64(n.Load())/2, "items/s")
				b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(max(n.Load(), 1)), "cpu-µs/item")
				_ = w.FlushAll(context.Background()).Err()
			})
		}
	}
}

// cpuTime is the process's CPU time, user and system: the redis-server is
// another process.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
