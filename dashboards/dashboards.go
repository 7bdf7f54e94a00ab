// Package dashboards builds the Grafana dashboard of redisconn from code
// (grafana-foundation-sdk). `go generate ./dashboards` writes redisconn.json;
// a test fails when the committed JSON differs from what Build returns.
package dashboards

//go:generate go run ./gen

import (
	"encoding/json"
	"strings"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/heatmap"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"github.com/grafana/grafana-foundation-sdk/go/timeseries"
)

// UID of the dashboard, stable across versions so links keep working.
const UID = "redisconn-managers"

// File is where go generate writes the dashboard, relative to this package.
const File = "redisconn.json"

// sel is the label selector of every query: the dashboard's variables. Their
// "All" value is allValue, which matches only series that carry the label: so
// redisconn_role=~"$role" leaves out series without a role, such as those of
// go-redis's own redisotel metrics, which use the same db_client_* names.
const sel = `job=~"$job", instance=~"$instance", redisconn_role=~"$role"`

// allValue is what a variable stands for when "All" is selected: any
// non-empty value (Prometheus anchors the regexp; ".*" would also match a
// series that lacks the label).
const allValue = ".+"

// redisconnOnly selects the series of redisconn managers, in the variables'
// queries.
const redisconnOnly = `redisconn_role!=""`

// server groups by Redis server: the pool name, which every process that
// reaches the same server reports alike (alerts/redisconn.rules.yml).
const server = "db_client_connection_pool_name"

// budget is the fleet's connection budget per server, as the recording rule
// redisconn:fleet_connection_budget:sum computes it, for the selected series:
// the pool maxima plus the pub/sub connections open now (0 where no reporter
// exports them).
const budget = `sum by (` + server + `) (db_client_connection_max{SEL})` +
	` + on (` + server + `) (sum by (` + server + `) (redisconn_pubsub_connections{SEL})` +
	` or 0 * sum by (` + server + `) (db_client_connection_max{SEL}))`

// by is the grouping that keeps roles and instances apart.
const by = "job, instance, redisconn_role"

var promDS = common.DataSourceRef{Type: cog.ToPtr("prometheus"), Uid: cog.ToPtr("${datasource}")}

func query(expr, legend string) *prometheus.DataqueryBuilder {
	return prometheus.NewDataqueryBuilder().Expr(strings.ReplaceAll(expr, "SEL", sel)).LegendFormat(legend).Datasource(promDS)
}

// withExemplars is a query whose samples' exemplars (trace ids) are shown.
func withExemplars(expr, legend string) *prometheus.DataqueryBuilder {
	return query(expr, legend).Exemplar(true)
}

func series(title, unit, desc string, targets ...*prometheus.DataqueryBuilder) *timeseries.PanelBuilder {
	p := timeseries.NewPanelBuilder().Title(title).Description(desc).Unit(unit).Datasource(promDS).
		Height(8).Span(8).Min(0).FillOpacity(10)
	for _, t := range targets {
		p = p.WithTarget(t)
	}
	return p
}

func quantiles(metric, extraBy string) []*prometheus.DataqueryBuilder {
	var qs []*prometheus.DataqueryBuilder
	for _, q := range []string{"0.5", "0.95", "0.99"} {
		qs = append(qs, withExemplars(
			`histogram_quantile(`+q+`, sum by (le, `+by+extraBy+`) (rate(`+metric+`_bucket{SEL}[$__rate_interval])))`,
			"p"+strings.TrimPrefix(q, "0.")+" {{redisconn_role}} {{instance}}"))
	}
	return qs
}

// Build returns the dashboard as indented JSON.
func Build() ([]byte, error) {
	b := dashboard.NewDashboardBuilder("redisconn: connection managers").
		Uid(UID).
		Description("Pool, limiter, batching, operations and server of every redisconn manager, the fleet's connection budget per server, and Sentinel: see exhaustion coming. Runbooks: docs/runbooks.md.").
		Tags([]string{"redis", "redisconn"}).
		Refresh("10s").
		Time("now-30m", "now").
		Timezone(common.TimeZoneBrowser).
		Tooltip(dashboard.DashboardCursorSyncCrosshair).
		WithVariable(dashboard.NewDatasourceVariableBuilder("datasource").Label("Prometheus").Type("prometheus")).
		WithVariable(dashboard.NewDatasourceVariableBuilder("traces").Label("Traces").Type("tempo").
			Description("Trace datasource that exemplars open; configure the Prometheus datasource's exemplar link to it (dashboards/provisioning).")).
		WithVariable(labelVariable("job", "Job", `label_values(db_client_connection_max{`+redisconnOnly+`}, job)`)).
		WithVariable(labelVariable("instance", "Instance", `label_values(db_client_connection_max{`+redisconnOnly+`, job=~"$job"}, instance)`)).
		WithVariable(labelVariable("role", "Role", `label_values(db_client_connection_max{`+redisconnOnly+`, job=~"$job", instance=~"$instance"}, redisconn_role)`)).
		Link(dashboard.NewDashboardLinkBuilder("Runbooks").Type(dashboard.DashboardLinkTypeLink).
			Url("https://github.com/redisconn/redisconn/blob/main/docs/runbooks.md").TargetBlank(true)).
		Link(dashboard.NewDashboardLinkBuilder("Traces (Explore)").Type(dashboard.DashboardLinkTypeLink).
			Url(`/explore?left={"datasource":"${traces}"}`).TargetBlank(true))

	b = b.WithRow(dashboard.NewRowBuilder("Saturation overview")).
		WithPanel(series("Pool used / max", "percentunit", "Share of pooled connections in use. At 100 % callers wait and time out.",
			query(`sum by (`+by+`) (db_client_connection_count{db_client_connection_state="used", SEL}) / sum by (`+by+`) (db_client_connection_max{SEL})`, "{{redisconn_role}} {{instance}}")).Max(1)).
		WithPanel(series("Limiter in flight / limit", "percentunit", "Share of the worker limiter's permits held. At 100 % new operations queue (in order).",
			query(`sum by (`+by+`) (redisconn_limiter_in_flight{SEL}) / sum by (`+by+`) (redisconn_limiter_limit{SEL})`, "{{redisconn_role}} {{instance}}")).Max(1)).
		WithPanel(series("Pending pool requests", "short", "Callers waiting for a pooled connection now.",
			query(`sum by (`+by+`) (db_client_connection_pending_requests{SEL})`, "{{redisconn_role}} {{instance}}"))).
		WithPanel(series("Pool timeouts / s", "reqps", "Waits for a pooled connection that timed out: failed operations.",
			query(`sum by (`+by+`) (rate(db_client_connection_timeouts_total{SEL}[$__rate_interval]))`, "{{redisconn_role}} {{instance}}"))).
		WithPanel(series("Limiter wait p50 / p95 / p99", "s", "Time operations wait for a limiter permit. Exemplars open the operation's trace.",
			quantiles("redisconn_limiter_wait_time_seconds", "")...).Span(16))

	b = b.WithRow(dashboard.NewRowBuilder("Connection pool")).
		WithPanel(series("Connections: idle, used, max", "short", "Pooled connections by state, and the pool size.",
			query(`sum by (`+by+`, db_client_connection_state) (db_client_connection_count{SEL})`, "{{db_client_connection_state}} {{redisconn_role}} {{instance}}"),
			query(`sum by (`+by+`) (db_client_connection_max{SEL})`, "max {{redisconn_role}} {{instance}}")).Span(6)).
		WithPanel(series("Pub/sub connections", "short", "Pub/sub connections open now (one per subscription, e.g. per SSE stream). They are outside the pool and the limiter, and count against the server's maxclients (see Fleet capacity).",
			query(`sum by (`+by+`) (redisconn_pubsub_connections{SEL})`, "{{redisconn_role}} {{instance}}")).Span(6)).
		WithPanel(series("Hits and misses / s", "reqps", "Requests that found an idle connection (hit) or had to dial one (miss).",
			query(`sum by (`+by+`) (rate(redisconn_pool_hits_total{SEL}[$__rate_interval]))`, "hits {{redisconn_role}} {{instance}}"),
			query(`sum by (`+by+`) (rate(redisconn_pool_misses_total{SEL}[$__rate_interval]))`, "misses {{redisconn_role}} {{instance}}")).Span(6)).
		WithPanel(series("Waits and timeouts / s", "reqps", "Requests that waited for a connection, and those whose wait timed out.",
			query(`sum by (`+by+`) (rate(redisconn_pool_waits_total{SEL}[$__rate_interval]))`, "waits {{redisconn_role}} {{instance}}"),
			query(`sum by (`+by+`) (rate(db_client_connection_timeouts_total{SEL}[$__rate_interval]))`, "timeouts {{redisconn_role}} {{instance}}")).Span(6))

	b = b.WithRow(dashboard.NewRowBuilder("Limiter")).
		WithPanel(series("In flight, waiting, limit", "short", "Operations holding a permit, callers waiting for one, and the limit.",
			query(`sum by (`+by+`) (redisconn_limiter_in_flight{SEL})`, "in flight {{instance}}"),
			query(`sum by (`+by+`) (redisconn_limiter_waiting{SEL})`, "waiting {{instance}}"),
			query(`sum by (`+by+`) (redisconn_limiter_limit{SEL})`, "limit {{instance}}"))).
		WithPanel(heatmap.NewPanelBuilder().Title("Limiter wait time").Description("Distribution of waits for a permit (10 µs to 10 s).").
			Datasource(promDS).Height(8).Span(8).Unit("s").Calculate(false).
			WithTarget(query(`sum by (le) (rate(redisconn_limiter_wait_time_seconds_bucket{SEL}[$__rate_interval]))`, "{{le}}").
				Format(prometheus.PromQueryFormatHeatmap).Exemplar(true))).
		WithPanel(series("Rejected permit requests / s", "reqps", "Callers whose context ended while waiting (context) or that met a closed manager (closed).",
			query(`sum by (`+by+`, reason) (rate(redisconn_limiter_rejected_total{SEL}[$__rate_interval]))`, "{{reason}} {{instance}}")))

	b = b.WithRow(dashboard.NewRowBuilder("Batching")).
		WithPanel(series("Batch size p50 / p99", "short", "Items per batch round trip: BatchRPush chunks (RPUSH), BatchPublish chunks (PUBLISH), and the worker's coalesced pipelines (BATCH <command>, BATCH: commands per round trip).",
			query(`histogram_quantile(0.5, sum by (le, db_operation_name) (rate(redisconn_batch_size_bucket{SEL}[$__rate_interval])))`, "p50 {{db_operation_name}}"),
			query(`histogram_quantile(0.99, sum by (le, db_operation_name) (rate(redisconn_batch_size_bucket{SEL}[$__rate_interval])))`, "p99 {{db_operation_name}}")).Span(12)).
		WithPanel(series("Batched items / s", "short", "Items sent in batch round trips per second: batch operations' items and coalesced commands.",
			query(`sum by (db_operation_name) (rate(redisconn_batch_size_sum{SEL}[$__rate_interval]))`, "{{db_operation_name}}")).Span(12))

	b = b.WithRow(dashboard.NewRowBuilder("Operations")).
		WithPanel(series("Operations / s by command", "ops", "Operations (round trips) per second: a command, a pipeline, a batch chunk, or a coalesced pipeline (BATCH <command>, BATCH; its commands are counted under Batching).",
			query(`sum by (db_operation_name) (rate(db_client_operation_duration_seconds_count{SEL}[$__rate_interval]))`, "{{db_operation_name}}"))).
		WithPanel(series("p99 duration by command", "s", "99th percentile duration per operation (round trip), limiter wait excluded. Exemplars open the trace.",
			withExemplars(`histogram_quantile(0.99, sum by (le, db_operation_name) (rate(db_client_operation_duration_seconds_bucket{SEL}[$__rate_interval])))`, "{{db_operation_name}}"))).
		WithPanel(series("Errors / s by type", "ops", "Failed operations by error.type (server error prefix, timeout, pool_timeout, ...).",
			query(`sum by (error_type) (rate(db_client_operation_duration_seconds_count{error_type!="", SEL}[$__rate_interval]))`, "{{error_type}}")))

	b = b.WithRow(dashboard.NewRowBuilder("Redis server")).
		WithPanel(series("Connected clients vs maxclients", "short", "All processes' connections to the server, against its maxclients (INFO, refreshed every 10 s).",
			query(`max by (db_client_connection_pool_name) (redisconn_server_connected_clients{SEL})`, "connected {{db_client_connection_pool_name}}"),
			query(`max by (db_client_connection_pool_name) (redisconn_server_maxclients{SEL})`, "maxclients {{db_client_connection_pool_name}}")).Span(12)).
		WithPanel(series("Rejected connections / s", "reqps", "Connections the server refused because maxclients was reached.",
			query(`max by (db_client_connection_pool_name) (rate(redisconn_server_rejected_connections_total{SEL}[$__rate_interval]))`, "{{db_client_connection_pool_name}}")).Span(12))

	b = b.WithRow(dashboard.NewRowBuilder("Fleet capacity")).
		WithPanel(series("Connection budget vs maxclients, per server", "short", "Per Redis server (pool name), across every job, instance and role that reports it: "+
			"the budget (every manager's configured pool maximum plus the pub/sub connections open now: what the fleet holds when a stall fills every pool), "+
			"the clients connected now, and maxclients. With every variable at All this is the fleet; a filter shows the selected managers' part. "+
			"Every process must report a server under the same pool name. Alert: RedisconnFleetOverConnectionBudget (budget above 90 % of maxclients for 15 min).",
			query(budget, "budget {{db_client_connection_pool_name}}"),
			query(`max by (`+server+`) (redisconn_server_connected_clients{SEL})`, "connected {{db_client_connection_pool_name}}"),
			query(`max by (`+server+`) (redisconn_server_maxclients{SEL})`, "maxclients {{db_client_connection_pool_name}}"))).
		WithPanel(series("Budget and connected / maxclients", "percentunit", "The budget and the clients connected now as shares of the server's maxclients. "+
			"The dashed line is the alert's 90 %: above 100 % a stall makes the server refuse connections before the pools are full.",
			query(`(`+budget+`) / on (`+server+`) max by (`+server+`) (redisconn_server_maxclients{SEL})`, "budget {{db_client_connection_pool_name}}"),
			query(`max by (`+server+`) (redisconn_server_connected_clients{SEL}) / on (`+server+`) max by (`+server+`) (redisconn_server_maxclients{SEL})`, "connected {{db_client_connection_pool_name}}")).
			Thresholds(dashboard.NewThresholdsConfigBuilder().Mode(dashboard.ThresholdsModeAbsolute).Steps([]dashboard.Threshold{
				{Color: "green"}, {Value: cog.ToPtr(0.9), Color: "orange"}, {Value: cog.ToPtr(1.0), Color: "red"},
			})).
			ThresholdsStyle(common.NewGraphThresholdsStyleConfigBuilder().Mode(common.GraphThresholdsStyleModeDashed))).
		WithPanel(series("Budget by manager", "short", "Each manager's part of its server's budget (pool maximum plus pub/sub open now): "+
			"the largest are the pools to lower first. A process with an API and a Worker on one server has a part for each.",
			query(`sum by (`+by+`, `+server+`) (db_client_connection_max{SEL}) + on (`+by+`, `+server+`) (sum by (`+by+`, `+server+`) (redisconn_pubsub_connections{SEL})`+
				` or 0 * sum by (`+by+`, `+server+`) (db_client_connection_max{SEL}))`, "{{redisconn_role}} {{instance}} on {{db_client_connection_pool_name}}")))

	b = b.WithRow(dashboard.NewRowBuilder("Sentinel")).
		WithPanel(series("Master switches seen", "short", "Master switches each manager has seen since it started (Sentinel mode only: empty for a standalone or cluster server). "+
			"The managers of one master step up together at a failover; one that does not may still talk to the old master. Alert: RedisconnSentinelMasterSwitched.",
			query(`max by (`+by+`, `+server+`) (redisconn_sentinel_master_switches_total{SEL})`, "{{redisconn_role}} {{instance}} {{db_client_connection_pool_name}}")).Span(12)).
		WithPanel(series("Sentinels answering vs quorum", "short", "Configured sentinels that answered each manager's last check, against the quorum the sentinels report (Sentinel mode only). "+
			"Below the quorum the next failover cannot be agreed. Alert: RedisconnSentinelsBelowQuorum.",
			query(`min by (`+by+`, `+server+`) (redisconn_sentinel_sentinels_answering{SEL})`, "answering {{redisconn_role}} {{instance}}"),
			query(`max by (`+server+`) (redisconn_sentinel_quorum{SEL})`, "quorum {{db_client_connection_pool_name}}")).Span(12))

	d, err := b.Build()
	if err != nil {
		return nil, err
	}
	out, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}

func labelVariable(name, label, q string) *dashboard.QueryVariableBuilder {
	return dashboard.NewQueryVariableBuilder(name).Label(label).
		Query(dashboard.StringOrMap{String: cog.ToPtr(q)}).
		Datasource(promDS).
		Refresh(dashboard.VariableRefreshOnTimeRangeChanged).
		Sort(dashboard.VariableSortAlphabeticalAsc).
		Multi(true).IncludeAll(true).AllValue(allValue)
}
