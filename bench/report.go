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
			var rates, p50, p99, ratios []float64
			for i, x := range rs {
				rates = append(rates, x.perSec())
				p50 = append(p50, float64(x.p50.Microseconds()))
				p99 = append(p99, float64(x.p99.Microseconds()))
				r.Errors += x.errors
				r.PoolTimeouts += x.poolTimeouts
				if i < len(base) && base[i].perSec() > 0 {
					ratios = append(ratios, x.perSec()/base[i].perSec())
				}
			}
			r.ItemsPerSec, r.P50Micros, r.P99Micros, r.Ratio, r.Rounds = median(rates), median(p50), median(p99), median(ratios), rates
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
			fmt.Printf("  %-16s %14s %10s %10s %7s %9s %7s\n", "variant", "items/s", "p50", "p99", "errors", "pool t/o", "ratio")
			last = r.Scenario
		}
		fmt.Printf("  %-16s %14.0f %10s %10s %7d %9d %6.2fx\n", r.Variant, r.ItemsPerSec,
			us(r.P50Micros), us(r.P99Micros), r.Errors, r.PoolTimeouts, r.Ratio)
	}
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
func cross(a, b row) float64 {
	var ratios []float64
	for i := range a.Rounds {
		if i < len(b.Rounds) && b.Rounds[i] > 0 {
			ratios = append(ratios, a.Rounds[i]/b.Rounds[i])
		}
	}
	return median(ratios)
}

func printTargets(rows []row) {
	fmt.Println("\ntargets (ratios measured in this run)")
	check := func(name string, got, want float64, ok bool) {
		mark := "met"
		if !ok {
			mark = "NOT MET"
		}
		fmt.Printf("  %-58s %8.2f (target %.2f)  %s\n", name, got, want, mark)
	}
	// Targets whose scenarios were not run (BENCH_ONLY) are left out.
	w5 := find(rows, "S1-5000", "worker")
	ap5 := find(rows, "S1-5000", "autopipeline")
	pl5 := find(rows, "S1-5000", "plain")
	w1 := find(rows, "S1-100", "worker")
	if w5.Variant != "" {
		check("S1 Worker@5000 / AutoPipeline@5000 throughput", cross(w5, ap5), 1.0, cross(w5, ap5) >= 1.0)
		check("S1 Worker@5000 / plain go-redis@5000 throughput", cross(w5, pl5), 5.0, cross(w5, pl5) >= 5.0)
		check("S1 Worker@5000 p99 / AutoPipeline@5000 p99 (ms/ms)", w5.P99Micros/max(ap5.P99Micros, 1), 1.0, w5.P99Micros <= ap5.P99Micros)
		check("S1 Worker@5000 errors + pool timeouts", float64(w5.Errors+w5.PoolTimeouts), 0, w5.Errors+w5.PoolTimeouts == 0)
	}
	if r5 := find(rows, "S1-5000", "rueidis"); w5.Variant != "" && r5.Variant != "" {
		check("S1 Worker@5000 / rueidis@5000 throughput", cross(w5, r5), 1.0, cross(w5, r5) >= 1.0)
	}
	if ap1 := find(rows, "S1-100", "autopipeline"); w1.Variant != "" && ap1.Variant != "" {
		check("S1 Worker@100 / AutoPipeline@100 throughput", cross(w1, ap1), 1.0, cross(w1, ap1) >= 1.0)
	}
	if r1 := find(rows, "S1-100", "rueidis"); w1.Variant != "" && r1.Variant != "" {
		fmt.Printf("  %-58s %8.2f (information)\n", "S1 Worker@100 / rueidis@100 throughput", cross(w1, r1))
	}
	if w5.Variant != "" && w1.Variant != "" {
		check("S1 Worker@5000 / Worker@100 throughput", cross(w5, w1), 0.95, cross(w5, w1) >= 0.95)
	}
	b := find(rows, "S2", "batchrpush")
	if rr := find(rows, "S2", "rueidis"); b.Variant != "" && rr.Variant != "" {
		check("S2 BatchRPush / rueidis one RPUSH of 50 items/s", cross(b, rr), 1.0, cross(b, rr) >= 1.0)
	}
	if rb := find(rows, "S2", "redis-benchmark"); rb.Variant != "" {
		check("S2 BatchRPush / redis-benchmark -P 50 items/s", b.Ratio, 1.0, b.Ratio >= 1.0)
	}
	if idem := find(rows, "S2", "batchrpush-idem"); idem.Variant != "" {
		fmt.Printf("  %-58s %8.2f (information: the marker's cost)\n", "S2 idempotent BatchRPush / BatchRPush items/s", cross(idem, b))
	}
	if p := find(rows, "S3", "production"); p.Variant != "" {
		check("S3 telemetry on (production) / off throughput", p.Ratio, 0.95, p.Ratio >= 0.95)
	}
	if a := find(rows, "S4", "after"); a.Variant != "" {
		check("S4 after: errors + pool timeouts", float64(a.Errors+a.PoolTimeouts), 0, a.Errors+a.PoolTimeouts == 0)
	}
}
