// Package jaeger runs Jaeger v2 for the demo and the e2e tests, reads traces
// back through its HTTP query API, and prints a trace as a terminal waterfall
// (examples/trace is the command line for it).
//
// The binary is built from the repository's tools module (tools/go.mod, kept
// out of the library's go.mod) by scripts/jaeger.sh; Ensure runs that script,
// which builds only when the binary is missing (about 9 minutes the first time
// on 2 cores, with progress) and otherwise returns at once.
//
// An Instance is a Jaeger with in-memory storage on free loopback ports: an
// OTLP receiver (gRPC and HTTP), the query API (HTTP and gRPC) and a health
// check, nothing else (the default all-in-one configuration opens 16 ports).
package jaeger

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// script is scripts/jaeger.sh under the repository root.
func script(root string) string { return filepath.Join(root, "scripts", "jaeger.sh") }

// Path returns where scripts/jaeger.sh puts the binary (JAEGER_BIN, else
// $(go env GOPATH)/bin/redisconn-jaeger-<version of tools/go.mod>) and
// whether it is there. It never builds.
func Path(ctx context.Context, root string) (string, bool, error) {
	cmd := exec.CommandContext(ctx, script(root), "--path")
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", false, fmt.Errorf("scripts/jaeger.sh --path: %v: %s", err, strings.TrimSpace(stderr.String()))
	}
	bin := strings.TrimSpace(string(out))
	st, err := os.Stat(bin)
	return bin, err == nil && !st.IsDir() && st.Mode()&0o111 != 0, nil
}

// Ensure returns the binary's path, building it first with scripts/jaeger.sh
// when it is missing. The script's progress goes to out line by line: the
// first build takes minutes and says so.
func Ensure(ctx context.Context, root string, out io.Writer) (string, error) {
	if bin, ok, err := Path(ctx, root); err != nil || ok {
		return bin, err
	}
	cmd := exec.CommandContext(ctx, script(root))
	cmd.Dir = root
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building Jaeger (scripts/jaeger.sh): %w", err)
	}
	bin, ok, err := Path(ctx, root)
	if err != nil {
		return "", err
	}
	if !ok {
		return "", fmt.Errorf("scripts/jaeger.sh finished but %s is not there", bin)
	}
	return bin, nil
}

// Instance is the configuration of one Jaeger process on free loopback ports.
// Start the binary with Args (the caller owns the process), then WaitHealthy.
type Instance struct {
	// ConfigFile is the collector configuration written by NewInstance.
	ConfigFile string
	// OTLPHTTP and OTLPGRPC are the OTLP receiver's host:port.
	OTLPHTTP, OTLPGRPC string
	// QueryURL is the query API's base URL (http://host:port); QueryGRPC its gRPC host:port.
	QueryURL, QueryGRPC string
	// HealthURL answers 200 once Jaeger is ready.
	HealthURL string
}

// BatchTimeout is how long Jaeger's batch processor holds spans before they
// are stored and visible in the query API.
const BatchTimeout = 200 * time.Millisecond

// NewInstance picks five free loopback ports and writes a configuration for
// them into dir: in-memory storage (up to maxTraces traces), OTLP receiver,
// batch processor, query API, health check; its own telemetry off (no
// metrics port) and its logs at warn.
func NewInstance(dir string, maxTraces int) (*Instance, error) {
	if maxTraces <= 0 {
		maxTraces = 100000
	}
	ports, err := freeAddrs(5)
	if err != nil {
		return nil, err
	}
	in := &Instance{
		ConfigFile: filepath.Join(dir, "jaeger.yaml"),
		OTLPGRPC:   ports[0],
		OTLPHTTP:   ports[1],
		QueryURL:   "http://" + ports[2],
		QueryGRPC:  ports[3],
		HealthURL:  "http://" + ports[4] + "/status",
	}
	config := fmt.Sprintf(`# Jaeger v2 for redisconn: in-memory storage, loopback only.
service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  healthcheckv2:
    use_v2: true
    http:
      endpoint: %s
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: %s
    grpc:
      endpoint: %s
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: %d
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: %s
      http:
        endpoint: %s
processors:
  batch:
    timeout: %s
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
`, ports[4], ports[2], ports[3], maxTraces, ports[0], ports[1], BatchTimeout)
	if err := os.WriteFile(in.ConfigFile, []byte(config), 0o600); err != nil {
		return nil, err
	}
	return in, nil
}

// Args are the binary's arguments for this instance.
func (in *Instance) Args() []string { return []string{"--config", "file:" + in.ConfigFile} }

// OTLPEnv is the environment that points otelsetup.Setup (and any
// OpenTelemetry SDK) at this instance: OTLP over HTTP/protobuf, spans sent
// every 500 ms, and a span queue big enough for a burst of sampled runs.
func (in *Instance) OTLPEnv() []string {
	return []string{
		"OTEL_TRACES_EXPORTER=otlp",
		"OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf",
		"OTEL_EXPORTER_OTLP_ENDPOINT=http://" + in.OTLPHTTP,
		"OTEL_BSP_SCHEDULE_DELAY=500",
		"OTEL_BSP_MAX_QUEUE_SIZE=65536",
		"OTEL_BSP_MAX_EXPORT_BATCH_SIZE=2048",
	}
}

// WaitHealthy polls the health check until Jaeger is ready, alive reports
// that the process died (nil: still running), ctx ends, or timeout passes.
func (in *Instance) WaitHealthy(ctx context.Context, timeout time.Duration, alive func() error) error {
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: time.Second}
	for {
		if alive != nil {
			if err := alive(); err != nil {
				return err
			}
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, in.HealthURL, nil)
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("jaeger: %s did not answer 200 within %v", in.HealthURL, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// freeAddrs returns n distinct free loopback host:port, held open together
// while they are chosen.
func freeAddrs(n int) ([]string, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var out []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, errors.Join(errors.New("jaeger: no free loopback port"), err)
		}
		ls = append(ls, l)
		out = append(out, l.Addr().String())
	}
	return out, nil
}
