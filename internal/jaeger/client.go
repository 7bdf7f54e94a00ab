package jaeger

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Client reads traces through Jaeger's HTTP query API (the /api/traces
// endpoints the Jaeger UI uses).
type Client struct {
	// URL is the query API's base URL, e.g. http://127.0.0.1:16686.
	URL string
	// HTTP is the client used; nil means one with a 10 s timeout.
	HTTP *http.Client
}

// ErrNotFound: Jaeger has no such trace (or no trace of that run) yet.
var ErrNotFound = errors.New("jaeger: not found")

// Span is one span of a trace as Jaeger stores it.
type Span struct {
	TraceID, SpanID string
	// ParentID is the span's parent (CHILD_OF reference); empty for a root.
	ParentID string
	Name     string
	// Service is the service.name of the process that sent the span.
	Service string
	// Kind is server, client, internal, producer or consumer.
	Kind     string
	Start    time.Time
	Duration time.Duration
	// Attrs are the span's attributes (Jaeger's tags), with values as
	// string, bool, int64 or float64; Jaeger adds span.kind,
	// otel.scope.name, otel.status_code and error.
	Attrs map[string]any
	// Resource are the attributes of the process (service.name, ...).
	Resource map[string]any
	// Events are the span's events (Jaeger's logs), their fields as attributes.
	Events []map[string]any
	// Error says the span's status is an error.
	Error bool
}

// End is when the span ended.
func (s *Span) End() time.Time { return s.Start.Add(s.Duration) }

// Attr returns the attribute k as a string ("" when absent).
func (s *Span) Attr(k string) string {
	v, ok := s.Attrs[k]
	if !ok {
		return ""
	}
	return fmt.Sprint(v)
}

// Float returns a numeric attribute and whether it is there.
func (s *Span) Float(k string) (float64, bool) {
	switch v := s.Attrs[k].(type) {
	case float64:
		return v, true
	case int64:
		return float64(v), true
	}
	return 0, false
}

// Trace is one trace: its spans sorted by start time.
type Trace struct {
	ID    string
	Spans []*Span
}

// Span returns the span with the id, or nil.
func (t *Trace) Span(id string) *Span {
	for _, s := range t.Spans {
		if s.SpanID == id {
			return s
		}
	}
	return nil
}

// Services lists the services that sent spans, with their span counts, in
// the order they first appear.
func (t *Trace) Services() (names []string, spans map[string]int) {
	spans = map[string]int{}
	for _, s := range t.Spans {
		if spans[s.Service] == 0 {
			names = append(names, s.Service)
		}
		spans[s.Service]++
	}
	return names, spans
}

func (c *Client) http() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return &http.Client{Timeout: 10 * time.Second}
}

// Raw GETs path (with query) from the query API and returns the body. A 404
// is ErrNotFound; any other status is an error quoting the body's start.
func (c *Client) Raw(ctx context.Context, pathAndQuery string) ([]byte, error) {
	u := strings.TrimRight(c.URL, "/") + pathAndQuery
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("jaeger: %w", err)
	}
	resp, err := c.http().Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("jaeger: cannot reach the query API at %s: %w", c.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return nil, fmt.Errorf("jaeger: reading %s: %w", u, err)
	}
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return nil, ErrNotFound
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("jaeger: GET %s: %s: %.300s", u, resp.Status, body)
	}
	return body, nil
}

// Services lists the service names Jaeger has spans of.
func (c *Client) Services(ctx context.Context) ([]string, error) {
	body, err := c.Raw(ctx, "/api/services")
	if err != nil {
		return nil, err
	}
	var r struct {
		Data []string `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("jaeger: /api/services: %w", err)
	}
	sort.Strings(r.Data)
	return r.Data, nil
}

// Trace fetches one trace by its id (32 hex digits).
func (c *Client) Trace(ctx context.Context, traceID string) (*Trace, error) {
	body, err := c.Raw(ctx, "/api/traces/"+url.PathEscape(traceID))
	if err != nil {
		return nil, err
	}
	ts, err := parseTraces(body)
	if err != nil {
		return nil, err
	}
	if len(ts) == 0 || len(ts[0].Spans) == 0 {
		return nil, ErrNotFound
	}
	return ts[0], nil
}

// Search finds recent traces holding a span of service (and of operation,
// when not empty) whose attributes match tags, newest first, at most limit,
// within lookback.
func (c *Client) Search(ctx context.Context, service, operation string, tags map[string]string, limit int, lookback time.Duration) ([]*Trace, error) {
	q := url.Values{"service": {service}, "limit": {strconv.Itoa(limit)}}
	if operation != "" {
		q.Set("operation", operation)
	}
	if len(tags) > 0 {
		b, _ := json.Marshal(tags)
		q.Set("tags", string(b))
	}
	end := time.Now()
	q.Set("start", strconv.FormatInt(end.Add(-lookback).UnixMicro(), 10))
	q.Set("end", strconv.FormatInt(end.UnixMicro(), 10))
	body, err := c.Raw(ctx, "/api/traces?"+q.Encode())
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	ts, err := parseTraces(body)
	if err != nil {
		return nil, err
	}
	sort.Slice(ts, func(i, j int) bool { return ts[i].Spans[0].Start.After(ts[j].Spans[0].Start) })
	return ts, nil
}

// RunSpan is the name of the worker's root span of an agent run, and
// RunIDAttr the attribute that carries the run's id.
const (
	RunSpan   = "agent.run"
	RunIDAttr = "agent.run.id"
)

// FindRun returns the id of the trace of agent run runID: the trace holding
// service's agent.run span with agent.run.id = runID. ErrNotFound when
// Jaeger has none (the run was not sampled, or its spans have not arrived).
func (c *Client) FindRun(ctx context.Context, service, runID string, lookback time.Duration) (string, error) {
	ts, err := c.Search(ctx, service, RunSpan, map[string]string{RunIDAttr: runID}, 1, lookback)
	if err != nil {
		return "", err
	}
	if len(ts) == 0 {
		return "", ErrNotFound
	}
	return ts[0].ID, nil
}

// WaitComplete fetches the trace until its span count has not changed for
// settle (spans of one trace arrive from several processes, each after its
// exporter's and Jaeger's batching), or until ctx ends; it returns the last
// trace seen. done, when not nil, must also hold: what the caller needs is
// in the trace.
func (c *Client) WaitComplete(ctx context.Context, traceID string, settle time.Duration, done func(*Trace) bool) (*Trace, error) {
	var last *Trace
	var lastErr error
	stableSince := time.Now()
	for {
		t, err := c.Trace(ctx, traceID)
		switch {
		case err == nil:
			if last == nil || len(t.Spans) != len(last.Spans) {
				stableSince = time.Now()
			}
			last, lastErr = t, nil
			if (done == nil || done(t)) && time.Since(stableSince) >= settle {
				return t, nil
			}
		case errors.Is(err, ErrNotFound):
			lastErr = err
		default:
			return last, err
		}
		select {
		case <-ctx.Done():
			if last != nil {
				return last, nil
			}
			if lastErr == nil {
				lastErr = ctx.Err()
			}
			return nil, lastErr
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// The JSON of /api/traces.
type apiResponse struct {
	Data   []apiTrace `json:"data"`
	Errors []struct {
		Code int    `json:"code"`
		Msg  string `json:"msg"`
	} `json:"errors"`
}

type apiTrace struct {
	TraceID   string `json:"traceID"`
	Spans     []apiSpan
	Processes map[string]struct {
		ServiceName string   `json:"serviceName"`
		Tags        []apiTag `json:"tags"`
	} `json:"processes"`
}

type apiSpan struct {
	TraceID       string `json:"traceID"`
	SpanID        string `json:"spanID"`
	OperationName string `json:"operationName"`
	References    []struct {
		RefType string `json:"refType"`
		TraceID string `json:"traceID"`
		SpanID  string `json:"spanID"`
	} `json:"references"`
	StartTime int64    `json:"startTime"` // µs since the epoch
	Duration  int64    `json:"duration"`  // µs
	Tags      []apiTag `json:"tags"`
	Logs      []struct {
		Fields []apiTag `json:"fields"`
	} `json:"logs"`
	ProcessID string `json:"processID"`
}

type apiTag struct {
	Key   string          `json:"key"`
	Type  string          `json:"type"`
	Value json.RawMessage `json:"value"`
}

func (t apiTag) value() any {
	switch t.Type {
	case "int64":
		var n int64
		if json.Unmarshal(t.Value, &n) == nil {
			return n
		}
	case "float64":
		var f float64
		if json.Unmarshal(t.Value, &f) == nil {
			return f
		}
	case "bool":
		var b bool
		if json.Unmarshal(t.Value, &b) == nil {
			return b
		}
	}
	var s string
	if json.Unmarshal(t.Value, &s) == nil {
		return s
	}
	return string(bytes.TrimSpace(t.Value))
}

func tagMap(tags []apiTag) map[string]any {
	m := make(map[string]any, len(tags))
	for _, t := range tags {
		m[t.Key] = t.value()
	}
	return m
}

func parseTraces(body []byte) ([]*Trace, error) {
	var r apiResponse
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("jaeger: the query API's answer is not the JSON of /api/traces: %w", err)
	}
	if len(r.Data) == 0 && len(r.Errors) > 0 {
		if r.Errors[0].Code == http.StatusNotFound {
			return nil, ErrNotFound
		}
		return nil, fmt.Errorf("jaeger: %s", r.Errors[0].Msg)
	}
	var out []*Trace
	for _, at := range r.Data {
		t := &Trace{ID: at.TraceID}
		for _, as := range at.Spans {
			p := at.Processes[as.ProcessID]
			s := &Span{
				TraceID:  as.TraceID,
				SpanID:   as.SpanID,
				Name:     as.OperationName,
				Service:  p.ServiceName,
				Start:    time.UnixMicro(as.StartTime),
				Duration: time.Duration(as.Duration) * time.Microsecond,
				Attrs:    tagMap(as.Tags),
				Resource: tagMap(p.Tags),
			}
			s.Resource["service.name"] = p.ServiceName
			for _, ref := range as.References {
				if ref.RefType == "CHILD_OF" && ref.TraceID == as.TraceID {
					s.ParentID = ref.SpanID
					break
				}
			}
			for _, l := range as.Logs {
				s.Events = append(s.Events, tagMap(l.Fields))
			}
			s.Kind = s.Attr("span.kind")
			if s.Kind == "" {
				s.Kind = "internal"
			}
			s.Error = s.Attrs["error"] == true || s.Attr("otel.status_code") == "ERROR"
			t.Spans = append(t.Spans, s)
		}
		if len(t.Spans) == 0 {
			continue
		}
		sort.SliceStable(t.Spans, func(i, j int) bool { return t.Spans[i].Start.Before(t.Spans[j].Start) })
		out = append(out, t)
	}
	return out, nil
}
