package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redisconn/redisconn/conn"
	"github.com/redisconn/redisconn/examples/agentrun"
)

// loadResult is what the driver saw from the outside.
type loadResult struct {
	elapsed                     time.Duration
	started, completed, failed  int64
	streamed, streamedResponses int64
	broken                      int64 // streams that arrived incomplete or out of order

	mu          sync.Mutex
	completeIDs []string // ids of completed runs, oldest first
}

// done records a completed run.
func (r *loadResult) done(id string) {
	atomic.AddInt64(&r.completed, 1)
	r.mu.Lock()
	r.completeIDs = append(r.completeIDs, id)
	r.mu.Unlock()
}

// completedRuns returns the ids of the completed runs, oldest first.
func (r *loadResult) completedRuns() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.completeIDs...)
}

// drive keeps o.concurrency runs going for o.duration: every other run is
// streamed over SSE and checked, the others are polled until they end.
func drive(ctx context.Context, s *stack, o options, out io.Writer) (*loadResult, error) {
	fmt.Fprintf(out, "\nload: %d runs at once x %d responses each, for %v (every other run streamed)\n", o.concurrency, o.responses, o.duration)
	res := &loadResult{}
	start := time.Now()
	loadCtx, stopLoad := context.WithTimeout(ctx, o.duration)
	defer stopLoad()
	client := &http.Client{}
	var wg sync.WaitGroup
	var seq atomic.Int64
	var errMu sync.Mutex
	var firstErr error
	for i := 0; i < o.concurrency; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for loadCtx.Err() == nil {
				n := seq.Add(1)
				// The run itself is not cut short when the load ends: it is
				// awaited (up to 2 minutes) so the summary counts whole runs.
				runCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
				err := oneRun(runCtx, client, s.apiURL, o.responses, n%2 == 0, res)
				cancel()
				if err != nil && ctx.Err() == nil {
					errMu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					errMu.Unlock()
					atomic.AddInt64(&res.failed, 1)
					time.Sleep(100 * time.Millisecond)
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-done:
			res.elapsed = time.Since(start)
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if firstErr != nil && res.completed == 0 {
				return nil, fmt.Errorf("no run completed; first error: %w", firstErr)
			}
			if firstErr != nil {
				fmt.Fprintf(out, "  note: %d runs failed; first error: %v\n", res.failed, firstErr)
			}
			return res, nil
		case <-ctx.Done():
			<-done
			return nil, ctx.Err()
		case <-tick.C:
			if err := s.procs.exited(); err != nil {
				return nil, err
			}
			progress(ctx, s, res, time.Since(start), out)
		}
	}
}

func progress(ctx context.Context, s *stack, res *loadResult, elapsed time.Duration, out io.Writer) {
	var inFlight, waiting, limit, used, max int64
	for _, u := range s.workerURLs {
		info, err := connectionInfo(ctx, u)
		if err != nil || info.Limiter == nil {
			continue
		}
		inFlight += info.Limiter.InFlight
		waiting += info.Limiter.Waiting
		limit += info.Limiter.Limit
		used += int64(info.Pool.TotalConns - info.Pool.IdleConns)
		max += int64(info.Pool.MaxConns)
	}
	fmt.Fprintf(out, "  %5.0fs  runs started %4d done %4d failed %d | streamed %7d responses | workers: limiter %3d/%d in flight, %3d waiting; pool %3d/%d used\n",
		elapsed.Seconds(), atomic.LoadInt64(&res.started), atomic.LoadInt64(&res.completed), atomic.LoadInt64(&res.failed),
		atomic.LoadInt64(&res.streamedResponses), inFlight, limit, waiting, used, max)
}

func connectionInfo(ctx context.Context, base string) (conn.ConnectionInfo, error) {
	var info conn.ConnectionInfo
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/debug/connections", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return info, err
	}
	defer resp.Body.Close()
	return info, json.NewDecoder(resp.Body).Decode(&info)
}

func oneRun(ctx context.Context, client *http.Client, api string, responses int, stream bool, res *loadResult) error {
	body := strings.NewReader(`{"responses": ` + strconv.Itoa(responses) + `}`)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, api+"/runs", body)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	var started struct{ ID string }
	err = json.NewDecoder(resp.Body).Decode(&started)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted || err != nil {
		return fmt.Errorf("POST /runs: %s", resp.Status)
	}
	atomic.AddInt64(&res.started, 1)
	if stream {
		n, final, err := streamRun(ctx, client, api, started.ID, &res.streamedResponses)
		if err != nil {
			return err
		}
		atomic.AddInt64(&res.streamed, 1)
		if n != responses || final != "completed" {
			atomic.AddInt64(&res.broken, 1)
			return fmt.Errorf("run %s streamed %d of %d responses, ended %q", started.ID, n, responses, final)
		}
		res.done(started.ID)
		return nil
	}
	for {
		st, err := runStatus(ctx, client, api, started.ID)
		if err != nil {
			return err
		}
		switch st.Status {
		case "completed":
			res.done(started.ID)
			return nil
		case "stopped", "failed":
			return fmt.Errorf("run %s ended %s", started.ID, st.Status)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func runStatus(ctx context.Context, client *http.Client, api, id string) (agentrun.Status, error) {
	var st agentrun.Status
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, api+"/runs/"+id, nil)
	resp, err := client.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("GET /runs/%s: %s", id, resp.Status)
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// streamRun reads a run's SSE stream, checking that responses arrive in
// order; it returns how many arrived and the final status.
func streamRun(ctx context.Context, client *http.Client, api, id string, counter *int64) (int, string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, api+"/runs/"+id+"/stream", nil)
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, "", fmt.Errorf("GET stream: %s", resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	n := 0
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		var r agentrun.Response
		if err := json.Unmarshal([]byte(data), &r); err != nil {
			return n, "", fmt.Errorf("run %s: bad event %q", id, data)
		}
		if r.Final() {
			return n, r.Status, nil
		}
		if r.Seq != n {
			return n, "", fmt.Errorf("run %s: response %d arrived as number %d", id, r.Seq, n)
		}
		n++
		atomic.AddInt64(counter, 1)
	}
	return n, "", fmt.Errorf("run %s: stream ended without a final status after %d responses: %v", id, n, sc.Err())
}
