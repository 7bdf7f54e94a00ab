// Command worker is the example platform's worker process on a conn.Worker
// (pool 200, limiter 100, batches of 50). It takes runs from the queue, runs
// up to -runs of them at once, writes each run's responses with BatchRPush and
// announces them with BatchPublish, and serves /metrics and
// /debug/connections on -listen. Several workers can share one queue.
//
// Redis comes from the REDIS_* variables (conn.LoadConfig); traces go where
// OTEL_* says, one trace per run (root span "agent.run").
package main

import (
	"context"
	"errors"
	"flag"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/redisconn/redisconn/conn"
	"github.com/redisconn/redisconn/examples/agentrun"
	"github.com/redisconn/redisconn/otelsetup"
)

func main() {
	listen := flag.String("listen", envOr("WORKER_LISTEN", "127.0.0.1:8081"), "address of /metrics and /debug/connections")
	runs := flag.Int("runs", 8, "runs processed at once")
	batch := flag.Int("batch", 50, "responses written and announced together")
	delay := flag.Duration("delay", 2*time.Millisecond, "time to produce one batch (the model thinking)")
	name := flag.String("name", "worker", "name in logs and service.instance.id")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("service", "worker", "worker", *name)
	if err := run(*listen, *name, *runs, agentrun.ProduceOptions{BatchSize: *batch, Delay: *delay}, log); err != nil {
		log.Error("exiting", "error", err)
		os.Exit(1)
	}
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func run(listen, name string, runs int, opt agentrun.ProduceOptions, log *slog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	tel, err := otelsetup.Setup(ctx, otelsetup.WithServiceName("agent-worker"))
	if err != nil {
		return err
	}
	defer func() { _ = tel.Shutdown(context.Background()) }()
	cfg, err := conn.LoadConfig(conn.RoleWorker)
	if err != nil {
		return err
	}
	log.Info("connecting", "config", cfg)
	w, err := conn.NewWorker(ctx, cfg)
	if err != nil {
		return err
	}
	defer w.Close()

	mux := http.NewServeMux()
	mux.Handle("GET /metrics", tel.Handler())
	mux.Handle("GET /debug/connections", agentrun.ConnectionsHandler(w.ConnectionInfo))
	srv := &http.Server{Addr: listen, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics listener", "error", err)
			stop()
		}
	}()
	log.Info("listening", "addr", listen, "runs", runs, "batch", opt.BatchSize)

	agentrun.Work(ctx, w, runs, opt, log)

	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(shutdownCtx)
}
