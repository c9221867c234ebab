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
	if n := strings.Count(out, " done"); n != hosts {
		t.Errorf("%d hosts done, want %d:\n%s", n, hosts, out)
	}
	for _, want := range []string{"limit raised to 3", "all 8 hosts upgraded", "at most 3 at once", "0 permits left held"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
