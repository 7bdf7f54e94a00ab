// Command api is the example platform's API process on a conn.API (pool 128):
//
//	POST /runs                  start a run: {"responses": N} (optional); 202 {"id": ...}
//	GET  /runs/{id}             {"id", "status": queued|running|completed|stopped|failed, "responses": N}
//	GET  /runs/{id}/stream      the run's responses as Server-Sent Events, live
//	POST /runs/{id}/stop        ask the worker to stop the run
//	GET  /cache/{name}          a value computed once and cached in Redis (SET EX)
//	GET  /metrics               Prometheus / OpenMetrics with exemplars
//	GET  /debug/connections     ConnectionInfo as JSON
//	GET  /healthz               200 when Redis answers
//
// Redis comes from the REDIS_* variables (conn.LoadConfig); -listen sets the
// address (default 127.0.0.1:8080); traces go where OTEL_* says.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redisconn/redisconn/conn"
	"github.com/redisconn/redisconn/examples/agentrun"
	"github.com/redisconn/redisconn/otelsetup"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

func main() {
	listen := flag.String("listen", envOr("API_LISTEN", "127.0.0.1:8080"), "address to listen on")
	defaultResponses := flag.Int("responses", 3776, "responses per run when POST /runs does not say")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("service", "api")
	if err := run(*listen, *defaultResponses, log); err != nil {
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

func run(listen string, defaultResponses int, log *slog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	tel, err := otelsetup.Setup(ctx, otelsetup.WithServiceName("agent-api"))
	if err != nil {
		return err
	}
	defer func() { _ = tel.Shutdown(context.Background()) }()
	cfg, err := conn.LoadConfig(conn.RoleAPI)
	if err != nil {
		return err
	}
	log.Info("connecting", "config", cfg)
	api, err := conn.NewAPI(ctx, cfg)
	if err != nil {
		return err
	}
	defer api.Close()

	srv := &http.Server{Addr: listen, Handler: newServer(api, tel, defaultResponses, log), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	log.Info("listening", "addr", listen)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	log.Info("shutting down")
	return srv.Shutdown(shutdownCtx)
}

type server struct {
	api              *conn.API
	log              *slog.Logger
	defaultResponses int
}

// newServer returns the API's routes.
func newServer(api *conn.API, tel *otelsetup.Telemetry, defaultResponses int, log *slog.Logger) http.Handler {
	s := &server{api: api, log: log, defaultResponses: defaultResponses}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /runs", s.startRun)
	mux.HandleFunc("GET /runs/{id}", s.runStatus)
	mux.HandleFunc("GET /runs/{id}/stream", s.stream)
	mux.HandleFunc("POST /runs/{id}/stop", s.stopRun)
	mux.HandleFunc("GET /cache/{name}", s.cached)
	mux.Handle("GET /debug/connections", agentrun.ConnectionsHandler(api.ConnectionInfo))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if err := api.Ping(r.Context()).Err(); err != nil {
			http.Error(w, "redis: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	if tel != nil {
		mux.Handle("GET /metrics", tel.Handler())
	}
	var tp trace.TracerProvider = otel.GetTracerProvider()
	if tel != nil {
		tp = tel.TracerProvider
	}
	return traced(mux, tp.Tracer("github.com/redisconn/redisconn/examples/api"))
}

// traced gives every request except /metrics and /healthz a SERVER span,
// named like OpenTelemetry's HTTP conventions ("POST /runs", the route, not
// the path) and joined to the caller's trace when the request carries a
// traceparent. Its only attributes are the method, the route and the status:
// never the path, whose run id or cache name is part of a Redis key.
// Redis operations of the request are its children, and the run that POST
// /runs queues carries it on, so a run's trace starts at the API.
func traced(mux *http.ServeMux, tracer trace.Tracer) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := mux.Handler(r); pattern == "GET /metrics" || pattern == "GET /healthz" || pattern == "" {
			mux.ServeHTTP(w, r)
			return
		}
		ctx := otel.GetTextMapPropagator().Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		ctx, span := tracer.Start(ctx, r.Method, trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(attribute.String("http.request.method", r.Method)))
		defer span.End()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		req := r.WithContext(ctx)
		mux.ServeHTTP(rec, req)
		if _, route, ok := strings.Cut(req.Pattern, " "); ok {
			span.SetName(r.Method + " " + route)
			span.SetAttributes(attribute.String("http.route", route))
		}
		span.SetAttributes(attribute.Int("http.response.status_code", rec.status))
		if rec.status >= 500 {
			span.SetStatus(codes.Error, "")
			span.SetAttributes(attribute.String("error.type", strconv.Itoa(rec.status)))
		}
	})
}

// statusRecorder remembers the status code a handler wrote; it still
// flushes, for the SSE stream.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

const maxResponses = 1_000_000

func (s *server) startRun(w http.ResponseWriter, r *http.Request) {
	req := struct {
		Responses *int `json:"responses"`
	}{}
	if r.ContentLength != 0 {
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&req); err != nil {
			http.Error(w, `body must be JSON like {"responses": 100}: `+err.Error(), http.StatusBadRequest)
			return
		}
	}
	n := s.defaultResponses
	if req.Responses != nil {
		n = *req.Responses
	}
	if n < 0 || n > maxResponses {
		http.Error(w, "responses must be from 0 to "+strconv.Itoa(maxResponses), http.StatusBadRequest)
		return
	}
	job := agentrun.Job{ID: agentrun.NewID(), Responses: n}
	carrier := propagation.MapCarrier{}
	otel.GetTextMapPropagator().Inject(r.Context(), carrier)
	job.TraceParent = carrier["traceparent"]
	if err := agentrun.Enqueue(r.Context(), s.api, job, time.Hour); err != nil {
		s.log.Error("enqueue", "run", job.ID, "error", err)
		http.Error(w, "could not queue the run", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Location", "/runs/"+job.ID+"/stream")
	w.WriteHeader(http.StatusAccepted)
	_ = json.NewEncoder(w).Encode(map[string]any{"id": job.ID, "responses": n})
}

func (s *server) stream(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	flusher, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	exists, err := s.api.Exists(r.Context(), agentrun.LockKey(id), agentrun.ResponsesKey(id)).Result()
	if err != nil {
		http.Error(w, "redis unavailable", http.StatusServiceUnavailable)
		return
	}
	if exists == 0 {
		http.Error(w, "no such run", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	flusher.Flush()
	sent := 0
	err = agentrun.Stream(r.Context(), s.api, id, 5*time.Second, func(resp agentrun.Response) error {
		b, _ := json.Marshal(resp)
		event := "response"
		if resp.Final() {
			event = "end"
		}
		if _, err := fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", resp.Seq, event, b); err != nil {
			return err
		}
		sent++
		if sent%50 == 0 || resp.Final() {
			flusher.Flush()
		}
		return nil
	})
	flusher.Flush()
	switch {
	case err == nil:
	case errors.Is(err, context.Canceled):
		s.log.Debug("client went away", "run", id, "sent", sent)
	default:
		s.log.Error("stream", "run", id, "sent", sent, "error", err)
		fmt.Fprintf(w, "event: error\ndata: %q\n\n", "stream interrupted")
	}
}

func (s *server) runStatus(w http.ResponseWriter, r *http.Request) {
	st, err := agentrun.GetStatus(r.Context(), s.api, r.PathValue("id"))
	switch {
	case errors.Is(err, agentrun.ErrNoRun):
		http.Error(w, "no such run", http.StatusNotFound)
	case err != nil:
		http.Error(w, "redis unavailable", http.StatusServiceUnavailable)
	default:
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(st)
	}
}

func (s *server) stopRun(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	active, err := s.api.Exists(r.Context(), agentrun.LockKey(id)).Result()
	if err != nil {
		http.Error(w, "redis unavailable", http.StatusServiceUnavailable)
		return
	}
	if active == 0 {
		http.Error(w, "no active run with this id", http.StatusNotFound)
		return
	}
	if err := s.api.Publish(r.Context(), agentrun.ControlChannel(id), agentrun.Stop).Err(); err != nil {
		http.Error(w, "redis unavailable", http.StatusServiceUnavailable)
		return
	}
	w.WriteHeader(http.StatusAccepted)
}

// cached serves a value that takes a while to compute, from Redis for 30 s.
func (s *server) cached(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if len(name) > 128 {
		http.Error(w, "name longer than 128 bytes", http.StatusBadRequest)
		return
	}
	key := "cache:" + name
	v, err := s.api.Get(r.Context(), key).Result()
	switch {
	case err == nil:
		w.Header().Set("X-Cache", "hit")
	case errors.Is(err, redis.Nil):
		time.Sleep(20 * time.Millisecond) // the expensive part
		sum := sha256.Sum256([]byte(name))
		v = hex.EncodeToString(sum[:])
		if err := s.api.Set(r.Context(), key, v, 30*time.Second).Err(); err != nil {
			s.log.Warn("cache set", "error", err)
		}
		w.Header().Set("X-Cache", "miss")
	default:
		http.Error(w, "redis unavailable", http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, v)
}
