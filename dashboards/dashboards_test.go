package dashboards

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"
)

// The committed JSON is what the code generates: run `go generate ./dashboards`
// after changing dashboards.go.
func TestCommittedJSONMatchesTheGenerator(t *testing.T) {
	want, err := Build()
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(File)
	if err != nil {
		t.Fatalf("%v (run go generate ./dashboards)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s differs from what dashboards.go generates: run go generate ./dashboards and commit", File)
	}
}

// Every query uses the dashboard's variables and only metric names of DESIGN.md.
func TestQueriesUseVariablesAndKnownMetrics(t *testing.T) {
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Type    string `json:"type"`
			Targets []struct {
				Expr     string `json:"expr"`
				Exemplar bool   `json:"exemplar"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct{ Name string } `json:"list"`
		} `json:"templating"`
	}
	b, _ := Build()
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	var vars []string
	for _, v := range d.Templating.List {
		vars = append(vars, v.Name)
	}
	if strings.Join(vars, ",") != "datasource,traces,job,instance,role" {
		t.Errorf("variables %v", vars)
	}
	known := []string{"redisconn_limiter_wait_time_seconds", "redisconn_limiter_in_flight", "redisconn_limiter_waiting",
		"redisconn_limiter_limit", "redisconn_limiter_rejected_total", "db_client_connection_count", "db_client_connection_max",
		"db_client_connection_pending_requests", "db_client_connection_timeouts_total", "redisconn_pool_hits_total",
		"redisconn_pool_misses_total", "redisconn_pool_waits_total", "redisconn_batch_size", "db_client_operation_duration_seconds",
		"redisconn_server_connected_clients", "redisconn_server_maxclients", "redisconn_server_rejected_connections_total"}
	used := map[string]bool{}
	queries, exemplars := 0, 0
	for _, p := range d.Panels {
		for _, q := range p.Targets {
			queries++
			if q.Exemplar {
				exemplars++
			}
			for _, v := range []string{`job=~"$job"`, `instance=~"$instance"`, `redisconn_role=~"$role"`} {
				if !strings.Contains(q.Expr, v) {
					t.Errorf("%s: query without %s: %s", p.Title, v, q.Expr)
				}
			}
			for _, m := range known {
				if strings.Contains(q.Expr, m) {
					used[m] = true
				}
			}
		}
	}
	for _, m := range known {
		if !used[m] {
			t.Errorf("no panel shows %s", m)
		}
	}
	if queries < 25 || exemplars < 4 {
		t.Errorf("%d queries, %d with exemplars", queries, exemplars)
	}
}
