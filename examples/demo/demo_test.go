package main

import (
	"bytes"
	"context"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The demo, shortened: it starts everything, drives load, prints the summary
// and the before/after table, and leaves no process running.
func TestDemoRunsAndCleansUp(t *testing.T) {
	t.Setenv("REDIS_URL", "")
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	err := run(ctx, options{duration: 4 * time.Second, concurrency: 4, responses: 300, contrast: true}, &out)
	text := out.String()
	if err != nil {
		t.Fatalf("demo failed: %v\n%s", err, text)
	}
	for _, want := range []string{"summary", "runs started / completed / failed", "limiter wait p50 / p99", "before/after", "pool timeouts", "where to look"} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
	m := regexp.MustCompile(`runs started / completed / failed\s+(\d+) / (\d+) / (\d+)`).FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("no run counts in:\n%s", text)
	}
	started, _ := strconv.Atoi(m[1])
	completed, _ := strconv.Atoi(m[2])
	if started == 0 || completed != started || m[3] != "0" {
		t.Errorf("runs started %s completed %s failed %s", m[1], m[2], m[3])
	}
	if !regexp.MustCompile(`runs streamed \(checked in order\)\s+\d+, \d+ responses, 0 broken`).MatchString(text) {
		t.Errorf("streams broken:\n%s", text)
	}
	// Nothing the demo started is left: its binaries and servers lived in
	// a temporary folder named redisconn-demo-*.
	if out, _ := exec.Command("pgrep", "-f", "redisconn-demo-").Output(); len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("processes left running: %s", out)
	}
}
