package jaeger

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// WaterfallOptions shape Waterfall's output.
type WaterfallOptions struct {
	// Width is the number of columns of the time bars (default 40).
	Width int
	// Collapse is how many spans of one name are shown under one parent
	// before the rest are summed up in one line ("⋮ 72 more BatchRPush");
	// spans with an error are always shown. 0 shows every span.
	Collapse int
	// Focus, a span id, shows only that span, its ancestors and the spans
	// below it, the span marked with FocusLabel.
	Focus, FocusLabel string
	// MaxName caps the width of the name column (default 46).
	MaxName int
}

// Waterfall prints t as a tree of spans in start order, one line each: the
// span's name, its service, its start offset and duration, a bar placing it
// on the trace's time line, and what matters for a Redis operation: the
// limiter wait (redisconn.limiter.wait_time), batch and pipeline sizes
// (db.operation.batch.size, redisconn.pipeline.size), errors (error.type),
// the run's id and status, the HTTP status.
func Waterfall(w io.Writer, t *Trace, o WaterfallOptions) {
	if o.Width <= 0 {
		o.Width = 40
	}
	if o.MaxName <= 0 {
		o.MaxName = 46
	}
	if len(t.Spans) == 0 {
		fmt.Fprintf(w, "trace %s: no spans\n", t.ID)
		return
	}
	start, end := t.Spans[0].Start, t.Spans[0].End()
	byID := map[string]*Span{}
	for _, s := range t.Spans {
		byID[s.SpanID] = s
		if s.Start.Before(start) {
			start = s.Start
		}
		if s.End().After(end) {
			end = s.End()
		}
	}
	total := end.Sub(start)
	children := map[string][]*Span{}
	var roots []*Span
	for _, s := range t.Spans {
		if _, ok := byID[s.ParentID]; ok && s.ParentID != s.SpanID {
			children[s.ParentID] = append(children[s.ParentID], s)
		} else {
			roots = append(roots, s)
		}
	}
	keep := map[string]bool(nil) // with Focus: the span, its ancestors and its descendants
	if o.Focus != "" {
		keep = map[string]bool{}
		for s := byID[o.Focus]; s != nil && !keep[s.SpanID]; s = byID[s.ParentID] {
			keep[s.SpanID] = true
		}
		var below func(id string)
		below = func(id string) {
			for _, c := range children[id] {
				if !keep[c.SpanID] {
					keep[c.SpanID] = true
					below(c.SpanID)
				}
			}
		}
		below(o.Focus)
	}

	// The header: the trace, its services, its length.
	names, counts := t.Services()
	var svcs []string
	for _, n := range names {
		svcs = append(svcs, fmt.Sprintf("%s (%d)", n, counts[n]))
	}
	fmt.Fprintf(w, "trace %s: %d spans in %s, services %s\n", t.ID, len(t.Spans), Dur(total), strings.Join(svcs, ", "))

	// Lines first, to size the columns.
	type line struct {
		prefix, name, service string
		off, dur              time.Duration
		bar                   bool
		details               string
	}
	var lines []line
	var walk func(spans []*Span, indent string, top bool)
	walk = func(spans []*Span, indent string, top bool) {
		type item struct {
			span   *Span
			hidden *hiddenGroup
		}
		var items []item
		shown := map[string]int{}
		groups := map[string]*hiddenGroup{}
		var order []string
		for _, s := range spans {
			if keep != nil && !keep[s.SpanID] {
				continue
			}
			if o.Collapse > 0 && keep == nil && shown[s.Name] >= o.Collapse && !subtreeHasError(s, children) {
				g := groups[s.Name]
				if g == nil {
					g = &hiddenGroup{name: s.Name}
					groups[s.Name] = g
					order = append(order, s.Name)
				}
				g.add(s, children)
				continue
			}
			shown[s.Name]++
			items = append(items, item{span: s})
		}
		for _, n := range order {
			items = append(items, item{hidden: groups[n]})
		}
		for i, it := range items {
			branch, next := "├─ ", "│  "
			if i == len(items)-1 {
				branch, next = "└─ ", "   "
			}
			if top {
				branch, next = "", ""
			}
			if it.hidden != nil {
				g := it.hidden
				lines = append(lines, line{prefix: indent + branch, name: fmt.Sprintf("⋮ %d more %s", g.count, g.name), service: g.service,
					off: g.first.Sub(start), dur: g.last.Sub(g.first), details: g.summary()})
				continue
			}
			s := it.span
			d := details(s)
			if s.SpanID == o.Focus && o.FocusLabel != "" {
				d = strings.TrimSpace(d + "  ◀ " + o.FocusLabel)
			}
			if _, ok := byID[s.ParentID]; !ok && s.ParentID != "" {
				d = strings.TrimSpace(d + " (parent span not in the trace)")
			}
			lines = append(lines, line{prefix: indent + branch, name: s.Name, service: s.Service,
				off: s.Start.Sub(start), dur: s.Duration, bar: true, details: d})
			walk(children[s.SpanID], indent+next, false)
		}
	}
	walk(roots, "", true)

	nameW, svcW := len("span"), len("service")
	for _, l := range lines {
		nameW = max(nameW, utf8.RuneCountInString(l.prefix+l.name))
		svcW = max(svcW, len(l.service))
	}
	nameW = min(nameW, o.MaxName)
	pad := func(s string, n int) string {
		if c := utf8.RuneCountInString(s); c > n {
			r := []rune(s)
			return string(r[:n-1]) + "…"
		} else {
			return s + strings.Repeat(" ", n-c)
		}
	}
	scale := fmt.Sprintf("0 … %s", Dur(total))
	head := fmt.Sprintf("%s  %s  %9s  %9s  %s", pad("span", nameW), pad("service", svcW), "start", "duration", scale)
	fmt.Fprintln(w, head)
	for _, l := range lines {
		row := fmt.Sprintf("%s  %s  %9s  %9s  %s  %s", pad(l.prefix+l.name, nameW), pad(l.service, svcW),
			"+"+Dur(l.off), Dur(l.dur), bar(l.off, l.dur, total, o.Width, l.bar), l.details)
		fmt.Fprintln(w, strings.TrimRight(row, " "))
	}
}

// bar draws [off, off+dur] on a line of width columns for a trace of total.
func bar(off, dur, total time.Duration, width int, solid bool) string {
	if total <= 0 {
		total = 1
	}
	from := int(int64(width) * int64(off) / int64(total))
	to := int((int64(width)*int64(off+dur) + int64(total) - 1) / int64(total))
	from = min(max(from, 0), width-1)
	to = min(max(to, from+1), width)
	fill := "█"
	if !solid {
		fill = "░"
	}
	return "│" + strings.Repeat(" ", from) + strings.Repeat(fill, to-from) + strings.Repeat(" ", width-to) + "│"
}

func subtreeHasError(s *Span, children map[string][]*Span) bool {
	if s.Error {
		return true
	}
	for _, c := range children[s.SpanID] {
		if subtreeHasError(c, children) {
			return true
		}
	}
	return false
}

// hiddenGroup sums up the spans of one name that Collapse left out.
type hiddenGroup struct {
	name        string
	service     string
	count       int
	below       int // spans under them
	first, last time.Time
	busy        time.Duration
	items       int64
	maxWait     float64
	longest     time.Duration
}

func (g *hiddenGroup) add(s *Span, children map[string][]*Span) {
	if g.count == 0 || s.Start.Before(g.first) {
		g.first = s.Start
	}
	if s.End().After(g.last) {
		g.last = s.End()
	}
	if g.count == 0 {
		g.service = s.Service
	}
	g.count++
	g.busy += s.Duration
	g.longest = max(g.longest, s.Duration)
	if n, ok := s.Float("db.operation.batch.size"); ok && strings.HasPrefix(s.Name, "Batch") {
		g.items += int64(n)
	}
	var visit func(*Span)
	visit = func(x *Span) {
		if w, ok := x.Float("redisconn.limiter.wait_time"); ok {
			g.maxWait = max(g.maxWait, w)
		}
		for _, c := range children[x.SpanID] {
			g.below++
			visit(c)
		}
	}
	visit(s)
}

func (g *hiddenGroup) summary() string {
	parts := []string{fmt.Sprintf("%s in all, longest %s", Dur(g.busy), Dur(g.longest))}
	if g.items > 0 {
		parts = append(parts, fmt.Sprintf("%d items", g.items))
	}
	if g.below > 0 {
		parts = append(parts, fmt.Sprintf("%d spans below", g.below))
	}
	if g.maxWait > 0 {
		parts = append(parts, "max wait "+Dur(secs(g.maxWait)))
	}
	return strings.Join(parts, ", ")
}

func secs(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }

// details is what the waterfall says about a span besides name and time.
func details(s *Span) string {
	var p []string
	if id := s.Attr(RunIDAttr); id != "" {
		p = append(p, "run "+id)
	}
	if n := s.Attr("agent.run.responses"); n != "" {
		p = append(p, n+" responses")
	}
	if st := s.Attr("agent.run.status"); st != "" {
		p = append(p, st)
	}
	if c := s.Attr("http.response.status_code"); c != "" {
		p = append(p, "HTTP "+c)
	}
	if n, ok := s.Float("db.operation.batch.size"); ok {
		switch {
		case strings.HasPrefix(s.Name, "Batch"):
			p = append(p, fmt.Sprintf("%.0f items", n))
		default:
			p = append(p, fmt.Sprintf("%.0f commands", n))
		}
	}
	if a, ok := s.Float("redisconn.batch.acknowledged"); ok {
		if n, _ := s.Float("db.operation.batch.size"); a != n {
			p = append(p, fmt.Sprintf("%.0f acknowledged", a))
		}
	}
	if n, ok := s.Float("redisconn.pipeline.size"); ok && n > 1 {
		p = append(p, fmt.Sprintf("coalesced, pipeline of %.0f", n))
	}
	if wt, ok := s.Float("redisconn.limiter.wait_time"); ok {
		p = append(p, "wait "+Dur(secs(wt)))
	}
	if s.Error {
		e := s.Attr("error.type")
		if e == "" {
			e = s.Attr("otel.status_description")
		}
		p = append(p, strings.TrimSpace("ERROR "+e))
	}
	return strings.Join(p, ", ")
}

// Dur prints a duration short: 0, 850µs, 2.78ms, 1.234s.
func Dur(d time.Duration) string {
	switch {
	case d <= 0:
		return "0"
	case d < time.Millisecond:
		return strconv.FormatInt(d.Microseconds(), 10) + "µs"
	case d < time.Second:
		return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 2, 64) + "ms"
	default:
		return strconv.FormatFloat(d.Seconds(), 'f', 3, 64) + "s"
	}
}
