package conn_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/redisconn/redisconn/conn"
	"github.com/redisconn/redisconn/internal/redistest"
	"go.uber.org/goleak"
)

// shared is a redis-server for tests that only need a plain server; the
// examples find it through REDIS_HOST and REDIS_PORT, as a program would.
var shared *redistest.Server

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "redisconn-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	shared, err = redistest.StartProcess(redistest.Options{}, dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Setenv("REDIS_HOST", "127.0.0.1")
	os.Setenv("REDIS_PORT", strconv.Itoa(shared.Port()))
	baseline := goleak.IgnoreCurrent()
	code := m.Run()
	shared.Stop()
	os.RemoveAll(dir)
	if code == 0 {
		// Every manager a test made was closed: nothing may be left running.
		// go-redis's pool keeps redialing a dead server in the background
		// (tryDial, once a second) and stops at its next try after Close.
		if err := goleak.Find(baseline, goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).tryDial")); err != nil {
			fmt.Fprintln(os.Stderr, "goroutines left behind:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// config returns a configuration for srv with the role's defaults.
func config(role conn.Role, srv *redistest.Server) conn.Config {
	c := conn.DefaultConfig(role)
	c.Host, c.Port = "127.0.0.1", srv.Port()
	return c
}

func newWorker(t testing.TB, cfg conn.Config) *conn.Worker {
	t.Helper()
	w, err := conn.NewWorker(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Close() })
	return w
}

func newAPI(t testing.TB, cfg conn.Config) *conn.API {
	t.Helper()
	a, err := conn.NewAPI(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	return a
}

func ctxTimeout(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
