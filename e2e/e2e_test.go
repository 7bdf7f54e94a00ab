//go:build e2e

// Package e2e proves the dashboards and the alert rules against a real
// Prometheus: a worker and an API manager are driven into exhaustion against a
// real redis-server (tiny pools, maxclients reached, server paused with
// SIGSTOP), Prometheus scrapes them every second with the project's rules
// loaded (their `for:` shortened in a temporary copy), and the test asserts
// through the Prometheus HTTP API that the exhaustion alerts go pending or
// firing, that every dashboard query and every rule expression parses and
// returns data, that the fleet's connection budget adds up both managers, and
// that exemplars can be queried. No Sentinel manager runs here: queries and
// alerts of Sentinel-only signals (telemetry.Signal.SentinelOnly) must parse and
// return nothing, and those alerts must stay silent.
//
// ramps_test.go measures the alerts' lead time: real managers driven step by
// step toward four kinds of exhaustion (the Worker's limiter, the API's pool,
// the server's maxclients, a fleet over its connection budget), a real
// Prometheus with the shipped rules at production pace scaled down 5 times,
// and whether an alert fires before the first caller fails; and that the
// demo's load raises no alert.
//
// traces_test.go proves the traces of an agent run against a real Jaeger
// (built once from tools/go.mod by scripts/jaeger.sh when missing): the
// example API and worker processes, a password-protected redis-server, one
// POST /runs, one trace. Run: make e2e.
package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redisconn/redisconn/conn"
	"github.com/redisconn/redisconn/internal/redistest"
	"github.com/redisconn/redisconn/otelsetup"
	"github.com/redisconn/redisconn/telemetry"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.yaml.in/yaml/v3"
)

const (
	rulesFile     = "../alerts/redisconn.rules.yml"
	dashboardFile = "../dashboards/redisconn.json"
)

// The alerts that the exhaustion below must bring to pending or firing.
var exhaustionAlerts = []string{
	"RedisconnPoolNearExhaustion",
	"RedisconnPoolTimeouts",
	"RedisconnLimiterSaturated",
	"RedisconnLimiterWaitHigh",
	"RedisconnLimiterWaitersPilingUp",
	"RedisconnServerClientsNearMax",
	"RedisconnServerRejectingConnections",
}

func TestDashboardsAndAlertsAgainstPrometheus(t *testing.T) {
	promBin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatal("prometheus is not installed: run `make deps` (apt-get install prometheus)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	// Redis with room for 40 clients.
	srv := redistest.Start(t, redistest.Options{Args: []string{"--maxclients", "40"}})

	// The managers, with the SDK sampling every trace so exemplars exist.
	tel, err := otelsetup.Setup(ctx, otelsetup.WithGlobal(false), otelsetup.WithServiceName("e2e"),
		otelsetup.WithSampler(sdktrace.AlwaysSample()), otelsetup.WithSpanExporter(tracetest.NewInMemoryExporter()))
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(context.Background())
	opts := []conn.Option{conn.WithMeterProvider(tel.MeterProvider), conn.WithTracerProvider(tel.TracerProvider)}
	wcfg := conn.DefaultConfig(conn.RoleWorker)
	wcfg.Host, wcfg.Port, wcfg.PoolSize, wcfg.MaxConcurrentOps = "127.0.0.1", srv.Port(), 8, 4
	w, err := conn.NewWorker(ctx, wcfg, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	acfg := conn.DefaultConfig(conn.RoleAPI)
	acfg.Host, acfg.Port, acfg.PoolSize, acfg.PoolTimeout = "127.0.0.1", srv.Port(), 2, 100*time.Millisecond
	api, err := conn.NewAPI(ctx, acfg, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer api.Close()

	// /metrics on a free port.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	metricsSrv := &http.Server{Handler: tel.Handler()}
	go metricsSrv.Serve(l)
	defer metricsSrv.Close()

	prom := startPrometheus(t, promBin, l.Addr().String())

	// Phase 1, healthy traffic, inside sampled spans: every family gets data.
	normalTraffic(t, ctx, tel, w, api)

	// Phase 2, the server runs out of clients: the rest of maxclients taken by
	// raw connections, and one more refused. Long enough for the managers'
	// INFO cache (10 s) to see it.
	seen := newAlertWatch(prom)
	raw := srv.FillMaxClients(t, 45)
	seen.watchFor(ctx, telemetry.ServerInfoMaxAge+2*time.Second)

	// Phase 3, the server, still full, stalls (SIGSTOP): the worker's limiter
	// saturates with callers queueing behind it, the API's tiny pool times out.
	srv.Pause()
	var wg sync.WaitGroup
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			// Pipelines take a permit each: the limiter fills up. Single
			// commands (and batch chunks) queue for coalescing, whose round
			// trips take a permit each, and count as waiting.
			if i%2 == 0 {
				_, _ = w.Pipelined(c, func(p redis.Pipeliner) error {
					p.Get(c, "e2e:k")
					return nil
				})
			} else {
				_ = w.Get(c, "e2e:k").Err()
			}
		}()
	}
	stopAPI := make(chan struct{})
	go func() {
		for {
			select {
			case <-stopAPI:
				return
			default:
			}
			for i := 0; i < 10; i++ {
				go func() {
					c, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
					defer cancel()
					_ = api.Get(c, "e2e:k").Err()
				}()
			}
			time.Sleep(200 * time.Millisecond)
		}
	}()
	seen.watchFor(ctx, 12*time.Second)
	srv.Resume()
	close(stopAPI)
	// Room again. (While the server is full, a manager that lost connections
	// in the stall may find every slot taken by others: ErrMaxClients.)
	for _, c := range raw {
		_ = c.Close()
	}
	wg.Wait() // the queued callers now get permits after long waits
	resumed := time.Now()
	var werr, aerr error
	if !redistest.WaitFor(ctx, 10*time.Second, func() bool {
		c, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		werr, aerr = w.Ping(c).Err(), api.Ping(c).Err()
		return werr == nil && aerr == nil
	}) {
		t.Fatalf("the managers did not recover within 10 s of the server resuming with room: worker: %v; api: %v", werr, aerr)
	}
	t.Logf("managers working again %v after the queued callers finished", time.Since(resumed).Round(time.Millisecond))
	// Keep some traffic so rates and quantiles have fresh samples.
	normalTraffic(t, ctx, tel, w, api)
	seen.watchFor(ctx, 15*time.Second)

	for _, name := range exhaustionAlerts {
		if state := seen.best(name); state != "firing" && state != "pending" {
			t.Errorf("alert %s never went pending or firing (saw %q)", name, state)
		}
	}
	if state := seen.best("RedisconnMetricsAbsent"); state != "" {
		t.Errorf("RedisconnMetricsAbsent was %s while metrics were scraped", state)
	}
	// The fleet's pools (8 + 2 connections) are far below maxclients (40).
	if state := seen.best("RedisconnFleetOverConnectionBudget"); state != "" {
		t.Errorf("RedisconnFleetOverConnectionBudget was %s for a budget of a quarter of maxclients", state)
	}
	// No Sentinel manager runs: alerts on Sentinel-only series have nothing to fire on.
	for _, r := range ruleExprs(t) {
		if !r.record && sentinelOnly(r.expr) {
			if state := seen.best(r.name); state != "" {
				t.Errorf("alert %s (Sentinel only) was %s without a Sentinel manager", r.name, state)
			}
		}
	}
	t.Logf("alert states seen: %v", seen.states())

	// Every dashboard query, variables substituted, parses and returns data;
	// a query of Sentinel-only signals returns nothing (no Sentinel manager).
	for _, q := range dashboardQueries(t) {
		res, err := prom.query(ctx, q.expr)
		if err != nil {
			t.Errorf("dashboard panel %q: %v\n  %s", q.panel, err, q.expr)
			continue
		}
		switch {
		case sentinelOnly(q.expr) && res != 0:
			t.Errorf("dashboard panel %q returns %d series of Sentinel-only signals without a Sentinel manager:\n  %s", q.panel, res, q.expr)
		case !sentinelOnly(q.expr) && res == 0:
			t.Errorf("dashboard panel %q returns no data:\n  %s", q.panel, q.expr)
		}
	}
	// Every rule expression parses; recording rules return data (those of
	// Sentinel-only signals none).
	for _, r := range ruleExprs(t) {
		n, err := prom.query(ctx, r.expr)
		if err != nil {
			t.Errorf("rule %s: %v", r.name, err)
			continue
		}
		if !r.record {
			continue
		}
		if sentinelOnly(r.expr) {
			if n != 0 {
				t.Errorf("recording rule %s (Sentinel only) returns %d series without a Sentinel manager", r.name, n)
			}
			continue
		}
		if n == 0 {
			t.Errorf("recording rule %s returns no data", r.name)
		}
		if m, err := prom.query(ctx, r.name); err != nil || m == 0 {
			t.Errorf("recorded series %s missing in Prometheus: %v", r.name, err)
		}
	}
	// The fleet's connection budget of the server is both managers' pool
	// maxima plus their pub/sub connections (one process, two roles, one pool
	// name), against the server's maxclients.
	checkFleetBudget(t, ctx, prom, fmt.Sprintf("127.0.0.1:%d/0", srv.Port()), w, api)
	// Exemplars reach Prometheus and carry trace ids.
	n, err := prom.exemplars(ctx, `db_client_operation_duration_seconds_bucket`)
	if err != nil || n == 0 {
		t.Errorf("no exemplars on db_client_operation_duration_seconds_bucket: %v", err)
	}
	n, err = prom.exemplars(ctx, `redisconn_limiter_wait_time_seconds_bucket`)
	if err != nil || n == 0 {
		t.Errorf("no exemplars on redisconn_limiter_wait_time_seconds_bucket: %v", err)
	}
}

func normalTraffic(t *testing.T, ctx context.Context, tel *otelsetup.Telemetry, w *conn.Worker, api *conn.API) {
	t.Helper()
	tracer := tel.TracerProvider.Tracer("e2e")
	for i := 0; i < 20; i++ {
		c, span := tracer.Start(ctx, "agent.run")
		values := make([]any, 120)
		for j := range values {
			values[j] = j
		}
		if _, err := w.BatchRPush(c, "e2e:list", values...); err != nil {
			t.Fatal(err)
		}
		if _, err := w.BatchPublish(c, "e2e:ch", values[:60]...); err != nil {
			t.Fatal(err)
		}
		_ = w.Set(c, "e2e:string", "v", time.Minute).Err()
		_ = w.LPush(c, "e2e:string", "x").Err() // WRONGTYPE: an error_type series
		_ = api.Get(c, "e2e:string").Err()
		span.End()
		time.Sleep(100 * time.Millisecond)
	}
}

// prometheus is a real Prometheus started for the test.
type prometheus struct {
	base string
}

// startPrometheus starts Prometheus scraping target and evaluating the
// project's rules every second, with every `for:` at 1s (in a temporary copy
// only).
func startPrometheus(t *testing.T, bin, target string) *prometheus {
	t.Helper()
	forAll := regexp.MustCompile(`(?m)^(\s+)for: \S+`)
	return startPrometheusWith(t, bin, target, time.Second, func(rules []byte) []byte {
		return forAll.ReplaceAll(rules, []byte("${1}for: 1s"))
	})
}

// startPrometheusWith starts Prometheus scraping target and evaluating the
// project's rules, as rewrite returns them, every interval.
func startPrometheusWith(t *testing.T, bin, target string, interval time.Duration, rewrite func([]byte) []byte) *prometheus {
	t.Helper()
	dir := t.TempDir()
	rules, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "rules.yml"), rewrite(rules), 0o600); err != nil {
		t.Fatal(err)
	}
	config := fmt.Sprintf(`global:
  scrape_interval: %s
  evaluation_interval: %s
rule_files: [%q]
scrape_configs:
  - job_name: redisconn-e2e
    static_configs:
      - targets: [%q]
`, promDuration(interval), promDuration(interval), filepath.Join(dir, "rules.yml"), target)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	port, err := redistest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	logf, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin,
		"--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
		"--enable-feature=exemplar-storage",
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "prometheus.log"))
			t.Logf("prometheus log:\n%s", tailLines(string(b), 30))
		}
	})
	p := &prometheus{base: "http://" + addr}
	if !redistest.WaitFor(context.Background(), 30*time.Second, func() bool {
		resp, err := http.Get(p.base + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	}) {
		t.Fatal("prometheus did not become ready")
	}
	// Wait until the target is scraped.
	if !redistest.WaitFor(context.Background(), 30*time.Second, func() bool {
		n, err := p.query(context.Background(), `up{job="redisconn-e2e"} == 1`)
		return err == nil && n > 0
	}) {
		t.Fatal("prometheus did not scrape the managers")
	}
	return p
}

// promDuration writes d as Prometheus reads durations: whole milliseconds.
func promDuration(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) + "ms" }

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// promAlert is an alert of Prometheus's /api/v1/alerts: pending or firing.
type promAlert struct {
	Labels map[string]string `json:"labels"`
	State  string            `json:"state"`
}

// alerts returns the alerts Prometheus holds now, pending and firing.
func (p *prometheus) alerts(ctx context.Context) ([]promAlert, error) {
	var data struct {
		Alerts []promAlert `json:"alerts"`
	}
	err := p.get(ctx, "/api/v1/alerts", nil, &data)
	return data.Alerts, err
}

func (p *prometheus) get(ctx context.Context, path string, params url.Values, out any) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.base+path+"?"+params.Encode(), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var env struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return fmt.Errorf("%s: %s", resp.Status, body)
	}
	if env.Status != "success" {
		return errors.New(env.Error)
	}
	return json.Unmarshal(env.Data, out)
}

// query runs an instant query and returns how many series it returned.
func (p *prometheus) query(ctx context.Context, expr string) (int, error) {
	var data struct {
		Result []json.RawMessage `json:"result"`
	}
	err := p.get(ctx, "/api/v1/query", url.Values{"query": {expr}}, &data)
	return len(data.Result), err
}

// vector runs an instant query and returns the value of each series.
func (p *prometheus) vector(ctx context.Context, expr string) ([]float64, error) {
	var data struct {
		Result []struct {
			Value [2]json.RawMessage `json:"value"`
		} `json:"result"`
	}
	if err := p.get(ctx, "/api/v1/query", url.Values{"query": {expr}}, &data); err != nil {
		return nil, err
	}
	var out []float64
	for _, r := range data.Result {
		var s string
		if err := json.Unmarshal(r.Value[1], &s); err != nil {
			return nil, err
		}
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// exemplars counts exemplars with a trace_id over the last 5 minutes.
func (p *prometheus) exemplars(ctx context.Context, expr string) (int, error) {
	ids, err := p.exemplarTraceIDs(ctx, expr)
	return len(ids), err
}

// alertWatch remembers the most advanced state each alert reached.
type alertWatch struct {
	p  *prometheus
	mu sync.Mutex
	st map[string]string
}

func newAlertWatch(p *prometheus) *alertWatch { return &alertWatch{p: p, st: map[string]string{}} }

func (a *alertWatch) watchFor(ctx context.Context, d time.Duration) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if alerts, err := a.p.alerts(ctx); err == nil {
			a.mu.Lock()
			for _, al := range alerts {
				name := al.Labels["alertname"]
				if a.st[name] != "firing" {
					a.st[name] = al.State
				}
			}
			a.mu.Unlock()
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func (a *alertWatch) best(name string) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.st[name]
}

func (a *alertWatch) states() map[string]string {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := map[string]string{}
	for k, v := range a.st {
		out[k] = v
	}
	return out
}

// sentinelOnly reports whether expr names a series that only a manager in
// Sentinel mode exports (telemetry.Signal.SentinelOnly).
func sentinelOnly(expr string) bool {
	for _, sig := range telemetry.Signals() {
		if !sig.SentinelOnly {
			continue
		}
		for _, name := range sig.PrometheusSeries() {
			if regexp.MustCompile(`\b` + regexp.QuoteMeta(name) + `\b`).MatchString(expr) {
				return true
			}
		}
	}
	return false
}

// checkFleetBudget compares the fleet rules of the server pool with what the
// managers report in ConnectionInfo.
func checkFleetBudget(t *testing.T, ctx context.Context, prom *prometheus, pool string, w *conn.Worker, api *conn.API) {
	t.Helper()
	wi, werr := w.ConnectionInfo(ctx)
	ai, aerr := api.ConnectionInfo(ctx)
	if werr != nil || aerr != nil {
		t.Errorf("ConnectionInfo: worker: %v; api: %v", werr, aerr)
		return
	}
	want := map[string]float64{
		"redisconn:fleet_connection_budget:sum": float64(wi.Pool.MaxConns + ai.Pool.MaxConns + int(wi.PubSub.Active) + int(ai.PubSub.Active)),
		"redisconn:fleet_maxclients:max":        float64(wi.Server.MaxClients),
	}
	for rule, v := range want {
		got, err := prom.vector(ctx, fmt.Sprintf(`%s{db_client_connection_pool_name=%q}`, rule, pool))
		switch {
		case err != nil:
			t.Errorf("%s: %v", rule, err)
		case len(got) != 1:
			t.Errorf("%s for %s: %d series, want 1", rule, pool, len(got))
		case got[0] != v:
			t.Errorf("%s for %s = %v, want %v (worker pool %d, api pool %d, pub/sub %d+%d, maxclients %d)", rule, pool, got[0], v,
				wi.Pool.MaxConns, ai.Pool.MaxConns, wi.PubSub.Active, ai.PubSub.Active, wi.Server.MaxClients)
		}
	}
}

type panelQuery struct{ panel, expr string }

// dashboardQueries are the dashboard's PromQL expressions with the variables
// as "All" (each variable's own All value, as Grafana substitutes it) and
// $__rate_interval as Grafana would set it for a 1 s scrape.
func dashboardQueries(t *testing.T) []panelQuery {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name     string `json:"name"`
				AllValue string `json:"allValue"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	subst := []string{"$__rate_interval", "30s"}
	for _, v := range d.Templating.List {
		switch v.Name {
		case "job", "instance", "role":
			all := v.AllValue
			if all == "" {
				all = ".*" // Grafana's All without a custom value: the values, as a regexp
			}
			subst = append(subst, "$"+v.Name, all)
		}
	}
	if len(subst) != 8 {
		t.Fatalf("%s: variables job, instance and role not all found (%v)", dashboardFile, subst)
	}
	r := strings.NewReplacer(subst...)
	var out []panelQuery
	for _, p := range d.Panels {
		for _, q := range p.Targets {
			out = append(out, panelQuery{p.Title, r.Replace(q.Expr)})
		}
	}
	if len(out) < 20 {
		t.Fatalf("only %d queries in %s", len(out), dashboardFile)
	}
	return out
}

type ruleExpr struct {
	name, expr string
	record     bool
}

func ruleExprs(t *testing.T) []ruleExpr {
	t.Helper()
	b, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Groups []struct {
			Rules []struct {
				Record string `yaml:"record"`
				Alert  string `yaml:"alert"`
				Expr   string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	var out []ruleExpr
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			name := r.Record
			if name == "" {
				name = r.Alert
			}
			out = append(out, ruleExpr{name: name, expr: r.Expr, record: r.Record != ""})
		}
	}
	return out
}
