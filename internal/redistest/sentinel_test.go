package redistest

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func TestSentinelFailover(t *testing.T) {
	cases := []struct {
		name string
		opts SentinelOptions
		// pause pauses a sentinel during the failover.
		pause bool
		// proxy puts the data servers behind a Toxiproxy.
		proxy bool
	}{
		{name: "plain", pause: true},
		{name: "password", opts: SentinelOptions{
			MasterName:       "pw-master",
			Server:           Options{Password: "server pw"},
			SentinelPassword: "sentinel-pw",
		}},
		{name: "tls-acl", opts: SentinelOptions{
			Server:           Options{TLS: true, Username: "app", UserPassword: "app-pw"},
			SentinelUsername: "sen",
			SentinelPassword: "sen-pw",
		}},
		// TLS through the proxies (see TestSentinelProxy for more).
		{name: "tls-acl-proxy", proxy: true, opts: SentinelOptions{
			Server:           Options{TLS: true, Username: "app", UserPassword: "app-pw"},
			SentinelUsername: "sen",
			SentinelPassword: "sen-pw",
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if tc.proxy {
				tc.opts.Proxy = StartToxiproxy(t)
			}
			testSentinelFailover(t, tc.opts, tc.pause)
		})
	}
}

// failoverBound is how long a failover with the default 1s down-after may
// take; it takes 2-4s.
const failoverBound = 20 * time.Second

func testSentinelFailover(t *testing.T, opts SentinelOptions, pause bool) {
	ctx := context.Background()
	begin := time.Now()
	s := StartSentinel(t, opts)
	t.Logf("StartSentinel took %v", time.Since(begin).Round(time.Millisecond))

	if got := len(s.SentinelAddrs()); got != 3 {
		t.Fatalf("SentinelAddrs: %d addresses, want 3", got)
	}
	master := s.Master()
	if master != s.Servers()[0] {
		t.Fatalf("Master is %s, want the first server %s", master.Addr(), s.Servers()[0].Addr())
	}
	if (opts.Proxy == nil) != (s.Proxies() == nil && s.ProxyOf(master) == nil) {
		t.Fatalf("Proxy %v: Proxies %v, ProxyOf(master) %v", opts.Proxy != nil, s.Proxies(), s.ProxyOf(master))
	}

	// A client that knows only the sentinels reaches the master, with the
	// sentinels' and the servers' credentials and TLS.
	fc := failoverClient(t, s, opts)
	// WAIT for both replicas, so whichever is promoted has the key. WAIT
	// covers the writes of its own connection (Valkey counts only those; Redis
	// 7.0 also what any client wrote before the connection's last command):
	// one pipeline, one connection.
	cmds, err := fc.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, "key", "value", 0)
		p.Do(ctx, "WAIT", 2, 5000)
		return nil
	})
	if err != nil {
		t.Fatalf("SET and WAIT through the sentinels: %v", err)
	}
	if n, _ := cmds[1].(*redis.Cmd).Int(); n != 2 {
		t.Fatalf("WAIT 2: %d", n)
	}
	for _, r := range s.Replicas() {
		if got, err := r.Client(t).Get(ctx, "key").Result(); got != "value" {
			t.Fatalf("GET on replica %s: %q, %v", r.Addr(), got, err)
		}
	}

	var paused *Server
	if pause {
		paused = s.Sentinels()[0]
		paused.Pause()
		defer paused.Resume() // if the test fails before the Resume below
	}
	killed := s.KillMaster()
	if killed != master {
		t.Fatalf("KillMaster killed %s, want %s", killed.Addr(), master.Addr())
	}
	begin = time.Now()
	wctx, cancel := context.WithTimeout(ctx, failoverBound)
	defer cancel()
	newAddr, err := s.WaitForFailover(wctx, killed.Addr())
	if err != nil {
		for i, sen := range s.Sentinels() {
			t.Logf("sentinel %d log:\n%s", i, sen.Log())
		}
		t.Fatal(err)
	}
	t.Logf("failover from %s to %s took %v", killed.Addr(), newAddr, time.Since(begin).Round(time.Millisecond))

	if paused != nil {
		paused.Resume()
	}
	newMaster := s.Master()
	if s.announced(newMaster) != newAddr || newMaster == killed {
		t.Fatalf("Master is %s after failover to %s", newMaster.Addr(), newAddr)
	}
	nc := newMaster.Client(t)
	if got, err := nc.Get(ctx, "key").Result(); got != "value" {
		t.Fatalf("GET on new master: %q, %v", got, err)
	}
	if err := nc.Set(ctx, "after", "failover", 0).Err(); err != nil {
		t.Fatalf("SET on new master: %v", err)
	}
	// A new one finds the new master. (The first may fail once on its pooled
	// connection to the killed master; that is go-redis, not the helper.)
	if err := failoverClient(t, s, opts).Set(ctx, "after", "client", 0).Err(); err != nil {
		t.Fatalf("SET through the sentinels after failover: %v", err)
	}
	if got, err := nc.Get(ctx, "after").Result(); got != "client" {
		t.Fatalf("the sentinel client wrote elsewhere: GET on new master: %q, %v", got, err)
	}
}

func TestSentinelRestartSentinel(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := StartSentinel(t, SentinelOptions{SentinelUsername: "sen", SentinelPassword: "pw"})
	sen := s.Sentinels()[0]
	sen.Kill()
	if addr, err := s.MasterAddr(ctx); err != nil || addr != s.Servers()[0].Addr() {
		t.Fatalf("MasterAddr with a sentinel down: %q, %v", addr, err)
	}
	sen.Restart()
	c := redis.NewSentinelClient(queryOptions(sen))
	defer c.Close()
	// It comes back from its rewritten config, knowing the deployment.
	var m map[string]string
	if !WaitFor(ctx, 10*time.Second, func() bool {
		var err error
		m, err = c.Master(ctx, s.MasterName()).Result()
		return err == nil && m["num-slaves"] == "2" && m["num-other-sentinels"] == "2"
	}) {
		t.Fatalf("restarted sentinel: SENTINEL MASTER %v", m)
	}
}

// TestSentinelProxy: with SentinelOptions.Proxy the sentinels name the data
// servers' proxies, before and after a failover, so a failover client reaches
// the master only through them; a toxic on the master's proxy breaks it.
func TestSentinelProxy(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tp := StartToxiproxy(t)
	// The fault below lasts about 1.5s: a down-after well over it, so the
	// sentinels, which monitor through the same proxy, do not fail over.
	opts := SentinelOptions{Proxy: tp, DownAfter: 5 * time.Second, Server: Options{Password: "server pw"}}
	begin := time.Now()
	s := StartSentinel(t, opts)
	t.Logf("StartSentinel with proxies took %v", time.Since(begin).Round(time.Millisecond))

	servers, proxies := s.Servers(), s.Proxies()
	if len(servers) != 3 || len(proxies) != 3 {
		t.Fatalf("%d servers, %d proxies; want 3", len(servers), len(proxies))
	}
	byProxy := map[string]*Server{} // by proxy address
	for i, sv := range servers {
		p := s.ProxyOf(sv)
		if p == nil || p != proxies[i] || p.Upstream() != sv.Addr() || p.Addr() == sv.Addr() {
			t.Fatalf("server %s: ProxyOf %v, Proxies()[%d] %v", sv.Addr(), p, i, proxies[i])
		}
		byProxy[p.Addr()] = sv
	}
	master := s.Master()
	if master != servers[0] {
		t.Fatalf("Master is %s, want the first server %s", master.Addr(), servers[0].Addr())
	}
	if addr, err := s.MasterAddr(ctx); err != nil || addr != s.ProxyOf(master).Addr() {
		t.Fatalf("MasterAddr: %q, %v; want the master's proxy %s", addr, err, s.ProxyOf(master).Addr())
	}
	if rs := s.Replicas(); len(rs) != 2 || slices.Contains(rs, master) {
		t.Fatalf("Replicas: %v", rs)
	}
	checkSentinelsNameProxies(t, s, master)
	// Replication goes through the master's proxy; the master lists its
	// replicas at their proxies.
	for _, r := range servers[1:] {
		want := "master_port:" + strconv.Itoa(s.ProxyOf(master).Port()) + "\r"
		if info, err := r.Client(t).Info(ctx, "replication").Result(); err != nil || !strings.Contains(info, want) {
			t.Fatalf("replica %s replicates not through the master's proxy (%s): %v\n%s", r.Addr(), strings.TrimSpace(want), err, info)
		}
	}
	info, err := master.Client(t).Info(ctx, "replication").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range servers[1:] {
		if want := fmt.Sprintf("ip=127.0.0.1,port=%d,", s.ProxyOf(r).Port()); !strings.Contains(info, want) {
			t.Fatalf("the master does not list replica %s at its proxy (%s):\n%s", r.Addr(), want, info)
		}
	}

	// A failover client that knows only the sentinels dials the sentinels and
	// the master's proxy, never a server directly.
	var mu sync.Mutex
	dialed := map[string]int{}
	var d net.Dialer
	fc := redis.NewFailoverClient(&redis.FailoverOptions{
		MasterName:    s.MasterName(),
		SentinelAddrs: s.SentinelAddrs(),
		Password:      opts.Server.Password,
		MaxRetries:    -1,
		ReadTimeout:   500 * time.Millisecond,
		WriteTimeout:  500 * time.Millisecond,
		Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
			mu.Lock()
			dialed[addr]++
			mu.Unlock()
			return d.DialContext(ctx, network, addr)
		},
	})
	defer fc.Close()
	checkDialed := func(want *Server) {
		t.Helper()
		mu.Lock()
		defer mu.Unlock()
		for addr := range dialed {
			if byProxy[addr] == nil && !slices.Contains(s.SentinelAddrs(), addr) {
				t.Fatalf("the failover client dialed %s, neither a sentinel nor a proxy (dials %v)", addr, dialed)
			}
		}
		if dialed[s.ProxyOf(want).Addr()] == 0 {
			t.Fatalf("the failover client never dialed %s's proxy %s (dials %v)", want.Addr(), s.ProxyOf(want).Addr(), dialed)
		}
		t.Logf("dials: %v", dialed)
	}
	// setAndWait writes key through fc and waits (400ms at most) for both
	// replicas to have it: one pipeline, one connection (see
	// testSentinelFailover). Right after a full sync a replica may get the
	// master's stream only up to a second later (seen without proxies too),
	// so callers try again.
	setAndWait := func(key, value string) error {
		cmds, err := fc.Pipelined(ctx, func(p redis.Pipeliner) error {
			p.Set(ctx, key, value, 0)
			p.Do(ctx, "WAIT", 2, 400)
			return nil
		})
		if err != nil {
			return err
		}
		if n, _ := cmds[1].(*redis.Cmd).Int(); n != 2 {
			return fmt.Errorf("WAIT 2: %d", n)
		}
		return nil
	}
	var lastErr error
	if !WaitFor(ctx, 10*time.Second, func() bool { lastErr = setAndWait("key", "value"); return lastErr == nil }) {
		t.Fatalf("SET and WAIT through the sentinels: %v", lastErr)
	}
	if got, err := fc.Get(ctx, "key").Result(); got != "value" {
		t.Fatalf("GET through the sentinels: %q, %v", got, err)
	}
	if got, err := master.Client(t).Get(ctx, "key").Result(); got != "value" {
		t.Fatalf("GET on the master: %q, %v", got, err)
	}
	checkDialed(master)

	// A black hole on the master's proxy: the client's commands time out,
	// on its pooled connection and on new ones.
	mp := s.ProxyOf(master)
	faultBegin := time.Now()
	toxic := mp.Timeout(t, Downstream, 0)
	for i, cmd := range []func() error{
		func() error { return fc.Set(ctx, "during", "fault", 0).Err() },
		func() error { return fc.Get(ctx, "key").Err() },
		func() error { return fc.Ping(ctx).Err() },
	} {
		if err := cmd(); err == nil {
			t.Fatalf("command %d through the master's proxy under a timeout toxic succeeded", i)
		} else {
			t.Logf("under the toxic, command %d: %v", i, err)
		}
	}
	mp.RemoveToxic(t, toxic)
	removed := time.Now()
	t.Logf("the fault lasted %v", removed.Sub(faultBegin).Round(time.Millisecond))
	// Removing the toxic closes the connections it held, the replicas' links
	// to the master included: they come back within a second or so.
	attempts := 0
	if !WaitFor(ctx, 10*time.Second, func() bool {
		attempts++
		lastErr = setAndWait("after", "fault")
		return lastErr == nil
	}) {
		t.Fatalf("SET and WAIT after removing the toxic: %v", lastErr)
	}
	t.Logf("SET and WAIT succeeded at attempt %d, %v after removing the toxic", attempts, time.Since(removed).Round(time.Millisecond))
	// Both replicas lost their link through the proxy and resynchronized.
	if n := InfoField(t, master.Client(t), "stats", "sync_partial_ok"); n < 2 {
		t.Fatalf("sync_partial_ok on the master: %d, want the 2 replicas to have reconnected through the proxy", n)
	}
	if got, err := fc.Get(ctx, "after").Result(); got != "fault" {
		t.Fatalf("GET after the fault: %q, %v", got, err)
	}
	if m := s.Master(); m != master {
		t.Fatalf("the fault made the sentinels fail over to %s", m.Addr())
	}

	// A failover: the sentinels name the new master's proxy, and the client
	// follows it there.
	killed := s.KillMaster()
	if killed != master {
		t.Fatalf("KillMaster killed %s, want %s", killed.Addr(), master.Addr())
	}
	begin = time.Now()
	// A failover takes down-after (5s) and 1-3s more.
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	newAddr, err := s.WaitForFailover(wctx, killed.Addr())
	if err != nil {
		for i, sen := range s.Sentinels() {
			t.Logf("sentinel %d log:\n%s", i, sen.Log())
		}
		t.Fatal(err)
	}
	t.Logf("failover from %s to %s took %v", killed.Addr(), newAddr, time.Since(begin).Round(time.Millisecond))
	newMaster := s.Master()
	if newMaster == killed || newAddr != s.ProxyOf(newMaster).Addr() {
		t.Fatalf("Master is %s (proxy %s) after a failover to %s", newMaster.Addr(), s.ProxyOf(newMaster).Addr(), newAddr)
	}
	// WaitForFailover takes the old master's proxy address too.
	if addr, err := s.WaitForFailover(wctx, s.ProxyOf(killed).Addr()); err != nil || addr != newAddr {
		t.Fatalf("WaitForFailover from the old master's proxy: %q, %v", addr, err)
	}
	if rs := s.Replicas(); len(rs) != 2 || !slices.Contains(rs, killed) || slices.Contains(rs, newMaster) {
		t.Fatalf("Replicas after the failover: %v", rs)
	}
	checkSentinelsNameProxies(t, s, newMaster)

	// The client's pooled connection went to the old master's proxy, which
	// now closes every connection at once: the first command may fail.
	var setErr error
	if !WaitFor(ctx, 10*time.Second, func() bool {
		setErr = fc.Set(ctx, "after", "failover", 0).Err()
		return setErr == nil
	}) {
		t.Fatalf("SET through the sentinels after the failover: %v", setErr)
	}
	nc := newMaster.Client(t)
	for key, want := range map[string]string{"key": "value", "after": "failover"} {
		if got, err := nc.Get(ctx, key).Result(); got != want {
			t.Fatalf("GET %s on the new master: %q, %v; want %q", key, got, err, want)
		}
	}
	checkDialed(newMaster)

	// The old master comes back announcing its proxy still, and the sentinels
	// turn it into a replica of the new master's proxy.
	killed.Restart()
	port, err := killed.Client(t).ConfigGet(ctx, "replica-announce-port").Result()
	if err != nil || port["replica-announce-port"] != strconv.Itoa(s.ProxyOf(killed).Port()) {
		t.Fatalf("restarted old master: replica-announce-port %v, %v; want its proxy's port %d", port, err, s.ProxyOf(killed).Port())
	}
	begin = time.Now()
	want := "master_port:" + strconv.Itoa(s.ProxyOf(newMaster).Port()) + "\r"
	var rinfo string
	if !WaitFor(ctx, 30*time.Second, func() bool {
		rinfo, _ = killed.Client(t).Info(ctx, "replication").Result()
		return strings.Contains(rinfo, "role:slave") && strings.Contains(rinfo, want) && strings.Contains(rinfo, "master_link_status:up")
	}) {
		t.Fatalf("the restarted old master does not replicate from the new master's proxy (%s):\n%s", strings.TrimSpace(want), rinfo)
	}
	t.Logf("the sentinels turned the old master into a replica in %v", time.Since(begin).Round(time.Millisecond))
	checkSentinelsNameProxies(t, s, newMaster)
}

// checkSentinelsNameProxies checks, on every sentinel, that master is reported
// at its proxy (GET-MASTER-ADDR-BY-NAME, SENTINEL MASTER) and the other data
// servers as its replicas at theirs (SENTINEL REPLICAS). The sentinels may
// take a moment to agree: it waits up to 10s.
func checkSentinelsNameProxies(t *testing.T, s *Sentinel, master *Server) {
	t.Helper()
	ctx := context.Background()
	wantMaster := s.ProxyOf(master).Addr()
	var wantReplicas []string
	for _, sv := range s.Servers() {
		if sv != master {
			wantReplicas = append(wantReplicas, s.ProxyOf(sv).Addr())
		}
	}
	slices.Sort(wantReplicas)
	check := func(c *redis.SentinelClient) error {
		hp, err := c.GetMasterAddrByName(ctx, s.MasterName()).Result()
		if err != nil {
			return err
		}
		if len(hp) != 2 || net.JoinHostPort(hp[0], hp[1]) != wantMaster {
			return fmt.Errorf("GET-MASTER-ADDR-BY-NAME %v, want %s", hp, wantMaster)
		}
		m, err := c.Master(ctx, s.MasterName()).Result()
		if err != nil {
			return err
		}
		if addr := net.JoinHostPort(m["ip"], m["port"]); addr != wantMaster || m["flags"] != "master" {
			return fmt.Errorf("SENTINEL MASTER: %s, flags %s; want %s", addr, m["flags"], wantMaster)
		}
		rs, err := c.Replicas(ctx, s.MasterName()).Result()
		if err != nil {
			return err
		}
		var got []string
		for _, r := range rs {
			got = append(got, net.JoinHostPort(r["ip"], r["port"]))
		}
		slices.Sort(got)
		if !slices.Equal(got, wantReplicas) {
			return fmt.Errorf("SENTINEL REPLICAS %v, want %v", got, wantReplicas)
		}
		return nil
	}
	for _, sen := range s.Sentinels() {
		c := redis.NewSentinelClient(queryOptions(sen))
		var err error
		ok := WaitFor(ctx, 10*time.Second, func() bool { err = check(c); return err == nil })
		_ = c.Close()
		if !ok {
			t.Fatalf("sentinel %s: %v", sen.Addr(), err)
		}
	}
}

func TestConfQuote(t *testing.T) {
	for in, want := range map[string]string{
		"mymaster": "mymaster",
		"":         `""`,
		"a b":      `"a b"`,
		`q"\`:      `"q\"\\"`,
		"x\ny":     `"x\x0ay"`,
	} {
		if got := confQuote(in); got != want {
			t.Errorf("confQuote(%q) = %s, want %s", in, got, want)
		}
	}
}

// failoverClient is a go-redis client that knows only the sentinels.
func failoverClient(t *testing.T, s *Sentinel, opts SentinelOptions) *redis.Client {
	fo := &redis.FailoverOptions{
		MasterName:       s.MasterName(),
		SentinelAddrs:    s.SentinelAddrs(),
		SentinelUsername: opts.SentinelUsername,
		SentinelPassword: opts.SentinelPassword,
		Username:         opts.Server.Username,
		Password:         opts.Server.Password,
		MaxRetries:       -1,
	}
	if opts.Server.Username != "" {
		fo.Password = opts.Server.UserPassword
	}
	if s.Certs != nil {
		fo.TLSConfig = s.Certs.ClientTLSConfig()
	}
	fc := redis.NewFailoverClient(fo)
	t.Cleanup(func() { _ = fc.Close() })
	return fc
}
