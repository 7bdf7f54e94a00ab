package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// options of one demo run.
type options struct {
	duration     time.Duration
	concurrency  int
	responses    int
	contrast     bool
	contrastOnly bool
	keep         bool
	traces       bool    // start Jaeger (building it when missing) and send spans to it
	traceRatio   float64 // share of runs traced (parentbased_traceidratio)
}

func envDuration(name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	if d, err := time.ParseDuration(v); err == nil && d > 0 {
		return d
	}
	if s, err := strconv.ParseFloat(v, 64); err == nil && s > 0 {
		return time.Duration(s * float64(time.Second))
	}
	fmt.Fprintf(os.Stderr, "demo: ignoring %s=%q: want a duration like 30s\n", name, v)
	return def
}

func envFloat(name string, def float64) float64 {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	if f, err := strconv.ParseFloat(v, 64); err == nil && f > 0 && f <= 1 {
		return f
	}
	fmt.Fprintf(os.Stderr, "demo: ignoring %s=%q: want a ratio above 0, at most 1\n", name, v)
	return def
}

func envInt(name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	if n, err := strconv.Atoi(v); err == nil && n > 0 {
		return n
	}
	fmt.Fprintf(os.Stderr, "demo: ignoring %s=%q: want a positive whole number\n", name, v)
	return def
}

// procs are the child processes the demo started; stop ends them all.
type procs struct {
	dir  string
	mu   sync.Mutex
	list []*child
}

type child struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
}

// start runs bin with args and env added to the demo's environment; its
// output goes to dir/name.log.
func (p *procs) start(name, bin string, args, env []string) (*child, error) {
	logf, err := os.Create(filepath.Join(p.dir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group, and killed if the demo dies: nothing outlives the demo.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); logf.Close(); close(c.done) }()
	p.mu.Lock()
	p.list = append(p.list, c)
	p.mu.Unlock()
	return c, nil
}

// stop sends SIGTERM to every child, waits up to 10 s, then SIGKILLs the rest.
func (p *procs) stop() {
	p.mu.Lock()
	list := p.list
	p.list = nil
	p.mu.Unlock()
	for _, c := range list {
		_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGTERM)
	}
	deadline := time.After(10 * time.Second)
	for _, c := range list {
		select {
		case <-c.done:
		case <-deadline:
			_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
			<-c.done
		}
	}
}

// drop stops c (SIGKILL) and forgets it.
func (p *procs) drop(c *child) {
	_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
	<-c.done
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, x := range p.list {
		if x == c {
			p.list = append(p.list[:i], p.list[i+1:]...)
			break
		}
	}
}

// exited reports a child that died, with the end of its log.
func (p *procs) exited() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.list {
		select {
		case <-c.done:
			return fmt.Errorf("%s exited early; its log:\n%s", c.name, tail(filepath.Join(p.dir, c.name+".log"), 20))
		default:
		}
	}
	return nil
}

func tail(path string, lines int) string {
	b, _ := os.ReadFile(path)
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// waitHTTP polls url until it answers 200, a child dies, or timeout.
func (p *procs) waitHTTP(ctx context.Context, url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: time.Second}
	for {
		if err := p.exited(); err != nil {
			return err
		}
		if resp, err := client.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not answer within %v", url, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// freeAddr returns a free loopback host:port.
func freeAddr() (string, error) {
	l, err := netListen()
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
