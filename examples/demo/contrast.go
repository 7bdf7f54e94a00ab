package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redisconn/redisconn/internal/workload"
)

// contrastRuns is the original workload's shape: 16 concurrent agent runs.
const contrastRuns = 16

// contrast runs the original workload twice against the same Redis and
// prints the two sides next to each other.
func contrast(ctx context.Context, ropt *redis.Options, o options, out io.Writer) error {
	fmt.Fprintf(out, "\nbefore/after: %d concurrent runs x %d responses, each response one RPUSH and one PUBLISH\n", contrastRuns, o.responses)
	before, err := workload.Before(ctx, ropt, contrastRuns, o.responses)
	if err != nil {
		return err
	}
	after, err := workload.After(ctx, ropt, contrastRuns, o.responses)
	if err != nil {
		return err
	}
	row := func(k, b, a string) { fmt.Fprintf(out, "  %-30s %-28s %s\n", k, b, a) }
	row("", "before: shared pool 128,", "after: conn.Worker, pool 200,")
	row("", "no limiter, 1 op per item", "limiter 100, batches of 50")
	row("total time", before.Elapsed.Round(time.Millisecond).String(), after.Elapsed.Round(time.Millisecond).String())
	row("responses/s", perSec(before), perSec(after))
	row("Redis round trips", strconv.FormatInt(before.RoundTrips, 10), strconv.FormatInt(after.RoundTrips, 10))
	row("errors", strconv.FormatInt(before.Errors, 10), strconv.FormatInt(after.Errors, 10))
	row("pool timeouts", strconv.FormatUint(uint64(before.PoolTimeouts), 10), strconv.FormatUint(uint64(after.PoolTimeouts), 10))
	row("response visible after p50", before.P50.Round(time.Millisecond).String(), after.P50.Round(time.Millisecond).String())
	row("response visible after p99", before.P99.Round(time.Millisecond).String(), after.P99.Round(time.Millisecond).String())
	for _, oc := range []workload.Outcome{before, after} {
		if oc.FirstError != "" {
			fmt.Fprintf(out, "  %s: first error: %s\n", oc.Name, oc.FirstError)
		}
	}
	return nil
}

func perSec(o workload.Outcome) string {
	return strconv.FormatFloat(float64(o.Responses)/o.Elapsed.Seconds(), 'f', 0, 64)
}
