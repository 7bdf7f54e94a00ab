package conn

import (
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"time"
)

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
	if v, ok := p.get("REDIS_SENTINEL_ADDRS"); ok {
		c.SentinelAddrs = splitAddrs(v)
	}
	if v, ok := p.get("REDIS_SENTINEL_MASTER"); ok {
		c.SentinelMaster = v
	}
	if v, ok := p.get("REDIS_SENTINEL_USERNAME"); ok {
		c.SentinelUsername = v
	}
	if v, ok := lookup("REDIS_SENTINEL_PASSWORD"); ok {
		c.SentinelPassword = Secret(v)
	}
	if v, ok := p.get("REDIS_CLIENT_NAME"); ok {
		c.ClientName = v
	}
	if role == RoleWorker {
		p.integer("REDIS_WORKER_MAX_CONNECTIONS", &c.PoolSize, 1, maxPoolSize)
		p.integer("REDIS_WORKER_MAX_CONCURRENT_OPS", &c.MaxConcurrentOps, 1, maxPoolSize)
		p.integer("REDIS_WORKER_BATCH_SIZE", &c.BatchSize, 1, maxBatchSize)
		p.integer("REDIS_WORKER_ACK_REPLICAS", &c.AckReplicas, 0, maxAckReplicas)
		p.duration("REDIS_WORKER_ACK_TIMEOUT", &c.AckTimeout)
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

var envNames = names{
	role: "role", url: "REDIS_URL", port: "REDIS_PORT", db: "REDIS_DB",
	pool: "REDIS_WORKER_MAX_CONNECTIONS", limiter: "REDIS_WORKER_MAX_CONCURRENT_OPS",
	batch: "REDIS_WORKER_BATCH_SIZE", cluster: "REDIS_CLUSTER_ADDRS",
	poolTimeout: "REDIS_POOL_TIMEOUT", socketTimeout: "REDIS_SOCKET_TIMEOUT",
	connectTimeout: "REDIS_CONNECT_TIMEOUT", caFile: "REDIS_SSL_CA_FILE",
	sentinel: "REDIS_SENTINEL_ADDRS", sentinelMaster: "REDIS_SENTINEL_MASTER", clientName: "REDIS_CLIENT_NAME",
	ackReplicas: "REDIS_WORKER_ACK_REPLICAS", ackTimeout: "REDIS_WORKER_ACK_TIMEOUT",
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
