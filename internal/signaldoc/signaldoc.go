// Package signaldoc writes the README's metrics table from the table of
// signals (telemetry.Signals), so the README names exactly what the managers
// emit. `go generate ./internal/signaldoc` rewrites the part of README.md
// between BeginMarker and EndMarker; a test fails when the committed README
// differs, or when README.md or docs/runbooks.md names a series that is not
// in the table.
package signaldoc

//go:generate go run ./gen

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"github.com/redisconn/redisconn/telemetry"
)

// The markers around the generated table in README.md.
const (
	BeginMarker = "<!-- signals:begin (generated from telemetry.Signals by go generate ./internal/signaldoc; do not edit) -->"
	EndMarker   = "<!-- signals:end -->"
)

// markdown escapes what a table cell would otherwise swallow.
var markdown = strings.NewReplacer("|", `\|`, "<", "&lt;", ">", "&gt;")

// Table renders the table of signals as Markdown.
func Table() string {
	var b strings.Builder
	b.WriteString("| Prometheus | type | labels besides `redisconn_role`, `db_client_connection_pool_name` | OpenTelemetry instrument, unit | what |\n")
	b.WriteString("|---|---|---|---|---|\n")
	for _, s := range telemetry.Signals() {
		typ := s.PrometheusType()
		if s.Kind == telemetry.KindHistogram {
			typ += fmt.Sprintf(" (`_bucket` with `le`, `_sum`, `_count`), buckets %g to %g", s.Buckets[0], s.Buckets[len(s.Buckets)-1])
		}
		labels := "—"
		if own := s.PrometheusLabels()[len(telemetry.BaseAttributes()):]; len(own) > 0 {
			labels = "`" + strings.Join(own, "`, `") + "`"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | `%s` (%s), `%s` | %s |\n",
			s.PrometheusName(), typ, labels, s.Name, s.Kind, s.Unit, markdown.Replace(s.Description))
	}
	return b.String()
}

// Replace returns readme with the text between the markers replaced by Table.
func Replace(readme []byte) ([]byte, error) {
	begin := bytes.Index(readme, []byte(BeginMarker))
	end := bytes.Index(readme, []byte(EndMarker))
	if begin < 0 || end < begin {
		return nil, errors.New("signaldoc: README.md has no " + BeginMarker + " ... " + EndMarker + " section")
	}
	var out bytes.Buffer
	out.Write(readme[:begin+len(BeginMarker)])
	out.WriteString("\n" + Table())
	out.Write(readme[end:])
	return out.Bytes(), nil
}
