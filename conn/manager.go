package conn

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redisconn/redisconn/internal/coalesce"
	"github.com/redisconn/redisconn/internal/instrument"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// ErrClosed is returned by every operation of a manager after Close, and to
// callers that were waiting for a limiter permit when Close ran.
var ErrClosed = errors.New("redisconn: manager is closed")

// Option configures a manager beyond its Config.
type Option func(*options)

type options struct {
	meterProvider  metric.MeterProvider
	tracerProvider trace.TracerProvider
	telemetryOff   bool
	noCoalescing   bool
	dbStatement    bool
	poolName       string
	// flushers is how many coalesced round trips may be in flight at once
	// (coalesceFlushers; a benchmark varies it).
	flushers int
}

// Coalescing parameters, chosen by measurement (make bench, BenchmarkCoalescing).
const (
	// coalesceFlushers is how many round trips of coalesced commands may be
	// in flight at once; those beyond the first run only while a backlog
	// wants them (see internal/coalesce). At 5000 callers 1/2/4/8 flushers
	// gave 412k/460k/498k/494k RPUSH/s (2 cores); with the backlog rule, 4
	// instead of 2 took Worker / AutoPipeline at 5000 callers from 1.07 to
	// 1.17 and BatchRPush / rueidis from 0.88 to 1.06 (make bench, 5 rounds).
	coalesceFlushers = 4
	// coalesceMaxBatch bounds one round trip. Against AutoPipeline at 5000
	// callers, 512/768/1024 gave p99 0.96-0.98x/0.88-0.97x/1.02-1.07x:
	// fewer, larger round trips shorten the queue until one takes too long to
	// write and read.
	coalesceMaxBatch = 768
	// coalesceAloneOver: a command with more argument bytes than this gets a
	// round trip of its own (see coalesce.Config.AloneOver). 64 KiB is far
	// above what coalescing gains from (small commands) and far below a
	// server's proto-max-bulk-len (512 MiB by default, 1 MiB at the least).
	coalesceAloneOver = 64 << 10
	// defaultMaxRetries mirrors go-redis's default for single commands.
	defaultMaxRetries = 3
)

// WithMeterProvider sets where the manager's metrics go. Default:
// otel.GetMeterProvider(), the global one.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return func(o *options) { o.meterProvider = mp }
}

// WithTracerProvider sets where the manager's spans go. Default:
// otel.GetTracerProvider(), the global one.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(o *options) { o.tracerProvider = tp }
}

// WithDBStatement puts each command's text (keys and values) on its span.
// Off by default: spans then carry command names only.
func WithDBStatement(on bool) Option {
	return func(o *options) { o.dbStatement = on }
}

// WithPoolName sets the db.client.connection.pool.name attribute of the
// manager's metrics. Default: the server's host:port/db, or "cluster/" and
// the first seed.
func WithPoolName(name string) Option {
	return func(o *options) { o.poolName = name }
}

// WithCoalescing turns the worker's coalescing of concurrent single commands
// into shared pipelines on (the default) or off. See Worker.
func WithCoalescing(on bool) Option {
	return func(o *options) { o.noCoalescing = !on }
}

// WithTelemetry turns the manager's metrics and spans on (the default) or
// off. Off, no instrument is created and no telemetry hook runs.
func WithTelemetry(on bool) Option {
	return func(o *options) { o.telemetryOff = !on }
}

// withFlushers sets how many coalesced round trips may be in flight at once;
// for BenchmarkCoalescing, which measures the choice of coalesceFlushers.
func withFlushers(n int) Option {
	return func(o *options) { o.flushers = n }
}

func newOptions(opts []Option) options {
	var o options
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	if o.meterProvider == nil {
		o.meterProvider = otel.GetMeterProvider()
	}
	if o.tracerProvider == nil {
		o.tracerProvider = otel.GetTracerProvider()
	}
	if o.flushers <= 0 {
		o.flushers = coalesceFlushers
	}
	return o
}

// manager is what API and Worker share: the go-redis client, its hooks, the
// optional limiter and coalescer, and Close.
type manager struct {
	cfg    Config
	opts   options
	client redis.UniversalClient
	// held serves what holds a connection between commands (Watch, Conn)
	// and diagnostics, from the share of the pool that the limiter does not
	// govern (see held.go). Nil for the API and in cluster mode.
	held *redis.Client
	// wire sends the coalescer's round trips (Worker only).
	wire redis.UniversalClient
	// direct shares client's pool (the limited share) without its hooks
	// but closed, pool timeout and the per-server ones: for pipelines that
	// run the user's hooks and take their permit themselves (pipelineOn).
	// A standalone or Sentinel Worker only.
	direct  *redis.Client
	limiter *limiter // nil for the API
	cluster bool
	// master and probe are set in Sentinel mode (sentinel.go).
	master *master
	probe  *probe
	tel    *instrument.Instruments // nil when telemetry is off
	server serverCache
	// coalescer sends round trips of callers' commands on wire: batch
	// chunks always, single commands when coalesces (Worker only).
	coalescer *coalesce.Coalescer
	coalesces bool
	// users are the hooks added with AddHook.
	users *userHooks
	// shares are the pool sizes of client, wire and held (per node).
	shares shares

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

func newManager(ctx context.Context, role Role, cfg Config, opts []Option) (*manager, error) {
	if cfg.Role == "" {
		cfg.Role = role
	}
	if cfg.Role != role {
		return nil, &ConfigError{Name: "Config.Role", Value: string(cfg.Role), Accepted: fmt.Sprintf("%q (or empty) for New%s", role, roleTitle(role))}
	}
	cfg = cfg.withDefaults()
	if err := cfg.validate(fieldNames); err != nil {
		return nil, err
	}
	m := &manager{cfg: cfg, opts: newOptions(opts), cluster: len(cfg.ClusterAddrs) > 0}
	if len(cfg.SentinelAddrs) > 0 {
		m.master = &master{}
		p, err := m.newProbe()
		if err != nil {
			return nil, err
		}
		m.probe = p
	}
	if !m.opts.telemetryOff {
		tel, err := m.instruments()
		if err != nil {
			return nil, fmt.Errorf("redisconn: telemetry: %w", err)
		}
		m.tel = tel
	}
	sh := poolShares(cfg, role, m.opts.flushers)
	m.shares = sh
	client, err := m.newClient(sh.limited)
	if err != nil {
		return nil, err
	}
	m.client = client
	if c, ok := client.(*redis.Client); ok && role == RoleWorker {
		// Before any hook is added: the clone keeps a chain of its own.
		m.direct = c.WithTimeout(cfg.SocketTimeout)
	}
	m.users = &userHooks{}
	if role == RoleWorker {
		m.limiter = newLimiter(cfg.MaxConcurrentOps)
		wire, err := m.newClient(sh.wire)
		if err != nil {
			_ = m.close()
			return nil, err
		}
		m.wire = wire
		var mark func(context.Context) bool
		if m.tel != nil {
			// The wire client's telemetry finds the callers in a sampled
			// trace of a round trip (chain.go).
			mark = instrument.Sampled
		}
		m.coalescer = coalesce.New(coalesce.Config{
			Send:       m.sendRoundTrip,
			Limiter:    roundTripPermits{m.limiter},
			Flushers:   sh.wire,
			MaxBatch:   coalesceMaxBatch,
			MaxRetries: defaultMaxRetries,
			AloneOver:  coalesceAloneOver,
			Closed:     ErrClosed,
			Mark:       mark,
		})
		m.coalesces = !m.opts.noCoalescing
		if sh.held > 0 {
			held, err := m.newClient(sh.held)
			if err != nil {
				_ = m.close()
				return nil, err
			}
			m.held = held.(*redis.Client)
		}
	}
	m.addHooks()
	if m.tel != nil {
		if err := m.observe(); err != nil {
			_ = m.close()
			return nil, fmt.Errorf("redisconn: telemetry: %w", err)
		}
	}
	if err := m.ping(ctx); err != nil {
		_ = m.close()
		return nil, err
	}
	return m, nil
}

// sendRoundTrip sends a coalesced round trip as one pipeline of the wire
// client.
func (m *manager) sendRoundTrip(ctx context.Context, cmds []redis.Cmder) error {
	pipe := m.wire.Pipeline()
	_ = pipe.BatchProcess(ctx, cmds...) // one copy of cmds, not a growing one
	_, err := pipe.Exec(ctx)
	return err
}

func roleTitle(r Role) string {
	if r == RoleWorker {
		return "Worker"
	}
	return "API"
}

// newClient builds a go-redis client of the Config with a pool of poolSize
// connections (per node in a cluster).
func (m *manager) newClient(poolSize int) (redis.UniversalClient, error) {
	c := m.cfg
	var base *redis.Options
	if c.URL != "" {
		opt, err := redis.ParseURL(c.URL)
		if err != nil { // validate already checked; keep the message secret-free
			return nil, &ConfigError{Name: "Config.URL", Value: RedactURL(c.URL), Accepted: "a redis:// or rediss:// URL"}
		}
		base = opt
	} else {
		base = &redis.Options{
			Addr:     net.JoinHostPort(c.Host, strconv.Itoa(c.Port)),
			Username: c.Username,
			Password: string(c.Password),
			DB:       c.DB,
		}
	}
	tlsConfig, err := m.tlsConfig(base.TLSConfig != nil)
	if err != nil {
		return nil, err
	}
	base.TLSConfig = tlsConfig
	base.PoolSize = poolSize
	base.PoolTimeout = c.PoolTimeout
	base.ReadTimeout = c.SocketTimeout
	base.WriteTimeout = c.SocketTimeout
	base.DialTimeout = c.ConnectTimeout
	// Without it a call can outlive its context deadline by the read timeout.
	base.ContextTimeoutEnabled = true
	// Pipelines share the pool instead of go-redis's extra pipeline pool, so
	// PoolSize is every connection the manager opens (pub/sub aside) and the
	// limiter's bound on it holds.
	base.PipelinePoolSize = -1
	base.ClientName = c.ClientName
	// go-redis would send a command again after its reply was lost; the
	// resend hook sends again only what certainly did not run (resend.go).
	base.MaxRetries = -1

	if m.master != nil {
		fo := &redis.FailoverOptions{
			MasterName:            c.SentinelMaster,
			SentinelAddrs:         c.SentinelAddrs,
			SentinelUsername:      c.SentinelUsername,
			SentinelPassword:      string(c.SentinelPassword),
			ClientName:            base.ClientName,
			Username:              base.Username,
			Password:              base.Password,
			DB:                    base.DB,
			TLSConfig:             base.TLSConfig,
			PoolSize:              base.PoolSize,
			PoolTimeout:           base.PoolTimeout,
			ReadTimeout:           base.ReadTimeout,
			WriteTimeout:          base.WriteTimeout,
			DialTimeout:           base.DialTimeout,
			ContextTimeoutEnabled: true,
			PipelinePoolSize:      -1,
			MaxRetries:            base.MaxRetries,
		}
		return redis.NewFailoverClient(fo), nil
	}
	if !m.cluster {
		return redis.NewClient(base), nil
	}
	return redis.NewClusterClient(&redis.ClusterOptions{
		Addrs:                 c.ClusterAddrs,
		ClientName:            base.ClientName,
		Username:              base.Username,
		Password:              base.Password,
		TLSConfig:             base.TLSConfig,
		PoolSize:              base.PoolSize,
		PoolTimeout:           base.PoolTimeout,
		ReadTimeout:           base.ReadTimeout,
		WriteTimeout:          base.WriteTimeout,
		DialTimeout:           base.DialTimeout,
		ContextTimeoutEnabled: true,
		PipelinePoolSize:      -1,
		// Of the node clients; the cluster client's own loop sends again
		// up to MaxRedirects times, and the hooks see to what it sends
		// (resend.go).
		MaxRetries: base.MaxRetries,
		// A slot map older than this is reloaded; clusterReloadHook reloads
		// sooner when a node stops answering.
		ClusterStateReloadInterval: 10 * time.Second,
	}), nil
}

// tlsConfig resolves the TLS settings; fromURL says a rediss:// URL asked for TLS.
func (m *manager) tlsConfig(fromURL bool) (*tls.Config, error) {
	c := m.cfg
	if c.TLSConfig != nil {
		return c.TLSConfig.Clone(), nil
	}
	if !c.TLS && !fromURL && c.TLSCAFile == "" && !c.TLSInsecureSkipVerify {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.TLSServerName}
	if tc.ServerName == "" && !m.cluster && m.master == nil {
		// A cluster's nodes and a Sentinel's servers are verified by the
		// host they are dialed at (crypto/tls takes it from the address).
		tc.ServerName = c.Host
		if c.URL != "" {
			if opt, err := redis.ParseURL(c.URL); err == nil {
				tc.ServerName, _, _ = net.SplitHostPort(opt.Addr)
			}
		}
	}
	if c.TLSCAFile != "" {
		pem, err := os.ReadFile(c.TLSCAFile)
		if err != nil {
			return nil, &ConfigError{Name: "Config.TLSCAFile", Value: c.TLSCAFile, Accepted: "a readable PEM file of CA certificates (" + err.Error() + ")"}
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, &ConfigError{Name: "Config.TLSCAFile", Value: c.TLSCAFile, Accepted: "a PEM file with at least one CA certificate"}
		}
		tc.RootCAs = pool
	}
	// Explicit opt-in only; the default verifies the server's certificate.
	tc.InsecureSkipVerify = c.TLSInsecureSkipVerify //nolint:gosec
	return tc, nil
}

// target names the server(s) for error messages.
func (m *manager) target() string {
	if m.cluster {
		return "Redis Cluster seeds " + strings.Join(m.cfg.ClusterAddrs, ",")
	}
	if m.master != nil {
		return fmt.Sprintf("master %q of Redis Sentinels %s", m.cfg.SentinelMaster, strings.Join(m.cfg.SentinelAddrs, ","))
	}
	if m.cfg.URL != "" {
		if opt, err := redis.ParseURL(m.cfg.URL); err == nil {
			return "Redis at " + opt.Addr
		}
	}
	return "Redis at " + net.JoinHostPort(m.cfg.Host, strconv.Itoa(m.cfg.Port))
}

// ping checks that the server answers, within ConnectTimeout.
func (m *manager) ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.ConnectTimeout+m.cfg.SocketTimeout)
	defer cancel()
	err := m.pingOnce(ctx)
	if err == nil {
		return nil
	}
	msg := err.Error()
	var hint string
	switch {
	case m.master != nil && strings.Contains(msg, "sentinels specified in configuration are unreachable"):
		// go-redis's error when no sentinel told it the master's address.
		switch {
		case strings.Contains(msg, "WRONGPASS"), strings.Contains(msg, "NOAUTH"):
			hint = fmt.Sprintf(" (authentication at the sentinels failed for user %q: check REDIS_SENTINEL_USERNAME / REDIS_SENTINEL_PASSWORD)", sentinelUser(m.cfg))
		case m.cfg.TLS:
			hint = " (no sentinel answered for the master: check REDIS_SENTINEL_ADDRS, REDIS_SENTINEL_MASTER, REDIS_SSL_CA_FILE)"
		default:
			hint = " (no sentinel answered for the master: check REDIS_SENTINEL_ADDRS, REDIS_SENTINEL_MASTER)"
		}
	case strings.Contains(msg, "WRONGPASS"), strings.Contains(msg, "NOAUTH"), strings.Contains(msg, "invalid password"):
		user := m.cfg.Username
		if user == "" {
			user = "default"
		}
		hint = fmt.Sprintf(" (authentication failed for user %q: check REDIS_USERNAME / REDIS_PASSWORD)", user)
	case strings.Contains(msg, "x509:"), strings.Contains(msg, "tls:"):
		hint = " (TLS handshake failed: check REDIS_SSL_CA_FILE / REDIS_SSL_SERVER_NAME)"
	case strings.Contains(msg, "malformed HTTP response"), strings.Contains(msg, "first record does not look like a TLS handshake"):
		hint = " (the server does not speak TLS: unset REDIS_SSL)"
	}
	for _, p := range []Secret{m.cfg.Password, m.cfg.SentinelPassword} {
		if p != "" {
			// No server error is known to echo a password; make sure of it.
			msg = strings.ReplaceAll(msg, string(p), redacted)
		}
	}
	return &wrappedError{msg: fmt.Sprintf("redisconn: %s cannot reach %s%s: %s", m.cfg.Role, m.target(), hint, msg), err: err}
}

// pingOnce sends the construction's PING: on a standalone Worker through
// the held share, so that no pool opens a connection it does not need yet;
// in a cluster as a pipeline of the client callers use, which loads its slot
// map (a single PING would be coalesced onto the wire client), so that no
// caller's first operation waits for it.
func (m *manager) pingOnce(ctx context.Context) error {
	if m.held != nil {
		return m.held.Ping(ctx).Err()
	}
	if m.cluster {
		_, err := m.client.Pipelined(ctx, func(p redis.Pipeliner) error {
			p.Ping(ctx)
			return nil
		})
		return err
	}
	return m.client.Ping(ctx).Err()
}

func sentinelUser(c Config) string {
	if c.SentinelUsername == "" {
		return "default"
	}
	return c.SentinelUsername
}

// wrappedError has its own (secret-free) message and unwraps to the cause.
type wrappedError struct {
	msg string
	err error
}

func (e *wrappedError) Error() string { return e.msg }
func (e *wrappedError) Unwrap() error { return e.err }

// close is idempotent: the first call closes, later calls return nil. It
// does not wait for the server: callers waiting for a permit or queued for a
// round trip get ErrClosed at once, and closing the clients closes every
// connection, so operations in flight end with the connection's error.
func (m *manager) close() error {
	first := false
	m.closeOnce.Do(func() {
		first = true
		m.closed.Store(true)
		if m.limiter != nil {
			m.limiter.Close()
		}
		if m.coalescer != nil {
			m.coalescer.Close()
		}
		var errs []error
		if m.tel != nil {
			errs = append(errs, m.tel.Close())
		}
		for _, c := range []redis.UniversalClient{m.client, m.wire} {
			if c != nil {
				errs = append(errs, c.Close())
			}
		}
		if m.held != nil {
			errs = append(errs, m.held.Close())
		}
		if m.probe != nil {
			errs = append(errs, m.probe.close())
		}
		if m.coalescer != nil {
			m.coalescer.Wait()
		}
		m.closeErr = errors.Join(errs...)
	})
	if first {
		return m.closeErr
	}
	return nil
}
