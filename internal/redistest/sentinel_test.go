package redistest

import (
	"context"
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
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
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
	if newMaster.Addr() != newAddr || newMaster == killed {
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
