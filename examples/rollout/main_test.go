package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/embedtest/leaktest"
	"github.com/concordkit/concord/examples/internal/capture"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(leaktest.Settled(m)) }

func TestExampleRuns(t *testing.T) {
	out := capture.Run(t, runTo)
	checkOutput(t, out)
}

func checkOutput(t *testing.T, out string) {
	t.Helper()
	if n := strings.Count(out, " done"); n != hosts {
		t.Errorf("%d hosts done, want %d:\n%s", n, hosts, out)
	}
	for _, want := range []string{"limit raised to 3", "all 8 hosts upgraded", "at most 3 at once", "0 permits left held"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// The example runs again on the same etcd, as against a shared cluster:
// the first run's stored limit (3) does not carry over into the second.
func TestExampleReruns(t *testing.T) {
	embedtest.RequireEmbedded(t, "sets ETCD_ENDPOINTS for the example")
	srv := embedtest.Start(t)
	t.Setenv(embedtest.EndpointsEnv, strings.Join(srv.Endpoints, ","))
	for run := 1; run <= 2; run++ {
		var mu sync.Mutex
		var lines []string
		err := runTo(context.Background(), func(f string, a ...any) {
			mu.Lock()
			defer mu.Unlock()
			lines = append(lines, fmt.Sprintf(f, a...))
		})
		out := strings.Join(lines, "\n")
		if err != nil {
			t.Fatalf("run %d: %v\n%s", run, err, out)
		}
		checkOutput(t, out)
	}
}
