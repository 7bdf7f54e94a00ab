package conn

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
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

// String describes the configuration without secrets.
func (c Config) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "conn.Config{Role:%s", c.Role)
	if c.URL != "" {
		fmt.Fprintf(&b, " URL:%s", RedactURL(c.URL))
	}
	switch {
	case len(c.ClusterAddrs) > 0:
		fmt.Fprintf(&b, " ClusterAddrs:%s", strings.Join(c.ClusterAddrs, ","))
	case len(c.SentinelAddrs) > 0:
		fmt.Fprintf(&b, " SentinelAddrs:%s SentinelMaster:%s SentinelUsername:%q SentinelPassword:%q DB:%d",
			strings.Join(c.SentinelAddrs, ","), c.SentinelMaster, c.SentinelUsername, c.SentinelPassword.mask(), c.DB)
	default:
		fmt.Fprintf(&b, " Addr:%s DB:%d", net.JoinHostPort(c.Host, strconv.Itoa(c.Port)), c.DB)
	}
	fmt.Fprintf(&b, " Username:%q Password:%q TLS:%t ClientName:%s PoolSize:%d", c.Username, c.Password.mask(), c.TLS, c.ClientName, c.PoolSize)
	if c.Role == RoleWorker {
		fmt.Fprintf(&b, " MaxConcurrentOps:%d BatchSize:%d", c.MaxConcurrentOps, c.BatchSize)
		if c.AckReplicas > 0 {
			fmt.Fprintf(&b, " AckReplicas:%d AckTimeout:%s", c.AckReplicas, c.AckTimeout)
		}
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
	switch {
	case len(c.ClusterAddrs) > 0:
		attrs = append(attrs, slog.String("cluster_addrs", strings.Join(c.ClusterAddrs, ",")))
	case len(c.SentinelAddrs) > 0:
		attrs = append(attrs, slog.String("sentinel_addrs", strings.Join(c.SentinelAddrs, ",")),
			slog.String("sentinel_master", c.SentinelMaster), slog.String("sentinel_username", c.SentinelUsername),
			slog.String("sentinel_password", c.SentinelPassword.mask()), slog.Int("db", c.DB))
	default:
		attrs = append(attrs, slog.String("addr", net.JoinHostPort(c.Host, strconv.Itoa(c.Port))), slog.Int("db", c.DB))
	}
	attrs = append(attrs,
		slog.String("username", c.Username),
		slog.String("password", c.Password.mask()),
		slog.Bool("tls", c.TLS),
		slog.String("client_name", c.ClientName),
		slog.Int("pool_size", c.PoolSize),
	)
	if c.Role == RoleWorker {
		attrs = append(attrs, slog.Int("max_concurrent_ops", c.MaxConcurrentOps), slog.Int("batch_size", c.BatchSize))
		if c.AckReplicas > 0 {
			attrs = append(attrs, slog.Int("ack_replicas", c.AckReplicas), slog.Duration("ack_timeout", c.AckTimeout))
		}
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
