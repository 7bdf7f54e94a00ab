package main

import "time"

// A round of a timed scenario (S1-S3) runs each variant in several short
// slices, interleaved with the other variants' slices (ABCD ABCD ...), and
// adds a variant's slices up into its result of the round. On a virtual
// machine whose speed drifts by tens of percent over seconds (its
// neighbours), variants that ran one after the other for seconds each met
// different machines; slices a fraction of a second long, taken in turn,
// meet the same one, so a round's ratio between two variants is their own
// (README, Benchmarks, has the spread before and after).

// minSlice is the shortest slice: shorter ones measure the start of a load
// (goroutines starting, connections dialing) more than the load.
const minSlice = 500 * time.Millisecond

// maxSlices bounds the slices of a round.
const maxSlices = 4

// slicesPerRound is how many slices a round of d per variant has: as many
// as fit minSlice, from 1 to maxSlices.
func slicesPerRound(d time.Duration) int {
	return max(1, min(maxSlices, int(d/minSlice)))
}

// roundResult adds a variant's slices of one round up.
type roundResult struct {
	sum result
	// slice quantiles, for loads that measure no latencies of their own
	// (redis-benchmark, S4's workload)
	p50s, p99s []time.Duration
	// the server's CPU time and the wall time it was measured over
	serverCPU, serverWall time.Duration
}

// add takes one slice's result, and the server's CPU time over wall.
func (a *roundResult) add(r result, serverCPU, wall time.Duration) {
	a.sum.scenario, a.sum.variant, a.sum.baseline = r.scenario, r.variant, r.baseline
	a.sum.items += r.items
	a.sum.elapsed += r.elapsed
	a.sum.errors += r.errors
	a.sum.poolTimeouts += r.poolTimeouts
	a.sum.cpu += r.cpu
	a.sum.lat = append(a.sum.lat, r.lat...)
	a.p50s, a.p99s = append(a.p50s, r.p50), append(a.p99s, r.p99)
	if serverCPU > 0 {
		a.serverCPU += serverCPU
		a.serverWall += wall
	}
}

// result is the round's result: the slices' items over their time, their
// latencies' quantiles (or the median of the slices' own), the server's CPU
// over the wall time of the slices it was measured in.
func (a *roundResult) result() result {
	r := a.sum
	if len(r.lat) > 0 {
		r.p50, r.p99 = quantiles(r.lat)
	} else {
		r.p50, r.p99 = medianDuration(a.p50s), medianDuration(a.p99s)
	}
	r.lat = nil // the round's figures are kept, not its calls
	if a.serverWall > 0 {
		r.serverBusy = a.serverCPU.Seconds() / a.serverWall.Seconds()
	}
	return r
}

// medianDuration is the median of d, 0 for none.
func medianDuration(d []time.Duration) time.Duration {
	f := make([]float64, len(d))
	for i, x := range d {
		f[i] = float64(x)
	}
	return time.Duration(median(f))
}
