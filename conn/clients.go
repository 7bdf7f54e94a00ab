package conn

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
)

// ClientsInfo counts the server's connections by the name their client gave
// them. Every redisconn manager names its connections
// redisconn:<role>:<host>:<pid> (Config.ClientName), so the counts tell the
// fleet's API processes from its workers, and each process from the others,
// against the server's maxclients.
//
// It is read with CLIENT LIST, which costs the server O(connected clients)
// and blocks it meanwhile (about a millisecond per thousand clients): call
// it on demand, never on a timer. The user needs the ACL permission for
// CLIENT LIST.
type ClientsInfo struct {
	// MaxClients is the server's maxclients; Connected, the connections
	// CLIENT LIST listed. In cluster mode both are summed over the nodes.
	MaxClients int64 `json:"maxclients"`
	Connected  int64 `json:"connected"`
	// ByRole counts connections by the role in their redisconn name: "api",
	// "worker", "other" (a name that is not redisconn's, such as a
	// REDIS_CLIENT_NAME of your own) and "unnamed".
	ByRole map[string]int64 `json:"by_role"`
	// Processes has one entry per client name, most connections first.
	Processes []ProcessClients `json:"processes"`
}

// ProcessClients are the connections that carry one client name.
type ProcessClients struct {
	Name string `json:"name"`
	// Role, Host and PID are read from a redisconn name; empty otherwise.
	Role        string `json:"role,omitempty"`
	Host        string `json:"host,omitempty"`
	PID         int    `json:"pid,omitempty"`
	Connections int64  `json:"connections"`
}

// clientsInfo reads CLIENT LIST and INFO from the server (every node of a
// cluster) through the client for diagnostics, which takes no limiter permit.
func (m *manager) clientsInfo(ctx context.Context) (ClientsInfo, error) {
	if m.closed.Load() {
		return ClientsInfo{}, ErrClosed
	}
	var (
		mu         sync.Mutex
		maxClients int64
		byName     = map[string]int64{}
	)
	read := func(ctx context.Context, c *redis.Client) error {
		list, err := c.ClientList(ctx).Result()
		if err != nil {
			return fmt.Errorf("redisconn: CLIENT LIST on %s: %w", c.Options().Addr, err)
		}
		srv, err := serverInfo(ctx, c)
		if err != nil {
			return fmt.Errorf("redisconn: INFO on %s: %w", c.Options().Addr, err)
		}
		mu.Lock()
		defer mu.Unlock()
		maxClients += srv.MaxClients
		for _, line := range strings.Split(list, "\n") {
			if line = strings.TrimSpace(line); line != "" {
				byName[clientListName(line)]++
			}
		}
		return nil
	}
	var err error
	if cc, ok := m.client.(*redis.ClusterClient); ok {
		err = cc.ForEachShard(ctx, read)
	} else {
		err = read(ctx, m.diagnostics())
	}
	if err != nil {
		return ClientsInfo{}, err
	}
	return countClients(byName, maxClients), nil
}

// clientListName is the name= field of one CLIENT LIST line ("" when unnamed).
func clientListName(line string) string {
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, "name="); ok {
			return v
		}
	}
	return ""
}

func countClients(byName map[string]int64, maxClients int64) ClientsInfo {
	ci := ClientsInfo{MaxClients: maxClients, ByRole: map[string]int64{}}
	for name, n := range byName {
		ci.Connected += n
		if name == "" {
			ci.ByRole["unnamed"] += n
			continue
		}
		p := ProcessClients{Name: name, Connections: n}
		if role, host, pid, ok := parseClientName(name); ok {
			p.Role, p.Host, p.PID = role, host, pid
			ci.ByRole[role] += n
		} else {
			ci.ByRole["other"] += n
		}
		ci.Processes = append(ci.Processes, p)
	}
	sort.Slice(ci.Processes, func(i, j int) bool {
		a, b := ci.Processes[i], ci.Processes[j]
		if a.Connections != b.Connections {
			return a.Connections > b.Connections
		}
		return a.Name < b.Name
	})
	return ci
}

// parseClientName reads a name of DefaultClientName's form.
func parseClientName(name string) (role, host string, pid int, ok bool) {
	rest, found := strings.CutPrefix(name, "redisconn:")
	if !found {
		return "", "", 0, false
	}
	role, rest, found = strings.Cut(rest, ":")
	i := strings.LastIndexByte(rest, ':')
	if !found || (role != string(RoleAPI) && role != string(RoleWorker)) || i <= 0 {
		return "", "", 0, false
	}
	pid, err := strconv.Atoi(rest[i+1:])
	if err != nil || pid <= 0 {
		return "", "", 0, false
	}
	return role, rest[:i], pid, true
}
