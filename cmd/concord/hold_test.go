package main

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/lock"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// alive reports whether process pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b)[i+1:])
	return len(f) > 0 && f[0] != "Z"
}

// waitGone polls until process pid is gone, failing after limit.
func waitGone(t *testing.T, pid int, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("process %d still running %v later", pid, limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// pidIn reads "pid=N" from a command's output.
func pidIn(t *testing.T, out string) int {
	t.Helper()
	_, after, _ := strings.Cut(out, "pid=")
	pid, err := strconv.Atoi(strings.Fields(after)[0])
	if err != nil {
		t.Fatalf("no pid in %q", out)
	}
	return pid
}

// kill -9 of concord ends CMD and what CMD started (Linux): nothing runs
// on while the lock passes to the next holder.
func TestKill9StopsCommand(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("needs /proc (Linux), where concord guards CMD with a parent-death signal")
	}
	_, ep := server(t)
	// CMD is a shell whose sleep runs in the background: a grandchild.
	cmd, out := cliProcess(t, "lock", ep, "--ttl", "2s", "k9", "--", "sh", "-c", "sleep 100 & echo sh=$$ pid=$!; wait")
	out.waitFor(t, "pid=")
	sleepPid := pidIn(t, out.String())
	_, after, _ := strings.Cut(out.String(), "sh=")
	shPid, _ := strconv.Atoi(strings.Fields(after)[0])
	for _, pid := range []int{shPid, sleepPid} {
		if !alive(pid) {
			t.Fatalf("CMD's process %d not running:\n%s", pid, out.String())
		}
		t.Cleanup(func() {
			if alive(pid) { // the test failed: leave nothing running
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		})
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	waitGone(t, shPid, 5*time.Second)
	waitGone(t, sleepPid, 5*time.Second)
	_ = cmd.Wait()
	// The lock passes on once the lease expires.
	if r := cli(t, context.Background(), "lock", ep, "k9", "--", "true"); r.code != 0 {
		t.Errorf("next holder: exit %d, stderr:\n%s", r.code, r.errOut)
	}
}

// A holder paused past its TTL (SIGSTOP) finds its session lost when it
// resumes, stops CMD and says why: the lease was not renewed in time, not
// "released" (the cause was once read after the release).
func TestPausedHolderSaysWhy(t *testing.T) {
	_, ep := server(t)
	cmd, out := cliProcess(t, "lock", ep, "--ttl", "2s", "paused", "--", "sh", "-c", "echo pid=$$; exec sleep 30")
	out.waitFor(t, "pid=")
	if err := cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	// Past the TTL: the server expires the lease meanwhile.
	time.Sleep(3500 * time.Millisecond)
	if err := cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	var ee interface{ ExitCode() int }
	if !errors.As(err, &ee) || ee.ExitCode() != exitLost {
		t.Fatalf("exit %v, want %d; output:\n%s", err, exitLost, out.String())
	}
	got := out.String()
	if strings.Contains(got, "released") || !(strings.Contains(got, "not renewed within its deadline") || strings.Contains(got, "expired")) {
		t.Errorf("loss reported with the wrong cause:\n%s", got)
	}
}

// When etcd goes away, a holder stops CMD once its session counts itself
// lost (TTL minus the margin) and exits soon after: the release attempt
// that follows is short.
func TestHolderExitsSoonAfterEtcdGoes(t *testing.T) {
	embedtest.RequireEmbedded(t, "stops the server")
	srv := embedtest.Start(t, embedtest.FastTicks())
	ep := "--endpoints=" + srv.Endpoints[0]
	_, errOut, done := cliAsync(context.Background(), "lock", ep, "-v", "--ttl", "2s", "gone", "--", "sleep", "60")
	errOut.waitFor(t, "holding lock")
	_ = srv.Close()
	stopped := time.Now()
	code := waitCode(t, done, errOut)
	took := time.Since(stopped)
	if code != exitLost {
		t.Errorf("exit %d, want %d; stderr:\n%s", code, exitLost, errOut.String())
	}
	// Lost by 2s (TTL) after the last keepalive; then a 1s release and a
	// 1s session close at most (3.5 s measured). Before the fix: 5 s + 5 s
	// more (11 s measured).
	if took > 7*time.Second {
		t.Errorf("exited %v after etcd stopped, want within the TTL plus about 2s", took)
	}
	t.Logf("exited %v after etcd stopped", took)
}

// decodeEvents parses the JSON lines of --json on stderr.
func decodeEvents(t *testing.T, s string) []holdEvent {
	t.Helper()
	var evs []holdEvent
	for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
		var ev holdEvent
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("line %q: %v\nall:\n%s", line, err, s)
		}
		evs = append(evs, ev)
	}
	return evs
}

func eventNames(evs []holdEvent) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.Event)
	}
	return out
}

// lock, elect and sem take --json: their events are JSON lines on stderr.
// -v reports the wait (who holds it, how many are ahead) and the release.
func TestHoldEvents(t *testing.T) {
	srv, ep := server(t)
	ctx := context.Background()
	for _, tc := range []struct {
		kind string
		args []string
	}{
		{"lock", []string{"lock", ep, "--json", "j-lock", "--", "sh", "-c", "exit 3"}},
		{"election", []string{"elect", ep, "--json", "j-elect", "--", "sh", "-c", "exit 3"}},
		{"semaphore", []string{"sem", ep, "--json", "j-sem", "--limit", "2", "--", "sh", "-c", "exit 3"}},
	} {
		r := cli(t, ctx, tc.args...)
		if r.code != 3 {
			t.Errorf("%s --json: exit %d; stderr:\n%s", tc.kind, r.code, r.errOut)
			continue
		}
		evs := decodeEvents(t, r.errOut)
		if got := strings.Join(eventNames(evs), ","); got != "acquired,released,exit" {
			t.Errorf("%s events %s, want acquired,released,exit:\n%s", tc.kind, got, r.errOut)
			continue
		}
		if evs[0].Kind != tc.kind || evs[0].Token <= 0 || evs[0].Lease == "" || evs[2].Code == nil || *evs[2].Code != 3 {
			t.Errorf("%s events: %+v", tc.kind, evs)
		}
	}

	// A wait, with who holds it; then a loss with its reason.
	hctx, stop := context.WithCancel(ctx)
	defer stop()
	out, herr, hdone := cliAsync(hctx, "lock", ep, "--value", "first", "w", "--", "sh", "-c", "echo started; sleep 30")
	out.waitFor(t, "started")
	_, werr, wdone := cliAsync(ctx, "lock", ep, "--json", "--ttl", "2s", "w", "--", "sleep", "30")
	werr.waitFor(t, `"event":"waiting"`)
	waitWaiters(t, srv.Client, "w", 1)
	_, verr, vdone := cliAsync(ctx, "lock", ep, "-v", "w", "--", "true")
	verr.waitFor(t, `waiting for lock "w" (held by first since revision`)
	// With --json, an error is a JSON line too.
	if r := cli(t, ctx, "lock", ep, "--json", "--try", "w", "--", "true"); r.code != exitUnavailable ||
		!strings.Contains(r.errOut, `"event":"error"`) || !strings.Contains(r.errOut, `"exit":5`) {
		t.Errorf("--json --try on a held lock: exit %d, stderr:\n%s", r.code, r.errOut)
	}
	stop()
	waitCode(t, hdone, herr)
	werr.waitFor(t, `"event":"acquired"`)
	evs := decodeEvents(t, werr.String())
	if evs[0].Event != "waiting" || len(evs[0].Holders) != 1 || evs[0].Holders[0].Value != "first" || evs[0].Ahead != 1 {
		t.Errorf("waiting event %+v", evs[0])
	}
	if _, err := srv.Client.Revoke(ctx, leaseOfEvent(t, evs[1])); err != nil {
		t.Fatal(err)
	}
	if code := waitCode(t, wdone, werr); code != exitLost {
		t.Errorf("revoked: exit %d, stderr:\n%s", code, werr.String())
	}
	evs = decodeEvents(t, werr.String())
	var lost *holdEvent
	for i := range evs {
		if evs[i].Event == "lost" {
			lost = &evs[i]
		}
	}
	if lost == nil || !strings.Contains(lost.Reason, "lease expired or revoked") {
		t.Errorf("no lost event with the reason:\n%s", werr.String())
	}
	if code := waitCode(t, vdone, verr); code != 0 {
		t.Errorf("-v: exit %d, stderr:\n%s", code, verr.String())
	}
	for _, want := range []string{"2 ahead", "holding lock \"w\" (token", "released lock \"w\"", "true exited 0"} {
		if !strings.Contains(verr.String(), want) {
			t.Errorf("-v output lacks %q:\n%s", want, verr.String())
		}
	}
}

func leaseOfEvent(t *testing.T, ev holdEvent) (id clientv3.LeaseID) {
	t.Helper()
	n, err := strconv.ParseInt(ev.Lease, 16, 64)
	if err != nil || ev.Event != "acquired" {
		t.Fatalf("no lease in %+v", ev)
	}
	return clientv3.LeaseID(n)
}

// Interrupted while waiting: it says so and exits 130, as a shell
// expects of Ctrl-C; no key is left behind, and both commands revoked
// their leases (the client outlives the interrupt for that).
func TestInterruptedWhileWaiting(t *testing.T) {
	srv, ep := server(t)
	ctx := context.Background()
	hctx, stop := context.WithCancel(ctx)
	defer stop()
	out, herr, hdone := cliAsync(hctx, "lock", ep, "held", "--", "sh", "-c", "echo started; sleep 30")
	out.waitFor(t, "started")
	wctx, interrupt := context.WithCancel(ctx)
	_, werr, wdone := cliAsync(wctx, "lock", ep, "-v", "held", "--", "true")
	werr.waitFor(t, "waiting for lock")
	interrupt()
	if code := waitCode(t, wdone, werr); code != exitInterrupted {
		t.Errorf("exit %d, want %d; stderr:\n%s", code, exitInterrupted, werr.String())
	}
	if !strings.Contains(werr.String(), `interrupted while waiting for lock "held"`) || strings.Contains(werr.String(), "context canceled") {
		t.Errorf("stderr:\n%s", werr.String())
	}
	stop()
	waitCode(t, hdone, herr)
	if leases, err := srv.Client.Leases(ctx); err != nil || len(leases.Leases) != 0 {
		t.Errorf("leases left after both commands ended: %d (%v)", len(leases.Leases), err)
	}
	if r := cli(t, ctx, "lock", ep, "--try", "held", "--", "true"); r.code != 0 {
		t.Errorf("a key was left behind: --try exit %d, stderr:\n%s", r.code, r.errOut)
	}
}

// waitWaiters polls until the lock name has n waiters.
func waitWaiters(t *testing.T, c *clientv3.Client, name string, n int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		st, err := lock.Inspect(context.Background(), c, name)
		if err == nil && len(st.Waiters) == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("lock %q: waiters %+v (%v), want %d", name, st.Waiters, err, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A real Ctrl-C (SIGINT) while waiting exits 130 and SIGTERM 143, as
// shells report signals.
func TestSignalWhileWaiting(t *testing.T) {
	_, ep := server(t)
	hctx, stop := context.WithCancel(context.Background())
	defer stop()
	out, herr, hdone := cliAsync(hctx, "lock", ep, "sig", "--", "sh", "-c", "echo started; sleep 30")
	out.waitFor(t, "started")
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		cmd, wout := cliProcess(t, "lock", ep, "-v", "sig", "--", "true")
		wout.waitFor(t, "waiting for lock")
		if err := cmd.Process.Signal(sig); err != nil {
			t.Fatal(err)
		}
		err := cmd.Wait()
		var ee interface{ ExitCode() int }
		if !errors.As(err, &ee) || ee.ExitCode() != 128+int(sig) {
			t.Errorf("%v while waiting: %v, want exit %d; output:\n%s", sig, err, 128+int(sig), wout.String())
		}
		if !strings.Contains(wout.String(), `interrupted while waiting for lock "sig"`) {
			t.Errorf("%v while waiting: output:\n%s", sig, wout.String())
		}
	}
	stop()
	waitCode(t, hdone, herr)
}
