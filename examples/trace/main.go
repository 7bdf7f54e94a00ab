// Command trace prints the trace of one agent run, fetched from Jaeger's
// query API, as a terminal waterfall:
//
//	go run ./examples/trace [-jaeger URL] RUN_ID
//	go run ./examples/trace [-jaeger URL] TRACE_ID
//
// A run is found by its id (the worker's agent.run span carries it as
// agent.run.id); a 32-digit hex argument is taken as a trace id (an
// exemplar's trace_id, say). Each line is one span: its name in the tree,
// the service that sent it (agent-api or agent-worker), its start offset and
// duration, a bar on the trace's time line, and for Redis operations the
// limiter wait (redisconn.limiter.wait_time), batch chunk and pipeline sizes
// and errors (error.type). Spans of one name beyond the first -collapse under
// one parent are summed up in one line; -all shows every span.
//
// The Jaeger URL comes from -jaeger, else JAEGER_URL, else
// http://127.0.0.1:16686 (`make demo` prints the URL of its Jaeger).
package main

import (
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/redisconn/redisconn/internal/jaeger"
)

func main() {
	def := os.Getenv("JAEGER_URL")
	if def == "" {
		def = "http://127.0.0.1:16686"
	}
	url := flag.String("jaeger", def, "Jaeger query API base URL (JAEGER_URL)")
	service := flag.String("service", "agent-worker", "service.name of the worker that sends agent.run spans")
	lookback := flag.Duration("lookback", 24*time.Hour, "how far back to look for the run")
	wait := flag.Duration("wait", 5*time.Second, "how long to wait for the trace to appear and its spans to settle")
	all := flag.Bool("all", false, "show every span (default: the first -collapse spans of each name under a parent)")
	collapse := flag.Int("collapse", 3, "spans of one name shown under one parent before the rest are summed up")
	width := flag.Int("width", 40, "columns of the time bars")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: trace [flags] RUN_ID|TRACE_ID\n\nPrints an agent run's trace from Jaeger as a waterfall.\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	o := jaeger.WaterfallOptions{Width: *width, Collapse: *collapse}
	if *all {
		o.Collapse = 0
	}
	if err := run(*url, *service, flag.Arg(0), *lookback, *wait, o); err != nil {
		fmt.Fprintln(os.Stderr, "trace:", err)
		os.Exit(1)
	}
}

func run(url, service, id string, lookback, wait time.Duration, o jaeger.WaterfallOptions) error {
	ctx, cancel := context.WithTimeout(context.Background(), wait+10*time.Second)
	defer cancel()
	c := &jaeger.Client{URL: url}
	traceID := id
	if !isTraceID(id) {
		deadline := time.Now().Add(wait)
		for {
			tid, err := c.FindRun(ctx, service, id, lookback)
			if err == nil {
				traceID = tid
				break
			}
			if !errors.Is(err, jaeger.ErrNotFound) {
				return err
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("no trace of run %q in Jaeger at %s (service %s, last %v): the run may not have been sampled (OTEL_TRACES_SAMPLER, default 1 run in 10), or its spans have not arrived yet", id, url, service, lookback)
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
	wctx, wcancel := context.WithTimeout(ctx, wait)
	defer wcancel()
	t, err := c.WaitComplete(wctx, traceID, time.Second, nil)
	if errors.Is(err, jaeger.ErrNotFound) {
		return fmt.Errorf("Jaeger at %s has no trace %s", url, traceID)
	}
	if err != nil {
		return err
	}
	jaeger.Waterfall(os.Stdout, t, o)
	return nil
}

// isTraceID: 32 hex digits, not all zero.
func isTraceID(s string) bool {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 16 {
		return false
	}
	for _, x := range b {
		if x != 0 {
			return true
		}
	}
	return false
}
