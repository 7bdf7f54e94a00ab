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
	"github.com/redisconn/redisconn/telemetry"
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
}

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
	return o
}

// manager is what API and Worker share: the go-redis client, its hooks, the
// optional limiter, and Close.
type manager struct {
	cfg     Config
	opts    options
	client  redis.UniversalClient
	limiter *limiter // nil for the API
	cluster bool
	tel     *telemetry.Instruments // nil when telemetry is off
	server  serverCache
	// coalescer is nil for the API and with WithCoalescing(false).
	coalescer *coalescer
	// building is true while newManager adds its hooks: the chains built
	// then are the manager's own (see limiterHook).
	building atomic.Bool

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
	client, err := m.newClient()
	if err != nil {
		return nil, err
	}
	m.client = client
	// Hook order, outermost first: closed check, then the limiter, so an
	// operation on a closed manager never waits, and everything inside the
	// limiter (telemetry, go-redis's own work) runs with a permit held.
	m.building.Store(true)
	client.AddHook(handshakeHook{})
	client.AddHook(closedHook{closed: &m.closed})
	if cc, ok := client.(*redis.ClusterClient); ok {
		// Node clients set up their connections through their own hooks.
		cc.OnNewNode(func(node *redis.Client) { node.AddHook(handshakeHook{}) })
		client.AddHook(clusterReloadHook{cc: cc, last: new(atomic.Int64)})
	}
	if role == RoleWorker {
		m.limiter = newLimiter(cfg.MaxConcurrentOps)
		if !m.opts.noCoalescing {
			m.coalescer = newCoalescer(m)
		}
		client.AddHook(limiterHook{m: m})
	}
	if !m.opts.telemetryOff {
		if err := m.instrument(); err != nil {
			m.building.Store(false)
			_ = m.close()
			return nil, fmt.Errorf("redisconn: telemetry: %w", err)
		}
	}
	m.building.Store(false)
	if err := m.ping(ctx); err != nil {
		_ = m.close()
		return nil, err
	}
	return m, nil
}

func roleTitle(r Role) string {
	if r == RoleWorker {
		return "Worker"
	}
	return "API"
}

// newClient builds the go-redis client of the Config.
func (m *manager) newClient() (redis.UniversalClient, error) {
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
	base.PoolSize = c.PoolSize
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

	if !m.cluster {
		return redis.NewClient(base), nil
	}
	return redis.NewClusterClient(&redis.ClusterOptions{
		Addrs:                 c.ClusterAddrs,
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
	if tc.ServerName == "" && !m.cluster {
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
	err := m.client.Ping(ctx).Err()
	if err == nil {
		return nil
	}
	msg := err.Error()
	var hint string
	switch {
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
	if p := string(m.cfg.Password); p != "" {
		// No server error is known to echo the password; make sure of it.
		msg = strings.ReplaceAll(msg, p, redacted)
	}
	return &wrappedError{msg: fmt.Sprintf("redisconn: %s cannot reach %s%s: %s", m.cfg.Role, m.target(), hint, msg), err: err}
}

// wrappedError has its own (secret-free) message and unwraps to the cause.
type wrappedError struct {
	msg string
	err error
}

func (e *wrappedError) Error() string { return e.msg }
func (e *wrappedError) Unwrap() error { return e.err }

// close is idempotent: the first call closes, later calls return nil.
func (m *manager) close() error {
	first := false
	m.closeOnce.Do(func() {
		first = true
		m.closed.Store(true)
		if m.limiter != nil {
			m.limiter.close()
		}
		if m.coalescer != nil {
			m.coalescer.close()
		}
		var telErr error
		if m.tel != nil {
			telErr = m.tel.Close()
		}
		m.closeErr = errors.Join(m.client.Close(), telErr)
	})
	if first {
		return m.closeErr
	}
	return nil
}
