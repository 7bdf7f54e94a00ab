// Command demo runs the agent platform end to end on this machine and prints
// what happened: `make demo`.
//
// It starts an ephemeral redis-server on a free port (unless REDIS_URL is
// set), Prometheus with the project's rules when it is installed, the API and
// two workers (built from examples/) sending their spans to Jaeger (built
// from tools/go.mod when missing), and a load driver that keeps
// DEMO_CONCURRENCY runs going for DEMO_DURATION, streaming every other one and
// checking it arrives whole and in order. Then it compares one shared pool
// without a limiter ("before") with the worker manager ("after") on the
// original workload, prints a summary with one run's trace and one exemplar's
// trace fetched from Jaeger, and stops everything it started, also
// on Ctrl-C.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	var o options
	flag.DurationVar(&o.duration, "duration", envDuration("DEMO_DURATION", 30*time.Second), "how long the load runs (DEMO_DURATION)")
	flag.IntVar(&o.concurrency, "concurrency", envInt("DEMO_CONCURRENCY", 16), "runs kept going at once (DEMO_CONCURRENCY)")
	flag.IntVar(&o.responses, "responses", envInt("DEMO_RESPONSES", 3776), "responses per run (DEMO_RESPONSES)")
	flag.BoolVar(&o.contrast, "contrast", os.Getenv("DEMO_CONTRAST") != "0", "also run the before/after comparison (DEMO_CONTRAST=0 skips it)")
	flag.BoolVar(&o.contrastOnly, "contrast-only", false, "run only the before/after comparison")
	flag.BoolVar(&o.keep, "keep", os.Getenv("DEMO_KEEP") == "1", "keep everything running after the summary until Ctrl-C (DEMO_KEEP=1)")
	flag.BoolVar(&o.traces, "traces", os.Getenv("DEMO_TRACES") != "0", "start Jaeger, building it when missing (~9 min the first time), and send the services' spans to it (DEMO_TRACES=0 skips)")
	flag.Float64Var(&o.traceRatio, "trace-ratio", envFloat("DEMO_TRACE_RATIO", defaultTraceRatio), "share of runs traced (DEMO_TRACE_RATIO)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, o, os.Stdout)
	if err == nil || (o.keep && errors.Is(err, context.Canceled)) {
		fmt.Println("\ndone: every process the demo started has been stopped")
		return
	}
	{
		if errors.Is(err, context.Canceled) {
			fmt.Println("\ninterrupted: everything the demo started has been stopped")
			os.Exit(130)
		}
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}
