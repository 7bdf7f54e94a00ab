// Command bench measures the design's claims side by side in one run against
// an ephemeral redis-server (`make bench`): scenarios run interleaved in
// rounds, each row is the median over rounds, and each ratio is taken against
// the named baseline of the same round, so a noisy moment hurts both sides.
//
//	S1  single-operation RPUSH at 100 and 5000 callers: plain go-redis (pool 200),
//	    go-redis AutoPipeline (half duplex, its default) and AutoPipeline with
//	    FullDuplex, rueidis, conn.Worker (defaults, telemetry on)
//	S2  bulk: BatchRPush (batches of 50) vs go-redis Pipelined (50) vs one RPUSH
//	    per item vs redis-benchmark -P 50 -t rpush (when installed)
//	S3  telemetry cost: Worker off, metrics, metrics + tracing (production
//	    sampler), metrics + every span sampled
//	S4  the original workload: 16 runs x 3776 responses, RPUSH + PUBLISH each:
//	    one shared pool without limiter ("before") vs Worker ("after")
//	S5  a fleet: 8 processes (this binary re-executed) x 300 callers against
//	    one redis-server of its own, stopped for 3 s under load: default
//	    Workers vs plain go-redis (pool 200), and plain go-redis with
//	    ContextTimeoutEnabled; new connections, peak clients, errors, late
//	    calls and time to recover (fleet.go). Runs after the rounds of S1-S4.
//
// Each row also has the client's CPU per acknowledged item (one RPUSH in S1):
// getrusage(RUSAGE_SELF) user + sys over the measured run, divided by the
// items. The redis-server is another process, so this is the client's cost.
//
// Targets are checked and printed but never fail the run (see printTargets).
//
// BENCH_QUICK=1 runs in under a minute; BENCH_ROUNDS (default 3), BENCH_SECONDS
// (per variant and round, default 2, run in interleaved slices of at least
// 0.5 s: slices.go) and BENCH_OUT (JSON, default
// bench-results.json) tune it. BENCH_ONLY (comma-separated scenario names,
// e.g. S1-5000,S3) runs a subset; BENCH_CPUPROFILE writes a CPU profile of
// the whole run, for `go tool pprof`, its samples labelled by scenario and
// variant (-tagfocus variant=worker). BENCH_FLEET_PROCS, BENCH_FLEET_CALLERS
// and BENCH_FLEET_RUNS size S5 (defaults 8, 300 and BENCH_ROUNDS; quick: 8,
// 250 and 1); BENCH_FLEET_STALL is its stop in seconds (default 3).
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/redisconn/redisconn/internal/redistest"
)

type config struct {
	rounds    int
	seconds   time.Duration
	quick     bool
	responses int // S4 responses per run
	out       string
	only      map[string]bool // scenario names; empty: all
	profile   string          // CPU profile file; empty: none
}

func main() {
	if spec := os.Getenv(benchFleetEnv); spec != "" {
		os.Exit(fleetMember(spec)) // a member of S5's fleet, started by the bench
	}
	cfg := config{rounds: 3, seconds: 2 * time.Second, responses: 3776, out: "bench-results.json"}
	if os.Getenv("BENCH_QUICK") == "1" {
		cfg.quick, cfg.seconds, cfg.responses = true, 400*time.Millisecond, 1000
	}
	if v, err := strconv.Atoi(os.Getenv("BENCH_ROUNDS")); err == nil && v > 0 {
		cfg.rounds = v
	}
	if v, err := strconv.ParseFloat(os.Getenv("BENCH_SECONDS"), 64); err == nil && v > 0 {
		cfg.seconds = time.Duration(v * float64(time.Second))
	}
	if v := os.Getenv("BENCH_OUT"); v != "" {
		cfg.out = v
	}
	if v := os.Getenv("BENCH_ONLY"); v != "" {
		cfg.only = map[string]bool{}
		for _, name := range strings.Split(v, ",") {
			cfg.only[strings.TrimSpace(name)] = true
		}
	}
	cfg.profile = os.Getenv("BENCH_CPUPROFILE")
	if err := run(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(cfg config) error {
	dir, err := os.MkdirTemp("", "redisconn-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	srv, err := redistest.StartProcess(redistest.Options{}, dir)
	if err != nil {
		return err
	}
	defer srv.Stop()
	ctx := context.Background()
	env := newEnv(srv.Addr())
	defer env.close()
	rdir, err := os.MkdirTemp(dir, "replica-")
	if err != nil {
		return err
	}
	if env.replica, err = startReplica(rdir); err != nil {
		return err
	}
	defer env.replica.stop()

	fmt.Printf("redisconn bench: %d rounds, %v per scenario and round, %d CPUs, %s, redis-server %s\n",
		cfg.rounds, cfg.seconds, runtime.NumCPU(), runtime.Version(), env.redisVersion(ctx))
	var scenarios []scenario
	for _, s := range allScenarios(cfg, env) {
		if len(cfg.only) == 0 || cfg.only[s.name] {
			scenarios = append(scenarios, s)
		}
	}
	fleet := len(cfg.only) == 0 || cfg.only["S5"]
	if len(scenarios) == 0 && !fleet {
		return fmt.Errorf("BENCH_ONLY=%q names no scenario (accepted: S1-100, S1-5000, S2, S3, S4, S5)", os.Getenv("BENCH_ONLY"))
	}
	fleetCfg, err := newFleetConfig(cfg) // checked before the rounds, not after them
	if err != nil {
		return err
	}
	if cfg.profile != "" {
		f, err := os.Create(cfg.profile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	results := map[string][]result{} // row key -> one result per round
	for r := 1; r <= cfg.rounds && len(scenarios) > 0; r++ {
		start := time.Now()
		for _, s := range scenarios {
			// The variants run in interleaved slices (slices.go). Rotate
			// the order each slice and round so no variant always runs
			// first (right after another scenario) or last.
			acc := make([]roundResult, len(s.variants))
			for sl := 0; sl < max(s.slices, 1); sl++ {
				for k := range s.variants {
					i := (k + r - 1 + sl) % len(s.variants)
					v := s.variants[i]
					srv0, t0 := env.serverCPU(ctx), time.Now()
					var res result
					var err error
					// Labelled, so a profile splits by variant:
					// go tool pprof -tagfocus variant=worker.
					pprof.Do(ctx, pprof.Labels("scenario", s.name, "variant", v.name), func(ctx context.Context) {
						res, err = v.run(ctx)
					})
					if err != nil {
						return fmt.Errorf("%s %s: %w", s.name, v.name, err)
					}
					var srv time.Duration
					if srv0 > 0 {
						srv = max(env.serverCPU(ctx)-srv0, 0)
					}
					res.scenario, res.variant, res.baseline = s.name, v.name, v.name == s.baseline
					acc[i].add(res, srv, time.Since(t0))
					env.flush(ctx)
				}
			}
			for i, v := range s.variants {
				results[s.name+"/"+v.name] = append(results[s.name+"/"+v.name], acc[i].result())
			}
		}
		fmt.Printf("  round %d done in %v\n", r, time.Since(start).Round(time.Millisecond))
	}
	var fleetRes *fleetResult
	if fleet {
		if fleetRes, err = runFleet(ctx, fleetCfg, dir); err != nil {
			return err
		}
	}
	rows := summarize(scenarios, results)
	printTable(rows)
	printFleet(fleetRes)
	if len(rows) > 0 {
		printTargets(rows)
	}
	out := map[string]any{
		"rounds": cfg.rounds, "seconds_per_scenario": cfg.seconds.Seconds(), "cpus": runtime.NumCPU(),
		"go": runtime.Version(), "rows": rows,
	}
	if fleetRes != nil {
		out["fleet"] = fleetRes
	}
	b, _ := json.MarshalIndent(out, "", "  ")
	if err := os.WriteFile(cfg.out, b, 0o644); err != nil {
		return err
	}
	fmt.Printf("\nJSON: %s\n", cfg.out)
	return nil
}
