package conn

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Role says which kind of process a manager serves; it picks the defaults.
type Role string

// The two roles.
const (
	// RoleAPI is a light process: caching and some pub/sub. Pool 128, no limiter.
	RoleAPI Role = "api"
	// RoleWorker is a heavy process: thousands of writes per agent run. Pool 200,
	// every operation through a limiter of 100, batch operations.
	RoleWorker Role = "worker"
)

// Defaults of the environment table in DESIGN.md.
const (
	DefaultHost                   = "localhost"
	DefaultPort                   = 6379
	DefaultAPIPoolSize            = 128
	DefaultWorkerPoolSize         = 200
	DefaultWorkerMaxConcurrentOps = 100
	DefaultBatchSize              = 50
	DefaultSocketTimeout          = 5 * time.Second
	DefaultConnectTimeout         = 5 * time.Second
	DefaultAckTimeout             = time.Second
)

// Limits on what the configuration accepts.
const (
	maxPoolSize  = 100000
	maxBatchSize = 100000
	maxDB        = 1 << 20
	// maxAckReplicas: a Redis master serves far fewer replicas than this.
	maxAckReplicas = 100
)

// Config is everything a manager needs. LoadConfig fills it from the environment;
// DefaultConfig gives the role's defaults for building one in code. A zero
// numeric field means "the role's default" (see DefaultConfig).
//
// Printing a Config (String, %v, %+v, %#v, slog, JSON) never shows the password
// or a password inside URL.
type Config struct {
	// Role picks the defaults and whether the limiter and batch operations exist.
	Role Role

	// URL is a redis:// or rediss:// URL. When set, it wins over Host, Port,
	// Username, Password, DB and TLS (REDIS_URL).
	URL string
	// Host and Port name a standalone server (REDIS_HOST, REDIS_PORT).
	Host string
	Port int
	// Username and Password authenticate an ACL user, or the default user when
	// Username is empty (REDIS_USERNAME, REDIS_PASSWORD).
	Username string
	Password Secret
	// DB is the database index of a standalone server (REDIS_DB).
	DB int

	// TLS turns TLS on (REDIS_SSL). Certificates are verified against the system
	// roots, or TLSCAFile when set. TLSInsecureSkipVerify turns verification off
	// and is only for tests (REDIS_SSL_INSECURE_SKIP_VERIFY). TLSConfig, set in
	// code, replaces all of these.
	TLS                   bool
	TLSCAFile             string
	TLSServerName         string
	TLSInsecureSkipVerify bool
	TLSConfig             *tls.Config

	// ClusterAddrs are host:port seeds; set means Redis Cluster mode
	// (REDIS_CLUSTER_ADDRS).
	ClusterAddrs []string

	// SentinelAddrs are host:port addresses of Redis Sentinels; set means
	// Sentinel mode: the manager asks them for the master of SentinelMaster
	// and follows it across failovers (REDIS_SENTINEL_ADDRS). Host and Port
	// are then not used; URL, Username, Password, DB and TLS apply to the
	// master. SentinelUsername and SentinelPassword authenticate to the
	// sentinels themselves (REDIS_SENTINEL_MASTER, REDIS_SENTINEL_USERNAME,
	// REDIS_SENTINEL_PASSWORD). TLS applies to the sentinels too.
	SentinelAddrs    []string
	SentinelMaster   string
	SentinelUsername string
	SentinelPassword Secret

	// ClientName names every connection of the manager on the server
	// (CLIENT LIST), sent inside HELLO at no extra round trip. Empty means
	// redisconn:<role>:<host>:<pid> (DefaultClientName); REDIS_CLIENT_NAME
	// sets it.
	ClientName string

	// PoolSize is the connection pool size: per node in cluster mode
	// (REDIS_MAX_CONNECTIONS for the API, REDIS_WORKER_MAX_CONNECTIONS for the worker).
	PoolSize int
	// MaxConcurrentOps is the worker's limiter size, at most PoolSize
	// (REDIS_WORKER_MAX_CONCURRENT_OPS). The API has no limiter and ignores it.
	MaxConcurrentOps int
	// BatchSize is how many items one batch round trip carries (REDIS_WORKER_BATCH_SIZE).
	BatchSize int
	// AckReplicas, when above 0, makes a BatchRPush chunk count as
	// acknowledged only once WAIT confirms it on that many replicas within
	// AckTimeout; a chunk the master applied that they did not confirm in
	// time is reported uncertain (ErrNotReplicated). 0, the default, is
	// the master's reply alone (REDIS_WORKER_ACK_REPLICAS,
	// REDIS_WORKER_ACK_TIMEOUT). See Worker.BatchRPush for what WAIT does
	// not promise.
	AckReplicas int
	AckTimeout  time.Duration

	// PoolTimeout is how long a caller waits for a pooled connection; 0 keeps
	// go-redis's default (SocketTimeout + 1s) (REDIS_POOL_TIMEOUT).
	PoolTimeout time.Duration
	// SocketTimeout bounds each socket read and write (REDIS_SOCKET_TIMEOUT).
	SocketTimeout time.Duration
	// ConnectTimeout bounds dialing a connection (REDIS_CONNECT_TIMEOUT).
	ConnectTimeout time.Duration
}

// DefaultConfig returns the defaults of a role, as LoadConfig would with an
// empty environment.
func DefaultConfig(role Role) Config {
	c := Config{
		Role:           role,
		ClientName:     DefaultClientName(role),
		Host:           DefaultHost,
		Port:           DefaultPort,
		BatchSize:      DefaultBatchSize,
		SocketTimeout:  DefaultSocketTimeout,
		ConnectTimeout: DefaultConnectTimeout,
		AckTimeout:     DefaultAckTimeout,
	}
	switch role {
	case RoleWorker:
		c.PoolSize = DefaultWorkerPoolSize
		c.MaxConcurrentOps = DefaultWorkerMaxConcurrentOps
	default:
		c.PoolSize = DefaultAPIPoolSize
	}
	return c
}

// ConfigError is a bad configuration value. Its message names the variable (or
// field), the value (never a secret) and what is accepted.
type ConfigError struct {
	Name     string // environment variable or Config field
	Value    string // as given; "[REDACTED]" for secrets
	Accepted string // what would have been accepted
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("redisconn: invalid %s=%q: %s", e.Name, e.Value, e.Accepted)
}

// Validate checks a Config built in code; NewAPI and NewWorker call it. Zero
// numeric fields are taken as the role's defaults first.
func (c Config) Validate() error {
	c = c.withDefaults()
	return c.validate(fieldNames)
}

// withDefaults fills zero fields with the role's defaults.
func (c Config) withDefaults() Config {
	d := DefaultConfig(c.Role)
	if c.Role == "" {
		c.Role = RoleAPI
		d = DefaultConfig(RoleAPI)
	}
	if c.Host == "" {
		c.Host = d.Host
	}
	if c.Port == 0 {
		c.Port = d.Port
	}
	if c.PoolSize == 0 {
		c.PoolSize = d.PoolSize
	}
	if c.MaxConcurrentOps == 0 {
		c.MaxConcurrentOps = d.MaxConcurrentOps
	}
	if c.BatchSize == 0 {
		c.BatchSize = d.BatchSize
	}
	if c.SocketTimeout == 0 {
		c.SocketTimeout = d.SocketTimeout
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = d.ConnectTimeout
	}
	if c.ClientName == "" {
		c.ClientName = DefaultClientName(c.Role)
	}
	if c.AckTimeout == 0 {
		c.AckTimeout = d.AckTimeout
	}
	return c
}

// DefaultClientName is the name a manager of role gives its connections:
// redisconn:<role>:<host>:<pid>, the host being os.Hostname (spaces and
// other characters a client name cannot hold become "-"). ClientsInfo and
// the CLIENT LIST of the server tell roles and processes apart by it.
func DefaultClientName(role Role) string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown"
	}
	return "redisconn:" + string(role) + ":" + clientNameSafe(host) + ":" + strconv.Itoa(os.Getpid())
}

// clientNameSafe replaces what CLIENT SETNAME refuses (spaces, newlines,
// anything outside printable ASCII) with "-".
func clientNameSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if r <= ' ' || r > '~' {
			return '-'
		}
		return r
	}, s)
}

// names maps a setting to the name an error should use: the environment
// variable for LoadConfig, the Config field for Validate.
type names struct {
	role, url, port, db, pool, limiter, batch, cluster, poolTimeout, socketTimeout, connectTimeout, caFile string
	sentinel, sentinelMaster, clientName, ackReplicas, ackTimeout                                          string
}

var fieldNames = names{
	role: "Config.Role", url: "Config.URL", port: "Config.Port", db: "Config.DB",
	pool: "Config.PoolSize", limiter: "Config.MaxConcurrentOps", batch: "Config.BatchSize",
	cluster: "Config.ClusterAddrs", poolTimeout: "Config.PoolTimeout",
	socketTimeout: "Config.SocketTimeout", connectTimeout: "Config.ConnectTimeout",
	caFile: "Config.TLSCAFile", sentinel: "Config.SentinelAddrs", sentinelMaster: "Config.SentinelMaster",
	clientName: "Config.ClientName", ackReplicas: "Config.AckReplicas", ackTimeout: "Config.AckTimeout",
}

func (c Config) validate(n names) error {
	var errs []error
	bad := func(name, value, accepted string) {
		errs = append(errs, &ConfigError{Name: name, Value: value, Accepted: accepted})
	}
	if c.Role != RoleAPI && c.Role != RoleWorker {
		bad(n.role, string(c.Role), `"api" or "worker"`)
	}
	if c.URL != "" {
		if err := checkURL(c.URL); err != nil {
			bad(n.url, RedactURL(c.URL), err.Error())
		}
	}
	if c.Port < 1 || c.Port > 65535 {
		bad(n.port, strconv.Itoa(c.Port), "a TCP port from 1 to 65535")
	}
	if c.DB < 0 || c.DB > maxDB {
		bad(n.db, strconv.Itoa(c.DB), fmt.Sprintf("a database index from 0 to %d", maxDB))
	}
	if c.DB != 0 && len(c.ClusterAddrs) > 0 {
		bad(n.db, strconv.Itoa(c.DB), "0 in cluster mode: Redis Cluster has only database 0")
	}
	poolName := n.pool
	if c.Role == RoleAPI && n.pool == envNames.pool {
		poolName = "REDIS_MAX_CONNECTIONS"
	}
	if c.PoolSize < 1 || c.PoolSize > maxPoolSize {
		bad(poolName, strconv.Itoa(c.PoolSize), fmt.Sprintf("a pool size from 1 to %d", maxPoolSize))
	}
	if c.Role == RoleWorker {
		if c.MaxConcurrentOps < 1 {
			bad(n.limiter, strconv.Itoa(c.MaxConcurrentOps), "a limit of at least 1")
		} else if c.MaxConcurrentOps > c.PoolSize {
			bad(n.limiter, strconv.Itoa(c.MaxConcurrentOps), fmt.Sprintf(
				"at most the worker pool size %s=%d: a limiter wider than the pool lets callers queue for connections again", poolName, c.PoolSize))
		}
		if c.BatchSize < 1 || c.BatchSize > maxBatchSize {
			bad(n.batch, strconv.Itoa(c.BatchSize), fmt.Sprintf("a batch size from 1 to %d", maxBatchSize))
		}
		if c.AckReplicas < 0 || c.AckReplicas > maxAckReplicas {
			bad(n.ackReplicas, strconv.Itoa(c.AckReplicas), fmt.Sprintf("a number of replicas from 0 (off) to %d", maxAckReplicas))
		}
		if c.AckReplicas > 0 && (c.AckTimeout < time.Millisecond || c.AckTimeout >= c.SocketTimeout) {
			bad(n.ackTimeout, c.AckTimeout.String(), fmt.Sprintf(
				"a duration from 1ms to below %s=%s: WAIT's reply must come before the socket timeout", n.socketTimeout, c.SocketTimeout))
		}
	}
	for _, a := range c.ClusterAddrs {
		if err := checkHostPort(a); err != nil {
			bad(n.cluster, strings.Join(c.ClusterAddrs, ","), "comma-separated host:port seeds: "+err.Error())
			break
		}
	}
	for _, a := range c.SentinelAddrs {
		if err := checkHostPort(a); err != nil {
			bad(n.sentinel, strings.Join(c.SentinelAddrs, ","), "comma-separated host:port addresses of sentinels: "+err.Error())
			break
		}
	}
	switch {
	case len(c.SentinelAddrs) > 0 && len(c.ClusterAddrs) > 0:
		bad(n.sentinel, strings.Join(c.SentinelAddrs, ","), fmt.Sprintf(
			"unset when %s is set: a manager talks to Redis Cluster or to a Sentinel-managed master, not both", n.cluster))
	case len(c.SentinelAddrs) > 0 && c.SentinelMaster == "":
		bad(n.sentinelMaster, "", fmt.Sprintf("the name of the master the sentinels monitor (required with %s)", n.sentinel))
	case len(c.SentinelAddrs) == 0 && c.SentinelMaster != "":
		bad(n.sentinel, "", fmt.Sprintf("the sentinels' host:port addresses (required with %s)", n.sentinelMaster))
	}
	if c.SentinelMaster != "" && clientNameSafe(c.SentinelMaster) != c.SentinelMaster {
		bad(n.sentinelMaster, c.SentinelMaster, "a master name without spaces or control characters, as in sentinel.conf")
	}
	if c.ClientName != clientNameSafe(c.ClientName) {
		bad(n.clientName, c.ClientName, "a client name of printable ASCII without spaces (CLIENT SETNAME refuses others)")
	}
	if c.PoolTimeout < 0 {
		bad(n.poolTimeout, c.PoolTimeout.String(), "a duration of 0 (go-redis default) or more")
	}
	if c.SocketTimeout <= 0 {
		bad(n.socketTimeout, c.SocketTimeout.String(), "a positive duration")
	}
	if c.ConnectTimeout <= 0 {
		bad(n.connectTimeout, c.ConnectTimeout.String(), "a positive duration")
	}
	if c.TLSCAFile != "" && c.TLSConfig == nil {
		if _, err := os.Stat(c.TLSCAFile); err != nil {
			bad(n.caFile, c.TLSCAFile, "a readable PEM file of CA certificates")
		}
	}
	return joinErrors(errs)
}

func checkURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("a redis:// or rediss:// URL (it does not parse)")
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return fmt.Errorf("a redis:// or rediss:// URL (the scheme is neither)")
	}
	if u.Host == "" {
		return fmt.Errorf("a redis:// or rediss:// URL with a host, like redis://user:password@host:6379/0")
	}
	if _, err := redis.ParseURL(raw); err != nil {
		// go-redis's message names the part that is wrong; it may quote the
		// URL, so only the redacted form is shown.
		msg := strings.ReplaceAll(err.Error(), raw, RedactURL(raw))
		if pw, ok := u.User.Password(); ok && pw != "" {
			msg = strings.ReplaceAll(msg, pw, redacted)
		}
		return fmt.Errorf("a redis:// or rediss:// URL as go-redis accepts it (%s)", msg)
	}
	return nil
}

func checkHostPort(a string) error {
	host, port, err := net.SplitHostPort(a)
	if err != nil || host == "" {
		return fmt.Errorf("%q is not host:port", a)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("%q has no valid port", a)
	}
	return nil
}

func joinErrors(errs []error) error {
	switch len(errs) {
	case 0:
		return nil
	case 1:
		return errs[0]
	}
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = e.Error()
	}
	return &configErrors{errs: errs, msg: strings.Join(msgs, "; ")}
}

// configErrors joins several *ConfigError; errors.As finds each of them.
type configErrors struct {
	errs []error
	msg  string
}

func (e *configErrors) Error() string   { return e.msg }
func (e *configErrors) Unwrap() []error { return e.errs }
