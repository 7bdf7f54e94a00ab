package telemetry_test

import (
	"os/exec"
	"strings"
	"testing"
)

// The library packages cost an importer go-redis and the OpenTelemetry API,
// nothing more: the SDK, the exporters, gRPC and the Prometheus client live in
// otelsetup, which applications import when they want them.
func TestLibraryLinksOnlyGoRedisAndTheOTelAPI(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command on PATH")
	}
	out, err := exec.Command(goTool, "list", "-deps",
		"-f", "{{if not .Standard}}{{.ImportPath}} {{with .Module}}{{.Path}}{{end}}{{end}}",
		"github.com/redisconn/redisconn/conn", "github.com/redisconn/redisconn/telemetry").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	// Modules the closure may use: go-redis (and rediscmd, which needs only
	// go-redis), the OTel API modules and what they themselves require.
	allowed := map[string]bool{
		"github.com/redisconn/redisconn":              true, // conn and telemetry themselves, checked below
		"github.com/redis/go-redis/v9":                true,
		"github.com/redis/go-redis/extra/rediscmd/v9": true,
		"go.opentelemetry.io/otel":                    true,
		"go.opentelemetry.io/otel/metric":             true,
		"go.opentelemetry.io/otel/trace":              true,
		"go.opentelemetry.io/otel/log":                true, // required by go.opentelemetry.io/otel itself
		"go.opentelemetry.io/auto/sdk":                true, // the API's hook for auto-instrumentation, not the SDK
		"github.com/go-logr/logr":                     true, // the API's internal logger
		"github.com/go-logr/stdr":                     true,
		"github.com/cespare/xxhash/v2":                true, // go-redis
		"go.uber.org/atomic":                          true, // go-redis
		"golang.org/x/sys":                            true, // xxhash's CPU detection
	}
	// The library's own packages: conn, telemetry, and the components conn
	// is built of.
	library := map[string]bool{
		"github.com/redisconn/redisconn/conn":                true,
		"github.com/redisconn/redisconn/telemetry":           true,
		"github.com/redisconn/redisconn/internal/coalesce":   true,
		"github.com/redisconn/redisconn/internal/instrument": true,
		"github.com/redisconn/redisconn/internal/rediserr":   true,
	}
	// Named so that a failure says what went wrong, whatever allowed says.
	forbidden := []string{
		"go.opentelemetry.io/otel/sdk",
		"go.opentelemetry.io/otel/exporters/",
		"go.opentelemetry.io/contrib/",
		"google.golang.org/grpc",
		"google.golang.org/protobuf",
		"github.com/prometheus/",
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) < 10 {
		t.Fatalf("go list -deps printed %d packages: %q", len(lines), out)
	}
	for _, line := range lines {
		if line == "" {
			continue
		}
		pkg, mod, _ := strings.Cut(line, " ")
		for _, f := range forbidden {
			if strings.HasPrefix(pkg, f) {
				t.Errorf("conn or telemetry links %s (module %s): the SDK, exporters, gRPC and the Prometheus client belong in otelsetup", pkg, mod)
			}
		}
		switch {
		case strings.HasPrefix(pkg, "vendor/"), mod == "" && !strings.Contains(pkg, "."):
			// the standard library's vendored packages
		case !allowed[mod]:
			t.Errorf("conn or telemetry links %s from module %q, which is not go-redis or the OpenTelemetry API", pkg, mod)
		case mod == "github.com/redisconn/redisconn" && !library[pkg]:
			t.Errorf("conn or telemetry imports %s; the library is conn, telemetry and their internal components alone", pkg)
		}
	}
}
