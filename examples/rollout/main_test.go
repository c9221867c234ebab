package main

import (
	"strings"
	"testing"

	"github.com/concordkit/concord/examples/internal/capture"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestExampleRuns(t *testing.T) {
	out := capture.Run(t, runTo)
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
