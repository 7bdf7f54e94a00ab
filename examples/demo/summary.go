package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// summary is what the demo prints at the end of the load.
type summary struct {
	load                              *loadResult
	responsesWritten, operations      float64
	chunkCount, chunkSum              float64 // batch op chunks: items
	coalescedCount, coalescedSum      float64 // coalesced pipelines: commands
	waitP50, waitP99, waitMax         float64 // seconds
	hits, misses, timeouts, waits     float64
	rejected                          float64
	maxInFlight                       float64
	alerts                            []string
	serverConnected, serverMaxClients float64
	apiOperations                     float64
}

// collect scrapes the workers and the API once more and asks Prometheus for alerts.
func collect(ctx context.Context, s *stack, load *loadResult) (*summary, error) {
	sum := &summary{load: load}
	var wait []*dto.Histogram
	for _, u := range s.workerURLs {
		fams, err := scrape(ctx, u)
		if err != nil {
			return nil, err
		}
		for _, m := range metrics(fams, "redisconn_batch_size") {
			op := label(m, "db_operation_name")
			if strings.HasPrefix(op, "BATCH") { // a coalesced pipeline: its commands
				sum.coalescedCount += float64(m.Histogram.GetSampleCount())
				sum.coalescedSum += m.Histogram.GetSampleSum()
				continue
			}
			sum.chunkCount += float64(m.Histogram.GetSampleCount())
			sum.chunkSum += m.Histogram.GetSampleSum()
			if op == "RPUSH" {
				sum.responsesWritten += m.Histogram.GetSampleSum()
			}
		}
		for _, m := range metrics(fams, "db_client_operation_duration_seconds") {
			sum.operations += float64(m.Histogram.GetSampleCount())
		}
		for _, m := range metrics(fams, "redisconn_limiter_wait_time_seconds") {
			wait = append(wait, m.Histogram)
		}
		sum.hits += total(fams, "redisconn_pool_hits_total")
		sum.misses += total(fams, "redisconn_pool_misses_total")
		sum.waits += total(fams, "redisconn_pool_waits_total")
		sum.timeouts += total(fams, "db_client_connection_timeouts_total")
		sum.rejected += total(fams, "redisconn_limiter_rejected_total")
		sum.serverConnected = math.Max(sum.serverConnected, total(fams, "redisconn_server_connected_clients"))
		sum.serverMaxClients = math.Max(sum.serverMaxClients, total(fams, "redisconn_server_maxclients"))
	}
	if fams, err := scrape(ctx, s.apiURL); err == nil {
		for _, m := range metrics(fams, "db_client_operation_duration_seconds") {
			sum.apiOperations += float64(m.Histogram.GetSampleCount())
		}
	}
	merged := mergeHistograms(wait)
	sum.waitP50, sum.waitP99 = quantile(merged, 0.5), quantile(merged, 0.99)
	if s.promURL != "" {
		sum.alerts, sum.maxInFlight = promAlerts(ctx, s.promURL)
	}
	return sum, nil
}

func scrape(ctx context.Context, base string) (map[string]*dto.MetricFamily, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scraping %s: %w", base, err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(resp.Body)
}

func metrics(fams map[string]*dto.MetricFamily, name string) []*dto.Metric {
	if f, ok := fams[name]; ok {
		return f.Metric
	}
	return nil
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.Label {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func total(fams map[string]*dto.MetricFamily, name string) float64 {
	var t float64
	for _, m := range metrics(fams, name) {
		switch {
		case m.Counter != nil:
			t += m.Counter.GetValue()
		case m.Gauge != nil:
			t += m.Gauge.GetValue()
		}
	}
	return t
}

type bucket struct{ le, count float64 }

func mergeHistograms(hs []*dto.Histogram) []bucket {
	byLE := map[float64]float64{}
	for _, h := range hs {
		hasInf := false
		for _, b := range h.Bucket {
			byLE[b.GetUpperBound()] += float64(b.GetCumulativeCount())
			hasInf = hasInf || math.IsInf(b.GetUpperBound(), 1)
		}
		if !hasInf {
			byLE[math.Inf(1)] += float64(h.GetSampleCount())
		}
	}
	var out []bucket
	for le, c := range byLE {
		out = append(out, bucket{le, c})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].le < out[j].le })
	return out
}

// quantile interpolates inside the bucket like PromQL's histogram_quantile.
func quantile(bs []bucket, q float64) float64 {
	if len(bs) == 0 || bs[len(bs)-1].count == 0 {
		return 0
	}
	rank := q * bs[len(bs)-1].count
	prevLE, prevCount := 0.0, 0.0
	for _, b := range bs {
		if b.count >= rank {
			if math.IsInf(b.le, 1) {
				return prevLE
			}
			if b.count == prevCount {
				return b.le
			}
			return prevLE + (b.le-prevLE)*(rank-prevCount)/(b.count-prevCount)
		}
		prevLE, prevCount = b.le, b.count
	}
	return prevLE
}

// promAlerts lists alerts pending or firing, and the highest limiter
// in-flight Prometheus saw during the load.
func promAlerts(ctx context.Context, base string) ([]string, float64) {
	var alerts []string
	var body struct {
		Data struct {
			Alerts []struct {
				Labels map[string]string `json:"labels"`
				State  string            `json:"state"`
			} `json:"alerts"`
		} `json:"data"`
	}
	if err := getJSON(ctx, base+"/api/v1/alerts", &body); err == nil {
		for _, a := range body.Data.Alerts {
			alerts = append(alerts, fmt.Sprintf("%s (%s, %s)", a.Labels["alertname"], a.State, a.Labels["redisconn_role"]))
		}
	}
	var q struct {
		Data struct {
			Result []struct {
				Value []any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	var maxInFlight float64
	if err := getJSON(ctx, base+"/api/v1/query?query=max(max_over_time(redisconn_limiter_in_flight[10m]))", &q); err == nil && len(q.Data.Result) > 0 {
		if s, ok := q.Data.Result[0].Value[1].(string); ok {
			fmt.Sscan(s, &maxInFlight)
		}
	}
	sort.Strings(alerts)
	return alerts, maxInFlight
}

func getJSON(ctx context.Context, url string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}

func (s *summary) print(out io.Writer) {
	l := s.load
	secs := l.elapsed.Seconds()
	mean := func(sum, count float64) float64 {
		if count == 0 {
			return 0
		}
		return sum / count
	}
	row := func(k, v string) { fmt.Fprintf(out, "  %-38s %s\n", k, v) }
	fmt.Fprintln(out, "\nsummary")
	row("runs started / completed / failed", fmt.Sprintf("%d / %d / %d", l.started, l.completed, l.failed))
	row("runs streamed (checked in order)", fmt.Sprintf("%d, %d responses, %d broken", l.streamed, l.streamedResponses, l.broken))
	row("responses written (BatchRPush)", fmt.Sprintf("%.0f in %.1fs = %.0f/s", s.responsesWritten, secs, s.responsesWritten/secs))
	row("worker Redis operations", fmt.Sprintf("%.0f = %.0f ops/s (each a round trip)", s.operations, s.operations/secs))
	row("API Redis operations", fmt.Sprintf("%.0f", s.apiOperations))
	row("batch chunks, mean size", fmt.Sprintf("%.0f, %.1f items", s.chunkCount, mean(s.chunkSum, s.chunkCount)))
	row("coalesced round trips, mean size", fmt.Sprintf("%.0f, %.1f commands", s.coalescedCount, mean(s.coalescedSum, s.coalescedCount)))
	row("limiter wait p50 / p99", fmt.Sprintf("%s / %s", s.waitBound(s.waitP50), s.waitBound(s.waitP99)))
	row("limiter rejections", fmt.Sprintf("%.0f", s.rejected))
	row("pool hits / misses / waits / timeouts", fmt.Sprintf("%.0f / %.0f / %.0f / %.0f", s.hits, s.misses, s.waits, s.timeouts))
	row("server clients / maxclients", fmt.Sprintf("%.0f / %.0f", s.serverConnected, s.serverMaxClients))
	if s.maxInFlight > 0 {
		row("max limiter in flight (Prometheus)", fmt.Sprintf("%.0f", s.maxInFlight))
	}
	switch {
	case s.alerts == nil && s.maxInFlight == 0:
		row("alerts pending or firing", "(Prometheus not running)")
	case len(s.alerts) == 0:
		row("alerts pending or firing", "none")
	default:
		row("alerts pending or firing", strings.Join(s.alerts, ", "))
	}
}

// waitBound says "≤10µs" for a quantile in the first bucket, where the
// histogram cannot tell 0 from 10 µs (most permits are granted at once).
func (s *summary) waitBound(sec float64) string {
	if sec <= 0.00001 {
		return "≤10µs"
	}
	return dur(sec)
}

func dur(sec float64) string {
	d := time.Duration(sec * float64(time.Second))
	switch {
	case d == 0:
		return "0"
	case d < time.Millisecond:
		return fmt.Sprintf("%dµs", d.Microseconds())
	default:
		return d.Round(10 * time.Microsecond).String()
	}
}
