package main

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

var metricsAt = regexp.MustCompile(`metrics at (http://[^ \n]+/metrics)`)

// scrape reads the Prometheus text at url.
func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: %d %v", url, resp.StatusCode, err)
	}
	return string(b)
}

// While lock runs CMD, --metrics-addr serves the lock's metrics: one
// holder, one acquired wait, one live session.
func TestLockMetricsAddr(t *testing.T) {
	_, ep := server(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	release := filepath.Join(t.TempDir(), "release")
	_, errOut, done := cliAsync(ctx, "lock", ep, "--ttl", "2s", "--metrics-addr", "127.0.0.1:0", "deploy", "--",
		"sh", "-c", "while [ ! -e "+release+" ]; do sleep 0.05; done")
	errOut.waitFor(t, "metrics at ")
	m := metricsAt.FindStringSubmatch(errOut.String())
	if m == nil {
		t.Fatalf("no metrics address in stderr:\n%s", errOut.String())
	}
	want := []string{
		`concord_holders{otel_scope_name="github.com/concordkit/concord",otel_scope_schema_url="",otel_scope_version="",recipe="lock"} 1`,
		`concord_wait_duration_seconds_count{otel_scope_name="github.com/concordkit/concord",otel_scope_schema_url="",otel_scope_version="",outcome="acquired",recipe="lock"} 1`,
		`concord_session_active{otel_scope_name="github.com/concordkit/concord",otel_scope_schema_url="",otel_scope_version=""} 1`,
	}
	var text string
	deadline := time.Now().Add(20 * time.Second)
	for {
		text = scrape(t, m[1])
		missing := ""
		for _, w := range want {
			if !strings.Contains(text, w) {
				missing = w
			}
		}
		if missing == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s in the scrape:\n%s\nstderr:\n%s", missing, text, errOut.String())
		}
		time.Sleep(50 * time.Millisecond) // polling with a deadline: the lock is taken once the child runs
	}
	if err := os.WriteFile(release, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if code := waitCode(t, done, errOut); code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", code, errOut.String())
	}
}
