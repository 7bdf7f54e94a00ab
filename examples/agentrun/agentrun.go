// Package agentrun is the agent platform the examples share: how a run is
// queued, how a worker produces its responses into Redis, and how the API
// streams them back. The API uses a conn.API, the workers a conn.Worker.
//
// Redis layout of run {id}:
//
//	agent_runs:queue                  list of queued runs (JSON Job)
//	agent_run_lock:{id}               SET NX EX lock held from POST until the run ends
//	agent_run:{id}:responses          list of responses (JSON Response), EXPIRE 24 h
//	agent_run:{id}:new_response       channel: one message per response (its seq)
//	agent_run:{id}:control            channel: STOP (API to worker), END_STREAM / ERROR (worker to API)
package agentrun

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redisconn/redisconn/conn"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Control messages.
const (
	Stop      = "STOP"
	EndStream = "END_STREAM"
	Error     = "ERROR"
)

// QueueKey is the list of queued runs.
const QueueKey = "agent_runs:queue"

// LockKey, ResponsesKey, NewResponseChannel and ControlChannel name a run's keys.
func LockKey(id string) string            { return "agent_run_lock:" + id }
func ResponsesKey(id string) string       { return "agent_run:" + id + ":responses" }
func NewResponseChannel(id string) string { return "agent_run:" + id + ":new_response" }
func ControlChannel(id string) string     { return "agent_run:" + id + ":control" }

// Job is a queued run.
type Job struct {
	ID        string `json:"id"`
	Responses int    `json:"responses"`
	// TraceParent carries the W3C trace context of the request that queued
	// it, so the run's trace starts at the API (may be empty).
	TraceParent string `json:"traceparent,omitempty"`
}

// Response is one element of a run's responses list. The last one of a run
// has Type "status" and Status "completed", "stopped" or "failed".
type Response struct {
	Seq     int    `json:"seq"`
	Type    string `json:"type"`
	Content string `json:"content,omitempty"`
	Status  string `json:"status,omitempty"`
}

// Final reports whether r ends its run.
func (r Response) Final() bool { return r.Type == "status" }

// NewID returns a random run id.
func NewID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// ErrRunExists is returned by Enqueue when the run's lock is already taken.
var ErrRunExists = errors.New("agentrun: a run with this id is already active")

// Enqueue takes the run's lock (SET NX EX) and queues it.
func Enqueue(ctx context.Context, c redis.UniversalClient, job Job, lockTTL time.Duration) error {
	ok, err := c.SetNX(ctx, LockKey(job.ID), "queued", lockTTL).Result()
	if err != nil {
		return fmt.Errorf("taking the run lock: %w", err)
	}
	if !ok {
		return ErrRunExists
	}
	b, _ := json.Marshal(job)
	if err := c.RPush(ctx, QueueKey, b).Err(); err != nil {
		_ = c.Del(ctx, LockKey(job.ID)).Err()
		return fmt.Errorf("queueing the run: %w", err)
	}
	return nil
}

// Status is where a run stands.
type Status struct {
	ID        string `json:"id"`
	Status    string `json:"status"` // queued, running, completed, stopped, failed
	Responses int64  `json:"responses"`
}

// ErrNoRun: no run with that id is active or has responses.
var ErrNoRun = errors.New("agentrun: no such run")

// GetStatus reads a run's status: the lock while it is active, else its
// final status response.
func GetStatus(ctx context.Context, c redis.UniversalClient, id string) (Status, error) {
	st := Status{ID: id}
	var lock *redis.StringCmd
	var n *redis.IntCmd
	var last *redis.StringSliceCmd
	_, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
		lock = p.Get(ctx, LockKey(id))
		n = p.LLen(ctx, ResponsesKey(id))
		last = p.LRange(ctx, ResponsesKey(id), -1, -1)
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return st, err
	}
	st.Responses = n.Val()
	if l := lock.Val(); l != "" {
		st.Status = l
		return st, nil
	}
	if vals := last.Val(); len(vals) == 1 {
		var r Response
		if json.Unmarshal([]byte(vals[0]), &r) == nil && r.Final() {
			st.Status = r.Status
			st.Responses-- // the status element is not a response
			return st, nil
		}
	}
	return st, ErrNoRun
}

// ProduceOptions shape a worker's run.
type ProduceOptions struct {
	// BatchSize is how many responses are written and announced together.
	BatchSize int
	// Delay is how long producing one batch takes (the "model" thinking).
	Delay time.Duration
	// TTL is set on the responses list at the end (EXPIRE).
	TTL time.Duration
}

// Produce runs job on the worker: one root span "agent.run"; job.Responses
// responses written with BatchRPush and announced with BatchPublish, batch by
// batch; a final status response; EXPIRE on the list; END_STREAM (or STOP's
// acknowledgement) on the control channel; the lock released. A STOP on the
// control channel ends the run early with status "stopped".
func Produce(ctx context.Context, w *conn.Worker, job Job, opt ProduceOptions) (status string, err error) {
	ctx, span := otel.Tracer("github.com/redisconn/redisconn/examples/agentrun").Start(ctx, "agent.run",
		trace.WithAttributes(attribute.String("agent.run.id", job.ID), attribute.Int("agent.run.responses", job.Responses)))
	defer func() {
		span.SetAttributes(attribute.String("agent.run.status", status))
		if err != nil {
			span.SetStatus(codes.Error, "run failed")
		}
		span.End()
	}()
	if opt.BatchSize <= 0 {
		opt.BatchSize = 50
	}
	if opt.TTL <= 0 {
		opt.TTL = 24 * time.Hour
	}
	control := w.Subscribe(ctx, ControlChannel(job.ID))
	defer control.Close()
	if _, err := control.Receive(ctx); err != nil {
		return "failed", fmt.Errorf("subscribing to the control channel: %w", err)
	}
	stops := control.Channel()
	_ = w.Set(ctx, LockKey(job.ID), "running", redis.KeepTTL).Err()

	status = "completed"
	seq := 0
produce:
	for seq < job.Responses {
		select {
		case msg := <-stops:
			if msg.Payload == Stop {
				status = "stopped"
				break produce
			}
		case <-ctx.Done():
			status = "stopped"
			break produce
		default:
		}
		if opt.Delay > 0 {
			time.Sleep(opt.Delay)
		}
		n := min(opt.BatchSize, job.Responses-seq)
		batch := make([]any, n)
		notes := make([]any, n)
		for i := range batch {
			b, _ := json.Marshal(Response{Seq: seq + i, Type: "text", Content: "token " + strconv.Itoa(seq+i) + " of run " + job.ID})
			batch[i] = b
			notes[i] = seq + i
		}
		if _, err := w.BatchRPush(ctx, ResponsesKey(job.ID), batch...); err != nil {
			status = "failed"
			finish(context.WithoutCancel(ctx), w, job, seq, status, Error)
			return status, err
		}
		if _, err := w.BatchPublish(ctx, NewResponseChannel(job.ID), notes...); err != nil {
			status = "failed"
			finish(context.WithoutCancel(ctx), w, job, seq+n, status, Error)
			return status, err
		}
		seq += n
	}
	return status, finish(context.WithoutCancel(ctx), w, job, seq, status, EndStream)
}

// finish writes the final status response, sets the TTL, tells streams the
// run ended, and releases the lock.
func finish(ctx context.Context, w *conn.Worker, job Job, seq int, status, signal string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	b, _ := json.Marshal(Response{Seq: seq, Type: "status", Status: status})
	_, err := w.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.RPush(ctx, ResponsesKey(job.ID), b)
		p.Expire(ctx, ResponsesKey(job.ID), 24*time.Hour)
		p.Publish(ctx, NewResponseChannel(job.ID), seq)
		p.Publish(ctx, ControlChannel(job.ID), signal)
		p.Del(ctx, LockKey(job.ID))
		return nil
	})
	return err
}

// Stream sends run id's responses to send in order: first what the list
// already holds (LRANGE), then each new batch as it is announced, until the
// final status response, or a control message (END_STREAM, STOP, ERROR)
// after which the list is read one last time. It returns when the run ended
// (nil), ctx ended (the client went away), or Redis failed. idle bounds how
// long a stream waits with no news before it checks the list again.
func Stream(ctx context.Context, api *conn.API, id string, idle time.Duration, send func(Response) error) error {
	// Subscribe before reading the list, so nothing published in between is missed.
	sub := api.Subscribe(ctx, NewResponseChannel(id), ControlChannel(id))
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		return fmt.Errorf("subscribing: %w", err)
	}
	msgs := sub.Channel()
	next := 0
	catchUp := func() (done bool, err error) {
		raw, err := api.LRange(ctx, ResponsesKey(id), int64(next), -1).Result()
		if err != nil {
			return false, err
		}
		for _, item := range raw {
			var r Response
			if err := json.Unmarshal([]byte(item), &r); err != nil {
				return false, fmt.Errorf("response %d is not JSON: %w", next, err)
			}
			next++
			if err := send(r); err != nil {
				return false, err
			}
			if r.Final() {
				return true, nil
			}
		}
		return false, nil
	}
	if done, err := catchUp(); done || err != nil {
		return err
	}
	if idle <= 0 {
		idle = 5 * time.Second
	}
	timer := time.NewTimer(idle)
	defer timer.Stop()
	for {
		ended := false
		select {
		case <-ctx.Done():
			return ctx.Err()
		case msg, ok := <-msgs:
			if !ok {
				return errors.New("subscription closed")
			}
			ended = msg.Channel == ControlChannel(id) && msg.Payload != Stop
			// Coalesce: one LRANGE for everything announced so far.
		drain:
			for {
				select {
				case m := <-msgs:
					if m.Channel == ControlChannel(id) && m.Payload != Stop {
						ended = true
					}
				default:
					break drain
				}
			}
		case <-timer.C:
		}
		timer.Reset(idle)
		done, err := catchUp()
		if done || err != nil {
			return err
		}
		if ended {
			// END_STREAM/ERROR come after the final response is written.
			return nil
		}
	}
}

// Work takes runs from the queue until ctx ends, at most runs at once. Runs in
// progress when ctx ends are stopped (status "stopped") and Work waits for them.
func Work(ctx context.Context, w *conn.Worker, runs int, opt ProduceOptions, log *slog.Logger) {
	var wg sync.WaitGroup
	defer wg.Wait()
	slots := make(chan struct{}, runs)
	for {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		// A short BLPOP: it holds a limiter permit while it blocks.
		res, err := w.BLPop(ctx, time.Second, QueueKey).Result()
		if err != nil {
			<-slots
			if errors.Is(err, redis.Nil) {
				continue
			}
			if ctx.Err() != nil {
				return
			}
			log.Warn("taking a run", "error", err)
			time.Sleep(200 * time.Millisecond)
			continue
		}
		var job Job
		if err := json.Unmarshal([]byte(res[1]), &job); err != nil {
			<-slots
			log.Error("bad job in queue", "error", err)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			runCtx := otel.GetTextMapPropagator().Extract(ctx, propagation.MapCarrier{"traceparent": job.TraceParent})
			start := time.Now()
			status, err := Produce(runCtx, w, job, opt)
			if err != nil {
				log.Error("run failed", "run", job.ID, "error", err)
				return
			}
			log.Debug("run done", "run", job.ID, "status", status, "responses", job.Responses, "took", time.Since(start))
		}()
	}
}

// ConnectionsHandler serves a manager's ConnectionInfo as JSON
// (/debug/connections). When part of it could not be read (INFO failed), the
// rest is still served, with status 503 and the reason in X-Redis-Error.
func ConnectionsHandler(info func(context.Context) (conn.ConnectionInfo, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ci, err := info(r.Context())
		w.Header().Set("Content-Type", "application/json")
		if err != nil {
			w.Header().Set("X-Redis-Error", err.Error())
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(ci)
	})
}
