package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/concordkit/concord/examples/internal/capture"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestExampleRuns(t *testing.T) {
	out := capture.Run(t, runTo)
	for _, want := range []string{
		// Config: the snapshot at start, then each change as it lands.
		"app starts with config at revision ",
		": log-level=info max-conns=100 new-ui=off",
		": log-level info -> debug, max-conns 100 -> 200; config now log-level=debug max-conns=200 new-ui=off",
		": new-ui removed (was off); config now log-level=debug max-conns=200",
		// Fan-out: audit misses nothing while away, and gets nothing twice.
		"billing: order-4 (seq 4), order-5 (seq 5), order-6 (seq 6)",
		"audit resumes after seq 3: order-4 (seq 4), order-5 (seq 5), order-6 (seq 6)",
		"audit: order-7 (seq 7)",
		"audit handled order-1..order-7 once each, seq 1..7 with no gap",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "app applies revision"); n != 2 {
		t.Errorf("app applied %d updates, want 2 (one per operator transaction):\n%s", n, out)
	}
	// Each subscriber received each order exactly once.
	got := map[string]map[string]int{"billing": {}, "audit": {}}
	for _, line := range strings.Split(out, "\n") {
		who, evs, ok := strings.Cut(line, ": order-")
		if !ok {
			continue
		}
		who, _, _ = strings.Cut(who, " ")
		for _, ev := range strings.Split("order-"+evs, ", ") {
			got[who][ev]++
		}
	}
	for who, evs := range got {
		for i := 1; i <= 7; i++ {
			ev := fmt.Sprintf("order-%d (seq %d)", i, i)
			if evs[ev] != 1 {
				t.Errorf("%s received %s %d times, want once:\n%s", who, ev, evs[ev], out)
			}
		}
		if len(evs) != 7 {
			t.Errorf("%s received %d distinct events, want 7: %v", who, len(evs), evs)
		}
	}
}
