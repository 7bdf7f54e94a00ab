package telemetry

import (
	"fmt"
	"slices"
	"strings"

	"go.opentelemetry.io/otel/attribute"
)

// The instrument names, as DESIGN.md lists them. What each one measures, its
// kind, unit, attributes and Prometheus name are in the table below
// (Signals), which is what New creates the instruments from.
const (
	LimiterWaitTime = "redisconn.limiter.wait_time"
	LimiterInFlight = "redisconn.limiter.in_flight"
	LimiterWaiting  = "redisconn.limiter.waiting"
	LimiterLimit    = "redisconn.limiter.limit"
	LimiterRejected = "redisconn.limiter.rejected"

	ConnectionCount           = "db.client.connection.count"
	ConnectionMax             = "db.client.connection.max"
	ConnectionPendingRequests = "db.client.connection.pending_requests"
	ConnectionTimeouts        = "db.client.connection.timeouts"
	PoolHits                  = "redisconn.pool.hits"
	PoolMisses                = "redisconn.pool.misses"
	PoolWaits                 = "redisconn.pool.waits"

	BatchSize         = "redisconn.batch.size"
	OperationDuration = "db.client.operation.duration"

	ServerConnectedClients    = "redisconn.server.connected_clients"
	ServerMaxClients          = "redisconn.server.maxclients"
	ServerRejectedConnections = "redisconn.server.rejected_connections"

	PubSubConnections = "redisconn.pubsub.connections"

	SentinelMasterSwitches     = "redisconn.sentinel.master_switches"
	SentinelSentinelsAnswering = "redisconn.sentinel.sentinels_answering"
	SentinelQuorum             = "redisconn.sentinel.quorum"
)

// Attribute keys.
const (
	AttrRole            = attribute.Key("redisconn.role")
	AttrPoolName        = attribute.Key("db.client.connection.pool.name")
	AttrState           = attribute.Key("db.client.connection.state")
	AttrOperationName   = attribute.Key("db.operation.name")
	AttrErrorType       = attribute.Key("error.type")
	AttrReason          = attribute.Key("reason")
	AttrBatchSize       = attribute.Key("db.operation.batch.size")
	AttrLimiterWaitTime = attribute.Key("redisconn.limiter.wait_time")
	AttrDBSystem        = attribute.Key("db.system.name")
)

// Bucket boundaries.
var (
	// DurationBuckets are the OpenTelemetry semantic conventions' boundaries
	// for db.client.operation.duration.
	DurationBuckets = []float64{0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10}
	// LimiterWaitBuckets resolve waits from 10 µs to 10 s.
	LimiterWaitBuckets = []float64{
		0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005,
		0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
		0.1, 0.25, 0.5, 1, 2.5, 5, 10,
	}
	// BatchSizeBuckets cover 1 to 1000 items.
	BatchSizeBuckets = []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000}
)

// Kind is the kind of an OpenTelemetry instrument.
type Kind string

// The kinds of instrument the managers use. Histograms are recorded
// synchronously; the others are observable, read at collection time.
const (
	KindHistogram     Kind = "histogram"
	KindCounter       Kind = "counter"
	KindUpDownCounter Kind = "updowncounter"
	KindGauge         Kind = "gauge"
)

// Signal is one instrument the managers emit: its OpenTelemetry name, kind,
// unit, description and attributes. It is the single source that the
// instruments are created from and that the README, the dashboards, the alert
// rules and their tests are checked against.
type Signal struct {
	// Name is the OpenTelemetry instrument name.
	Name string
	// Kind is the instrument kind.
	Kind Kind
	// Unit is the UCUM unit: "s", or an annotation such as "{item}".
	Unit string
	// Description is the instrument's description, as exported (# HELP).
	Description string
	// Attributes are the attribute keys the instrument may carry besides
	// BaseAttributes (every series carries those).
	Attributes []attribute.Key
	// Buckets are a histogram's explicit bucket boundaries.
	Buckets []float64
	// Float is true for a histogram of float64 values (durations).
	Float bool
	// SentinelOnly is true for a signal that only a manager in Sentinel
	// mode emits.
	SentinelOnly bool
}

// BaseAttributes are carried by every series of every manager: the role
// (api|worker) and the pool name that tells apart the managers of a process.
func BaseAttributes() []attribute.Key { return []attribute.Key{AttrRole, AttrPoolName} }

// signals is the list of what the managers emit, in DESIGN.md's order.
var signals = []Signal{
	{
		Name: LimiterWaitTime, Kind: KindHistogram, Unit: "s", Float: true, Buckets: LimiterWaitBuckets,
		Description: "Time an operation waited before it was sent: for a limiter permit, or in the worker's coalescing queue. " +
			"One sample per operation (round trip); a coalesced pipeline's is the wait of its oldest command. 0 when it did not wait.",
	},
	{
		Name: LimiterInFlight, Kind: KindUpDownCounter, Unit: "{operation}",
		Description: "Operations, that is round trips, holding a limiter permit now (a coalesced round trip is one).",
	},
	{
		Name: LimiterWaiting, Kind: KindUpDownCounter, Unit: "{caller}",
		Description: "Callers whose command is not sent yet: waiting for a limiter permit, queued for a coalesced round trip, " +
			"or in one waiting for its permit. A call counts once, however many commands it sends (a batch chunk of 50 is one).",
	},
	{
		Name: LimiterLimit, Kind: KindGauge, Unit: "{operation}",
		Description: "Most operations the limiter lets run at once.",
	},
	{
		Name: LimiterRejected, Kind: KindCounter, Unit: "{caller}", Attributes: []attribute.Key{AttrReason},
		Description: "Callers that gave up before their command (or the rest of their commands) was sent: their context ended " +
			"while they waited (reason=context) or the manager closed (reason=closed). A call counts once, as in waiting.",
	},
	{
		Name: ConnectionCount, Kind: KindUpDownCounter, Unit: "{connection}", Attributes: []attribute.Key{AttrState},
		Description: "Pooled connections by state (idle, used).",
	},
	{
		Name: ConnectionMax, Kind: KindUpDownCounter, Unit: "{connection}",
		Description: "Size of the connection pool.",
	},
	{
		Name: ConnectionPendingRequests, Kind: KindUpDownCounter, Unit: "{request}",
		Description: "Callers waiting for a pooled connection now.",
	},
	{
		Name: ConnectionTimeouts, Kind: KindCounter, Unit: "{timeout}",
		Description: "Waits for a pooled connection that timed out.",
	},
	{
		Name: PoolHits, Kind: KindCounter, Unit: "{request}",
		Description: "Requests that found an idle pooled connection.",
	},
	{
		Name: PoolMisses, Kind: KindCounter, Unit: "{request}",
		Description: "Requests that found no idle pooled connection (a new one was dialed).",
	},
	{
		Name: PoolWaits, Kind: KindCounter, Unit: "{request}",
		Description: "Requests that waited for a pooled connection.",
	},
	{
		Name: BatchSize, Kind: KindHistogram, Unit: "{item}", Buckets: BatchSizeBuckets, Attributes: []attribute.Key{AttrOperationName},
		Description: "Items carried by one batch round trip: a BatchRPush or BatchPublish chunk (RPUSH, PUBLISH), " +
			"or the commands of a coalesced pipeline (BATCH <command>, BATCH).",
	},
	{
		Name: OperationDuration, Kind: KindHistogram, Unit: "s", Float: true, Buckets: DurationBuckets,
		Attributes: []attribute.Key{AttrOperationName, AttrErrorType},
		Description: "Duration of one operation (round trip), limiter wait excluded: a command, a pipeline (PIPELINE, MULTI), " +
			"a batch chunk, or a coalesced pipeline (BATCH <command> when its commands share a name, else BATCH). " +
			"error.type is set on failure only.",
	},
	{
		Name: ServerConnectedClients, Kind: KindGauge, Unit: "{connection}",
		Description: "Clients connected to the Redis server (INFO, read at most once per 10 s per manager).",
	},
	{
		Name: ServerMaxClients, Kind: KindGauge, Unit: "{connection}",
		Description: "The Redis server's maxclients (INFO).",
	},
	{
		Name: ServerRejectedConnections, Kind: KindCounter, Unit: "{connection}",
		Description: "Connections the Redis server refused because maxclients was reached (INFO).",
	},
	{
		Name: PubSubConnections, Kind: KindUpDownCounter, Unit: "{connection}",
		Description: "Pub/sub connections open now. They are outside the pool and the limiter, and count against the server's maxclients.",
	},
	{
		Name: SentinelMasterSwitches, Kind: KindCounter, Unit: "{switch}", SentinelOnly: true,
		Description: "Master switches this manager has seen since it started (Sentinel mode): a new master address from the sentinels.",
	},
	{
		Name: SentinelSentinelsAnswering, Kind: KindGauge, Unit: "{sentinel}", SentinelOnly: true,
		Description: "Configured sentinels that answered this manager's last check (Sentinel mode; checked at most once per 10 s).",
	},
	{
		Name: SentinelQuorum, Kind: KindGauge, Unit: "{sentinel}", SentinelOnly: true,
		Description: "The quorum the sentinels report for the master (SENTINEL MASTER): fewer answering sentinels cannot agree on a failover.",
	},
}

// Signals returns every instrument the managers emit (a copy: changing it
// changes nothing).
func Signals() []Signal {
	out := make([]Signal, len(signals))
	for i, s := range signals {
		s.Attributes = slices.Clone(s.Attributes)
		s.Buckets = slices.Clone(s.Buckets)
		out[i] = s
	}
	return out
}

// Lookup returns the entry of the table named name, or an error saying that
// name is not in the table.
func Lookup(name string) (Signal, error) {
	for _, s := range signals {
		if s.Name == name {
			return s, nil
		}
	}
	return Signal{}, fmt.Errorf("telemetry: %s is not in the table of signals", name)
}

// PrometheusName is the metric family's name under the official Prometheus
// exporter's default translation (go.opentelemetry.io/otel/exporters/prometheus):
// dots become underscores, the unit "s" adds "_seconds" (annotations such as
// "{item}" add nothing), and counters end in "_total".
func (s Signal) PrometheusName() string {
	name := PrometheusLabel(attribute.Key(s.Name))
	if s.Unit == "s" {
		name += "_seconds"
	}
	if s.Kind == KindCounter {
		name += "_total"
	}
	return name
}

// PrometheusType is the type of the metric family in the exposition:
// "histogram", "counter" or "gauge" (an updowncounter is exported as a gauge).
func (s Signal) PrometheusType() string {
	switch s.Kind {
	case KindHistogram:
		return "histogram"
	case KindCounter:
		return "counter"
	}
	return "gauge"
}

// PrometheusSeries are the names of the series Prometheus stores for the
// signal: a histogram's _bucket, _sum and _count, else the family's name.
func (s Signal) PrometheusSeries() []string {
	name := s.PrometheusName()
	if s.Kind == KindHistogram {
		return []string{name + "_bucket", name + "_sum", name + "_count"}
	}
	return []string{name}
}

// PrometheusLabels are the label names of the signal's series as exported:
// BaseAttributes, then Attributes, translated. Prometheus adds its target
// labels (job, instance), a histogram's buckets carry "le", and the exporter
// adds the otel_scope_* labels.
func (s Signal) PrometheusLabels() []string {
	var out []string
	for _, k := range append(BaseAttributes(), s.Attributes...) {
		out = append(out, PrometheusLabel(k))
	}
	return out
}

// PrometheusLabel is an attribute key (or instrument name) under the
// exporter's translation: every character that is not a letter, a digit or
// an underscore becomes an underscore.
func PrometheusLabel(k attribute.Key) string {
	return strings.Map(func(r rune) rune {
		if r == '_' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9') {
			return r
		}
		return '_'
	}, string(k))
}
