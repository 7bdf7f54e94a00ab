package conn

import (
	"strings"
	"testing"
	"time"
)

func TestValidateConfigBuiltInCode(t *testing.T) {
	// Zero fields take the role's defaults.
	if err := (Config{Role: RoleWorker}).Validate(); err != nil {
		t.Errorf("zero worker config: %v", err)
	}
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Role: "cron"}, "Config.Role"},
		{Config{Role: RoleWorker, PoolSize: 10, MaxConcurrentOps: 11}, "Config.MaxConcurrentOps"},
		{Config{Role: RoleAPI, Port: -1}, "Config.Port"},
		{Config{Role: RoleAPI, DB: 2, ClusterAddrs: []string{"h:1"}}, "cluster mode"},
		{Config{Role: RoleAPI, SocketTimeout: -time.Second}, "Config.SocketTimeout"},
		{Config{Role: RoleAPI, PoolTimeout: -time.Second}, "Config.PoolTimeout"},
		{Config{Role: RoleAPI, URL: "ftp://x"}, "Config.URL"},
	} {
		err := tc.cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error about %s", tc.cfg, err, tc.want)
		}
	}
}
