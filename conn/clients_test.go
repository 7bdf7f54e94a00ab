package conn_test

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redisconn/redisconn/conn"
	"github.com/redisconn/redisconn/internal/redistest"
)

// Every manager names its connections by role, host and process when it
// makes them, and Clients counts them on the server next to a connection of
// another program.
func TestConnectionsAreNamedByRoleAndCounted(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	ctx := ctxTimeout(t, 10*time.Second)
	w := newWorker(t, config(conn.RoleWorker, srv))
	api := newAPI(t, config(conn.RoleAPI, srv))
	custom := config(conn.RoleAPI, srv)
	custom.ClientName = "billing-api"
	other := newAPI(t, custom)
	plain := srv.Client(t) // another program's connection, unnamed

	if err := w.Incr(ctx, "k").Err(); err != nil {
		t.Fatal(err)
	}
	if err := api.Incr(ctx, "k").Err(); err != nil {
		t.Fatal(err)
	}
	if err := other.Incr(ctx, "k").Err(); err != nil {
		t.Fatal(err)
	}
	if err := plain.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}

	ci, err := api.Clients(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", ci)
	host, _ := os.Hostname()
	if ci.MaxClients != 10000 || ci.Connected < 4 || ci.ByRole["worker"] < 2 || ci.ByRole["api"] < 1 ||
		ci.ByRole["other"] < 1 || ci.ByRole["unnamed"] < 1 {
		t.Errorf("counts: %+v", ci)
	}
	var sum int64
	for _, n := range ci.ByRole {
		sum += n
	}
	if sum != ci.Connected {
		t.Errorf("by role %v adds up to %d, not %d", ci.ByRole, sum, ci.Connected)
	}
	found := map[string]conn.ProcessClients{}
	for _, p := range ci.Processes {
		found[p.Name] = p
	}
	for _, role := range []conn.Role{conn.RoleWorker, conn.RoleAPI} {
		p, ok := found[conn.DefaultClientName(role)]
		if !ok || p.Role != string(role) || p.PID != os.Getpid() || !strings.Contains(conn.DefaultClientName(role), p.Host) || p.Host == "" {
			t.Errorf("%s: %+v (host %q)", role, p, host)
		}
	}
	if p := found["billing-api"]; p.Connections < 1 || p.Role != "" {
		t.Errorf("REDIS_CLIENT_NAME's connection: %+v", p)
	}
	// The name is set when a connection is made (go-redis v9.23 sends it
	// inside HELLO and again in its set-up pipeline), never per command.
	for i := 0; i < 200; i++ {
		if err := w.Incr(ctx, "k").Err(); err != nil {
			t.Fatal(err)
		}
	}
	setName := redistest.CommandCalls(t, plain, "client|setname")
	conns := redistest.InfoField(t, plain, "stats", "total_connections_received")
	if setName > conns {
		t.Errorf("CLIENT SETNAME sent %d times for %d connections", setName, conns)
	}
}
