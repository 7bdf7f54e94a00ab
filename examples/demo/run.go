package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redisconn/redisconn/internal/jaeger"
	"github.com/redisconn/redisconn/internal/redistest"
)

func netListen() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }

// stack is what the demo started and where it listens.
type stack struct {
	procs      *procs
	redis      *redistest.Server // nil with REDIS_URL
	redisEnv   []string
	redisAddr  string
	apiURL     string
	workerURLs []string
	promURL    string           // empty without prometheus
	rulesFile  string           // empty when alerts/ has none
	jaeger     *jaeger.Instance // nil without traces
	sampler    string           // the services' sampler, as the demo set it
}

func run(ctx context.Context, o options, out io.Writer) (err error) {
	dir, err := os.MkdirTemp("", "redisconn-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	s := &stack{procs: &procs{dir: dir}}
	defer s.stop()

	fmt.Fprintln(out, "redisconn demo: an API and two workers sharing one Redis")
	if err := s.startRedis(dir, out); err != nil {
		return err
	}
	if !o.contrastOnly {
		if err := s.startPlatform(ctx, o, dir, out); err != nil {
			return err
		}
		load, err := drive(ctx, s, o, out)
		if err != nil {
			return err
		}
		sum, err := collect(ctx, s, load)
		if err != nil {
			return err
		}
		sum.print(out)
		s.showTraces(ctx, load, out)
	}
	if o.contrast || o.contrastOnly {
		if err := contrast(ctx, s.redisOptions(), o, out); err != nil {
			return err
		}
	}
	if !o.contrastOnly {
		s.whereToLook(out, o.keep)
		if o.keep {
			<-ctx.Done() // Ctrl-C
		}
	}
	return nil
}

func (s *stack) stop() {
	s.procs.stop()
	if s.redis != nil {
		s.redis.Stop()
	}
}

func (s *stack) startRedis(dir string, out io.Writer) error {
	if url := os.Getenv("REDIS_URL"); url != "" {
		opt, err := redis.ParseURL(url)
		if err != nil {
			return fmt.Errorf("REDIS_URL: %v", err)
		}
		s.redisEnv, s.redisAddr = []string{"REDIS_URL=" + url}, opt.Addr
		fmt.Fprintf(out, "  redis       %s (REDIS_URL)\n", opt.Addr)
		return nil
	}
	srv, err := redistest.StartProcess(redistest.Options{}, filepath.Join(dir, "redis"))
	if err != nil {
		return err
	}
	s.redis = srv
	s.redisAddr = srv.Addr()
	s.redisEnv = []string{"REDIS_URL=", "REDIS_HOST=127.0.0.1", "REDIS_PORT=" + strconv.Itoa(srv.Port())}
	fmt.Fprintf(out, "  redis       %s (ephemeral redis-server, stopped at the end)\n", srv.Addr())
	return nil
}

func (s *stack) redisOptions() *redis.Options {
	if url := os.Getenv("REDIS_URL"); url != "" {
		opt, _ := redis.ParseURL(url)
		return opt
	}
	return &redis.Options{Addr: s.redisAddr}
}

// moduleRoot is the folder of go.mod, where the examples are built from.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("run the demo from the redisconn repository (make demo)")
	}
	return filepath.Dir(gomod), nil
}

func (s *stack) startPlatform(ctx context.Context, o options, dir string, out io.Writer) error {
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	bins := map[string]string{}
	for _, name := range []string{"api", "worker"} {
		bin := filepath.Join(dir, name)
		build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./examples/"+name)
		build.Dir = root
		if b, err := build.CombinedOutput(); err != nil {
			return fmt.Errorf("building examples/%s: %v\n%s", name, err, b)
		}
		bins[name] = bin
	}
	env := append([]string{}, s.redisEnv...)
	if os.Getenv("OTEL_TRACES_EXPORTER") == "" && os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" {
		// Spans go to a Jaeger of the demo's own (built when missing);
		// without it they stay in-process (they still give the metrics
		// their exemplars). With OTEL_* set, they go where those say.
		env = append(env, s.startJaeger(ctx, root, dir, o, out)...)
	}
	apiAddr, err := freeAddr()
	if err != nil {
		return err
	}
	if _, err := s.procs.start("api", bins["api"], []string{"-listen", apiAddr}, env); err != nil {
		return err
	}
	s.apiURL = "http://" + apiAddr
	for i := 1; i <= 2; i++ {
		addr, err := freeAddr()
		if err != nil {
			return err
		}
		name := "worker" + strconv.Itoa(i)
		if _, err := s.procs.start(name, bins["worker"], []string{"-listen", addr, "-name", name}, env); err != nil {
			return err
		}
		s.workerURLs = append(s.workerURLs, "http://"+addr)
	}
	if err := s.procs.waitHTTP(ctx, s.apiURL+"/healthz", 30*time.Second); err != nil {
		return err
	}
	for _, u := range s.workerURLs {
		if err := s.procs.waitHTTP(ctx, u+"/metrics", 30*time.Second); err != nil {
			return err
		}
	}
	fmt.Fprintf(out, "  api         %s\n", s.apiURL)
	for i, u := range s.workerURLs {
		fmt.Fprintf(out, "  worker%d     %s\n", i+1, u)
	}
	return s.startPrometheus(ctx, root, dir, out)
}

func (s *stack) startPrometheus(ctx context.Context, root, dir string, out io.Writer) error {
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		fmt.Fprintln(out, "  prometheus  not installed (make deps installs it); skipping")
		return nil
	}
	rules, _ := filepath.Glob(filepath.Join(root, "alerts", "*.rules.yml"))
	var targets []string
	for _, u := range append([]string{s.apiURL}, s.workerURLs...) {
		targets = append(targets, "'"+strings.TrimPrefix(u, "http://")+"'")
	}
	var ruleLines string
	for _, r := range rules {
		ruleLines += "  - '" + r + "'\n"
	}
	if ruleLines != "" {
		ruleLines = "rule_files:\n" + ruleLines
		s.rulesFile = strings.Join(rules, ", ")
	}
	config := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
%sscrape_configs:
  - job_name: redisconn-demo
    static_configs:
      - targets: [%s]
`, ruleLines, strings.Join(targets, ", "))
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o600); err != nil {
		return err
	}
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	if _, err := s.procs.start("prometheus", bin, []string{
		"--config.file=" + cfgPath,
		"--storage.tsdb.path=" + filepath.Join(dir, "prometheus-data"),
		"--web.listen-address=" + addr,
		"--enable-feature=exemplar-storage",
	}, nil); err != nil {
		return err
	}
	s.promURL = "http://" + addr
	if err := s.procs.waitHTTP(ctx, s.promURL+"/-/ready", 30*time.Second); err != nil {
		return err
	}
	fmt.Fprintf(out, "  prometheus  %s (1 s scrapes, exemplar storage on", s.promURL)
	if s.rulesFile != "" {
		fmt.Fprintf(out, ", rules %s", s.rulesFile)
	}
	fmt.Fprintln(out, ")")
	return nil
}

func (s *stack) whereToLook(out io.Writer, keep bool) {
	if keep {
		fmt.Fprintln(out, "\nwhere to look (everything keeps running until Ctrl-C):")
	} else {
		fmt.Fprintln(out, "\nwhere to look (DEMO_KEEP=1 keeps everything running until Ctrl-C):")
	}
	fmt.Fprintf(out, "  %s/metrics, %s/debug/connections\n", s.apiURL, s.apiURL)
	for _, u := range s.workerURLs {
		fmt.Fprintf(out, "  %s/metrics, %s/debug/connections\n", u, u)
	}
	if s.promURL != "" {
		fmt.Fprintf(out, "  %s/alerts, %s/graph?g0.expr=redisconn_limiter_in_flight\n", s.promURL, s.promURL)
		fmt.Fprintf(out, "  exemplars: %s/api/v1/query_exemplars?query=redisconn_limiter_wait_time_seconds_bucket\n", s.promURL)
	}
	if s.jaeger != nil {
		fmt.Fprintf(out, "  Jaeger query API: %s/api/services, %s/api/traces?service=agent-worker&operation=agent.run&limit=20&lookback=1h,\n", s.jaeger.QueryURL, s.jaeger.QueryURL)
		fmt.Fprintf(out, "    %s/api/traces/TRACE_ID (or /api/v3/traces/TRACE_ID, OTLP JSON); no web UI in this build\n", s.jaeger.QueryURL)
		fmt.Fprintf(out, "  a run's trace as a waterfall: go run ./examples/trace -jaeger %s RUN_ID|TRACE_ID  (-all: every span)\n", s.jaeger.QueryURL)
	}
	if root, err := moduleRoot(); err == nil {
		if boards, _ := filepath.Glob(filepath.Join(root, "dashboards", "*.json")); len(boards) > 0 {
			fmt.Fprintf(out, "  Grafana: import %s (README: Dashboards and alerts)\n", strings.Join(boards, ", "))
		}
	}
}
