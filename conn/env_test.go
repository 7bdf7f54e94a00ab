package conn

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestLoadConfigDefaults(t *testing.T) {
	for _, tc := range []struct {
		role                     Role
		pool, limiter, batchSize int
	}{
		{RoleAPI, 128, 0, 50},
		{RoleWorker, 200, 100, 50},
	} {
		t.Run(string(tc.role), func(t *testing.T) {
			c, err := loadConfig(tc.role, env(nil))
			if err != nil {
				t.Fatal(err)
			}
			if c.Role != tc.role || c.Host != "localhost" || c.Port != 6379 || c.DB != 0 || c.TLS ||
				c.PoolSize != tc.pool || c.MaxConcurrentOps != tc.limiter || c.BatchSize != tc.batchSize ||
				c.PoolTimeout != 0 || c.SocketTimeout != 5*time.Second || c.ConnectTimeout != 5*time.Second ||
				c.URL != "" || c.ClusterAddrs != nil || c.Username != "" || c.Password != "" ||
				c.ClientName != DefaultClientName(tc.role) || !strings.HasPrefix(c.ClientName, "redisconn:"+string(tc.role)+":") {
				t.Errorf("defaults: got %s", c)
			}
		})
	}
}

func TestLoadConfigReadsEveryVariable(t *testing.T) {
	c, err := loadConfig(RoleWorker, env(map[string]string{
		"REDIS_URL":                       "redis://u:p@h:1/2",
		"REDIS_HOST":                      "redis.internal",
		"REDIS_PORT":                      "6380",
		"REDIS_USERNAME":                  "alice",
		"REDIS_PASSWORD":                  "s3cret",
		"REDIS_DB":                        "3",
		"REDIS_SSL":                       "true",
		"REDIS_SSL_SERVER_NAME":           "redis.example",
		"REDIS_SSL_INSECURE_SKIP_VERIFY":  "yes",
		"REDIS_MAX_CONNECTIONS":           "7", // the API's: a worker ignores it
		"REDIS_WORKER_MAX_CONNECTIONS":    "300",
		"REDIS_WORKER_MAX_CONCURRENT_OPS": "150",
		"REDIS_WORKER_BATCH_SIZE":         "25",
		"REDIS_POOL_TIMEOUT":              "2",
		"REDIS_SOCKET_TIMEOUT":            "1.5s",
		"REDIS_CONNECT_TIMEOUT":           "250ms",
		"REDIS_CLIENT_NAME":               "billing-worker-7",
	}))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{ClientName: "billing-worker-7",
		Role: RoleWorker, URL: "redis://u:p@h:1/2", Host: "redis.internal", Port: 6380,
		Username: "alice", Password: "s3cret", DB: 3, TLS: true, TLSServerName: "redis.example",
		TLSInsecureSkipVerify: true, PoolSize: 300, MaxConcurrentOps: 150, BatchSize: 25,
		PoolTimeout: 2 * time.Second, SocketTimeout: 1500 * time.Millisecond, ConnectTimeout: 250 * time.Millisecond,
	}
	if c.String() != want.String() || c.Password != want.Password || c.URL != want.URL ||
		c.TLSServerName != want.TLSServerName || !c.TLSInsecureSkipVerify {
		t.Errorf("got  %s\nwant %s", c, want)
	}

	api, err := loadConfig(RoleAPI, env(map[string]string{"REDIS_MAX_CONNECTIONS": "64", "REDIS_WORKER_MAX_CONNECTIONS": "x"}))
	if err != nil {
		t.Fatalf("the API must not read worker variables: %v", err)
	}
	if api.PoolSize != 64 {
		t.Errorf("API pool: got %d, want 64", api.PoolSize)
	}

	cl, err := loadConfig(RoleAPI, env(map[string]string{"REDIS_CLUSTER_ADDRS": " 10.0.0.1:7000, 10.0.0.2:7001 ,"}))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(cl.ClusterAddrs, "|") != "10.0.0.1:7000|10.0.0.2:7001" {
		t.Errorf("cluster addrs: %q", cl.ClusterAddrs)
	}
}

func TestLoadConfigBadValues(t *testing.T) {
	for _, tc := range []struct {
		role     Role
		name     string
		value    string
		accepted string // part of what the error says is accepted
	}{
		{RoleAPI, "REDIS_PORT", "abc", "from 1 to 65535"},
		{RoleAPI, "REDIS_PORT", "0", "from 1 to 65535"},
		{RoleAPI, "REDIS_PORT", "70000", "from 1 to 65535"},
		{RoleAPI, "REDIS_DB", "-1", "from 0 to"},
		{RoleAPI, "REDIS_DB", "one", "from 0 to"},
		{RoleAPI, "REDIS_SSL", "maybe", "true or false"},
		{RoleAPI, "REDIS_SSL_INSECURE_SKIP_VERIFY", "2", "true or false"},
		{RoleAPI, "REDIS_MAX_CONNECTIONS", "0", "from 1 to"},
		{RoleAPI, "REDIS_MAX_CONNECTIONS", "12.5", "from 1 to"},
		{RoleWorker, "REDIS_WORKER_MAX_CONNECTIONS", "-5", "from 1 to"},
		{RoleWorker, "REDIS_WORKER_MAX_CONCURRENT_OPS", "0", "from 1 to"},
		{RoleWorker, "REDIS_WORKER_MAX_CONCURRENT_OPS", "201", "at most the worker pool size REDIS_WORKER_MAX_CONNECTIONS=200"},
		{RoleWorker, "REDIS_WORKER_BATCH_SIZE", "0", "from 1 to"},
		{RoleWorker, "REDIS_WORKER_BATCH_SIZE", "lots", "from 1 to"},
		{RoleAPI, "REDIS_POOL_TIMEOUT", "-1s", "non-negative Go duration"},
		{RoleAPI, "REDIS_POOL_TIMEOUT", "soon", "non-negative Go duration"},
		{RoleAPI, "REDIS_SOCKET_TIMEOUT", "5 sec", "non-negative Go duration"},
		{RoleAPI, "REDIS_SOCKET_TIMEOUT", "0", "a positive duration"},
		{RoleAPI, "REDIS_CONNECT_TIMEOUT", "NaN", "non-negative Go duration"},
		{RoleAPI, "REDIS_CONNECT_TIMEOUT", "1e300", "non-negative Go duration"},
		{RoleAPI, "REDIS_URL", "http://localhost:6379", "redis:// or rediss://"},
		{RoleAPI, "REDIS_URL", "redis://localhost:notaport", "redis:// or rediss://"},
		{RoleAPI, "REDIS_URL", "redis://localhost:6379/abc", "redis:// or rediss://"},
		{RoleAPI, "REDIS_CLUSTER_ADDRS", "host-without-port", "host:port"},
		{RoleAPI, "REDIS_CLUSTER_ADDRS", "h:1,h:99999", "host:port"},
		{RoleAPI, "REDIS_CLUSTER_ADDRS", ",", "host:port"},
		{RoleAPI, "REDIS_SSL_CA_FILE", "/does/not/exist.pem", "readable PEM file"},
	} {
		t.Run(tc.name+"="+tc.value, func(t *testing.T) {
			_, err := loadConfig(tc.role, env(map[string]string{tc.name: tc.value}))
			if err == nil {
				t.Fatalf("%s=%q: no error", tc.name, tc.value)
			}
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("error is not a *ConfigError: %T %v", err, err)
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.name) || !strings.Contains(msg, tc.accepted) {
				t.Errorf("error should name %s and say %q is accepted; got: %s", tc.name, tc.accepted, msg)
			}
			if tc.name != "REDIS_URL" && !strings.Contains(msg, tc.value) {
				t.Errorf("error should quote the value %q; got: %s", tc.value, msg)
			}
		})
	}
}

func TestLoadConfigReportsEveryBadValue(t *testing.T) {
	_, err := loadConfig(RoleWorker, env(map[string]string{"REDIS_PORT": "x", "REDIS_DB": "y", "REDIS_WORKER_BATCH_SIZE": "z"}))
	for _, name := range []string{"REDIS_PORT", "REDIS_DB", "REDIS_WORKER_BATCH_SIZE"} {
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("joined error should name %s: %v", name, err)
		}
	}
}

func TestLoadConfigUnknownRole(t *testing.T) {
	_, err := LoadConfig("batch")
	if err == nil || !strings.Contains(err.Error(), `"api" or "worker"`) {
		t.Fatalf("got %v", err)
	}
}

func TestLoadConfigEmptyVariableMeansDefault(t *testing.T) {
	c, err := loadConfig(RoleWorker, env(map[string]string{"REDIS_PORT": "", "REDIS_WORKER_BATCH_SIZE": "  "}))
	if err != nil || c.Port != 6379 || c.BatchSize != 50 {
		t.Fatalf("got %s, %v", c, err)
	}
}

func TestConfigFromEnvironment(t *testing.T) {
	t.Setenv("REDIS_WORKER_MAX_CONCURRENT_OPS", "42")
	t.Setenv("REDIS_PASSWORD", "from-env")
	c, err := LoadConfig(RoleWorker)
	if err != nil {
		t.Fatal(err)
	}
	if c.MaxConcurrentOps != 42 || c.Password != "from-env" {
		t.Fatalf("got %s", c)
	}
}

func FuzzLoadConfig(f *testing.F) {
	for _, seed := range [][2]string{
		{"REDIS_PORT", "6379"}, {"REDIS_PORT", "-1"}, {"REDIS_URL", "redis://:pw@h:1/0"},
		{"REDIS_URL", "rediss://u:p@[::1]:6380/3?dial_timeout=3s"}, {"REDIS_URL", "redis://%zz"},
		{"REDIS_POOL_TIMEOUT", "1e400"}, {"REDIS_CLUSTER_ADDRS", "a:1,,b:2"}, {"REDIS_SOCKET_TIMEOUT", "-0"},
	} {
		f.Add(seed[0], seed[1], "hunter2")
	}
	f.Fuzz(func(t *testing.T, name, value, password string) {
		vars := map[string]string{name: value}
		if password != "" && name != "REDIS_PASSWORD" {
			vars["REDIS_PASSWORD"] = password
		}
		for _, role := range []Role{RoleAPI, RoleWorker} {
			c, err := loadConfig(role, env(vars))
			if err != nil {
				var ce *ConfigError
				if !errors.As(err, &ce) {
					t.Fatalf("error is not a *ConfigError: %v", err)
				}
				if len(password) >= 6 && strings.Contains(err.Error(), password) && !strings.Contains(fmt.Sprintf("%q", value), password) {
					t.Fatalf("error shows the password: %v", err)
				}
				continue
			}
			if err := c.Validate(); err != nil {
				t.Fatalf("LoadConfig accepted a config that Validate rejects: %v", err)
			}
		}
	})
}

func TestLoadConfigSentinel(t *testing.T) {
	c, err := loadConfig(RoleAPI, env(map[string]string{
		"REDIS_SENTINEL_ADDRS":    "10.0.0.1:26379, 10.0.0.2:26379,10.0.0.3:26379",
		"REDIS_SENTINEL_MASTER":   "mymaster",
		"REDIS_SENTINEL_USERNAME": "sentinel-user",
		"REDIS_SENTINEL_PASSWORD": "sentinel-s3cret",
		"REDIS_PASSWORD":          "master-s3cret",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(c.SentinelAddrs, ",") != "10.0.0.1:26379,10.0.0.2:26379,10.0.0.3:26379" || c.SentinelMaster != "mymaster" ||
		c.SentinelUsername != "sentinel-user" || string(c.SentinelPassword) != "sentinel-s3cret" || string(c.Password) != "master-s3cret" {
		t.Errorf("got %s", c)
	}
	for _, printed := range []string{c.String(), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c)} {
		if strings.Contains(printed, "s3cret") {
			t.Errorf("a password is printed: %s", printed)
		}
		if !strings.Contains(printed, "SentinelMaster:mymaster") {
			t.Errorf("the sentinel settings are not printed: %s", printed)
		}
	}
}

func TestLoadConfigSentinelMistakes(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		want []string // the variable and words of what is accepted
	}{
		{"with cluster", map[string]string{"REDIS_SENTINEL_ADDRS": "a:1", "REDIS_SENTINEL_MASTER": "m", "REDIS_CLUSTER_ADDRS": "b:2"},
			[]string{"REDIS_SENTINEL_ADDRS", "REDIS_CLUSTER_ADDRS", "not both"}},
		{"no master", map[string]string{"REDIS_SENTINEL_ADDRS": "a:1"},
			[]string{"REDIS_SENTINEL_MASTER", "required with REDIS_SENTINEL_ADDRS"}},
		{"no sentinels", map[string]string{"REDIS_SENTINEL_MASTER": "m"},
			[]string{"REDIS_SENTINEL_ADDRS", "required with REDIS_SENTINEL_MASTER"}},
		{"bad address", map[string]string{"REDIS_SENTINEL_ADDRS": "a:1,b", "REDIS_SENTINEL_MASTER": "m"},
			[]string{"REDIS_SENTINEL_ADDRS", `"b" is not host:port`}},
		{"bad client name", map[string]string{"REDIS_CLIENT_NAME": "my worker"},
			[]string{"REDIS_CLIENT_NAME", "without spaces"}},
		{"ack replicas", map[string]string{"REDIS_WORKER_ACK_REPLICAS": "-1"},
			[]string{"REDIS_WORKER_ACK_REPLICAS", "from 0 to 100"}},
		{"ack timeout past the socket timeout", map[string]string{"REDIS_WORKER_ACK_REPLICAS": "1", "REDIS_WORKER_ACK_TIMEOUT": "6s"},
			[]string{"REDIS_WORKER_ACK_TIMEOUT", "below REDIS_SOCKET_TIMEOUT=5s"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadConfig(RoleWorker, env(tc.env))
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("want a *ConfigError, got %v", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%q does not say %q", err, w)
				}
			}
		})
	}
	// The sentinel password is never in an error.
	_, err := loadConfig(RoleWorker, env(map[string]string{"REDIS_SENTINEL_ADDRS": "x", "REDIS_SENTINEL_PASSWORD": "hush-123", "REDIS_SENTINEL_MASTER": "m"}))
	if err == nil || strings.Contains(err.Error(), "hush-123") {
		t.Errorf("error %v", err)
	}
}

func TestLoadConfigAckReplicas(t *testing.T) {
	c, err := loadConfig(RoleWorker, env(map[string]string{"REDIS_WORKER_ACK_REPLICAS": "1", "REDIS_WORKER_ACK_TIMEOUT": "250ms"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.AckReplicas != 1 || c.AckTimeout != 250*time.Millisecond || !strings.Contains(c.String(), "AckReplicas:1 AckTimeout:250ms") {
		t.Errorf("got %s", c)
	}
	d, err := loadConfig(RoleWorker, env(nil))
	if err != nil || d.AckReplicas != 0 || d.AckTimeout != DefaultAckTimeout {
		t.Errorf("default: %s, %v", d, err)
	}
}
