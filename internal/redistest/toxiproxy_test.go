package redistest

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// proxyClient is a go-redis client on addr that never retries and counts its
// dials, so a test sees whether a connection survived a toxic.
func proxyClient(t *testing.T, addr string, readTimeout time.Duration) (*redis.Client, *atomic.Int64) {
	t.Helper()
	dials := new(atomic.Int64)
	var d net.Dialer
	c := redis.NewClient(&redis.Options{
		Addr:        addr,
		MaxRetries:  -1,
		ReadTimeout: readTimeout,
		PoolSize:    1,
		Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			return d.DialContext(ctx, network, addr)
		},
	})
	t.Cleanup(func() { _ = c.Close() })
	return c, dials
}

// rawDial opens a plain TCP connection, closed when the test ends.
func rawDial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// roundTrip writes req on c and reads until EOF, an error or the timeout.
func roundTrip(c net.Conn, req string, timeout time.Duration) ([]byte, error) {
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte(req)); err != nil {
		return nil, err
	}
	return readFor(c, timeout)
}

// exchange writes req on c and reads exactly len(want) bytes, which must be want.
func exchange(t *testing.T, c net.Conn, req, want string) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	got := make([]byte, len(want))
	_, err := c.Write([]byte(req))
	if err == nil {
		_, err = io.ReadFull(c, got)
	}
	if err != nil || string(got) != want {
		t.Fatalf("%q on %s: %q, %v; want %q", req, c.RemoteAddr(), got, err, want)
	}
}

// readFor reads from c until EOF (nil error), an error or the timeout.
func readFor(c net.Conn, timeout time.Duration) ([]byte, error) {
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	var got []byte
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		got = append(got, buf[:n]...)
		if errors.Is(err, io.EOF) {
			return got, nil
		}
		if err != nil {
			return got, err
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// minDuration runs f n times and returns the fastest run; f's error fails the test.
func minDuration(t *testing.T, n int, f func() error) time.Duration {
	t.Helper()
	best := time.Duration(1<<63 - 1)
	for i := 0; i < n; i++ {
		begin := time.Now()
		if err := f(); err != nil {
			t.Fatalf("round trip %d: %v", i, err)
		}
		best = min(best, time.Since(begin))
	}
	return best
}

func TestToxiproxy(t *testing.T) {
	ctx := context.Background()
	begin := time.Now()
	tp := StartToxiproxy(t)
	t.Logf("StartToxiproxy took %v (API %s, version %s)", time.Since(begin).Round(time.Millisecond), tp.URL(), tp.Version())
	if tp.Version() != "2.5.0" && os.Getenv("TOXIPROXY_BIN") == "" {
		t.Errorf("Toxiproxy answers version %q, want 2.5.0 (the build of scripts/toxiproxy.sh)", tp.Version())
	}
	srv := Start(t, Options{})
	direct := srv.Client(t)

	t.Run("PassThrough", func(t *testing.T) {
		p := tp.Proxy(t, "passthrough", srv.Addr())
		if p.Addr() == srv.Addr() || p.Port() == 0 || p.Upstream() != srv.Addr() || p.Name() != "passthrough" {
			t.Fatalf("proxy %s: Addr %s Port %d Upstream %s", p.Name(), p.Addr(), p.Port(), p.Upstream())
		}
		if !p.Enabled(t) || len(p.Toxics(t)) != 0 {
			t.Fatalf("new proxy: enabled %v, toxics %v", p.Enabled(t), p.Toxics(t))
		}
		c, _ := proxyClient(t, p.Addr(), 0)
		if err := c.Set(ctx, "through", "proxy", 0).Err(); err != nil {
			t.Fatalf("SET through the proxy: %v", err)
		}
		if got, err := direct.Get(ctx, "through").Result(); got != "proxy" {
			t.Fatalf("GET on the server: %q, %v", got, err)
		}
	})

	t.Run("Latency", func(t *testing.T) {
		p := tp.Proxy(t, "latency", srv.Addr())
		c, dials := proxyClient(t, p.Addr(), 0)
		ping := func() error { return c.Ping(ctx).Err() }
		base := minDuration(t, 5, ping)

		const latency = 50 * time.Millisecond
		name := p.Latency(t, Downstream, latency, 0)
		txs := p.Toxics(t)
		if len(txs) != 1 || txs[0].Name != name || txs[0].Type != "latency" || txs[0].Stream != Downstream ||
			txs[0].Toxicity != 1 || txs[0].Attributes["latency"] != float64(50) {
			t.Fatalf("Toxics: %+v", txs)
		}
		slow := minDuration(t, 3, ping)
		if slow < latency {
			t.Fatalf("PING with a %v latency toxic took %v", latency, slow)
		}
		p.UpdateToxic(t, Toxic{Name: name, Attributes: map[string]any{"latency": 120}})
		if slower := minDuration(t, 2, ping); slower < 120*time.Millisecond {
			t.Fatalf("PING after updating the latency to 120ms took %v", slower)
		}
		p.RemoveToxic(t, name)
		after := minDuration(t, 5, ping)
		if after >= latency {
			t.Fatalf("PING after removing the toxic took %v", after)
		}
		// The toxic acted on the connection that was open, which survived it.
		if n := dials.Load(); n != 1 {
			t.Fatalf("%d dials, want 1", n)
		}
		t.Logf("PING: %v, %v with the toxic, %v after", base, slow, after)
	})

	t.Run("TimeoutBlackhole", func(t *testing.T) {
		p := tp.Proxy(t, "blackhole", srv.Addr())
		const readTimeout = 300 * time.Millisecond
		c, dials := proxyClient(t, p.Addr(), readTimeout)
		if err := c.Ping(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		pings := CommandCalls(t, direct, "ping")

		name := p.Timeout(t, Upstream, 0)
		begin := time.Now()
		err := c.Ping(ctx).Err()
		if !isTimeout(err) {
			t.Fatalf("PING through the blackhole: %v, want a timeout", err)
		}
		if took := time.Since(begin); took < readTimeout {
			t.Fatalf("PING failed after %v, before its read timeout", took)
		}
		// A new connection is accepted and blackholed too.
		held := rawDial(t, p.Addr())
		if got, err := roundTrip(held, "PING\r\n", readTimeout); !isTimeout(err) {
			t.Fatalf("raw PING through the blackhole: %q, %v", got, err)
		}
		if n := CommandCalls(t, direct, "ping"); n != pings {
			t.Fatalf("the server ran %d PINGs through the blackhole", n-pings)
		}

		p.RemoveToxic(t, name)
		// Removing a timeout toxic closes the connections it held, and what
		// it swallowed is lost, not delivered late.
		if got, err := readFor(held, 2*time.Second); err != nil || len(got) != 0 {
			t.Fatalf("held connection after removing the toxic: %q, %v; want EOF", got, err)
		}
		if n := CommandCalls(t, direct, "ping"); n != pings {
			t.Fatalf("the server ran %d swallowed PINGs after the toxic went", n-pings)
		}
		// Removing the toxic restores the proxy (go-redis dropped the
		// connection that timed out and dials again).
		if err := c.Ping(ctx).Err(); err != nil {
			t.Fatalf("PING after removing the toxic: %v", err)
		}
		if n := dials.Load(); n != 2 {
			t.Fatalf("%d dials, want 2", n)
		}

		// With a timeout, data still flows upstream (here the toxic is on
		// the replies) and the connection is closed when it passes.
		name = p.Timeout(t, Downstream, 200*time.Millisecond)
		conn := rawDial(t, p.Addr())
		begin = time.Now()
		got, err := roundTrip(conn, "PING\r\n", 5*time.Second)
		if err != nil || len(got) != 0 || time.Since(begin) < 150*time.Millisecond {
			t.Fatalf("PING through a 200ms timeout toxic: %q, %v after %v; want EOF after 200ms", got, err, time.Since(begin))
		}
		if n := CommandCalls(t, direct, "ping"); n != pings+2 {
			t.Fatalf("the server ran %d PINGs, want 2 (go-redis's and the raw one)", n-pings)
		}
		p.RemoveToxic(t, name)
	})

	t.Run("ResetPeer", func(t *testing.T) {
		p := tp.Proxy(t, "reset", srv.Addr())
		c, _ := proxyClient(t, p.Addr(), 0)
		if err := c.Ping(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		sets := CommandCalls(t, direct, "set")

		// Downstream: the server runs the request, its reply resets the
		// connection: the client cannot tell whether the write happened.
		name := p.ResetPeer(t, Downstream, 0)
		conn := rawDial(t, p.Addr())
		if got, err := roundTrip(conn, "SET reset-down 1\r\n", 2*time.Second); len(got) != 0 || !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("raw SET through reset_peer: %q, %v; want connection reset by peer", got, err)
		}
		if n := CommandCalls(t, direct, "set"); n != sets+1 {
			t.Fatalf("the server ran %d SETs, want 1", n-sets)
		}
		// A connection that was open before the toxic is closed, not reset.
		if err := c.Set(ctx, "reset-down", "2", 0).Err(); !errors.Is(err, io.EOF) {
			t.Fatalf("SET on a connection opened before reset_peer: %v, want EOF", err)
		}
		if n := CommandCalls(t, direct, "set"); n != sets+2 {
			t.Fatalf("the server ran %d SETs, want 2", n-sets)
		}
		p.RemoveToxic(t, name)

		// Upstream: the request never reaches the server.
		name = p.ResetPeer(t, Upstream, 0)
		conn = rawDial(t, p.Addr())
		if got, err := roundTrip(conn, "SET reset-up 1\r\n", 2*time.Second); len(got) != 0 || !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("raw SET through reset_peer upstream: %q, %v; want connection reset by peer", got, err)
		}
		if n := CommandCalls(t, direct, "set"); n != sets+2 {
			t.Fatalf("the server ran %d SETs, want 2", n-sets)
		}
		p.RemoveToxic(t, name)
		if err := c.Set(ctx, "reset-after", "1", 0).Err(); err != nil {
			t.Fatalf("SET after removing the toxic: %v", err)
		}
	})

	t.Run("LimitData", func(t *testing.T) {
		p := tp.Proxy(t, "limit", srv.Addr())
		value := strings.Repeat("x", 100)
		if err := direct.Set(ctx, "big", value, 0).Err(); err != nil {
			t.Fatal(err)
		}
		c, _ := proxyClient(t, p.Addr(), 0)
		if err := c.Ping(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		const limit = 50
		name := p.LimitData(t, Downstream, limit)
		// The open connection may receive 50 more bytes: the reply is cut.
		if got, err := c.Get(ctx, "big").Result(); err == nil {
			t.Fatalf("GET of 106 reply bytes through a %d-byte limit: %q", limit, got)
		} else {
			t.Logf("go-redis: %v", err)
		}
		// A raw connection sees exactly the first 50 bytes, then EOF.
		conn := rawDial(t, p.Addr())
		want := "$100\r\n" + value + "\r\n"
		if got, err := roundTrip(conn, "GET big\r\n", 2*time.Second); err != nil || string(got) != want[:limit] {
			t.Fatalf("raw GET through limit_data: %q, %v; want %q then EOF", got, err, want[:limit])
		}
		// The limit counts per connection: a new one gets its own 50 bytes.
		exchange(t, rawDial(t, p.Addr()), "PING\r\n", "+PONG\r\n")
		p.RemoveToxic(t, name)
		if got, err := c.Get(ctx, "big").Result(); err != nil || got != value {
			t.Fatalf("GET after removing the toxic: %d bytes, %v", len(got), err)
		}
	})

	t.Run("SlicerBandwidth", func(t *testing.T) {
		p := tp.Proxy(t, "slicer", srv.Addr())
		value := strings.Repeat("0123456789", 2000) // 20 kB
		if err := direct.Set(ctx, "sliced", value, 0).Err(); err != nil {
			t.Fatal(err)
		}
		c, _ := proxyClient(t, p.Addr(), 0)
		p.Slicer(t, Downstream, 100, 50, 10*time.Microsecond)
		if got, err := c.Get(ctx, "sliced").Result(); err != nil || got != value {
			t.Fatalf("GET through the slicer: %d bytes, %v", len(got), err)
		}
		p.Bandwidth(t, Downstream, 100) // 100 KB/s: 20 kB take 200ms
		begin := time.Now()
		if got, err := c.Get(ctx, "sliced").Result(); err != nil || got != value {
			t.Fatalf("GET through the bandwidth toxic: %d bytes, %v", len(got), err)
		}
		if took := time.Since(begin); took < 150*time.Millisecond {
			t.Fatalf("20 kB at 100 KB/s took %v", took)
		}
		p.SlowClose(t, Upstream, 100*time.Millisecond)
		if n := len(p.Toxics(t)); n != 3 {
			t.Fatalf("%d toxics, want 3", n)
		}
		tp.Reset(t)
		if n := len(p.Toxics(t)); n != 0 {
			t.Fatalf("%d toxics after Reset, want 0", n)
		}
	})

	t.Run("DisableEnable", func(t *testing.T) {
		p := tp.Proxy(t, "down", srv.Addr())
		c, dials := proxyClient(t, p.Addr(), time.Second)
		if err := c.Ping(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		p.Disable(t)
		if p.Enabled(t) {
			t.Fatal("proxy still enabled after Disable")
		}
		if err := c.Ping(ctx).Err(); err == nil {
			t.Fatal("PING on the connection through a disabled proxy succeeded")
		}
		if _, err := net.DialTimeout("tcp", p.Addr(), time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("dial a disabled proxy: %v, want connection refused", err)
		}
		p.Enable(t)
		exchange(t, rawDial(t, p.Addr()), "PING\r\n", "+PONG\r\n")
		// go-redis, whose dial failed while the proxy was down, returns that
		// error until its background dial (every second) succeeds.
		if !WaitFor(ctx, 5*time.Second, func() bool { return c.Ping(ctx).Err() == nil }) {
			t.Fatalf("PING after Enable: %v", c.Ping(ctx).Err())
		}
		if n := dials.Load(); n < 2 {
			t.Fatalf("%d dials, want a new one after Enable", n)
		}
	})

	t.Run("APIErrors", func(t *testing.T) {
		p := tp.Proxy(t, "errors", srv.Addr())
		if err := p.addToxic(Toxic{Type: "nope"}); err == nil || !strings.Contains(err.Error(), "invalid toxic type") {
			t.Fatalf("unknown toxic type: %v", err)
		}
		if err := p.addToxic(Toxic{Type: "latency", Stream: "sideways"}); err == nil || !strings.Contains(err.Error(), "stream was invalid") {
			t.Fatalf("bad stream: %v", err)
		}
		if err := p.addToxic(Toxic{Type: "latency", Attributes: map[string]any{"latency": "slow"}}); err == nil || !strings.Contains(err.Error(), "bad request body") {
			t.Fatalf("bad attribute: %v", err)
		}
		p.Latency(t, Downstream, time.Millisecond, 0)
		if err := p.addToxic(Toxic{Type: "latency"}); err == nil || !strings.Contains(err.Error(), "toxic already exists") {
			t.Fatalf("second latency_downstream: %v", err)
		}
		if _, err := tp.createProxy("errors", "127.0.0.1:0", srv.Addr()); err == nil || !strings.Contains(err.Error(), "proxy already exists") {
			t.Fatalf("second proxy named errors: %v", err)
		}
		if _, err := tp.createProxy("taken", p.Addr(), srv.Addr()); err == nil || !strings.Contains(err.Error(), "address already in use") {
			t.Fatalf("proxy on a taken address: %v", err)
		}
	})
}

func TestToxiproxyCluster(t *testing.T) {
	ctx := context.Background()
	tp := StartToxiproxy(t)
	begin := time.Now()
	// Quick replicas: a master waits 5s for more replicas before a diskless
	// full sync, and CLUSTER SLOTS (which StartCluster waits on) lists a
	// replica only once its offset is not 0, after the master's first PING to
	// it (every 10s by default).
	c := StartCluster(t, ClusterOptions{Proxy: tp, ReplicasPerMaster: 1, Args: []string{
		"--repl-diskless-sync-delay", "0", "--repl-ping-replica-period", "1",
	}})
	t.Logf("StartCluster with proxies took %v", time.Since(begin).Round(time.Millisecond))

	proxyOf := map[string]*Proxy{} // by proxy address
	for _, p := range c.Proxies() {
		proxyOf[p.Addr()] = p
	}
	if len(proxyOf) != 6 || len(c.Addrs()) != 6 {
		t.Fatalf("%d proxies, %d addrs; want 6", len(proxyOf), len(c.Addrs()))
	}
	for i, n := range c.Nodes() {
		if c.Addrs()[i] != c.ProxyOf(n).Addr() || c.ProxyOf(n).Upstream() != n.Addr() {
			t.Fatalf("node %s: Addrs %s, proxy %s -> %s", n.Addr(), c.Addrs()[i], c.ProxyOf(n).Addr(), c.ProxyOf(n).Upstream())
		}
	}

	// Every node reports the proxies in CLUSTER SLOTS, master i first for
	// its range, its replica second; the bus is direct.
	for _, n := range c.Nodes() {
		nc := n.Client(t)
		slots, err := nc.ClusterSlots(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range slots {
			i := r.Start / (16384 / 3)
			if r.Nodes[0].Addr != c.ProxyOf(c.Masters[i]).Addr() || r.Nodes[1].Addr != c.ProxyOf(c.Replicas[i]).Addr() {
				t.Fatalf("%s: CLUSTER SLOTS %d-%d on %v, want master %d's and its replica's proxies", n.Addr(), r.Start, r.End, r.Nodes, i)
			}
		}
		nodes, err := nc.ClusterNodes(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(strings.TrimSpace(nodes), "\n") {
			addr := strings.Fields(line)[1] // ip:port@cport[,hostname]
			hostPort, cport, _ := strings.Cut(strings.Split(addr, ",")[0], "@")
			p := proxyOf[hostPort]
			if p == nil {
				t.Fatalf("%s: CLUSTER NODES names %s, no proxy", n.Addr(), addr)
			}
			// The bus port is the node's own, not a proxy's.
			busAddr := net.JoinHostPort("127.0.0.1", cport)
			if proxyOf[busAddr] != nil || busAddr == p.Upstream() {
				t.Fatalf("%s: CLUSTER NODES names bus %s for %s", n.Addr(), busAddr, hostPort)
			}
			bus, err := net.DialTimeout("tcp", busAddr, time.Second)
			if err != nil {
				t.Fatalf("%s: bus of %s: %v", n.Addr(), hostPort, err)
			}
			_ = bus.Close()
		}
	}
	for i, r := range c.Replicas {
		info, err := r.Client(t).Info(ctx, "replication").Result()
		want := "master_port:" + strconv.Itoa(c.ProxyOf(c.Masters[i]).Port()) + "\r"
		if err != nil || !strings.Contains(info, want) {
			t.Fatalf("replica %s replicates not through its master's proxy (%s): %v\n%s", r.Addr(), want, err, info)
		}
	}

	// A cluster client seeded with one proxy only ever dials proxies.
	var mu sync.Mutex
	dialed := map[string]int{}
	var d net.Dialer
	cc := redis.NewClusterClient(&redis.ClusterOptions{
		Addrs:      []string{c.Addrs()[0]},
		MaxRetries: -1,
		Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
			mu.Lock()
			dialed[addr]++
			mu.Unlock()
			return d.DialContext(ctx, network, addr)
		},
	})
	defer cc.Close()
	keyOf := map[string]string{} // a key of each master, by proxy address
	for i := 0; len(keyOf) < 3 || i < 100; i++ {
		key := "key:" + strconv.Itoa(i)
		if err := cc.Set(ctx, key, i, 0).Err(); err != nil {
			t.Fatalf("SET %s: %v", key, err)
		}
		m, err := cc.MasterForKey(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := keyOf[m.Options().Addr]; !ok {
			keyOf[m.Options().Addr] = key
		}
	}
	mu.Lock()
	for addr := range dialed {
		if proxyOf[addr] == nil {
			t.Errorf("the cluster client dialed %s, which is no proxy", addr)
		}
	}
	for _, m := range c.Masters {
		if dialed[c.ProxyOf(m).Addr()] == 0 {
			t.Errorf("the cluster client never dialed master %s's proxy", m.Addr())
		}
	}
	t.Logf("dials: %v", dialed)
	mu.Unlock()

	// A latency toxic on master 0's proxy slows its keys only.
	const latency = 100 * time.Millisecond
	slowProxy := c.ProxyOf(c.Masters[0])
	name := slowProxy.Latency(t, Downstream, latency, 0)
	for addr, key := range keyOf {
		get := func() error { return cc.Get(ctx, key).Err() }
		if addr == slowProxy.Addr() {
			if took := minDuration(t, 3, get); took < latency {
				t.Fatalf("GET %s of master 0 took %v through a %v latency toxic", key, took, latency)
			}
		} else if took := minDuration(t, 5, get); took >= latency {
			t.Fatalf("GET %s of another master (%s) took %v", key, addr, took)
		}
	}
	slowProxy.RemoveToxic(t, name)
	if took := minDuration(t, 5, func() error { return cc.Get(ctx, keyOf[slowProxy.Addr()]).Err() }); took >= latency {
		t.Fatalf("GET of master 0 took %v after removing the toxic", took)
	}

	// Redirections name the proxies: MOVED for a key of master 1 asked of
	// master 0, ASK while a slot of master 0 migrates to master 1.
	m0, m1 := c.Masters[0].Client(t), c.Masters[1].Client(t)
	key1 := keyOf[c.ProxyOf(c.Masters[1]).Addr()]
	if err := m0.Get(ctx, key1).Err(); err == nil || !strings.HasSuffix(err.Error(), " "+c.ProxyOf(c.Masters[1]).Addr()) || !strings.HasPrefix(err.Error(), "MOVED ") {
		t.Fatalf("GET %s on master 0: %v, want MOVED to master 1's proxy %s", key1, err, c.ProxyOf(c.Masters[1]).Addr())
	}
	var absent string // a key of master 0 that does not exist
	var slot int64
	for i := 0; absent == ""; i++ {
		k := "absent:" + strconv.Itoa(i)
		s, err := m0.ClusterKeySlot(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		if s < 16384/3 {
			absent, slot = k, s
		}
	}
	id0, err0 := m0.ClusterMyID(ctx).Result()
	id1, err1 := m1.ClusterMyID(ctx).Result()
	if err := errors.Join(err0, err1); err != nil {
		t.Fatal(err)
	}
	if err := m1.Do(ctx, "CLUSTER", "SETSLOT", slot, "IMPORTING", id0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := m0.Do(ctx, "CLUSTER", "SETSLOT", slot, "MIGRATING", id1).Err(); err != nil {
		t.Fatal(err)
	}
	askErr := m0.Get(ctx, absent).Err()
	for _, m := range []*redis.Client{m0, m1} {
		if err := m.Do(ctx, "CLUSTER", "SETSLOT", slot, "STABLE").Err(); err != nil {
			t.Fatal(err)
		}
	}
	if want := "ASK " + strconv.FormatInt(slot, 10) + " " + c.ProxyOf(c.Masters[1]).Addr(); askErr == nil || askErr.Error() != want {
		t.Fatalf("GET of a migrating slot: %v, want %s", askErr, want)
	}
}
