package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/concordkit/concord/checkpoint"
	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/election"
	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/lock"
	"github.com/concordkit/concord/semaphore"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// server starts an embedded etcd and returns the --endpoints flag for it.
func server(t *testing.T) (*embedtest.Server, string) {
	t.Helper()
	// The CLI dials the endpoints itself, outside the test's key prefix on
	// an external cluster (and TestAuth turns on auth cluster-wide).
	embedtest.RequireEmbedded(t, "the CLI's own connection")
	srv := embedtest.Start(t, embedtest.FastTicks())
	return srv, "--endpoints=" + strings.Join(srv.Endpoints, ",")
}

func TestHelpAndUsage(t *testing.T) {
	ctx := context.Background()
	r := cli(t, ctx, "help")
	if r.code != 0 || !strings.Contains(r.out, "Exit status") || !strings.Contains(r.out, "lock") {
		t.Errorf("help: exit %d\n%s", r.code, r.out)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "Usage"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"lock", "--endpoints=http://127.0.0.1:1", "name"}, "missing the command to run"},
		{[]string{"lock", "a//b", "--", "true"}, "invalid name"},
		{[]string{"lock", "--bogus", "x", "--", "true"}, "unknown flag: --bogus"},
		{[]string{"sem", "x", "--", "true"}, "--limit K"},
		{[]string{"lock", "x", "make", "release"}, "put the command to run after --, as in 'concord lock NAME -- make release'"},
		{[]string{"queue"}, "missing queue subcommand"},
		{[]string{"queue", "pop", "q"}, "unknown queue subcommand"},
		{[]string{"queue", "push", ".hidden", "x"}, "invalid name"},
		{[]string{"watch"}, "missing PREFIX"},
	} {
		r := cli(t, ctx, tc.args...)
		if r.code != exitUsage || !strings.Contains(r.errOut, tc.want) {
			t.Errorf("%q: exit %d, want %d with %q; stderr:\n%s", tc.args, r.code, exitUsage, tc.want, r.errOut)
		}
	}
}

func TestNoEtcd(t *testing.T) {
	t.Setenv("ETCD_ENDPOINTS", "")
	ctx := context.Background()
	r := cli(t, ctx, "status")
	if r.code != exitUnreachable || !strings.Contains(r.errOut, "--endpoints") || !strings.Contains(r.errOut, "ETCD_ENDPOINTS") {
		t.Errorf("no endpoints: exit %d, stderr:\n%s", r.code, r.errOut)
	}
	start := time.Now()
	r = cli(t, ctx, "queue", "len", "q", "--endpoints", "http://127.0.0.1:1,http://127.0.0.1:2", "--dial-timeout", "300ms")
	if r.code != exitUnreachable || !strings.Contains(r.errOut, "http://127.0.0.1:1, http://127.0.0.1:2: connection refused") {
		t.Errorf("unreachable: exit %d, stderr:\n%s", r.code, r.errOut)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("gave up after %v, want about the dial timeout", d)
	}
	// Connection flags may come before the command, as with etcdctl.
	srv0, ep0 := server(t)
	if r := cli(t, ctx, ep0, "--dial-timeout", "2s", "queue", "push", "q", "x"); r.code != 0 {
		t.Errorf("flags before the command: exit %d, stderr:\n%s", r.code, r.errOut)
	}
	if n, err := srv0.Client.Get(ctx, "q/", clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil || n.Count == 0 {
		t.Errorf("push with flags first stored nothing: %v", err)
	}
	// ETCD_ENDPOINTS is used when --endpoints is absent.
	srv, _ := server(t)
	t.Setenv("ETCD_ENDPOINTS", srv.Endpoints[0])
	if r := cli(t, ctx, "status"); r.code != 0 {
		t.Errorf("status with ETCD_ENDPOINTS: exit %d, stderr:\n%s", r.code, r.errOut)
	}
}

func TestLockRunsCommand(t *testing.T) {
	srv, ep := server(t)
	ctx := context.Background()
	r := cli(t, ctx, "lock", ep, "--ttl", "2s", "deploy", "--", "sh", "-c", "echo token=$CONCORD_TOKEN; exit 7")
	if r.code != 7 {
		t.Fatalf("exit %d, want CMD's 7; stderr:\n%s", r.code, r.errOut)
	}
	tok, err := strconv.ParseInt(strings.TrimSpace(strings.TrimPrefix(r.out, "token=")), 10, 64)
	if err != nil || tok <= 0 {
		t.Errorf("CMD saw no token: %q", r.out)
	}
	// Released afterwards.
	st, err := lock.Inspect(ctx, srv.Client, "deploy")
	if err != nil || len(st.Holders)+len(st.Waiters) != 0 {
		t.Errorf("lock left behind: %+v %v", st, err)
	}
	if r := cli(t, ctx, "lock", ep, "deploy", "--", "/nonexistent/cmd"); r.code != exitNotFound {
		t.Errorf("missing CMD: exit %d, stderr:\n%s", r.code, r.errOut)
	}
}

// A second holder waits, or with --try gives up with status 5; an
// interrupted holder forwards SIGTERM to CMD and passes its status on.
func TestLockExcludes(t *testing.T) {
	_, ep := server(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out, errOut, done := cliAsync(ctx, "lock", ep, "--ttl", "2s", "--value", "first", "x", "--", "sh", "-c", "echo started; sleep 30")
	out.waitFor(t, "started")
	r := cli(t, context.Background(), "lock", ep, "--try", "x", "--", "true")
	if r.code != exitUnavailable || !strings.Contains(r.errOut, "first") {
		t.Errorf("--try on a held lock: exit %d, stderr:\n%s", r.code, r.errOut)
	}
	r = cli(t, context.Background(), "lock", ep, "--timeout", "200ms", "x", "--", "true")
	if r.code != exitUnavailable || !strings.Contains(r.errOut, "within 200ms") {
		t.Errorf("--timeout on a held lock: exit %d, stderr:\n%s", r.code, r.errOut)
	}
	cancel()
	if code := waitCode(t, done, errOut); code != 128+int(syscall.SIGTERM) {
		t.Errorf("interrupted: exit %d, want %d; stderr:\n%s", code, 128+int(syscall.SIGTERM), errOut.String())
	}
	if r := cli(t, context.Background(), "lock", ep, "--try", "x", "--", "true"); r.code != 0 {
		t.Errorf("lock not released after interrupt: exit %d, stderr:\n%s", r.code, r.errOut)
	}
}

// CMD runs only while the resource is held: when the lock, leadership or
// permit is lost (lease revoked, key deleted) CMD and everything it started
// are stopped and concord exits 4.
func TestLostResourceStopsCommand(t *testing.T) {
	srv, ep := server(t)
	holderOf := func(kind, name string) (key string, lease clientv3.LeaseID) {
		ctx := context.Background()
		switch kind {
		case "lock":
			st, err := lock.Inspect(ctx, srv.Client, name)
			if err != nil || len(st.Holders) != 1 {
				t.Fatalf("holders %+v %v", st, err)
			}
			return st.Holders[0].Key, st.Holders[0].Lease
		case "elect":
			l, err := election.CurrentLeader(ctx, srv.Client, name)
			if err != nil {
				t.Fatal(err)
			}
			return l.Key, l.Lease
		default:
			st, err := semaphore.Inspect(ctx, srv.Client, name)
			if err != nil || len(st.Holders) != 1 {
				t.Fatalf("holders %+v %v", st, err)
			}
			return st.Holders[0].Key, st.Holders[0].Lease
		}
	}
	for _, tc := range []struct{ kind, fault string }{
		{"lock", "revoke"}, {"lock", "delete"}, {"elect", "revoke"}, {"sem", "delete"},
	} {
		t.Run(tc.kind+"-"+tc.fault, func(t *testing.T) {
			name := "lost-" + tc.kind + "-" + tc.fault
			args := []string{tc.kind, ep, "--ttl", "2s", "--kill-after", "5s", name}
			if tc.kind == "sem" {
				args = append(args, "--limit", "1")
			}
			args = append(args, "--", "sh", "-c", "echo pgid=$$; sleep 30")
			out, errOut, done := cliAsync(context.Background(), args...)
			out.waitForOr(t, "pgid=", errOut)
			shPid, _ := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(out.String(), "pgid=")))
			pgid := pgidOf(t, shPid)
			key, lease := holderOf(tc.kind, name)
			var err error
			if tc.fault == "revoke" {
				_, err = srv.Client.Revoke(context.Background(), lease)
			} else {
				_, err = srv.Client.Delete(context.Background(), key)
			}
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			if code := waitCode(t, done, errOut); code != exitLost {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, exitLost, errOut.String())
			}
			if d := time.Since(start); d > 4*time.Second {
				t.Errorf("CMD stopped %v after the loss", d)
			}
			// It says why, as it was when lost: not "released", the state
			// after concord's own release.
			cause := map[string]string{"revoke": "lease expired or revoked", "delete": "key deleted"}[tc.fault]
			if !strings.Contains(errOut.String(), "lost") || !strings.Contains(errOut.String(), cause) ||
				strings.Contains(errOut.String(), "released") {
				t.Errorf("stderr does not say it was lost with %q:\n%s", cause, errOut.String())
			}
			// The whole process group is gone: sh and its sleep.
			deadline := time.Now().Add(5 * time.Second)
			for live := liveInGroup(pgid); len(live) > 0; live = liveInGroup(pgid) {
				if time.Now().After(deadline) {
					t.Errorf("process group %d still has %v", pgid, live)
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

func TestElectAndSem(t *testing.T) {
	srv, ep := server(t)
	ctx := context.Background()
	if r := cli(t, ctx, "elect", ep, "--value", "me", "leader", "--", "sh", "-c", "test -n \"$CONCORD_TOKEN\""); r.code != 0 {
		t.Errorf("elect: exit %d, stderr:\n%s", r.code, r.errOut)
	}
	if _, err := election.CurrentLeader(ctx, srv.Client, "leader"); !errors.Is(err, election.ErrNoLeader) {
		t.Errorf("leadership not resigned: %v", err)
	}

	hctx, cancel := context.WithCancel(ctx)
	defer cancel()
	out, errOut, done := cliAsync(hctx, "sem", ep, "slots", "--limit", "1", "--value", "holder-1", "--", "sh", "-c", "echo started; sleep 30")
	out.waitFor(t, "started")
	if r := cli(t, ctx, "sem", ep, "--try", "slots", "--limit", "1", "--", "true"); r.code != exitUnavailable {
		t.Errorf("sem --try when full: exit %d, stderr:\n%s", r.code, r.errOut)
	}
	if r := cli(t, ctx, "sem", ep, "slots", "--limit", "3", "--", "true"); r.code != exitUsage || !strings.Contains(r.errOut, "limit 1 stored") {
		t.Errorf("sem with another limit: exit %d, stderr:\n%s", r.code, r.errOut)
	}
	r := cli(t, ctx, "status", ep, "slots")
	if r.code != 0 || !strings.Contains(r.out, "1/1 held: holder-1") {
		t.Errorf("status during sem: exit %d\n%s%s", r.code, r.out, r.errOut)
	}
	cancel()
	waitCode(t, done, errOut)
	if r := cli(t, ctx, "sem", ep, "--follow-limit", "slots", "--", "true"); r.code != 0 {
		t.Errorf("sem --follow-limit: exit %d, stderr:\n%s", r.code, r.errOut)
	}
}

func TestQueueCommands(t *testing.T) {
	srv, ep := server(t)
	ctx := context.Background()
	r := cli(t, ctx, "queue", "push", ep, "jobs", "alpha", "beta", "gamma", "delta")
	ids := strings.Fields(r.out)
	if r.code != 0 || len(ids) != 4 {
		t.Fatalf("push: exit %d, out %q, stderr:\n%s", r.code, r.out, r.errOut)
	}
	if r := cli(t, ctx, "queue", "len", ep, "jobs"); strings.TrimSpace(r.out) != "4" {
		t.Errorf("len: %q %s", r.out, r.errOut)
	}

	// claim without CMD keeps the claim for ack.
	r = cli(t, ctx, "queue", "claim", ep, "--ttl", "5s", "--json", "jobs")
	var c claimJSON
	if err := json.Unmarshal([]byte(r.out), &c); err != nil || c.Payload != "alpha" || c.ID != ids[0] {
		t.Fatalf("claim: exit %d, %q (%v), stderr:\n%s", r.code, r.out, err, r.errOut)
	}
	if r := cli(t, ctx, "queue", "list", ep, "jobs"); !strings.Contains(r.out, "1 claimed") || !strings.Contains(r.out, "alpha") {
		t.Errorf("list:\n%s", r.out)
	}
	if r := cli(t, ctx, "queue", "ack", ep, "jobs", c.ID, "--token", fmt.Sprint(c.Token+1)); r.code != exitFailed {
		t.Errorf("ack with a wrong token: exit %d, stderr:\n%s", r.code, r.errOut)
	}
	if r := cli(t, ctx, "queue", "ack", ep, "jobs", c.ID, "--token", fmt.Sprint(c.Token)); r.code != 0 || !strings.Contains(r.out, "acked") {
		t.Errorf("ack: exit %d, %s%s", r.code, r.out, r.errOut)
	}
	if r := cli(t, ctx, "queue", "ack", ep, "jobs", c.ID); r.code != exitFailed || !strings.Contains(r.errOut, "not claimed") {
		t.Errorf("second ack: exit %d, stderr:\n%s", r.code, r.errOut)
	}
	if r := cli(t, ctx, "queue", "len", ep, "jobs"); strings.TrimSpace(r.out) != "3" {
		t.Errorf("len after the ack: %q %s (the acked item is left)", r.out, r.errOut)
	}

	// claim with CMD: the payload on stdin, ack on success.
	r = cli(t, ctx, "queue", "claim", ep, "jobs", "--", "sh", "-c", "cat; echo \" $CONCORD_ITEM_ID\"")
	if r.code != 0 || r.out != "beta "+ids[1]+"\n" {
		t.Errorf("claim -- CMD: exit %d, out %q, stderr:\n%s", r.code, r.out, r.errOut)
	}
	// A failing CMD returns the item to the queue and passes its status on.
	r = cli(t, ctx, "queue", "claim", ep, "jobs", "--", "sh", "-c", "exit 9")
	if r.code != 9 || !strings.Contains(r.errOut, "returned to the queue") {
		t.Errorf("failing CMD: exit %d, stderr:\n%s", r.code, r.errOut)
	}
	r = cli(t, ctx, "queue", "list", ep, "--json", "jobs")
	var list struct {
		Items []itemJSON `json:"items"`
	}
	if err := json.Unmarshal([]byte(r.out), &list); err != nil || len(list.Items) != 2 || list.Items[0].Payload != "gamma" || list.Items[0].Attempts != 1 {
		t.Errorf("list --json: %v\n%s", err, r.out)
	}
	for range 2 {
		if r := cli(t, ctx, "queue", "claim", ep, "jobs", "--", "true"); r.code != 0 {
			t.Errorf("claim: exit %d, stderr:\n%s", r.code, r.errOut)
		}
	}
	if r := cli(t, ctx, "queue", "claim", ep, "--no-wait", "jobs"); r.code != exitUnavailable {
		t.Errorf("claim --no-wait on an empty queue: exit %d, stderr:\n%s", r.code, r.errOut)
	}
	if r := cli(t, ctx, "queue", "len", ep, "--json", "jobs"); !strings.Contains(r.out, `"len": 0`) {
		t.Errorf("len --json: %s", r.out)
	}
	_ = srv
}

func TestWatch(t *testing.T) {
	srv, ep := server(t)
	ctx := context.Background()
	if _, err := srv.Client.Put(ctx, "cfg/a", "1"); err != nil {
		t.Fatal(err)
	}
	out, errOut, done := cliAsync(ctx, "watch", ep, "-n", "2", "cfg/")
	out.waitFor(t, "watching for changes")
	if _, err := srv.Client.Put(ctx, "cfg/b", "two"); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Client.Delete(ctx, "cfg/a"); err != nil {
		t.Fatal(err)
	}
	if code := waitCode(t, done, errOut); code != 0 {
		t.Fatalf("exit %d, stderr:\n%s", code, errOut.String())
	}
	want := "cfg/a = 1\n# 1 keys at revision"
	if got := out.String(); !strings.HasPrefix(got, want) || !strings.Contains(got, "PUT cfg/b = two\nDELETE cfg/a\n") {
		t.Errorf("output:\n%s", got)
	}

	// --json: one object per line; interrupting ends it with status 0.
	wctx, cancel := context.WithCancel(ctx)
	out, errOut, done = cliAsync(wctx, "watch", ep, "--json", "cfg/")
	out.waitFor(t, `"type":"snapshot"`)
	if _, err := srv.Client.Put(ctx, "cfg/c", "3"); err != nil {
		t.Fatal(err)
	}
	out.waitFor(t, `"key":"cfg/c"`)
	cancel()
	if code := waitCode(t, done, errOut); code != 0 {
		t.Errorf("interrupted watch: exit %d, stderr:\n%s", code, errOut.String())
	}
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var w watchJSON
		if err := json.Unmarshal([]byte(line), &w); err != nil {
			t.Errorf("line %q: %v", line, err)
		}
	}
}

func TestStatus(t *testing.T) {
	srv, ep := server(t)
	ctx := context.Background()
	s, err := concurrency.NewSession(ctx, srv.Client, concurrency.WithTTL(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(ctx)
	m, _ := lock.NewMutex(s, "app/lock", lock.WithValue("alice"))
	if err := m.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	e, _ := election.New(s, "app/leader")
	l, err := e.Campaign(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	sem, _ := semaphore.New(s, "app/slots", 2, semaphore.WithValue("carol"))
	defer sem.Close(context.Background())
	if _, err := sem.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	if r := cli(t, ctx, "queue", "push", ep, "app/jobs", "x", "y"); r.code != 0 {
		t.Fatal(r.errOut)
	}
	sv, _, err := checkpoint.Open(ctx, srv.Client, "app/task", l.Guard())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sv.Save(ctx, []byte("step 3")); err != nil {
		t.Fatal(err)
	}

	r := cli(t, ctx, "status", ep, "app/")
	for _, want := range []string{"LOCKS", "app/lock", "held by alice", "ELECTIONS", "led by bob", "SEMAPHORES", "1/2 held: carol",
		"QUEUES", "2 ready", "CHECKPOINTS", "app/task", "step 3"} {
		if !strings.Contains(r.out, want) {
			t.Errorf("status lacks %q:\n%s%s", want, r.out, r.errOut)
		}
	}
	r = cli(t, ctx, "status", ep, "--json", "app/")
	var st statusJSON
	if err := json.Unmarshal([]byte(r.out), &st); err != nil {
		t.Fatalf("%v:\n%s", err, r.out)
	}
	if len(st.Locks) != 1 || st.Locks[0].Holders[0].Value != "alice" || len(st.Elections) != 1 || st.Elections[0].Leader.Value != "bob" ||
		len(st.Semaphores) != 1 || st.Semaphores[0].Limit != 2 || len(st.Queues) != 1 || st.Queues[0].Ready != 2 || len(st.Checkpoints) != 1 {
		t.Errorf("status --json: %+v", st)
	}
	if r := cli(t, ctx, "status", ep, "nothing/"); r.code != 0 || !strings.Contains(r.out, "no locks") {
		t.Errorf("empty status: %s", r.out)
	}
}

// concord dev serves an etcd the other commands can use, until interrupted.
func TestDev(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out, errOut, done := cliAsync(ctx, "dev", "--data-dir", t.TempDir())
	out.waitFor(t, "ETCD_ENDPOINTS=")
	_, after, _ := strings.Cut(out.String(), "ETCD_ENDPOINTS=")
	ep, _, _ := strings.Cut(after, "\n")
	if !strings.HasPrefix(ep, "http://127.0.0.1:") {
		t.Fatalf("endpoint %q", ep)
	}
	if r := cli(t, ctx, "queue", "push", "--endpoints", ep, "q", "x"); r.code != 0 {
		t.Errorf("push to dev: exit %d, stderr:\n%s", r.code, r.errOut)
	}
	cancel()
	if code := waitCode(t, done, errOut); code != 0 {
		t.Errorf("dev: exit %d, stderr:\n%s", code, errOut.String())
	}
}

// concord dev --port serves on that port; with --data-dir a restart keeps
// the endpoint and the data. A taken port is an error.
func TestDevPortKept(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	if r := cli(t, ctx, "dev", "--data-dir", dir, "--port", port); r.code != 1 || !strings.Contains(r.errOut, "client port "+port) {
		t.Errorf("dev on a taken port: exit %d, stderr:\n%s", r.code, r.errOut)
	}
	_ = l.Close()
	if r := cli(t, ctx, "dev", "--port", "70000"); r.code != 2 {
		t.Errorf("dev --port 70000: exit %d, want 2 (usage)", r.code)
	}
	ep := "http://127.0.0.1:" + port
	for i, item := range []string{"first", "second"} {
		dctx, cancel := context.WithCancel(ctx)
		out, errOut, done := cliAsync(dctx, "dev", "--data-dir", dir, "--port", port)
		out.waitFor(t, "ETCD_ENDPOINTS="+ep+"\n")
		if r := cli(t, ctx, "queue", "push", "--endpoints", ep, "q", item); r.code != 0 {
			t.Errorf("push %s: exit %d, stderr:\n%s", item, r.code, r.errOut)
		}
		r := cli(t, ctx, "queue", "len", "--endpoints", ep, "q")
		if want := strconv.Itoa(i + 1); r.code != 0 || strings.TrimSpace(r.out) != want {
			t.Errorf("run %d: queue len: exit %d, out %q, want %s", i, r.code, r.out, want)
		}
		cancel()
		if code := waitCode(t, done, errOut); code != 0 {
			t.Fatalf("dev run %d: exit %d, stderr:\n%s", i, code, errOut.String())
		}
	}
}

// pgidOf is process pid's process group.
func pgidOf(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b)[strings.LastIndexByte(string(b), ')')+1:])
	pgid, err := strconv.Atoi(f[2])
	if err != nil || pgid == 0 {
		t.Fatalf("no process group in %q", b)
	}
	return pgid
}

// liveInGroup lists the processes of group pgid that are not zombies (a
// killed grandchild may wait a while for an init to reap it).
func liveInGroup(pgid int) []string {
	if err := syscall.Kill(-pgid, 0); errors.Is(err, syscall.ESRCH) {
		return nil
	}
	var live []string
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		b, err := os.ReadFile("/proc/" + d.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b)[i+1:])
		if len(f) > 2 && f[2] == strconv.Itoa(pgid) && f[0] != "Z" {
			live = append(live, d.Name()+" "+f[0])
		}
	}
	return live
}

// --user NAME:PASSWORD (or --user NAME --password PASSWORD) authenticates,
// as with etcdctl.
func TestAuth(t *testing.T) {
	srv, ep := server(t)
	// Each login is a bcrypt check on the server, slow under -race on a
	// loaded machine: allow it more than the default 5 s.
	t.Setenv("ETCDCTL_DIAL_TIMEOUT", "30s")
	ctx := context.Background()
	c := srv.Client
	if _, err := c.RoleAdd(ctx, "root"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.UserAdd(ctx, "root", "secret"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.UserGrantRole(ctx, "root", "root"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AuthEnable(ctx); err != nil {
		t.Fatal(err)
	}
	if r := cli(t, ctx, "queue", "push", ep, "--user", "root:secret", "q", "x"); r.code != 0 {
		t.Errorf("--user NAME:PASSWORD: exit %d, stderr:\n%s", r.code, r.errOut)
	}
	if r := cli(t, ctx, "queue", "len", ep, "--user", "root", "--password", "secret", "q"); r.code != 0 || strings.TrimSpace(r.out) != "1" {
		t.Errorf("--user --password: exit %d, %s%s", r.code, r.out, r.errOut)
	}
	if r := cli(t, ctx, "queue", "len", ep, "--user", "root:wrong", "q"); r.code != exitFailed || !strings.Contains(r.errOut, "authentication failed") {
		t.Errorf("wrong password: exit %d, stderr:\n%s", r.code, r.errOut)
	}
	r := cli(t, ctx, "queue", "len", ep, "q")
	if r.code != exitFailed || !strings.Contains(r.errOut, "user name is empty") {
		t.Errorf("no user with auth on: exit %d, stderr:\n%s", r.code, r.errOut)
	}
	if r := cli(t, ctx, "status", ep, "--password", "x"); r.code != exitUsage {
		t.Errorf("--password without --user: exit %d", r.code)
	}
	// Turn auth off again so the server's own client can close cleanly.
	ac, err := clientv3.New(clientv3.Config{Endpoints: srv.Endpoints, Username: "root", Password: "secret"})
	if err != nil {
		t.Fatal(err)
	}
	defer ac.Close()
	if _, err := ac.AuthDisable(ctx); err != nil {
		t.Fatal(err)
	}
}

// A mistyped command or flag gets one line, a suggestion and a pointer to
// the help, not the whole usage; help is per command; completion scripts
// come from cobra.
func TestSuggestionsAndCompletion(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"lokc", "x"}, `unknown command "lokc" (did you mean "lock"?)`},
		{[]string{"lock", "--tll", "3s", "x", "--", "true"}, "unknown flag: --tll (did you mean --ttl?)"},
		{[]string{"queue", "pussh", "q", "x"}, `unknown queue subcommand "pussh": want push, claim, ack, list or len (did you mean "push"?)`},
		{[]string{"status", "--endpoint", "x"}, "did you mean --endpoints?"},
	} {
		r := cli(t, ctx, tc.args...)
		lines := strings.Split(strings.TrimSpace(r.errOut), "\n")
		if r.code != exitUsage || !strings.Contains(r.errOut, tc.want) || len(lines) != 2 || !strings.Contains(lines[1], "--help' for usage") {
			t.Errorf("%q: exit %d, want %d, %q and a hint, two lines; stderr:\n%s", tc.args, r.code, exitUsage, tc.want, r.errOut)
		}
	}
	r := cli(t, ctx, "lock", "--help")
	if r.code != 0 || !strings.Contains(r.out, "concord lock NAME -- CMD") || !strings.Contains(r.out, "CONCORD_TOKEN") || !strings.Contains(r.out, "--kill-after") {
		t.Errorf("lock --help: exit %d\n%s", r.code, r.out)
	}
	r = cli(t, ctx, "help", "queue", "claim")
	if r.code != 0 || !strings.Contains(r.out, "CONCORD_ITEM_ID") {
		t.Errorf("help queue claim: exit %d\n%s", r.code, r.out)
	}
	r = cli(t, ctx, "help")
	for _, want := range []string{"Exit status:", "130", "ETCD_ENDPOINTS", "completion"} {
		if !strings.Contains(r.out, want) {
			t.Errorf("help lacks %q:\n%s", want, r.out)
		}
	}
	for _, shell := range []string{"bash", "zsh", "fish"} {
		r := cli(t, ctx, "completion", shell)
		if r.code != 0 || !strings.Contains(r.out, "concord") || len(r.out) < 500 {
			t.Errorf("completion %s: exit %d, %d bytes; stderr:\n%s", shell, r.code, len(r.out), r.errOut)
		}
	}
	// Cobra's completion engine completes commands and flags.
	r = cli(t, ctx, "__complete", "lo")
	if r.code != 0 || !strings.Contains(r.out, "lock") {
		t.Errorf("__complete lo: exit %d\n%s", r.code, r.out)
	}
}

// concord dev stops at once on Ctrl-C even while clients hold streams open
// (it took etcd's 7 s request timeout).
func TestDevStopsPromptlyWithClients(t *testing.T) {
	ctx := context.Background()
	dctx, stopDev := context.WithCancel(ctx)
	defer stopDev()
	out, derr, ddone := cliAsync(dctx, "dev")
	out.waitFor(t, "ETCD_ENDPOINTS=")
	_, after, _ := strings.Cut(out.String(), "ETCD_ENDPOINTS=")
	ep, _, _ := strings.Cut(after, "\n")
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	wout, werr, wdone := cliAsync(wctx, "services", "watch", "--endpoints", ep, "x")
	wout.waitFor(t, "watching for changes")
	start := time.Now()
	stopDev()
	if code := waitCode(t, ddone, derr); code != 0 {
		t.Errorf("dev: exit %d, stderr:\n%s", code, derr.String())
	}
	if took := time.Since(start); took > 4*time.Second {
		t.Errorf("dev took %v to stop with a client watching", took)
	}
	stopWatch()
	waitCode(t, wdone, werr)
}

// queue push - drops the one trailing newline a shell's echo adds (--raw
// keeps it); queue list shows a delayed item that is due as ready, as a
// claim sees it, and len agrees with list.
func TestQueuePushStdinAndDueItems(t *testing.T) {
	_, ep := server(t)
	ctx := context.Background()
	var out, errOut syncBuffer
	code := runWith(ctx, []string{"queue", "push", ep, "q", "-"}, stdio{in: strings.NewReader("job one\n"), out: &out, err: &errOut})
	if code != 0 {
		t.Fatalf("push -: exit %d, stderr:\n%s", code, errOut.String())
	}
	code = runWith(ctx, []string{"queue", "push", ep, "--raw", "q", "-"}, stdio{in: strings.NewReader("raw\n"), out: &out, err: &errOut})
	if code != 0 {
		t.Fatalf("push --raw -: exit %d, stderr:\n%s", code, errOut.String())
	}
	if r := cli(t, ctx, "queue", "push", ep, "--delay", "100ms", "q", "soon"); r.code != 0 {
		t.Fatal(r.errOut)
	}
	if r := cli(t, ctx, "queue", "push", ep, "--delay", "1h", "q", "later"); r.code != 0 {
		t.Fatal(r.errOut)
	}
	deadline := time.Now().Add(10 * time.Second)
	var list string
	for {
		r := cli(t, ctx, "queue", "list", ep, "q")
		list = r.out
		if strings.Contains(list, "3 ready, 1 delayed") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("due item not listed as ready:\n%s", list)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(list, "ready (due since") || !strings.Contains(list, "delayed until") || !strings.Contains(list, "job one\n") {
		t.Errorf("list:\n%s", list)
	}
	if r := cli(t, ctx, "queue", "len", ep, "q"); strings.TrimSpace(r.out) != "4" {
		t.Errorf("len %q, want 4 (3 ready + 1 delayed)", r.out)
	}
	r := cli(t, ctx, "queue", "list", ep, "--json", "q")
	var l struct {
		Items []itemJSON `json:"items"`
	}
	if err := json.Unmarshal([]byte(r.out), &l); err != nil {
		t.Fatal(err)
	}
	payloads := map[string]string{}
	for _, it := range l.Items {
		payloads[it.Payload] = it.State
	}
	if payloads["job one"] != "ready" || payloads["raw\n"] != "ready" || payloads["soon"] != "ready" || payloads["later"] != "delayed" {
		t.Errorf("items by payload %q", payloads)
	}
}

// The exit statuses are one table: the package comment carries the help's
// table line for line, and the README lists every status.
func TestExitTableDocumented(t *testing.T) {
	doc, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(exitTable, "\n")[1:] {
		if !strings.Contains(string(doc), "//\t"+strings.TrimPrefix(line, "  ")+"\n") {
			t.Errorf("doc.go lacks the exit table's line %q", line)
		}
		code := strings.Fields(line)[0]
		if _, err := strconv.Atoi(code); err == nil && !strings.Contains(string(readme), "| "+code+" ") && !strings.Contains(string(readme), "/ "+code+" |") {
			t.Errorf("README's exit table lacks status %s", code)
		}
	}
}
