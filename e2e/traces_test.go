//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redisconn/redisconn/examples/agentrun"
	"github.com/redisconn/redisconn/internal/jaeger"
	"github.com/redisconn/redisconn/internal/redistest"
)

const (
	apiService    = "agent-api"
	workerService = "agent-worker"
)

var (
	jaegerOnce sync.Once
	jaegerBin  string
	jaegerErr  error
)

// jaegerBinary finds Jaeger, or builds it once for the whole test binary
// (scripts/jaeger.sh: ~9 minutes the first time, its progress on stdout).
func jaegerBinary(t *testing.T) string {
	t.Helper()
	jaegerOnce.Do(func() {
		root, err := filepath.Abs("..")
		if err != nil {
			jaegerErr = err
			return
		}
		if _, ok, _ := jaeger.Path(context.Background(), root); !ok {
			fmt.Println("e2e: Jaeger is not built yet: building it with scripts/jaeger.sh (about 9 minutes the first time)")
		}
		jaegerBin, jaegerErr = jaeger.Ensure(context.Background(), root, os.Stdout)
	})
	if jaegerErr != nil {
		t.Fatalf("no Jaeger binary: %v", jaegerErr)
	}
	return jaegerBin
}

// proc is a child process of the test, stopped at its end; its output is
// in log, shown when the test fails.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

func startProc(t *testing.T, name, bin string, args, env []string) *proc {
	t.Helper()
	dir := t.TempDir()
	p := &proc{name: name, log: filepath.Join(dir, name+".log"), done: make(chan struct{})}
	logf, err := os.Create(p.log)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() { _ = p.cmd.Wait(); logf.Close(); close(p.done) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
		if t.Failed() {
			b, _ := os.ReadFile(p.log)
			t.Logf("%s log:\n%s", name, tailLines(string(b), 30))
		}
	})
	return p
}

// exited is an error once the process has ended.
func (p *proc) exited() error {
	select {
	case <-p.done:
		b, _ := os.ReadFile(p.log)
		return fmt.Errorf("%s exited early: %s", p.name, tailLines(string(b), 20))
	default:
		return nil
	}
}

// buildExample builds examples/name into dir.
func buildExample(t *testing.T, dir, name string) string {
	t.Helper()
	bin := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-o", bin, "./examples/"+name)
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building examples/%s: %v\n%s", name, err, out)
	}
	return bin
}

func freeAddr(t *testing.T) string {
	t.Helper()
	port, err := redistest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return "127.0.0.1:" + strconv.Itoa(port)
}

func waitHTTP(t *testing.T, p *proc, u string) {
	t.Helper()
	if !redistest.WaitFor(context.Background(), 30*time.Second, func() bool {
		if p.exited() != nil {
			return true
		}
		resp, err := http.Get(u)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}) {
		t.Fatalf("%s did not answer 200 within 30 s", u)
	}
	if err := p.exited(); err != nil {
		t.Fatal(err)
	}
}

// One POST /runs to the example API, worked by the example worker, both
// exporting OTLP to a real Jaeger, against a real redis-server with a
// password: Jaeger holds one trace of the run with the API's request span,
// the worker's agent.run, its BatchRPush and BatchPublish spans with their
// chunks and the Redis commands, each with the right parent and service; the
// limiter wait is on the worker's Redis spans; no attribute anywhere carries
// a key, a value, a channel name or the password; and an exemplar that
// Prometheus scraped from the worker leads to a trace Jaeger has.
func TestRunTraceInJaeger(t *testing.T) {
	promBin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatal("prometheus is not installed: run `make deps` (apt-get install prometheus)")
	}
	bin := jaegerBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	const password = "e2e-Pa55word-in-no-span"
	srv := redistest.Start(t, redistest.Options{Password: password})

	// Jaeger on free ports, in memory; three tries, as a port chosen free
	// can be taken by another process before Jaeger binds it.
	var in *jaeger.Instance
	for try := 1; in == nil; try++ {
		cand, err := jaeger.NewInstance(t.TempDir(), 10000)
		if err != nil {
			t.Fatal(err)
		}
		started := time.Now()
		jp := startProc(t, "jaeger", bin, cand.Args(), nil)
		err = cand.WaitHealthy(ctx, 30*time.Second, jp.exited)
		switch {
		case err == nil:
			in = cand
			t.Logf("jaeger healthy %v after start, query API %s", time.Since(started).Round(time.Millisecond), in.QueryURL)
		case try == 3:
			t.Fatal(err)
		default:
			t.Logf("jaeger did not start (try %d): %v", try, err)
			_ = syscall.Kill(-jp.cmd.Process.Pid, syscall.SIGKILL)
		}
	}

	// The example API and worker, built from examples/, every trace sampled.
	dir := t.TempDir()
	apiBin, workerBin := buildExample(t, dir, "api"), buildExample(t, dir, "worker")
	env := append(in.OTLPEnv(),
		"REDIS_URL=", "REDIS_HOST=127.0.0.1", "REDIS_PORT="+strconv.Itoa(srv.Port()), "REDIS_PASSWORD="+password,
		"REDIS_WORKER_BATCH_SIZE=50", "OTEL_TRACES_SAMPLER=parentbased_always_on", "OTEL_SERVICE_NAME=")
	apiAddr, workerAddr := freeAddr(t), freeAddr(t)
	api := startProc(t, "api", apiBin, []string{"-listen", apiAddr}, env)
	// 240 responses written 120 at a time: two BatchRPush and two
	// BatchPublish of 120 items, each in chunks of 50, 50 and 20.
	worker := startProc(t, "worker", workerBin, []string{"-listen", workerAddr, "-batch", "120", "-runs", "2"}, env)
	waitHTTP(t, api, "http://"+apiAddr+"/healthz")
	waitHTTP(t, worker, "http://"+workerAddr+"/metrics")
	prom := startPrometheus(t, promBin, workerAddr)

	// One run.
	resp, err := http.Post("http://"+apiAddr+"/runs", "application/json", strings.NewReader(`{"responses": 240}`))
	if err != nil {
		t.Fatal(err)
	}
	var run struct{ ID string }
	_ = json.NewDecoder(resp.Body).Decode(&run)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted || run.ID == "" {
		t.Fatalf("POST /runs: %s", resp.Status)
	}
	if !redistest.WaitFor(ctx, 30*time.Second, func() bool {
		var st agentrun.Status
		r, err := http.Get("http://" + apiAddr + "/runs/" + run.ID)
		if err != nil {
			return false
		}
		defer r.Body.Close()
		return json.NewDecoder(r.Body).Decode(&st) == nil && st.Status == "completed"
	}) {
		t.Fatalf("run %s did not complete within 30 s", run.ID)
	}

	// Its trace, found by the run id, once every span has arrived.
	c := &jaeger.Client{URL: in.QueryURL}
	var traceID string
	if !redistest.WaitFor(ctx, 20*time.Second, func() bool {
		traceID, err = c.FindRun(ctx, workerService, run.ID, time.Hour)
		return err == nil
	}) {
		t.Fatalf("Jaeger has no trace with agent.run.id=%s after 20 s: %v", run.ID, err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
	tr, err := c.WaitComplete(wctx, traceID, time.Second, func(tr *jaeger.Trace) bool { return complete(tr) == "" })
	wcancel()
	if err != nil {
		t.Fatal(err)
	}
	var wf bytes.Buffer
	jaeger.Waterfall(&wf, tr, jaeger.WaterfallOptions{})
	t.Logf("the run's trace:\n%s", wf.String())
	if missing := complete(tr); missing != "" {
		t.Fatalf("the trace of run %s is incomplete after 20 s: %s", run.ID, missing)
	}
	if ts, err := c.Search(ctx, workerService, jaeger.RunSpan, map[string]string{jaeger.RunIDAttr: run.ID}, 10, time.Hour); err != nil || len(ts) != 1 {
		t.Errorf("want exactly one trace of run %s, got %d (%v)", run.ID, len(ts), err)
	}
	checkShape(t, tr, run.ID)

	// The command a person runs prints the same trace, by run id and by trace id.
	for _, arg := range []string{run.ID, traceID} {
		cmd := exec.CommandContext(ctx, "go", "run", "./examples/trace", "-jaeger", in.QueryURL, arg)
		cmd.Dir = ".."
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("go run ./examples/trace %s: %v\n%s", arg, err, out)
		}
		for _, want := range []string{"trace " + traceID, "POST /runs", "└─ agent.run", "run " + run.ID, "BatchRPush", "BatchPublish", "120 items", "wait ", apiService, workerService} {
			if !bytes.Contains(out, []byte(want)) {
				t.Errorf("go run ./examples/trace %s: output lacks %q:\n%s", arg, want, out)
			}
		}
	}

	// No key, value, channel name or password in any attribute of any span
	// Jaeger has: every trace of both services, parsed and raw.
	forbidden := []string{password, agentrun.QueueKey, agentrun.LockKey(run.ID), agentrun.ResponsesKey(run.ID),
		agentrun.NewResponseChannel(run.ID), agentrun.ControlChannel(run.ID), "agent_run:", "agent_run_lock:",
		"token 0 of run", "of run " + run.ID}
	checkNoSecrets(t, ctx, c, traceID, run.ID, forbidden)

	// An exemplar's trace id from Prometheus is a trace in Jaeger.
	var found string
	var tried int
	redistest.WaitFor(ctx, 30*time.Second, func() bool {
		for _, q := range []string{"redisconn_limiter_wait_time_seconds_bucket", "db_client_operation_duration_seconds_bucket"} {
			ids, err := prom.exemplarTraceIDs(ctx, q)
			if err != nil {
				continue
			}
			for _, id := range ids {
				tried++
				if _, err := c.Trace(ctx, id); err == nil {
					found = q + " trace_id=" + id
					return true
				}
			}
		}
		return false
	})
	if found == "" {
		t.Errorf("no exemplar's trace id from Prometheus is in Jaeger (%d tried)", tried)
	} else {
		t.Logf("exemplar found in Jaeger: %s", found)
	}
}

// complete says what the trace still lacks ("" when nothing): the API's
// request span, the finished agent.run, two BatchRPush and two BatchPublish
// spans with three chunks each, and the run's last write.
func complete(tr *jaeger.Trace) string {
	count := map[string]int{}
	kids := map[string]int{}
	for _, s := range tr.Spans {
		count[s.Name]++
		if p := tr.Span(s.ParentID); p != nil && strings.HasPrefix(p.Name, "Batch") && s.Attr("db.system") == "redis" {
			kids[p.Name]++
		}
	}
	switch {
	case count["POST /runs"] != 1:
		return "the API's POST /runs span"
	case count[jaeger.RunSpan] != 1:
		return "the worker's agent.run span"
	case count["BatchRPush"] < 2 || count["BatchPublish"] < 2:
		return fmt.Sprintf("BatchRPush/BatchPublish spans (%d/%d of 2)", count["BatchRPush"], count["BatchPublish"])
	case kids["BatchRPush"] < 6 || kids["BatchPublish"] < 6:
		return fmt.Sprintf("chunk spans (%d/%d of 6)", kids["BatchRPush"], kids["BatchPublish"])
	}
	for _, s := range tr.Spans {
		if strings.HasPrefix(s.Name, "redis.pipeline multi") {
			return ""
		}
	}
	return "the run's final MULTI pipeline"
}

// setupSpan: connection set-up (dial, HELLO, AUTH, CLIENT SETINFO), which
// runs inside the permit of the command that needed the connection.
func setupSpan(s *jaeger.Span) bool {
	first := strings.Fields(strings.TrimPrefix(s.Name, "redis.pipeline "))
	return s.Name == "redis.dial" || len(first) > 0 && (first[0] == "hello" || first[0] == "auth" || first[0] == "client")
}

func checkShape(t *testing.T, tr *jaeger.Trace, runID string) {
	t.Helper()
	var root, runSpan *jaeger.Span
	for _, s := range tr.Spans {
		if s.ParentID == "" {
			if root != nil {
				t.Errorf("two root spans: %s and %s", root.Name, s.Name)
			}
			root = s
		} else if tr.Span(s.ParentID) == nil {
			t.Errorf("span %s (%s) has a parent %s that is not in the trace", s.Name, s.SpanID, s.ParentID)
		}
		if s.Service != apiService && s.Service != workerService {
			t.Errorf("span %s has service.name %q, want %s or %s", s.Name, s.Service, apiService, workerService)
		}
		if s.Name == jaeger.RunSpan {
			runSpan = s
		}
	}
	if root == nil || root.Name != "POST /runs" || root.Service != apiService || root.Kind != "server" {
		t.Fatalf("the root span is not the API's SERVER span POST /runs: %+v", root)
	}
	if runSpan == nil || runSpan.ParentID != root.SpanID || runSpan.Service != workerService {
		t.Fatalf("agent.run is not the worker's child of POST /runs: %+v", runSpan)
	}
	if runSpan.Attr(jaeger.RunIDAttr) != runID || runSpan.Attr("agent.run.status") != "completed" {
		t.Errorf("agent.run attributes: %v", runSpan.Attrs)
	}
	// under: whether s is below (or is) the span with id.
	under := func(s *jaeger.Span, id string) bool {
		for x := s; x != nil; x = tr.Span(x.ParentID) {
			if x.SpanID == id {
				return true
			}
		}
		return false
	}
	apiRedis, workerRedis := 0, 0
	for _, s := range tr.Spans {
		switch s.Service {
		case apiService:
			// The API's spans: its request span and the request's Redis commands.
			if s != root && (s.ParentID != root.SpanID || s.Kind != "client" || s.Attr("db.system") != "redis") {
				t.Errorf("API span %s (parent %s, kind %s) is not a Redis CLIENT span of POST /runs", s.Name, s.ParentID, s.Kind)
			}
			if s.Kind == "client" {
				apiRedis++
			}
		case workerService:
			if !under(s, runSpan.SpanID) {
				t.Errorf("worker span %s is not under agent.run", s.Name)
			}
			if s.Kind == "client" {
				if s.Attr("db.system") != "redis" {
					t.Errorf("worker CLIENT span %s has db.system %q", s.Name, s.Attr("db.system"))
				}
				if _, ok := s.Float("redisconn.limiter.wait_time"); !ok && !setupSpan(s) {
					t.Errorf("worker Redis span %s has no redisconn.limiter.wait_time: %v", s.Name, s.Attrs)
				}
				workerRedis++
			}
		}
	}
	if apiRedis < 2 {
		t.Errorf("the API's POST /runs has %d Redis spans, want its SET NX and RPUSH", apiRedis)
	}
	// Batch ops: children of agent.run carrying their size, their chunks below them.
	for _, s := range tr.Spans {
		if s.Name != "BatchRPush" && s.Name != "BatchPublish" {
			continue
		}
		if s.ParentID != runSpan.SpanID {
			t.Errorf("%s is not a child of agent.run", s.Name)
		}
		if n, _ := s.Float("db.operation.batch.size"); n != 120 {
			t.Errorf("%s has db.operation.batch.size %v, want 120", s.Name, s.Attrs["db.operation.batch.size"])
		}
		var chunks []*jaeger.Span
		for _, c := range tr.Spans {
			if c.ParentID == s.SpanID && c.Kind == "client" && !setupSpan(c) {
				chunks = append(chunks, c)
			}
		}
		if len(chunks) != 3 {
			t.Errorf("%s has %d chunk spans, want 3 (120 items in chunks of 50)", s.Name, len(chunks))
			continue
		}
		if s.Name == "BatchPublish" {
			sum := 0.0
			for _, c := range chunks {
				n, _ := c.Float("db.operation.batch.size")
				if n < 1 || n > 50 {
					t.Errorf("BatchPublish chunk %s has size %v, want 1 to 50", c.Name, n)
				}
				sum += n
			}
			if sum != 120 {
				t.Errorf("BatchPublish chunks carry %v items in all, want 120", sum)
			}
		} else {
			for _, c := range chunks {
				if c.Name != "rpush" && !strings.HasPrefix(c.Name, "redis.pipeline") {
					t.Errorf("BatchRPush chunk span is %q, want an RPUSH", c.Name)
				}
			}
		}
	}
	t.Logf("trace %s: %d spans, %d Redis spans of the API, %d of the worker", tr.ID, len(tr.Spans), apiRedis, workerRedis)
}

// checkNoSecrets searches every attribute, resource attribute and event of
// every span of every trace Jaeger has from both services, and the raw
// answers of its API (also the OTLP JSON of the run's trace), for forbidden.
func checkNoSecrets(t *testing.T, ctx context.Context, c *jaeger.Client, traceID, runID string, forbidden []string) {
	t.Helper()
	var raws [][]byte
	var values []string
	for _, svc := range []string{apiService, workerService} {
		now := time.Now()
		q := url.Values{"service": {svc}, "limit": {"10000"},
			"start": {strconv.FormatInt(now.Add(-time.Hour).UnixMicro(), 10)}, "end": {strconv.FormatInt(now.UnixMicro(), 10)}}
		raw, err := c.Raw(ctx, "/api/traces?"+q.Encode())
		if err != nil {
			t.Fatal(err)
		}
		raws = append(raws, raw)
		ts, err := c.Search(ctx, svc, "", nil, 10000, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		for _, tr := range ts {
			for _, s := range tr.Spans {
				values = append(values, s.Name)
				for _, m := range append([]map[string]any{s.Attrs, s.Resource}, s.Events...) {
					for k, v := range m {
						values = append(values, k+"="+fmt.Sprint(v))
					}
				}
			}
		}
	}
	for _, p := range []string{"/api/traces/" + traceID, "/api/v3/traces/" + traceID} {
		raw, err := c.Raw(ctx, p)
		if err != nil {
			t.Fatalf("GET %s: %v", p, err)
		}
		raws = append(raws, raw)
	}
	for _, v := range values {
		for _, f := range forbidden {
			if strings.Contains(v, f) {
				t.Errorf("a span attribute carries %q: %.200s", f, v)
			}
		}
	}
	if !bytes.Contains(raws[len(raws)-1], []byte(runID)) {
		t.Errorf("the OTLP JSON of the run's trace lacks agent.run.id %s: the search would prove nothing", runID)
	}
	size := 0
	for _, raw := range raws {
		size += len(raw)
		for _, f := range forbidden {
			if i := bytes.Index(raw, []byte(f)); i >= 0 {
				t.Errorf("Jaeger's answer carries %q: …%.200s…", f, raw[max(0, i-100):])
			}
		}
	}
	if len(values) < 500 {
		t.Fatalf("searched only %d attributes: too few to prove anything", len(values))
	}
	t.Logf("searched %d span names and attributes and %d bytes of Jaeger's answers for keys, values, channels and the password", len(values), size)
}

// exemplarTraceIDs lists the trace ids of query's exemplars over the last 5 minutes.
func (p *prometheus) exemplarTraceIDs(ctx context.Context, query string) ([]string, error) {
	var data []struct {
		Exemplars []struct {
			Labels map[string]string `json:"labels"`
		} `json:"exemplars"`
	}
	now := time.Now()
	err := p.get(ctx, "/api/v1/query_exemplars", url.Values{
		"query": {query}, "start": {fmt.Sprint(now.Add(-5 * time.Minute).Unix())}, "end": {fmt.Sprint(now.Unix())},
	}, &data)
	var ids []string
	for _, s := range data {
		for _, e := range s.Exemplars {
			if id := e.Labels["trace_id"]; len(id) == 32 {
				ids = append(ids, id)
			}
		}
	}
	return ids, err
}

// The demo, shortened, with every run traced: its summary prints a run's
// trace and an exemplar's trace, both fetched from its Jaeger.
func TestDemoPrintsTracesFromJaeger(t *testing.T) {
	if _, err := exec.LookPath("prometheus"); err != nil {
		t.Fatal("prometheus is not installed: run `make deps` (apt-get install prometheus)")
	}
	jaegerBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "run", "./examples/demo",
		"-duration", "5s", "-concurrency", "4", "-responses", "300", "-contrast=false", "-traces", "-trace-ratio", "1")
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "REDIS_URL=", "OTEL_TRACES_SAMPLER=", "OTEL_TRACES_EXPORTER=", "OTEL_EXPORTER_OTLP_ENDPOINT=")
	out, err := cmd.CombinedOutput()
	text := string(out)
	if err != nil {
		t.Fatalf("demo failed: %v\n%s", err, text)
	}
	for _, want := range []string{
		"jaeger      http://127.0.0.1:",
		"traces in Jaeger (",
		"its trace fetched back from Jaeger",
		"└─ agent.run ",
		"BatchRPush",
		"wait ",
		"an exemplar from Prometheus",
		"◀ the exemplar's span",
		"go run ./examples/trace -jaeger http://127.0.0.1:",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the demo's output lacks %q:\n%s", want, text)
		}
	}
	if i := strings.Index(text, "traces in Jaeger ("); i >= 0 {
		t.Logf("%s", text[i:])
	}
}
