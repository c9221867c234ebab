package main

import (
	"context"
	"strings"
	"testing"
)

// The demo command without faults, through the CLI.
func TestDemoCommandNoFaults(t *testing.T) {
	t.Parallel()
	r := cli(t, context.Background(), "demo", "--hosts", "6", "--workers", "3", "-k", "2", "--steps", "2",
		"--canaries", "2", "--wave-size", "3", "--step-time", "10ms", "--no-faults", "--quiet")
	if r.code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.out, r.errOut)
	}
	if !strings.Contains(r.out, "6/6 hosts rolled out") || !strings.Contains(r.out, "All invariants held.") {
		t.Errorf("summary missing:\n%s", r.out)
	}
	if strings.Contains(r.out, "crashed") || strings.Contains(r.out, "survived the faults") {
		t.Errorf("faults with --no-faults:\n%s", r.out)
	}
	for _, want := range []string{"✓ discovery converged", "3/3 registered; lists worker-1, worker-2, worker-3, the live workers",
		"✓ status topic in order, no gap", "2 of 2 later waves opened, each once"} {
		if !strings.Contains(r.out, want) {
			t.Errorf("summary lacks %q:\n%s", want, r.out)
		}
	}
}

func TestDemoBadFlags(t *testing.T) {
	for _, args := range [][]string{{"demo", "-k", "0"}, {"demo", "--hosts", "x"}, {"demo", "extra"},
		{"demo", "--hosts", "3", "--canaries", "4"}, {"demo", "--wave-size", "-1"}} {
		if r := cli(t, context.Background(), args...); r.code != exitUsage {
			t.Errorf("%v: exit %d, want %d; stderr %s", args, r.code, exitUsage, r.errOut)
		}
	}
}
