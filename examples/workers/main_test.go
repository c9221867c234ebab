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
	if n := strings.Count(out, " finished "); n != tasks {
		t.Errorf("%d tasks finished, want %d:\n%s", n, tasks, out)
	}
	for _, want := range []string{"worker-1 crashed", "resumes demo/shard-", "after step 1", "all 4 tasks done"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
