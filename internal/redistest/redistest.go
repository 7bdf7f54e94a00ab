// Package redistest starts real redis-server processes for tests: standalone,
// password/ACL protected, TLS, Redis Cluster and Sentinel. Every server listens
// on a free loopback port, keeps its files in a temporary folder of the test, and
// is stopped when the test ends. Nothing here fakes Redis.
//
// The same helpers run valkey-server (Valkey 8, which reads the same
// directives and flags) instead: per server with Options.Server, or for every
// server that does not say, with REDISTEST_SERVER=valkey (see Kind).
package redistest

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Options describe the server to start. The zero value is a plain standalone
// server with persistence off.
type Options struct {
	// Server is which server to run; "" is the default Kind (REDISTEST_SERVER,
	// else Redis).
	Server Kind
	// Password sets requirepass for the default user.
	Password string
	// Username and UserPassword create an ACL user with full access, and turn
	// the default user off, so only this user can connect.
	Username, UserPassword string
	// TLS serves only TLS on the port; certificates are generated per server.
	TLS bool
	// AppendFsyncAlways turns the AOF on with appendfsync always, so every
	// acknowledged write survives a SIGKILL.
	AppendFsyncAlways bool
	// Args are extra redis-server arguments, e.g. "--maxclients", "50".
	Args []string
	// Certs, with TLS, are used instead of a freshly generated CA and server
	// certificate, so that several servers (see StartSentinel) trust each other.
	Certs *Certs
	// Config is written to redis.conf in the server's folder, which is given to
	// redis-server as its config file (the Args come after it). The file is
	// written on the first start only, so what the server rewrites in it (a
	// sentinel's state, CONFIG REWRITE) survives Restart.
	Config string
}

// Server is one running redis-server (or valkey-server) process.
type Server struct {
	t    testing.TB
	opts Options
	kind Kind
	dir  string
	port int
	// Certs is set for TLS servers.
	Certs *Certs

	mu   sync.Mutex
	proc *process
}

// process is one run of redis-server; done closes when it has exited.
type process struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Kind is which server the helper runs: Redis or Valkey.
type Kind string

const (
	// Redis runs redis-server (the default).
	Redis Kind = "redis"
	// Valkey runs valkey-server (Debian's valkey-server package, Valkey 8).
	Valkey Kind = "valkey"
)

// ServerEnv names the environment variable that chooses the Kind of every
// server whose Options.Server is empty: "redis" (the default) or "valkey".
const ServerEnv = "REDISTEST_SERVER"

// Binary is the kind's server executable, which also runs its sentinels
// (--sentinel).
func (k Kind) Binary() string { return string(k) + "-server" }

// resolveKind is the one place that decides which server runs: k, else
// REDISTEST_SERVER, else Redis.
func resolveKind(k Kind) (Kind, error) {
	from := "Options.Server"
	if k == "" {
		k, from = Kind(os.Getenv(ServerEnv)), ServerEnv
	}
	switch k {
	case "":
		return Redis, nil
	case Redis, Valkey:
		return k, nil
	}
	return "", fmt.Errorf("%s=%q: want %q or %q", from, k, Redis, Valkey)
}

// Start starts a standalone redis-server and stops it when the test ends. It
// fails the test, with the server's log, when the server does not come up.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	s, err := StartProcess(opts, t.TempDir())
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	s.t = t
	t.Cleanup(s.Stop)
	return s
}

// StartProcess starts a standalone redis-server outside a test (TestMain, a
// benchmark program) with its files in dir. The caller must call Stop.
func StartProcess(opts Options, dir string) (*Server, error) {
	kind, err := resolveKind(opts.Server)
	if err != nil {
		return nil, err
	}
	if _, err := exec.LookPath(kind.Binary()); err != nil {
		return nil, fmt.Errorf("%s is not on PATH; run `make deps` (apt-get install %s %s-tools)", kind.Binary(), kind.Binary(), kind)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	s := &Server{opts: opts, kind: kind, dir: dir, Certs: opts.Certs}
	if opts.TLS && s.Certs == nil {
		certs, err := GenerateCerts(s.dir)
		if err != nil {
			return nil, fmt.Errorf("generating certificates: %w", err)
		}
		s.Certs = certs
	}
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port, err := FreePort()
		if err != nil {
			return nil, err
		}
		s.port = port
		if lastErr = s.start(); lastErr == nil {
			return s, nil
		}
	}
	return nil, fmt.Errorf("%s did not start: %w", kind.Binary(), lastErr)
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (s *Server) args() []string {
	args := []string{
		"--bind", "127.0.0.1",
		"--dir", s.dir,
		"--logfile", s.logPath(),
		"--save", "",
		"--daemonize", "no",
		"--protected-mode", "no",
		"--dbfilename", "dump.rdb",
	}
	if s.opts.TLS {
		args = append(args,
			"--port", "0",
			"--tls-port", strconv.Itoa(s.port),
			"--tls-cert-file", s.Certs.ServerCert,
			"--tls-key-file", s.Certs.ServerKey,
			"--tls-ca-cert-file", s.Certs.CACert,
			"--tls-auth-clients", "no",
		)
	} else {
		args = append(args, "--port", strconv.Itoa(s.port))
	}
	if s.opts.AppendFsyncAlways {
		args = append(args, "--appendonly", "yes", "--appendfsync", "always")
	} else {
		args = append(args, "--appendonly", "no")
	}
	if s.opts.Password != "" {
		args = append(args, "--requirepass", s.opts.Password)
	}
	return append(args, s.opts.Args...)
}

func (s *Server) logPath() string { return filepath.Join(s.dir, "redis.log") }

func (s *Server) start() error {
	args := s.args()
	if s.opts.Username != "" || s.opts.Config != "" {
		conf := filepath.Join(s.dir, "redis.conf")
		content := s.opts.Config
		if content != "" && !strings.HasSuffix(content, "\n") {
			content += "\n"
		}
		if s.opts.Username != "" {
			// ACL rules cannot be given on the command line; an ACL file can.
			acl := filepath.Join(s.dir, "users.acl")
			users := fmt.Sprintf("user default off\nuser %s on >%s ~* &* +@all\n", s.opts.Username, s.opts.UserPassword)
			if err := os.WriteFile(acl, []byte(users), 0o600); err != nil {
				return err
			}
			content += "aclfile " + acl + "\n"
		}
		if _, err := os.Stat(conf); s.opts.Config == "" || errors.Is(err, os.ErrNotExist) {
			if err := os.WriteFile(conf, []byte(content), 0o600); err != nil {
				return err
			}
		}
		args = append([]string{conf}, args...)
	}
	cmd := exec.Command(s.kind.Binary(), args...)
	cmd.Dir = s.dir
	// Own process group, so a signal to the test binary's group never reaches
	// it; Pdeathsig ends it if the test binary dies without cleaning up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", s.kind.Binary(), err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()

	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			return fmt.Errorf("%s exited (%v); log:\n%s", s.kind.Binary(), p.err, s.Log())
		default:
		}
		if s.ping() == nil {
			s.mu.Lock()
			s.proc = p
			s.mu.Unlock()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = cmd.Process.Kill()
	<-p.done
	return fmt.Errorf("%s on port %d did not answer PING within 10s; log:\n%s", s.kind.Binary(), s.port, s.Log())
}

// ping sends one PING over a raw connection and reads the reply. A NOAUTH
// reply also proves the server is up.
func (s *Server) ping() error {
	c, err := net.DialTimeout("tcp", s.Addr(), 200*time.Millisecond)
	if err != nil {
		return err
	}
	defer c.Close()
	if s.opts.TLS {
		tc := tls.Client(c, s.Certs.ClientTLSConfig())
		if err := tc.Handshake(); err != nil {
			return err
		}
		c = tc
	}
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if strings.HasPrefix(line, "+PONG") || strings.Contains(line, "NOAUTH") || strings.Contains(line, "NOPERM") {
		return nil
	}
	if strings.HasPrefix(line, "-LOADING") {
		return errors.New("loading")
	}
	return fmt.Errorf("unexpected PING reply %q", line)
}

// Addr is host:port of the server.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Port is the server's port.
func (s *Server) Port() int { return s.port }

// Kind is which server runs: Redis or Valkey.
func (s *Server) Kind() Kind { return s.kind }

// Dir is the server's working directory.
func (s *Server) Dir() string { return s.dir }

// Log returns what the server logged so far.
func (s *Server) Log() string {
	b, _ := os.ReadFile(s.logPath())
	return string(b)
}

// Pid is the process id of the running server, or 0.
func (s *Server) Pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return 0
	}
	return s.proc.cmd.Process.Pid
}

func (s *Server) signal(sig syscall.Signal) {
	if pid := s.Pid(); pid != 0 {
		if err := syscall.Kill(pid, sig); err != nil {
			s.fatalf("redistest: sending %v to %s: %v", sig, s.kind.Binary(), err)
		}
	}
}

// fatalf fails the test that started the server; outside a test it panics,
// since a helper that cannot signal its own process has nothing sane to do.
func (s *Server) fatalf(format string, args ...any) {
	if s.t != nil {
		s.t.Helper()
		s.t.Fatalf(format, args...)
	}
	panic(fmt.Sprintf(format, args...))
}

// Pause stops the server process with SIGSTOP: connections stay open, nothing
// is answered.
func (s *Server) Pause() { s.signal(syscall.SIGSTOP) }

// Resume continues a paused server with SIGCONT.
func (s *Server) Resume() { s.signal(syscall.SIGCONT) }

// Kill ends the server with SIGKILL, as a crash would, and waits for it.
func (s *Server) Kill() {
	s.mu.Lock()
	p := s.proc
	s.proc = nil
	s.mu.Unlock()
	if p == nil {
		return
	}
	_ = p.cmd.Process.Kill() // SIGKILL also ends a stopped process
	<-p.done
}

// Restart starts the server again on the same port and folder, after Kill.
func (s *Server) Restart() {
	var err error
	for attempt := 0; attempt < 50; attempt++ {
		if err = s.start(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond) // the port may linger briefly
	}
	s.fatalf("redistest: restarting %s: %v", s.kind.Binary(), err)
}

// Stop ends the server; it is registered as a test cleanup and safe to call
// more than once.
func (s *Server) Stop() { s.Kill() }

// Certs are the files of a generated CA and a server certificate for
// 127.0.0.1 and localhost.
type Certs struct {
	CACert, ServerCert, ServerKey string
	caPEM                         []byte
}

// ClientTLSConfig trusts the generated CA.
func (c *Certs) ClientTLSConfig() *tls.Config {
	return &tls.Config{RootCAs: certPool(c.caPEM), ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
}

// WaitFor polls cond every 20 ms until it returns true or the timeout passes.
func WaitFor(ctx context.Context, timeout time.Duration, cond func() bool) bool {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		if cond() {
			return true
		}
		select {
		case <-ctx.Done():
			return cond()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Client returns a plain go-redis client for checking the server's side of a
// test (INFO, LRANGE, ...); it bypasses everything under test and is closed
// when the test ends.
func (s *Server) Client(t testing.TB) *redis.Client {
	t.Helper()
	opt := &redis.Options{Addr: s.Addr(), Password: s.opts.Password, MaxRetries: -1}
	if s.opts.Username != "" {
		opt.Username, opt.Password = s.opts.Username, s.opts.UserPassword
	}
	if s.opts.TLS {
		opt.TLSConfig = s.Certs.ClientTLSConfig()
	}
	c := redis.NewClient(opt)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// InfoField reads one numeric field of INFO from c, or fails the test.
func InfoField(t testing.TB, c *redis.Client, section, field string) int64 {
	t.Helper()
	raw, err := c.Info(context.Background(), section).Result()
	if err != nil {
		t.Fatalf("redistest: INFO %s: %v", section, err)
	}
	for _, line := range strings.Split(raw, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok && k == field {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				t.Fatalf("redistest: INFO field %s=%q is not a number", field, v)
			}
			return n
		}
	}
	return 0
}

// CommandCalls is how many times the server ran cmd (INFO commandstats).
func CommandCalls(t testing.TB, c *redis.Client, cmd string) int64 {
	t.Helper()
	raw, err := c.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatalf("redistest: INFO commandstats: %v", err)
	}
	prefix := "cmdstat_" + strings.ToLower(cmd) + ":calls="
	for _, line := range strings.Split(raw, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), prefix); ok {
			n, _ := strconv.ParseInt(strings.SplitN(rest, ",", 2)[0], 10, 64)
			return n
		}
	}
	return 0
}

// FillMaxClients opens raw TCP connections to the server until it refuses one
// with "max number of clients reached" (at most limit tries), so the server
// has no room left for another client. The accepted connections are closed
// when the test ends, or earlier by the caller.
func (s *Server) FillMaxClients(t testing.TB, limit int) []net.Conn {
	t.Helper()
	var conns []net.Conn
	t.Cleanup(func() {
		for _, c := range conns {
			_ = c.Close()
		}
	})
	for i := 0; i < limit; i++ {
		c, err := net.Dial("tcp", s.Addr())
		if err != nil {
			t.Fatalf("redistest: connect %s: %v", s.Addr(), err)
		}
		_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		buf := make([]byte, 64)
		if k, _ := c.Read(buf); k > 0 && strings.Contains(string(buf[:k]), "max number of clients") {
			_ = c.Close()
			return conns
		}
		_ = c.SetReadDeadline(time.Time{})
		conns = append(conns, c)
	}
	t.Fatalf("redistest: opened %d connections to %s and none was refused: maxclients not reached", limit, s.Addr())
	return nil
}
