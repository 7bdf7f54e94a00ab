package conn_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redisconn/redisconn/conn"
	"github.com/redisconn/redisconn/internal/redistest"
)

const secret = "correct-horse-battery-staple"

func TestACLUserAndPassword(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{Username: "agent", UserPassword: secret})
	ctx := ctxTimeout(t, 10*time.Second)

	cfg := config(conn.RoleWorker, srv)
	cfg.Username, cfg.Password = "agent", secret
	w := newWorker(t, cfg)
	if n, err := w.BatchRPush(ctx, "acl:list", items(60)...); err != nil || n != 60 {
		t.Fatalf("as the ACL user: %d, %v", n, err)
	}
	if who := w.Do(ctx, "acl", "whoami").Val(); who != "agent" {
		t.Fatalf("ACL WHOAMI = %v", who)
	}

	// The same through REDIS_URL.
	t.Setenv("REDIS_URL", fmt.Sprintf("redis://agent:%s@%s/0", secret, srv.Addr()))
	envCfg, err := conn.LoadConfig(conn.RoleAPI)
	if err != nil {
		t.Fatal(err)
	}
	a := newAPI(t, envCfg)
	if err := a.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
}

func TestWrongPasswordFailsClearlyWithoutTheSecret(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{Username: "agent", UserPassword: secret})
	for _, tc := range []struct{ user, password string }{
		{"agent", secret + "-wrong"},
		{"nobody", secret},
		{"", secret}, // the default user is off
	} {
		cfg := config(conn.RoleWorker, srv)
		cfg.Username, cfg.Password = tc.user, conn.Secret(tc.password)
		_, err := conn.NewWorker(context.Background(), cfg)
		if err == nil {
			t.Fatalf("user %q: connected with a wrong password", tc.user)
		}
		msg := err.Error()
		if strings.Contains(msg, secret) {
			t.Fatalf("the error shows the password: %s", msg)
		}
		if !strings.Contains(msg, srv.Addr()) || !strings.Contains(msg, "authentication failed") {
			t.Errorf("the error should name the address and say authentication failed: %s", msg)
		}
	}
}

func TestTLSVerifiesTheServerCertificate(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{TLS: true, Password: secret})
	ctx := ctxTimeout(t, 10*time.Second)

	t.Run("trusted CA file", func(t *testing.T) {
		cfg := config(conn.RoleWorker, srv)
		cfg.TLS, cfg.TLSCAFile, cfg.Password = true, srv.Certs.CACert, secret
		w := newWorker(t, cfg)
		if n, err := w.BatchRPush(ctx, "tls:list", items(75)...); err != nil || n != 75 {
			t.Fatalf("%d, %v", n, err)
		}
	})
	t.Run("rediss URL from the environment", func(t *testing.T) {
		t.Setenv("REDIS_URL", fmt.Sprintf("rediss://:%s@%s/0", secret, srv.Addr()))
		t.Setenv("REDIS_SSL_CA_FILE", srv.Certs.CACert)
		cfg, err := conn.LoadConfig(conn.RoleAPI)
		if err != nil {
			t.Fatal(err)
		}
		if err := newAPI(t, cfg).Ping(ctx).Err(); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("unknown CA is refused", func(t *testing.T) {
		other, err := redistest.GenerateCerts(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		cfg := config(conn.RoleWorker, srv)
		cfg.TLS, cfg.TLSCAFile, cfg.Password = true, other.CACert, secret
		cfg.ConnectTimeout = 2 * time.Second
		_, err = conn.NewWorker(ctx, cfg)
		if err == nil {
			t.Fatal("connected to a server whose certificate no trusted CA signed")
		}
		if !strings.Contains(err.Error(), "x509") || !strings.Contains(err.Error(), "REDIS_SSL_CA_FILE") || strings.Contains(err.Error(), secret) {
			t.Errorf("error: %v", err)
		}
	})
	t.Run("system roots do not trust a private CA", func(t *testing.T) {
		cfg := config(conn.RoleAPI, srv)
		cfg.TLS, cfg.Password = true, secret
		cfg.ConnectTimeout = 2 * time.Second
		if _, err := conn.NewAPI(ctx, cfg); err == nil || !strings.Contains(err.Error(), "x509") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("skipping verification is an explicit opt-in", func(t *testing.T) {
		cfg := config(conn.RoleAPI, srv)
		cfg.TLS, cfg.TLSInsecureSkipVerify, cfg.Password = true, true, secret
		if err := newAPI(t, cfg).Ping(ctx).Err(); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("plain connection to a TLS port", func(t *testing.T) {
		cfg := config(conn.RoleAPI, srv)
		cfg.Password, cfg.ConnectTimeout, cfg.SocketTimeout = secret, time.Second, time.Second
		if _, err := conn.NewAPI(ctx, cfg); err == nil {
			t.Fatal("a plain connection to a TLS port succeeded")
		}
	})
	t.Run("CA file that is not PEM", func(t *testing.T) {
		bad := filepath.Join(t.TempDir(), "ca.pem")
		if err := os.WriteFile(bad, []byte("not a certificate"), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg := config(conn.RoleAPI, srv)
		cfg.TLS, cfg.TLSCAFile = true, bad
		_, err := conn.NewAPI(ctx, cfg)
		if err == nil || !strings.Contains(err.Error(), "Config.TLSCAFile") || !strings.Contains(err.Error(), "PEM") {
			t.Fatalf("got %v", err)
		}
	})
}
