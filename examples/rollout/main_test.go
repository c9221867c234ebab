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
	checkOutput(t, capture.Run(t, runTo))
}

func checkOutput(t *testing.T, out string) {
	t.Helper()
	for _, want := range []string{
		"wave 1 opened", "wave 2 opened", "paused: operator checks the dashboards", "rollout done",
		"ran steps [0 1 1 2]: resumed at the step that was not saved",
		"8 of 8 hosts done in 3 waves; at most 2 at once",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// The example runs again on the same etcd, as against a shared cluster:
// the first run's rollout does not carry over into the second.
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
