package redistest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Toxiproxy is a running Toxiproxy server (github.com/Shopify/toxiproxy, the
// release scripts/toxiproxy.sh pins): a TCP proxy whose proxies carry
// "toxics" (latency, a blackhole, a reset, a byte limit, ...) that a test adds
// and removes through its HTTP API while clients are connected. Every proxy
// listens on loopback. The helper talks to the API with net/http only; the
// Toxiproxy client package is not a dependency.
//
// Toxiproxy works on whole TCP streams in each direction, not on Redis
// commands: a toxic on a proxy applies to every connection through it, and
// what it does to connections that are already open differs between toxics
// (see the helpers on Proxy).
type Toxiproxy struct {
	url       string
	dir       string
	version   string
	transport *http.Transport
	client    *http.Client

	mu   sync.Mutex
	proc *process
}

// Stream names the direction a toxic acts on: Upstream is what clients send
// to the server (client -> proxy -> upstream), Downstream what the server
// answers (upstream -> proxy -> client). Toxiproxy's default is Downstream.
const (
	Upstream   = "upstream"
	Downstream = "downstream"
)

// Toxic is one toxic as Toxiproxy's API describes it. Attributes depend on
// the type (all times are integers in milliseconds, except slicer's delay in
// microseconds):
//
//	latency     latency, jitter             delay every chunk of data
//	bandwidth   rate (KB/s)                 throttle
//	slow_close  delay                       delay the close of the connection
//	timeout     timeout                     drop all data; close after timeout (0: never)
//	reset_peer  timeout                     on the next data, reset the connection (after timeout)
//	slicer      average_size, size_variation, delay (µs)   split data into small writes
//	limit_data  bytes                       close after this many bytes
type Toxic struct {
	// Name identifies the toxic on its proxy; empty means Toxiproxy's default,
	// "<type>_<stream>" (so a second toxic of the same type and stream needs a
	// name of its own).
	Name string `json:"name,omitempty"`
	// Type is one of the types above.
	Type string `json:"type"`
	// Stream is Upstream or Downstream; empty means Downstream.
	Stream string `json:"stream,omitempty"`
	// Toxicity is the probability, from 0 to 1, that the toxic applies to a
	// connection: Toxiproxy draws it for each connection whenever the toxic
	// (re)starts on it, when the connection opens or the proxy's toxics
	// change. 0 means the default, 1 (every connection).
	Toxicity float64 `json:"toxicity,omitempty"`
	// Attributes are the type's parameters, e.g. {"latency": 50}.
	Attributes map[string]any `json:"attributes,omitempty"`
}

// Proxy is one proxy of a Toxiproxy: it listens on a loopback address and
// connects every client to its upstream, through the proxy's toxics.
type Proxy struct {
	tp       *Toxiproxy
	name     string
	listen   string
	upstream string
}

// toxiproxyBin caches where scripts/toxiproxy.sh puts the binary.
var toxiproxyBin struct {
	once sync.Once
	path string
	err  error
}

// ToxiproxyBinary returns the Toxiproxy server binary the helper runs:
// TOXIPROXY_BIN when set, else what `scripts/toxiproxy.sh --path` names
// ($(go env GOPATH)/bin/redisconn-toxiproxy-<version>). It does not build it:
// when it is missing the error says to run `make toxiproxy`.
func ToxiproxyBinary() (string, error) {
	toxiproxyBin.once.Do(func() {
		toxiproxyBin.path, toxiproxyBin.err = findToxiproxy()
	})
	return toxiproxyBin.path, toxiproxyBin.err
}

const toxiproxyHint = "run `make toxiproxy` (scripts/toxiproxy.sh: go install of Toxiproxy v2.5.0, 20 s to 2 min once)"

func findToxiproxy() (string, error) {
	bin := os.Getenv("TOXIPROXY_BIN")
	if bin == "" {
		script, err := toxiproxyScript()
		if err != nil {
			return "", err
		}
		cmd := exec.Command(script, "--path")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return "", fmt.Errorf("%s --path: %v: %s", script, err, strings.TrimSpace(stderr.String()))
		}
		bin = strings.TrimSpace(string(out))
	}
	st, err := os.Stat(bin)
	if err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
		return "", fmt.Errorf("the Toxiproxy server %s is not built: %s", bin, toxiproxyHint)
	}
	return bin, nil
}

// toxiproxyScript finds scripts/toxiproxy.sh in the working directory or a
// parent of it (a test runs in its package's folder of the repository).
func toxiproxyScript() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		p := filepath.Join(dir, "scripts", "toxiproxy.sh")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no scripts/toxiproxy.sh above the working directory; set TOXIPROXY_BIN to a Toxiproxy server binary or %s", toxiproxyHint)
		}
		dir = parent
	}
}

// StartToxiproxy starts a Toxiproxy server with its API on a free loopback
// port and stops it (and so every proxy of it) when the test ends. Its log
// (JSON lines: proxies, accepted clients, API errors) is in the test's
// temporary folder; Log returns it. It fails the test when the binary is
// missing (run `make toxiproxy`) or the server does not come up.
func StartToxiproxy(t testing.TB) *Toxiproxy {
	t.Helper()
	bin, err := ToxiproxyBinary()
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	// No keep-alive: no idle connection (and its goroutines, which goleak
	// would report) outlives an API call. No HTTP proxy from the environment.
	tr := &http.Transport{DisableKeepAlives: true}
	tp := &Toxiproxy{
		dir:       t.TempDir(),
		transport: tr,
		client:    &http.Client{Transport: tr, Timeout: 30 * time.Second},
	}
	t.Cleanup(tp.stop)
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port, err := FreePort()
		if err != nil {
			t.Fatalf("redistest: %v", err)
		}
		if lastErr = tp.start(bin, port); lastErr == nil {
			return tp
		}
	}
	t.Fatalf("redistest: Toxiproxy did not start: %v", lastErr)
	return nil
}

func (tp *Toxiproxy) logPath() string { return filepath.Join(tp.dir, "toxiproxy.log") }

func (tp *Toxiproxy) start(bin string, port int) error {
	logf, err := os.OpenFile(tp.logPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close() // the child has its own descriptor
	cmd := exec.Command(bin, "-host", "127.0.0.1", "-port", strconv.Itoa(port))
	cmd.Dir = tp.dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "LOG_LEVEL=info")
	// As for redis-server: its own process group, and SIGKILL when the test
	// binary dies without cleaning up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", bin, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()

	tp.url = "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			return fmt.Errorf("toxiproxy exited (%v); log:\n%s", p.err, tp.Log())
		default:
		}
		var v string
		if v, err = tp.getVersion(); err == nil {
			tp.mu.Lock()
			tp.proc, tp.version = p, v
			tp.mu.Unlock()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = cmd.Process.Kill()
	<-p.done
	return fmt.Errorf("toxiproxy on port %d did not answer GET /version within 10s (%v); log:\n%s", port, err, tp.Log())
}

// stop ends the server: SIGTERM (Toxiproxy exits at once), SIGKILL after 5s.
func (tp *Toxiproxy) stop() {
	tp.mu.Lock()
	p := tp.proc
	tp.proc = nil
	tp.mu.Unlock()
	tp.transport.CloseIdleConnections()
	if p == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// URL is the base URL of the HTTP API, e.g. http://127.0.0.1:41234.
func (tp *Toxiproxy) URL() string { return tp.url }

// Version is what the server answers GET /version: "2.5.0" for the binary
// scripts/toxiproxy.sh builds ("git" for one built without its -ldflags).
func (tp *Toxiproxy) Version() string {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return tp.version
}

// Log returns what the server logged so far.
func (tp *Toxiproxy) Log() string {
	b, _ := os.ReadFile(tp.logPath())
	return string(b)
}

// getVersion asks GET /version, which answers plain text.
func (tp *Toxiproxy) getVersion() (string, error) {
	resp, err := tp.client.Get(tp.url + "/version")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET /version: %s: %s", resp.Status, body)
	}
	return strings.TrimSpace(string(body)), err
}

// call sends a JSON request to the API and decodes the answer into out (when
// not nil). An answer other than want is an error with Toxiproxy's message.
func (tp *Toxiproxy) call(method, path string, in any, want int, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, tp.url+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := tp.client.Do(req)
	if err != nil {
		return fmt.Errorf("toxiproxy API %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("toxiproxy API %s %s: reading the answer: %w", method, path, err)
	}
	if resp.StatusCode != want {
		// Errors are {"error": "...", "status": n}.
		var apiErr struct {
			Error string `json:"error"`
		}
		msg := strings.TrimSpace(string(b))
		if json.Unmarshal(b, &apiErr) == nil && apiErr.Error != "" {
			msg = apiErr.Error
		}
		return fmt.Errorf("toxiproxy API %s %s: %s: %s", method, path, resp.Status, msg)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("toxiproxy API %s %s: decoding %q: %w", method, path, b, err)
		}
	}
	return nil
}

// Reset enables every proxy and removes every toxic (POST /reset).
func (tp *Toxiproxy) Reset(t testing.TB) {
	t.Helper()
	if err := tp.call(http.MethodPost, "/reset", nil, http.StatusNoContent, nil); err != nil {
		t.Fatalf("redistest: %v", err)
	}
}

// Proxy creates a proxy named name (unique on this server) in front of
// upstream (host:port, e.g. a Server's Addr), listening on a free loopback
// port that Toxiproxy picks; it is deleted when the test ends. Toxiproxy
// dials upstream for each client it accepts; when that fails it closes the
// client's connection (the client sees EOF, not a refused connection).
func (tp *Toxiproxy) Proxy(t testing.TB, name, upstream string) *Proxy {
	t.Helper()
	return tp.ProxyOn(t, name, "127.0.0.1:0", upstream)
}

// ProxyOn is Proxy listening on listen (host:port) instead of a port
// Toxiproxy picks, for an address that must be known before the proxy exists
// (see ClusterOptions.Proxy). It fails the test when the address is taken.
func (tp *Toxiproxy) ProxyOn(t testing.TB, name, listen, upstream string) *Proxy {
	t.Helper()
	p, err := tp.createProxy(name, listen, upstream)
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	p.deleteOnCleanup(t)
	return p
}

// proxyJSON is a proxy as the API describes it.
type proxyJSON struct {
	Name     string  `json:"name"`
	Listen   string  `json:"listen"`
	Upstream string  `json:"upstream"`
	Enabled  bool    `json:"enabled"`
	Toxics   []Toxic `json:"toxics,omitempty"`
}

func (tp *Toxiproxy) createProxy(name, listen, upstream string) (*Proxy, error) {
	var got proxyJSON
	in := proxyJSON{Name: name, Listen: listen, Upstream: upstream, Enabled: true}
	if err := tp.call(http.MethodPost, "/proxies", in, http.StatusCreated, &got); err != nil {
		return nil, err
	}
	return &Proxy{tp: tp, name: got.Name, listen: got.Listen, upstream: got.Upstream}, nil
}

// deleteOnCleanup deletes the proxy when the test ends (the server may be
// gone by then, when it was started by the same test: that is fine).
func (p *Proxy) deleteOnCleanup(t testing.TB) {
	t.Cleanup(func() {
		p.tp.mu.Lock()
		running := p.tp.proc != nil
		p.tp.mu.Unlock()
		if !running {
			return
		}
		if err := p.tp.call(http.MethodDelete, p.path(""), nil, http.StatusNoContent, nil); err != nil {
			t.Errorf("redistest: deleting proxy %s: %v", p.name, err)
		}
	})
}

func (p *Proxy) path(rest string) string { return "/proxies/" + p.name + rest }

// Name is the proxy's name.
func (p *Proxy) Name() string { return p.name }

// Addr is the loopback host:port the proxy listens on: give it to clients
// instead of the upstream's address.
func (p *Proxy) Addr() string { return p.listen }

// Port is the port of Addr.
func (p *Proxy) Port() int {
	_, port, _ := net.SplitHostPort(p.listen)
	n, _ := strconv.Atoi(port)
	return n
}

// Upstream is the address the proxy connects its clients to.
func (p *Proxy) Upstream() string { return p.upstream }

// AddToxic adds a toxic to the proxy: it applies to the connections open now
// and to new ones, until RemoveToxic. It fails the test when Toxiproxy
// refuses it (unknown type or stream, a name already used, bad attributes).
func (p *Proxy) AddToxic(t testing.TB, tx Toxic) {
	t.Helper()
	if err := p.addToxic(tx); err != nil {
		t.Fatalf("redistest: %v", err)
	}
}

func (p *Proxy) addToxic(tx Toxic) error {
	return p.tp.call(http.MethodPost, p.path("/toxics"), tx, http.StatusOK, nil)
}

// UpdateToxic changes the attributes given in tx.Attributes, and the toxicity
// when tx.Toxicity is not 0, of the toxic named tx.Name; the others stay.
func (p *Proxy) UpdateToxic(t testing.TB, tx Toxic) {
	t.Helper()
	in := map[string]any{"attributes": tx.Attributes}
	if tx.Toxicity != 0 {
		in["toxicity"] = tx.Toxicity
	}
	if err := p.tp.call(http.MethodPost, p.path("/toxics/"+tx.Name), in, http.StatusOK, nil); err != nil {
		t.Fatalf("redistest: %v", err)
	}
}

// RemoveToxic removes the toxic named name; connections go on without it,
// except through a timeout toxic, whose removal closes every connection it
// held (Toxiproxy 2.5.0).
func (p *Proxy) RemoveToxic(t testing.TB, name string) {
	t.Helper()
	if err := p.tp.call(http.MethodDelete, p.path("/toxics/"+name), nil, http.StatusNoContent, nil); err != nil {
		t.Fatalf("redistest: %v", err)
	}
}

// Toxics lists the proxy's toxics, upstream ones first.
func (p *Proxy) Toxics(t testing.TB) []Toxic {
	t.Helper()
	var txs []Toxic
	if err := p.tp.call(http.MethodGet, p.path("/toxics"), nil, http.StatusOK, &txs); err != nil {
		t.Fatalf("redistest: %v", err)
	}
	return txs
}

// Enabled says whether the proxy listens (GET /proxies/{name}).
func (p *Proxy) Enabled(t testing.TB) bool {
	t.Helper()
	var got proxyJSON
	if err := p.tp.call(http.MethodGet, p.path(""), nil, http.StatusOK, &got); err != nil {
		t.Fatalf("redistest: %v", err)
	}
	return got.Enabled
}

// Disable takes the proxy down: it closes every connection through it (both
// sides) and stops listening, so new connections are refused, as when a
// server is unreachable. The toxics stay.
func (p *Proxy) Disable(t testing.TB) { t.Helper(); p.setEnabled(t, false) }

// Enable listens again on the same address after Disable.
func (p *Proxy) Enable(t testing.TB) { t.Helper(); p.setEnabled(t, true) }

func (p *Proxy) setEnabled(t testing.TB, on bool) {
	t.Helper()
	if err := p.tp.call(http.MethodPost, p.path(""), map[string]bool{"enabled": on}, http.StatusOK, nil); err != nil {
		t.Fatalf("redistest: %v", err)
	}
}

// add adds a toxic named after its type and stream (Toxiproxy's default) and
// returns the name, for RemoveToxic.
func (p *Proxy) add(t testing.TB, typ, stream string, attrs map[string]any) string {
	t.Helper()
	if stream == "" {
		stream = Downstream
	}
	name := typ + "_" + stream
	p.AddToxic(t, Toxic{Name: name, Type: typ, Stream: stream, Attributes: attrs})
	return name
}

// Latency delays every chunk of data on stream by latency ± jitter (whole
// milliseconds), on open connections too. On Downstream it delays every
// reply: a round trip takes at least latency. It returns the toxic's name.
func (p *Proxy) Latency(t testing.TB, stream string, latency, jitter time.Duration) string {
	t.Helper()
	return p.add(t, "latency", stream, map[string]any{"latency": latency.Milliseconds(), "jitter": jitter.Milliseconds()})
}

// Bandwidth limits stream to kbPerSec kilobytes per second. It returns the
// toxic's name.
func (p *Proxy) Bandwidth(t testing.TB, stream string, kbPerSec int64) string {
	t.Helper()
	return p.add(t, "bandwidth", stream, map[string]any{"rate": kbPerSec})
}

// SlowClose delays the close of stream's side by delay once the other end
// has closed it. It returns the toxic's name.
func (p *Proxy) SlowClose(t testing.TB, stream string, delay time.Duration) string {
	t.Helper()
	return p.add(t, "slow_close", stream, map[string]any{"delay": delay.Milliseconds()})
}

// Timeout blackholes stream: every byte is dropped (not delayed: it is lost
// even when the toxic is removed), on open connections too, and each
// connection is closed after timeout, or never when timeout is 0. Removing
// the toxic closes the connections it held. A client sees its own read
// timeout. It returns the toxic's name.
func (p *Proxy) Timeout(t testing.TB, stream string, timeout time.Duration) string {
	t.Helper()
	return p.add(t, "timeout", stream, map[string]any{"timeout": timeout.Milliseconds()})
}

// ResetPeer resets connections: on the next data on stream (a request on
// Upstream, a reply on Downstream), after timeout, the proxy closes both
// sides. A connection opened after the toxic was added gets a TCP RST
// ("connection reset by peer"); one that was already open gets a plain close
// (EOF), since Toxiproxy only sets SO_LINGER 0 when a connection starts. It
// returns the toxic's name.
func (p *Proxy) ResetPeer(t testing.TB, stream string, timeout time.Duration) string {
	t.Helper()
	return p.add(t, "reset_peer", stream, map[string]any{"timeout": timeout.Milliseconds()})
}

// Slicer splits stream into writes of averageSize ± sizeVariation bytes,
// delay apart (Toxiproxy counts this one in microseconds): replies arrive in
// pieces. It returns the toxic's name.
func (p *Proxy) Slicer(t testing.TB, stream string, averageSize, sizeVariation int, delay time.Duration) string {
	t.Helper()
	return p.add(t, "slicer", stream, map[string]any{
		"average_size": averageSize, "size_variation": sizeVariation, "delay": delay.Microseconds(),
	})
}

// LimitData lets n bytes through on stream, per connection, then closes the
// connection: a reply, or a request, cut in the middle. The count starts when
// the connection opens or the toxic is added. It returns the toxic's name.
func (p *Proxy) LimitData(t testing.TB, stream string, n int64) string {
	t.Helper()
	return p.add(t, "limit_data", stream, map[string]any{"bytes": n})
}
