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
	if n := strings.Count(out, "holds the lock"); n != 9 {
		t.Errorf("%d turns, want 9:\n%s", n, out)
	}
	for _, want := range []string{"worker-1 lost its hold", "worker-2 took over", "late write refused"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
