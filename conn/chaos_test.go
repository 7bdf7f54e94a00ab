//go:build chaos

package conn_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redisconn/redisconn/internal/redistest"
)

// TestNetFaultsChaos is the long version of the fault matrix (make chaos,
// which CI runs): on each topology, each client in turn runs the matrix's
// workload for REDISCONN_CHAOS_FOR (default 60s) while faults of the matrix,
// picked at random, follow one another on random subsets of the proxies,
// each for 0.2-1.5 s with 0-0.5 s between them. Then the last fault is
// removed, and the matrix's invariants are checked over the whole run, as
// after a single fault: nothing applied twice, nothing acknowledged lost or
// reordered, published messages in order, every call within its deadline
// plus the bound, recovery within the bound, pools idle and no goroutine
// leaked. REDISCONN_CHAOS_SEED replays a run's sequence (the seed is
// logged); the table goes to /tmp/chaos-table.md.
func TestNetFaultsChaos(t *testing.T) {
	if _, err := redistest.ToxiproxyBinary(); err != nil {
		t.Fatal(err) // make chaos builds it (make toxiproxy)
	}
	dur := 60 * time.Second
	if v := os.Getenv("REDISCONN_CHAOS_FOR"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("REDISCONN_CHAOS_FOR=%q: want a positive Go duration such as 60s", v)
		}
		dur = d
	}
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("REDISCONN_CHAOS_SEED"); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("REDISCONN_CHAOS_SEED=%q: want an unsigned integer", v)
		}
		seed = s
	}
	t.Logf("chaos: %v of random faults per client and topology; REDISCONN_CHAOS_SEED=%d replays it", dur, seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	begin := time.Now()
	table := &nfTable{}
	var about []string
	for ti, topo := range nfTopologies {
		t.Run(topo, func(t *testing.T) {
			e := nfSetUp(t, topo)
			for ci, c := range e.clients {
				t.Run(c.name, func(t *testing.T) {
					f, sequence := nfChaos(rng, dur)
					nfRunFault(t, e, f, ci, func(row []string) { table.add(ti*10+ci, row) })
					line := fmt.Sprintf("%s, %s: %s", topo, c.name, sequence())
					t.Log(line)
					about = append(about, line)
				})
			}
		})
	}
	md := table.markdown() + "\nFault sequences (fault × count):\n\n- " + strings.Join(about, "\n- ") + "\n"
	t.Logf("chaos, %v in all:\n%s", time.Since(begin).Round(time.Millisecond), md)
	if err := os.WriteFile("/tmp/chaos-table.md", []byte(md), 0o644); err != nil {
		t.Errorf("writing /tmp/chaos-table.md: %v", err)
	}
}

// nfChaos is a fault that runs random faults of the matrix one after the
// other for dur; sequence tells which ran, and how often.
func nfChaos(rng *rand.Rand, dur time.Duration) (f nfFault, sequence func() string) {
	ran := map[string]int{}
	f = nfFault{
		name: "chaos", about: fmt.Sprintf("%v of the faults above, picked at random, on random subsets of the proxies, 0.2-1.5 s each, 0-0.5 s apart", dur),
		errors: true,
		run: func(t *testing.T, e *nfEnv) {
			for end := time.Now().Add(dur); time.Now().Before(end); {
				ft := nfFaults[rng.IntN(len(nfFaults))]
				sub := *e
				sub.proxies = nil
				for _, p := range e.proxies {
					if rng.IntN(2) == 0 {
						sub.proxies = append(sub.proxies, p)
					}
				}
				if len(sub.proxies) == 0 {
					sub.proxies = []*redistest.Proxy{e.proxies[rng.IntN(len(e.proxies))]}
				}
				sub.faultFor = 200*time.Millisecond + time.Duration(rng.Int64N(int64(1300*time.Millisecond)))
				ran[ft.name]++
				ft.run(t, &sub)
				time.Sleep(time.Duration(rng.Int64N(int64(500 * time.Millisecond))))
			}
		},
	}
	return f, func() string {
		names := make([]string, 0, len(ran))
		for n := range ran {
			names = append(names, n)
		}
		slices.Sort(names)
		parts := make([]string, len(names))
		for i, n := range names {
			parts[i] = fmt.Sprintf("%s %d", n, ran[n])
		}
		return strings.Join(parts, ", ")
	}
}
