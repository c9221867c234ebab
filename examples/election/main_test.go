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
	if n := strings.Count(out, " leads (term token"); n != 3 {
		t.Errorf("%d terms, want 3:\n%s", n, out)
	}
	for _, want := range []string{"shuts down", "crashes", "late write refused", "stops scheduling"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
