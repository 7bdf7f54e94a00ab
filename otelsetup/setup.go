// Package otelsetup builds the OpenTelemetry SDK for an application that uses
// redisconn: a MeterProvider behind the official Prometheus exporter (with the
// Go and process collectors) served at /metrics as OpenMetrics with exemplars,
// a TracerProvider whose exporter follows the standard OTEL_* variables
// (contrib autoexport: OTLP over HTTP or gRPC, console, none), and the W3C
// propagators.
//
// It is the application side of the telemetry: the library packages (conn,
// telemetry) depend on the OpenTelemetry API only and never import it, so a
// program that brings its own SDK pays for none of this.
package otelsetup

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/contrib/exporters/autoexport"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// DefaultSampleRatio is the share of root traces (agent runs) that Setup
// samples when OTEL_TRACES_SAMPLER is not set: ParentBased(TraceIDRatioBased(0.1)).
// Every Redis operation of a sampled run is traced; the others cost almost
// nothing. Set OTEL_TRACES_SAMPLER=parentbased_always_on to trace every run.
const DefaultSampleRatio = 0.1

// SetupOption configures Setup.
type SetupOption func(*setupConfig)

type setupConfig struct {
	serviceName  string
	sampler      sdktrace.Sampler
	spanExporter sdktrace.SpanExporter
	global       bool
	attrs        []attribute.KeyValue
}

// WithServiceName sets service.name. Default: OTEL_SERVICE_NAME, else the
// program's file name.
func WithServiceName(name string) SetupOption {
	return func(c *setupConfig) { c.serviceName = name }
}

// WithResourceAttributes adds attributes to the resource (e.g. service.instance.id).
func WithResourceAttributes(attrs ...attribute.KeyValue) SetupOption {
	return func(c *setupConfig) { c.attrs = append(c.attrs, attrs...) }
}

// WithSampler replaces the sampler; OTEL_TRACES_SAMPLER is then ignored.
func WithSampler(s sdktrace.Sampler) SetupOption {
	return func(c *setupConfig) { c.sampler = s }
}

// WithSpanExporter replaces the exporter that OTEL_TRACES_EXPORTER would
// choose (tests use an in-memory one).
func WithSpanExporter(e sdktrace.SpanExporter) SetupOption {
	return func(c *setupConfig) { c.spanExporter = e }
}

// WithGlobal says whether Setup installs its providers and the W3C trace
// context propagator as the OpenTelemetry globals (default true), which is
// where conn's managers and other libraries find them.
func WithGlobal(on bool) SetupOption {
	return func(c *setupConfig) { c.global = on }
}

// Telemetry is what Setup built. Shutdown flushes and stops all of it.
type Telemetry struct {
	// MeterProvider exports to the Prometheus Registry below.
	MeterProvider *sdkmetric.MeterProvider
	// TracerProvider exports spans where OTEL_TRACES_EXPORTER says.
	TracerProvider *sdktrace.TracerProvider
	// Registry is the Prometheus registry behind Handler: the OpenTelemetry
	// metrics plus the Go runtime and process collectors. It is not the
	// global prometheus.DefaultRegisterer.
	Registry *prometheus.Registry

	handler      http.Handler
	shutdownOnce sync.Once
	shutdownErr  error
}

// Setup builds the OpenTelemetry SDK for an application:
//
//   - a resource with service.name (WithServiceName, OTEL_SERVICE_NAME, or
//     the program name) and OTEL_RESOURCE_ATTRIBUTES;
//   - a MeterProvider whose readers is the official Prometheus exporter on a
//     registry of its own, served by Handler as OpenMetrics with exemplars
//     (the SDK's default trace_based exemplar filter: samples recorded inside
//     a sampled span carry its trace_id and span_id);
//   - a TracerProvider with a batching exporter chosen by the standard
//     variables through autoexport: OTEL_TRACES_EXPORTER=otlp (default),
//     console or none; OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf (default) or
//     grpc; OTEL_EXPORTER_OTLP_ENDPOINT and the rest of OTEL_EXPORTER_OTLP_*.
//     The sampler follows OTEL_TRACES_SAMPLER, defaulting to
//     ParentBased(TraceIDRatioBased(DefaultSampleRatio)).
//
// Unless WithGlobal(false), the providers and the W3C propagator become the
// OpenTelemetry globals. Call Shutdown before the program exits.
func Setup(ctx context.Context, opts ...SetupOption) (*Telemetry, error) {
	cfg := setupConfig{global: true}
	for _, o := range opts {
		if o != nil {
			o(&cfg)
		}
	}
	res, err := newResource(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("otelsetup: resource: %w", err)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	promExporter, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		return nil, fmt.Errorf("otelsetup: prometheus exporter: %w", err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(promExporter), sdkmetric.WithResource(res))

	exporter := cfg.spanExporter
	if exporter == nil {
		exporter, err = autoexport.NewSpanExporter(ctx)
		if err != nil {
			_ = mp.Shutdown(ctx)
			return nil, fmt.Errorf("otelsetup: trace exporter from OTEL_TRACES_EXPORTER / OTEL_EXPORTER_OTLP_*: %w", err)
		}
	}
	tpOpts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res), sdktrace.WithBatcher(exporter)}
	switch {
	case cfg.sampler != nil:
		tpOpts = append(tpOpts, sdktrace.WithSampler(cfg.sampler))
	case os.Getenv("OTEL_TRACES_SAMPLER") == "":
		tpOpts = append(tpOpts, sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(DefaultSampleRatio))))
		// else: the SDK reads OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG itself.
	}
	tp := sdktrace.NewTracerProvider(tpOpts...)

	if cfg.global {
		otel.SetMeterProvider(mp)
		otel.SetTracerProvider(tp)
		otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	}
	return &Telemetry{
		MeterProvider:  mp,
		TracerProvider: tp,
		Registry:       reg,
		handler:        promhttp.HandlerFor(reg, promhttp.HandlerOpts{EnableOpenMetrics: true}),
	}, nil
}

func newResource(ctx context.Context, cfg setupConfig) (*resource.Resource, error) {
	name := cfg.serviceName
	if name == "" {
		name = os.Getenv("OTEL_SERVICE_NAME")
	}
	if name == "" {
		name = filepath.Base(os.Args[0])
	}
	// Later options win: the environment over nothing, the explicit name over both.
	return resource.New(ctx,
		resource.WithTelemetrySDK(),
		resource.WithFromEnv(),
		resource.WithAttributes(append([]attribute.KeyValue{attribute.String("service.name", name)}, cfg.attrs...)...),
	)
}

// Handler serves the metrics at /metrics in the OpenMetrics format when the
// scraper asks for it (Prometheus does), so exemplars reach Prometheus, and in
// the classic text format otherwise.
func (t *Telemetry) Handler() http.Handler { return t.handler }

// Shutdown flushes pending spans and stops the providers. It is idempotent;
// later calls return the first call's result.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	t.shutdownOnce.Do(func() {
		t.shutdownErr = errors.Join(t.TracerProvider.Shutdown(ctx), t.MeterProvider.Shutdown(ctx))
	})
	return t.shutdownErr
}
