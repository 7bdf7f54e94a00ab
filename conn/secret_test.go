package conn

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"testing"
)

// The password must not appear however a Config, a Secret or an error is printed.
func TestConfigNeverPrintsThePassword(t *testing.T) {
	const pw = "hunter2-very-secret"
	c, err := loadConfig(RoleWorker, env(map[string]string{
		"REDIS_PASSWORD": pw,
		"REDIS_URL":      "rediss://bob:" + pw + "@cache.internal:6390/1?dial_timeout=3s",
	}))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("cfg", "config", c, "password", c.Password)
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("cfg", "config", c, "ptr", &c)
	js, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	wrapped := struct {
		C  Config
		P  *Config
		S  Secret
		Sl []Secret
	}{c, &c, c.Password, []Secret{c.Password}}
	outputs := []string{
		c.String(), c.GoString(), buf.String(), string(js),
		fmt.Sprint(c), fmt.Sprintf("%v %+v %#v %s %q %x", c, c, c, c, c, c),
		fmt.Sprintf("%v %+v %#v %s %q %x %X %d", c.Password, c.Password, c.Password, c.Password, c.Password, c.Password, c.Password, c.Password),
		fmt.Sprintf("%v %+v %#v", wrapped, wrapped, &wrapped),
	}
	for i, out := range outputs {
		if strings.Contains(out, pw) || strings.Contains(out, fmt.Sprintf("%x", pw)) {
			t.Errorf("output %d shows the password: %s", i, out)
		}
	}
	if !strings.Contains(c.String(), "cache.internal") || !strings.Contains(c.String(), redacted) {
		t.Errorf("String should still describe the config: %s", c)
	}

	// Nor in a validation error about the URL.
	_, err = loadConfig(RoleAPI, env(map[string]string{"REDIS_URL": "redis://bob:" + pw + "@h:bad/0"}))
	if err == nil || strings.Contains(err.Error(), pw) {
		t.Errorf("URL error leaks or is missing: %v", err)
	}
	_, err = loadConfig(RoleAPI, env(map[string]string{"REDIS_URL": "redis://bob:" + pw + "@h:6379/x"}))
	if err == nil || strings.Contains(err.Error(), pw) || !strings.Contains(err.Error(), "REDIS_URL") {
		t.Errorf("URL error leaks or is missing: %v", err)
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"redis://localhost:6379/0":             "redis://localhost:6379/0",
		"redis://:pw@localhost:6379":           "redis://:[REDACTED]@localhost:6379",
		"rediss://user:pw@h:1/2?password=pw":   "rediss://user:[REDACTED]@h:1/2?password=[REDACTED]",
		"redis://user@h:1":                     "redis://user@h:1",
		"redis://user:p%40ss@h:1?dial_timeout": "redis://user:[REDACTED]@h:1?dial_timeout=",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// REDIS_URL with a password: whatever the URL looks like, errors and every
// printing of the Config hide the password, and nothing panics.
func FuzzRedisURL(f *testing.F) {
	for _, seed := range []string{
		"redis://u:%s@h:6379/0", "rediss://:%s@[::1]:6380/15?dial_timeout=3s", "redis://%s@h",
		"redis://u:%s@h:bad/0", "redis://u:%s@h:6379/x", "http://u:%s@h", "redis://u:%s@h:6379/0?password=%s",
		"%s", "redis://u:%s@h:6379/0?protocol=9", "redis://u:%s@/0",
	} {
		f.Add(seed, "s3cr3t-pw")
	}
	f.Fuzz(func(t *testing.T, format, password string) {
		if len(password) < 6 || strings.ContainsAny(password, "%/@:?#[]") || strings.Count(format, "%s") == 0 {
			return // short or URL-special passwords cannot be told apart from the rest
		}
		raw := strings.ReplaceAll(format, "%s", password)
		if strings.Count(raw, password) != 1 {
			return // also in the host or path: a substring search cannot tell which is shown
		}
		if u, err := url.Parse(strings.TrimSpace(raw)); err == nil && u.Scheme != "" && u.Host != "" {
			if pw, ok := u.User.Password(); !ok || pw != password {
				return // in the host, path or user name: not the password of this URL
			}
		}
		c, err := loadConfig(RoleWorker, env(map[string]string{"REDIS_URL": raw}))
		if err != nil {
			if strings.Contains(err.Error(), password) {
				t.Fatalf("error shows the password: %v", err)
			}
			return
		}
		for _, out := range []string{c.String(), fmt.Sprintf("%+v %#v", c, c), RedactURL(raw)} {
			if strings.Contains(out, password) {
				t.Fatalf("printing shows the password: %s", out)
			}
		}
	})
}
