package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/concordkit/concord/rollout"
)

// concord rollout shows a rollout and an operator pauses, resumes and
// aborts it; the state lands in etcd (read back with the package).
func TestRolloutCommands(t *testing.T) {
	srv, ep := server(t)
	ctx := context.Background()
	plan := rollout.Plan{Steps: []string{"drain", "upgrade"}, MaxInFlight: 2, WaveSize: 2, FailureBudget: 1}
	for _, id := range []string{"web-1", "web-2", "web-3"} {
		plan.Targets = append(plan.Targets, rollout.Target{ID: id})
	}
	if err := rollout.Create(ctx, srv.Client, "fleet/up", plan); err != nil {
		t.Fatal(err)
	}
	r := cli(t, ctx, "rollout", "status", ep, "--targets", "fleet/up")
	for _, want := range []string{"rollout fleet/up: running, wave 1 of 2; 0 done", "wave 2: 0 done, 0 in flight, 0 failed, 1 waiting", "web-3"} {
		if r.code != 0 || !strings.Contains(r.out, want) {
			t.Fatalf("status: exit %d, want %q in:\n%s%s", r.code, want, r.out, r.errOut)
		}
	}
	if r := cli(t, ctx, "rollout", "pause", ep, "--reason", "dashboards red", "fleet/up"); r.code != 0 || !strings.Contains(r.out, "paused") || !strings.Contains(r.out, "dashboards red") {
		t.Fatalf("pause: exit %d:\n%s%s", r.code, r.out, r.errOut)
	}
	if st, err := rollout.Inspect(ctx, srv.Client, "fleet/up"); err != nil || st.State != rollout.Paused || st.Reason != "dashboards red" {
		t.Fatalf("after pause: %+v %v", st, err)
	}
	if r := cli(t, ctx, "rollout", "resume", ep, "fleet/up"); r.code != 0 || !strings.Contains(r.out, "running") {
		t.Fatalf("resume: exit %d:\n%s%s", r.code, r.out, r.errOut)
	}
	r = cli(t, ctx, "rollout", "abort", ep, "--json", "fleet/up")
	var st rollout.Status
	if r.code != 0 || json.Unmarshal([]byte(r.out), &st) != nil || st.State != rollout.Aborted {
		t.Fatalf("abort --json: exit %d, state %q:\n%s%s", r.code, st.State, r.out, r.errOut)
	}
	if r := cli(t, ctx, "rollout", "resume", ep, "fleet/up"); r.code != exitFailed {
		t.Fatalf("resume after abort: exit %d, want %d:\n%s", r.code, exitFailed, r.errOut)
	}
	if r := cli(t, ctx, "rollout", "status", ep, "fleet/none"); r.code != exitFailed || !strings.Contains(r.errOut, `no rollout "fleet/none"`) {
		t.Fatalf("unknown rollout: exit %d:\n%s", r.code, r.errOut)
	}
	if r := cli(t, ctx, "rollout", "status", ep, "bad//name"); r.code != exitUsage {
		t.Fatalf("bad name: exit %d:\n%s", r.code, r.errOut)
	}
}
