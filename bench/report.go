package main

import (
	"fmt"
	"sort"
	"time"
)

// row is one variant's medians over the rounds.
type row struct {
	Scenario     string  `json:"scenario"`
	Title        string  `json:"title"`
	Variant      string  `json:"variant"`
	Baseline     string  `json:"baseline"`
	ItemsPerSec  float64 `json:"items_per_sec"`
	P50Micros    float64 `json:"p50_us"`
	P99Micros    float64 `json:"p99_us"`
	Errors       int64   `json:"errors"`
	PoolTimeouts int64   `json:"pool_timeouts"`
	// Ratio is the median over rounds of this variant's items/s divided by the
	// baseline's items/s in the same round.
	Ratio  float64   `json:"ratio_vs_baseline"`
	Rounds []float64 `json:"items_per_sec_by_round"`
	// CPUMicrosPerItem is the median over rounds of the client process's CPU
	// (user + sys, getrusage RUSAGE_SELF over the measured run) divided by
	// the items acknowledged, in microseconds: in S1 the CPU per acknowledged
	// command. Absent where the load ran in another process (redis-benchmark)
	// or outside load (S4).
	CPUMicrosPerItem float64   `json:"cpu_us_per_item,omitempty"`
	CPURounds        []float64 `json:"cpu_us_per_item_by_round,omitempty"`
	// ServerBusy is the median over rounds of the share of one core the
	// benchmark's redis-server used during the variant (INFO cpu over wall
	// time, the variant's set-up included). Near 1 the server was the
	// bottleneck: the ratio then compares the server's work per item, not
	// the clients'.
	ServerBusy float64 `json:"server_busy,omitempty"`
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func summarize(scenarios []scenario, results map[string][]result) []row {
	var rows []row
	for _, s := range scenarios {
		base := results[s.name+"/"+s.baseline]
		for _, v := range s.variants {
			rs := results[s.name+"/"+v.name]
			r := row{Scenario: s.name, Title: s.title, Variant: v.name, Baseline: s.baseline}
			var rates, p50, p99, ratios, cpu, busy []float64
			for i, x := range rs {
				if x.serverBusy > 0 {
					busy = append(busy, x.serverBusy)
				}
				rates = append(rates, x.perSec())
				if c := x.cpuPerItem(); c > 0 {
					cpu = append(cpu, c)
				}
				p50 = append(p50, float64(x.p50.Microseconds()))
				p99 = append(p99, float64(x.p99.Microseconds()))
				r.Errors += x.errors
				r.PoolTimeouts += x.poolTimeouts
				if i < len(base) && base[i].perSec() > 0 {
					ratios = append(ratios, x.perSec()/base[i].perSec())
				}
			}
			r.ServerBusy = median(busy)
			r.ItemsPerSec, r.P50Micros, r.P99Micros, r.Ratio, r.Rounds = median(rates), median(p50), median(p99), median(ratios), rates
			// All rounds or none: a partial series would pair the wrong
			// rounds in cpuCross.
			if len(cpu) == len(rs) {
				r.CPUMicrosPerItem, r.CPURounds = median(cpu), cpu
			}
			rows = append(rows, r)
		}
	}
	return rows
}

func printTable(rows []row) {
	last := ""
	for _, r := range rows {
		if r.Scenario != last {
			fmt.Printf("\n%s  %s (ratio vs %s)\n", r.Scenario, r.Title, r.Baseline)
			fmt.Printf("  %-24s %14s %10s %10s %7s %9s %7s %9s %8s\n", "variant", "items/s", "p50", "p99", "errors", "pool t/o", "ratio", "cpu/item", "server")
			last = r.Scenario
		}
		fmt.Printf("  %-24s %14.0f %10s %10s %7d %9d %6.2fx %9s %8s\n", r.Variant, r.ItemsPerSec,
			us(r.P50Micros), us(r.P99Micros), r.Errors, r.PoolTimeouts, r.Ratio, cpuUs(r.CPUMicrosPerItem), busyPct(r.ServerBusy))
	}
}

// cpuUs formats CPU per item, which is often well under a microsecond.
func cpuUs(v float64) string {
	if v == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fµs", v)
}

// busyPct formats the server's busy share of one core.
func busyPct(v float64) string {
	if v == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f%%", 100*v)
}

func us(v float64) string {
	if v == 0 {
		return "-"
	}
	return (time.Duration(v) * time.Microsecond).String()
}

func find(rows []row, scenario, variant string) row {
	for _, r := range rows {
		if r.Scenario == scenario && r.Variant == variant {
			return r
		}
	}
	return row{}
}

// cross is the median over rounds of a's items/s over b's in the same round.
func cross(a, b row) float64 { return roundRatio(a.Rounds, b.Rounds) }

// cpuCross is the median over rounds of a's CPU per item over b's in the
// same round: below 1, a spends less client CPU per acknowledged item.
func cpuCross(a, b row) float64 { return roundRatio(a.CPURounds, b.CPURounds) }

// roundRatio is the median of a[i]/b[i] over the rounds both have.
func roundRatio(a, b []float64) float64 {
	var ratios []float64
	for i := range a {
		if i < len(b) && b[i] > 0 {
			ratios = append(ratios, a[i]/b[i])
		}
	}
	return median(ratios)
}

// printTargets checks the claims against this run's ratios, each the median
// of per-round ratios. A target not met is printed as NOT MET and does not
// fail the program: CI runs a quick bench on shared runners only to prove it
// runs, and its numbers are too noisy to gate on.
func printTargets(rows []row) {
	fmt.Println("\ntargets (medians of per-round ratios measured in this run)")
	// op is ">=", "<=" or "=" (counts that must be zero).
	check := func(name string, got float64, op string, want float64) {
		ok := got >= want
		switch op {
		case "<=":
			ok = got <= want
		case "=":
			ok = got == want
		}
		mark := "met"
		if !ok {
			mark = "NOT MET"
		}
		fmt.Printf("  %-64s %8.2f (target %s %.2f)  %s\n", name, got, op, want, mark)
	}
	info := func(name string, got float64, why string) {
		fmt.Printf("  %-64s %8.2f (information%s)\n", name, got, why)
	}
	// Targets whose scenarios or peers were not run (BENCH_ONLY, no
	// redis-benchmark) are left out.
	for _, callers := range []string{"5000", "100"} {
		s := "S1-" + callers
		w := find(rows, s, "worker")
		if w.Variant == "" {
			continue
		}
		if ap := find(rows, s, "autopipeline"); ap.Variant != "" {
			check("S1 Worker@"+callers+" / AutoPipeline@"+callers+" throughput", cross(w, ap), ">=", 1.1)
		}
		if fd := find(rows, s, fullDuplex); fd.Variant != "" {
			check("S1 Worker@"+callers+" / AutoPipeline full-duplex@"+callers+" throughput", cross(w, fd), ">=", 1.1)
		}
		if r := find(rows, s, "rueidis"); r.Variant != "" {
			if callers == "5000" {
				check("S1 Worker@5000 / rueidis@5000 throughput", cross(w, r), ">=", 1.5)
			} else {
				info("S1 Worker@"+callers+" / rueidis@"+callers+" throughput", cross(w, r), "")
			}
		}
		if ap := find(rows, s, "autopipeline"); ap.Variant != "" && len(w.CPURounds) > 0 && len(ap.CPURounds) > 0 {
			check("S1 Worker@"+callers+" CPU/command / AutoPipeline@"+callers+" CPU/command", cpuCross(w, ap), "<=", 1.0)
		}
		if fd := find(rows, s, fullDuplex); fd.Variant != "" && len(w.CPURounds) > 0 && len(fd.CPURounds) > 0 {
			info("S1 Worker@"+callers+" CPU/command / full-duplex@"+callers+" CPU/command", cpuCross(w, fd), "")
		}
		if pl := find(rows, s, "plain"); pl.Variant != "" {
			info("S1 Worker@"+callers+" / plain go-redis@"+callers+" throughput", cross(w, pl), "")
		}
		if ap := find(rows, s, "autopipeline"); ap.Variant != "" && ap.P99Micros > 0 {
			info("S1 Worker@"+callers+" p99 / AutoPipeline@"+callers+" p99", w.P99Micros/ap.P99Micros, "")
		}
		check("S1 Worker@"+callers+" errors + pool timeouts", float64(w.Errors+w.PoolTimeouts), "=", 0)
	}
	if w5, w1 := find(rows, "S1-5000", "worker"), find(rows, "S1-100", "worker"); w5.Variant != "" && w1.Variant != "" {
		info("S1 Worker@5000 / Worker@100 throughput", cross(w5, w1), "")
	}
	b := find(rows, "S2", "batchrpush")
	if rr := find(rows, "S2", "rueidis"); b.Variant != "" && rr.Variant != "" {
		check("S2 BatchRPush / rueidis one RPUSH of 50 items/s", cross(b, rr), ">=", 1.1)
		if b.ServerBusy > 0 && rr.ServerBusy > 0 {
			// Below 1: the server idled more between the Worker's round
			// trips than between rueidis's; the ratio is the clients'.
			info("S2 server busy during BatchRPush / during rueidis", b.ServerBusy/rr.ServerBusy, "")
		}
	}
	if d, r := find(rows, "S2", "batchrpush ack 1"), find(rows, "S2", "batchrpush+replica"); d.Variant != "" && r.Variant != "" {
		info("S2 BatchRPush ack 1 replica / BatchRPush with that replica items/s", cross(d, r), ": the cost of durable acknowledgements")
	}
	if rb := find(rows, "S2", "redis-benchmark"); b.Variant != "" && rb.Variant != "" {
		info("S2 BatchRPush / redis-benchmark -P 50 items/s", cross(b, rb), "")
	}
	if idem := find(rows, "S2", "batchrpush-idem"); b.Variant != "" && idem.Variant != "" {
		info("S2 idempotent BatchRPush / BatchRPush items/s", cross(idem, b), ": the marker's cost")
	}
	if b.Variant != "" {
		check("S2 BatchRPush errors + pool timeouts", float64(b.Errors+b.PoolTimeouts), "=", 0)
	}
	if p := find(rows, "S3", "production"); p.Variant != "" {
		check("S3 telemetry on (production) / off throughput", p.Ratio, ">=", 0.95)
	}
	if a := find(rows, "S4", "after"); a.Variant != "" {
		check("S4 after: errors + pool timeouts", float64(a.Errors+a.PoolTimeouts), "=", 0)
	}
}
