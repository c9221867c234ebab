package main

import (
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/concordkit/concord/examples/internal/capture"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestExampleRuns(t *testing.T) {
	out := capture.Run(t, runTo)
	var rounds [][]string
	for _, line := range strings.Split(out, "\n") {
		if calls, ok := strings.CutPrefix(line, "round robin, 6 calls: "); ok {
			calls, _, _ = strings.Cut(calls, " (")
			rounds = append(rounds, strings.Fields(calls))
		}
	}
	if len(rounds) != 4 {
		t.Fatalf("%d round robin lines, want 4:\n%s", len(rounds), out)
	}
	// All three take turns; then backend-3 (crashed), and then backend-2
	// (draining) too, serve no more calls. (Round robin restarts at a
	// random backend whenever its picker is rebuilt, so the exact turns
	// are not checked.)
	for i, want := range [][]string{
		{"backend-1", "backend-2", "backend-3"},
		{"backend-1", "backend-2"},
		{"backend-1", "backend-2"},
		{"backend-1"},
	} {
		for _, id := range rounds[i] {
			if !slices.Contains(want, id) {
				t.Errorf("round %d: %s served a call, want only %v:\n%s", i+1, id, want, out)
			}
		}
		for _, id := range want {
			if !slices.Contains(rounds[i], id) {
				t.Errorf("round %d: %s served no call:\n%s", i+1, id, out)
			}
		}
	}
	// Weighted: backend-3 (weight 4) serves more than each weight-1 backend.
	m := regexp.MustCompile(`weighted random, \d+ calls: backend-1 x(\d+), backend-2 x(\d+), backend-3 x(\d+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no weighted line:\n%s", out)
	}
	n1, _ := strconv.Atoi(m[1])
	n2, _ := strconv.Atoi(m[2])
	n3, _ := strconv.Atoi(m[3])
	if n1+n2+n3 != weightedCalls || n3 <= n1 || n3 <= n2 {
		t.Errorf("weighted calls %d/%d/%d, want backend-3 the most of %d:\n%s", n1, n2, n3, weightedCalls, out)
	}
	for _, want := range []string{
		"backend-3 crashes",
		"backend-3's lease expired after",
		"discovery lists backend-1 (eu-1), backend-2 (eu-2)\n",
		"backend-2 marked draining; discovery lists backend-1 (eu-1), backend-2 (eu-2, draining)",
		"backend-2 deregistered and stopped; discovery lists backend-1 (eu-1)",
	} {
		if !strings.Contains(out+"\n", want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
