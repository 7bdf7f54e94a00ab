package conn

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
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
)

// Limits on what the configuration accepts.
const (
	maxPoolSize  = 100000
	maxBatchSize = 100000
	maxDB        = 1 << 20
)

// Secret is a string that never prints: String, GoString, JSON, slog and every
// fmt verb show "[REDACTED]" (or "" when it is empty). Use string(s) to read it.
type Secret string

const redacted = "[REDACTED]"

func (s Secret) mask() string {
	if s == "" {
		return ""
	}
	return redacted
}

// String returns "[REDACTED]", or "" for an empty secret.
func (s Secret) String() string { return s.mask() }

// GoString is used by %#v.
func (s Secret) GoString() string { return strconv.Quote(s.mask()) }

// Format makes every fmt verb (%s, %v, %q, %x, ...) print the mask.
func (s Secret) Format(f fmt.State, verb rune) {
	if verb == 'q' {
		_, _ = f.Write([]byte(strconv.Quote(s.mask())))
		return
	}
	_, _ = f.Write([]byte(s.mask()))
}

// MarshalJSON writes the mask.
func (s Secret) MarshalJSON() ([]byte, error) { return json.Marshal(s.mask()) }

// LogValue makes slog print the mask.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.mask()) }

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

	// PoolSize is the connection pool size: per node in cluster mode
	// (REDIS_MAX_CONNECTIONS for the API, REDIS_WORKER_MAX_CONNECTIONS for the worker).
	PoolSize int
	// MaxConcurrentOps is the worker's limiter size, at most PoolSize
	// (REDIS_WORKER_MAX_CONCURRENT_OPS). The API has no limiter and ignores it.
	MaxConcurrentOps int
	// BatchSize is how many items one batch round trip carries (REDIS_WORKER_BATCH_SIZE).
	BatchSize int

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
		Host:           DefaultHost,
		Port:           DefaultPort,
		BatchSize:      DefaultBatchSize,
		SocketTimeout:  DefaultSocketTimeout,
		ConnectTimeout: DefaultConnectTimeout,
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

// LoadConfig reads the environment variables of DESIGN.md with the defaults of
// role. Every bad value is a *ConfigError; all of them are reported at once,
// joined. Variables of the other role are not read.
func LoadConfig(role Role) (Config, error) {
	return loadConfig(role, os.LookupEnv)
}

func loadConfig(role Role, lookup func(string) (string, bool)) (Config, error) {
	if role != RoleAPI && role != RoleWorker {
		return Config{}, &ConfigError{Name: "role", Value: string(role), Accepted: `"api" or "worker"`}
	}
	c := DefaultConfig(role)
	p := envParser{lookup: lookup}

	if v, ok := p.get("REDIS_URL"); ok {
		c.URL = v
	}
	if v, ok := p.get("REDIS_HOST"); ok {
		c.Host = v
	}
	p.integer("REDIS_PORT", &c.Port, 1, 65535)
	if v, ok := p.get("REDIS_USERNAME"); ok {
		c.Username = v
	}
	if v, ok := lookup("REDIS_PASSWORD"); ok {
		c.Password = Secret(v)
	}
	p.integer("REDIS_DB", &c.DB, 0, maxDB)
	p.boolean("REDIS_SSL", &c.TLS)
	if v, ok := p.get("REDIS_SSL_CA_FILE"); ok {
		c.TLSCAFile = v
	}
	if v, ok := p.get("REDIS_SSL_SERVER_NAME"); ok {
		c.TLSServerName = v
	}
	p.boolean("REDIS_SSL_INSECURE_SKIP_VERIFY", &c.TLSInsecureSkipVerify)
	if v, ok := p.get("REDIS_CLUSTER_ADDRS"); ok {
		c.ClusterAddrs = splitAddrs(v)
	}
	if role == RoleWorker {
		p.integer("REDIS_WORKER_MAX_CONNECTIONS", &c.PoolSize, 1, maxPoolSize)
		p.integer("REDIS_WORKER_MAX_CONCURRENT_OPS", &c.MaxConcurrentOps, 1, maxPoolSize)
		p.integer("REDIS_WORKER_BATCH_SIZE", &c.BatchSize, 1, maxBatchSize)
	} else {
		p.integer("REDIS_MAX_CONNECTIONS", &c.PoolSize, 1, maxPoolSize)
	}
	p.duration("REDIS_POOL_TIMEOUT", &c.PoolTimeout)
	p.duration("REDIS_SOCKET_TIMEOUT", &c.SocketTimeout)
	p.duration("REDIS_CONNECT_TIMEOUT", &c.ConnectTimeout)
	if len(p.errs) > 0 {
		return Config{}, joinErrors(p.errs)
	}
	// Cross-field rules, named by their environment variables.
	if err := c.validate(envNames); err != nil {
		return Config{}, err
	}
	return c, nil
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
	return c
}

// names maps a setting to the name an error should use: the environment
// variable for LoadConfig, the Config field for Validate.
type names struct {
	role, url, port, db, pool, limiter, batch, cluster, poolTimeout, socketTimeout, connectTimeout, caFile string
}

var envNames = names{
	role: "role", url: "REDIS_URL", port: "REDIS_PORT", db: "REDIS_DB",
	pool: "REDIS_WORKER_MAX_CONNECTIONS", limiter: "REDIS_WORKER_MAX_CONCURRENT_OPS",
	batch: "REDIS_WORKER_BATCH_SIZE", cluster: "REDIS_CLUSTER_ADDRS",
	poolTimeout: "REDIS_POOL_TIMEOUT", socketTimeout: "REDIS_SOCKET_TIMEOUT",
	connectTimeout: "REDIS_CONNECT_TIMEOUT", caFile: "REDIS_SSL_CA_FILE",
}

var fieldNames = names{
	role: "Config.Role", url: "Config.URL", port: "Config.Port", db: "Config.DB",
	pool: "Config.PoolSize", limiter: "Config.MaxConcurrentOps", batch: "Config.BatchSize",
	cluster: "Config.ClusterAddrs", poolTimeout: "Config.PoolTimeout",
	socketTimeout: "Config.SocketTimeout", connectTimeout: "Config.ConnectTimeout",
	caFile: "Config.TLSCAFile",
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
	}
	for _, a := range c.ClusterAddrs {
		if err := checkHostPort(a); err != nil {
			bad(n.cluster, strings.Join(c.ClusterAddrs, ","), "comma-separated host:port seeds: "+err.Error())
			break
		}
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

// RedactURL returns raw with any password replaced by "[REDACTED]". A value
// that is not a URL with a scheme and a host is replaced whole: what it holds
// cannot be told apart from a secret.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return "[not a URL, hidden]"
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), redacted)
	}
	// Query parameters such as password=... are hidden too.
	q := u.Query()
	for k := range q {
		if strings.Contains(strings.ToLower(k), "pass") {
			q.Set(k, redacted)
		}
	}
	u.RawQuery = q.Encode()
	return strings.Replace(u.String(), url.QueryEscape(redacted), redacted, -1)
}

func splitAddrs(v string) []string {
	var out []string
	for _, a := range strings.Split(v, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	if out == nil {
		// "," or " ": set but empty is a mistake worth reporting.
		return []string{strings.TrimSpace(v)}
	}
	return out
}

// envParser reads variables and collects every error.
type envParser struct {
	lookup func(string) (string, bool)
	errs   []error
}

// get returns a set, non-empty variable. An empty variable counts as unset, as
// in most shells' ${VAR:-default}.
func (p *envParser) get(name string) (string, bool) {
	v, ok := p.lookup(name)
	if !ok || strings.TrimSpace(v) == "" {
		return "", false
	}
	return strings.TrimSpace(v), true
}

func (p *envParser) integer(name string, dst *int, lo, hi int) {
	v, ok := p.get(name)
	if !ok {
		return
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		p.errs = append(p.errs, &ConfigError{Name: name, Value: v, Accepted: fmt.Sprintf("a whole number from %d to %d", lo, hi)})
		return
	}
	*dst = n
}

func (p *envParser) boolean(name string, dst *bool) {
	v, ok := p.get(name)
	if !ok {
		return
	}
	switch strings.ToLower(v) {
	case "1", "true", "yes", "on":
		*dst = true
	case "0", "false", "no", "off":
		*dst = false
	default:
		p.errs = append(p.errs, &ConfigError{Name: name, Value: v, Accepted: "true or false (also 1/0, yes/no, on/off)"})
	}
}

// duration accepts a Go duration ("1.5s", "250ms") or a number of seconds ("2", "0.5").
func (p *envParser) duration(name string, dst *time.Duration) {
	v, ok := p.get(name)
	if !ok {
		return
	}
	d, err := parseDuration(v)
	if err != nil || d < 0 {
		p.errs = append(p.errs, &ConfigError{Name: name, Value: v, Accepted: `a non-negative Go duration ("1.5s", "250ms") or number of seconds ("2", "0.5")`})
		return
	}
	*dst = d
}

func parseDuration(v string) (time.Duration, error) {
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		if math.IsNaN(f) || math.IsInf(f, 0) || f > float64(math.MaxInt64)/float64(time.Second) {
			return 0, fmt.Errorf("out of range")
		}
		return time.Duration(f * float64(time.Second)), nil
	}
	return time.ParseDuration(v)
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

// String describes the configuration without secrets.
func (c Config) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "conn.Config{Role:%s", c.Role)
	if c.URL != "" {
		fmt.Fprintf(&b, " URL:%s", RedactURL(c.URL))
	}
	if len(c.ClusterAddrs) > 0 {
		fmt.Fprintf(&b, " ClusterAddrs:%s", strings.Join(c.ClusterAddrs, ","))
	} else {
		fmt.Fprintf(&b, " Addr:%s DB:%d", net.JoinHostPort(c.Host, strconv.Itoa(c.Port)), c.DB)
	}
	fmt.Fprintf(&b, " Username:%q Password:%q TLS:%t PoolSize:%d", c.Username, c.Password.mask(), c.TLS, c.PoolSize)
	if c.Role == RoleWorker {
		fmt.Fprintf(&b, " MaxConcurrentOps:%d BatchSize:%d", c.MaxConcurrentOps, c.BatchSize)
	}
	fmt.Fprintf(&b, " PoolTimeout:%s SocketTimeout:%s ConnectTimeout:%s}", c.PoolTimeout, c.SocketTimeout, c.ConnectTimeout)
	return b.String()
}

// GoString is used by %#v and prints the same as String.
func (c Config) GoString() string { return c.String() }

// Format makes every fmt verb print String, so %+v cannot reach the fields.
func (c Config) Format(f fmt.State, verb rune) {
	if verb == 'q' {
		_, _ = f.Write([]byte(strconv.Quote(c.String())))
		return
	}
	_, _ = f.Write([]byte(c.String()))
}

// LogValue makes slog print the configuration without secrets.
func (c Config) LogValue() slog.Value {
	attrs := []slog.Attr{slog.String("role", string(c.Role))}
	if c.URL != "" {
		attrs = append(attrs, slog.String("url", RedactURL(c.URL)))
	}
	if len(c.ClusterAddrs) > 0 {
		attrs = append(attrs, slog.String("cluster_addrs", strings.Join(c.ClusterAddrs, ",")))
	} else {
		attrs = append(attrs, slog.String("addr", net.JoinHostPort(c.Host, strconv.Itoa(c.Port))), slog.Int("db", c.DB))
	}
	attrs = append(attrs,
		slog.String("username", c.Username),
		slog.String("password", c.Password.mask()),
		slog.Bool("tls", c.TLS),
		slog.Int("pool_size", c.PoolSize),
	)
	if c.Role == RoleWorker {
		attrs = append(attrs, slog.Int("max_concurrent_ops", c.MaxConcurrentOps), slog.Int("batch_size", c.BatchSize))
	}
	return slog.GroupValue(attrs...)
}

// MarshalJSON writes the configuration without secrets.
func (c Config) MarshalJSON() ([]byte, error) {
	type plain Config // no methods: no recursion
	p := plain(c)
	p.URL = ""
	if c.URL != "" {
		p.URL = RedactURL(c.URL)
	}
	p.TLSConfig = nil
	return json.Marshal(p)
}
