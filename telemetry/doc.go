// Package telemetry is what redisconn emits, for the applications and tools
// that read it: the table of signals (Signals: every OpenTelemetry
// instrument with its kind, unit, attributes and Prometheus name), the
// attribute keys, and ErrorType, the bounded error.type of a go-redis error.
// Dashboards, alert rules and docs are checked against the table.
//
// The instruments and the go-redis hooks that record them are the managers'
// own (package conn and its internal components); they depend on the
// OpenTelemetry API only, record through the providers an application
// gives them, falling back to the OpenTelemetry globals, and never install
// an SDK. Applications that want one ready-made (a Prometheus /metrics
// endpoint with exemplars, OTLP traces) use package otelsetup.
package telemetry

import "time"

// ScopeName is the instrumentation scope of every instrument and span.
const ScopeName = "github.com/redisconn/redisconn"

// ServerInfoMaxAge is how long a manager reuses one INFO reply for the server
// instruments, so that scrapes never load Redis.
const ServerInfoMaxAge = 10 * time.Second
