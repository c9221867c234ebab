package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/concordkit/concord/embedtest"
	"github.com/concordkit/concord/pubsub"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func TestServicesUsage(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"services"}, "missing services subcommand"},
		{[]string{"services", "frob", "api"}, "unknown services subcommand"},
		{[]string{"services", "list"}, "missing SERVICE"},
		{[]string{"services", "list", "a/b"}, "invalid service name"},
		{[]string{"services", "watch", ".hidden"}, "invalid service name"},
		{[]string{"services", "register", "api", "a"}, "missing SERVICE ID ADDR"},
		{[]string{"services", "register", "api", "a/b", "127.0.0.1:80"}, "invalid instance id"},
		{[]string{"services", "register", "api", "a", "no-port"}, "invalid address"},
		{[]string{"services", "register", "api", "a", "127.0.0.1:0"}, "invalid address"},
		{[]string{"services", "register", "--weight", "-1", "api", "a", "127.0.0.1:80"}, "invalid weight"},
		{[]string{"services", "register", "--ttl", "1500ms", "api", "a", "127.0.0.1:80"}, "whole number of seconds"},
		{[]string{"services", "register", "--meta", "novalue", "api", "a", "127.0.0.1:80"}, "KEY=VALUE"},
		{[]string{"services", "watch", "-n", "-1", "api"}, "-n must be"},
		{[]string{"watch", "--new"}, "go with --topic"},
		{[]string{"watch", "--topic", "t", "extra"}, "unexpected argument"},
		{[]string{"watch", "--topic", "a//b"}, "invalid name"},
		{[]string{"watch", "--topic", "t", "--new", "--after", "3"}, "exclude each other"},
	} {
		r := cli(t, ctx, tc.args...)
		if r.code != exitUsage || !strings.Contains(r.errOut, tc.want) {
			t.Errorf("%q: exit %d, want %d with %q; stderr:\n%s", tc.args, r.code, exitUsage, tc.want, r.errOut)
		}
	}
	if r := cli(t, ctx, "help"); !strings.Contains(r.out, "services") || !strings.Contains(r.out, "--topic") {
		t.Errorf("help does not mention services and watch --topic:\n%s", r.out)
	}
}

// register keeps an instance listed until its process stops (deregistered
// at once) or dies (gone when its lease expires); a revoked lease is
// replaced and the instance registered again; list, watch and status show
// it all.
func TestServices(t *testing.T) {
	srv, ep := server(t)
	ctx := context.Background()

	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	wout, werr, wdone := cliAsync(wctx, "services", "watch", ep, "api")
	wout.waitFor(t, "watching for changes")
	if !strings.HasPrefix(wout.String(), "api: 0 instances") {
		t.Errorf("watch of an empty service:\n%s", wout.String())
	}

	actx, stopA := context.WithCancel(ctx)
	defer stopA()
	aout, aerr, adone := cliAsync(actx, "services", "register", ep, "--ttl", "1s", "--meta", "zone=a", "--meta", "role=web",
		"--weight", "3", "api", "a", "127.0.0.1:8001")
	aout.waitFor(t, "registered api/a: a 127.0.0.1:8001 weight=3 role=web zone=a")
	wout.waitFor(t, "+ a 127.0.0.1:8001 weight=3 role=web zone=a\n= api: 1 instance at revision")

	bctx, stopB := context.WithCancel(ctx)
	defer stopB()
	bout, berr, bdone := cliAsync(bctx, "services", "register", ep, "api", "b", "127.0.0.1:8002")
	bout.waitFor(t, "registered api/b")
	wout.waitFor(t, "+ b 127.0.0.1:8002 weight=1\n")
	wout.waitFor(t, "= api: 2 instances at revision")

	r := cli(t, ctx, "services", "list", ep, "api")
	lines := strings.Split(strings.TrimSpace(r.out), "\n")
	if r.code != 0 || len(lines) != 3 || strings.Join(strings.Fields(lines[1]), " ") != "a 127.0.0.1:8001 3 role=web zone=a" ||
		strings.Join(strings.Fields(lines[2]), " ") != "b 127.0.0.1:8002 1" {
		t.Errorf("list: exit %d\n%s%s", r.code, r.out, r.errOut)
	}
	r = cli(t, ctx, "services", "list", ep, "--json", "api")
	var list struct {
		Service   string         `json:"service"`
		Instances []instanceJSON `json:"instances"`
	}
	if err := json.Unmarshal([]byte(r.out), &list); err != nil || list.Service != "api" || len(list.Instances) != 2 ||
		list.Instances[0].Metadata["zone"] != "a" || list.Instances[0].Weight != 3 {
		t.Errorf("list --json: %v\n%s", err, r.out)
	}
	// Connection flags may come first, as with etcdctl.
	if r := cli(t, ctx, ep, "services", "list", "api"); r.code != 0 || !strings.Contains(r.out, "127.0.0.1:8002") {
		t.Errorf("flags before the command: exit %d, %s%s", r.code, r.out, r.errOut)
	}
	if r := cli(t, ctx, "services", "list", ep, "nothing"); r.code != 0 || !strings.Contains(r.out, `no instances of "nothing"`) {
		t.Errorf("list of no instances: exit %d, %s%s", r.code, r.out, r.errOut)
	}
	r = cli(t, ctx, "status", ep)
	if !strings.Contains(r.out, "SERVICES") || !strings.Contains(r.out, "2 instances") || !strings.Contains(r.out, "a 127.0.0.1:8001, b 127.0.0.1:8002") {
		t.Errorf("status:\n%s%s", r.out, r.errOut)
	}
	var st statusJSON
	r = cli(t, ctx, "status", ep, "--json")
	if err := json.Unmarshal([]byte(r.out), &st); err != nil || len(st.Services) != 1 || len(st.Services[0].Instances) != 2 {
		t.Errorf("status --json: %v\n%s", err, r.out)
	}

	// An ID that is live under another registration is refused.
	if r := cli(t, ctx, "services", "register", ep, "api", "a", "127.0.0.1:9999"); r.code != exitUnavailable ||
		!strings.Contains(r.errOut, "already registered") {
		t.Errorf("second a: exit %d, stderr:\n%s", r.code, r.errOut)
	}

	// Stopping b's process deregisters it at once.
	stopB()
	if code := waitCode(t, bdone, berr); code != 0 || !strings.Contains(bout.String(), "deregistered api/b") {
		t.Errorf("stopped register: exit %d\n%s%s", code, bout.String(), berr.String())
	}
	wout.waitFor(t, "- b 127.0.0.1:8002")

	// A revoked lease: a is gone, then registered again under a new lease.
	resp, err := srv.Client.Get(ctx, "api/.instances/a")
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("a's record: %v", err)
	}
	if _, err := srv.Client.Revoke(ctx, clientv3.LeaseID(resp.Kvs[0].Lease)); err != nil {
		t.Fatal(err)
	}
	aout.waitFor(t, "lost api/a: its record is gone")
	aout.waitFor(t, "re-registered api/a")
	if r := cli(t, ctx, "services", "list", ep, "api"); !strings.Contains(r.out, "127.0.0.1:8001") {
		t.Errorf("a not listed after re-registering:\n%s%s", r.out, r.errOut)
	}

	// A killed process deregisters nothing: its instance goes when its
	// lease expires.
	cmd, cout := cliProcess(t, "services", "register", ep, "--ttl", "1s", "api", "c", "127.0.0.1:8003")
	cout.waitFor(t, "registered api/c")
	wout.waitFor(t, "+ c 127.0.0.1:8003")
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	_ = cmd.Wait()
	wout.waitFor(t, "- c 127.0.0.1:8003")
	if d := time.Since(killed); d > 1*time.Second+3*time.Second { // TTL, plus the slack the demo allows too
		t.Errorf("killed instance listed for %v, TTL 1s", d)
	}

	stopA()
	if code := waitCode(t, adone, aerr); code != 0 || !strings.Contains(aout.String(), "deregistered api/a") {
		t.Errorf("stopped register: exit %d\n%s%s", code, aout.String(), aerr.String())
	}
	wout.waitFor(t, "= api: 0 instances")
	stopWatch()
	if code := waitCode(t, wdone, werr); code != 0 {
		t.Errorf("interrupted watch: exit %d, stderr:\n%s", code, werr.String())
	}
}

// services watch -n N exits after N changes; --json prints one object per
// line.
func TestServicesWatchCountJSON(t *testing.T) {
	_, ep := server(t)
	ctx := context.Background()
	wout, werr, wdone := cliAsync(ctx, "services", "watch", ep, "--json", "-n", "2", "web")
	wout.waitFor(t, `"type":"snapshot"`)
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	_, rerr, rdone := cliAsync(rctx, "services", "register", ep, "web", "w1", "[::1]:80", "--draining")
	wout.waitFor(t, `"type":"added"`)
	stop()
	waitCode(t, rdone, rerr)
	if code := waitCode(t, wdone, werr); code != 0 {
		t.Fatalf("watch -n 2: exit %d, stderr:\n%s", code, werr.String())
	}
	var types []string
	for _, line := range strings.Split(strings.TrimSpace(wout.String()), "\n") {
		var ch serviceChange
		if err := json.Unmarshal([]byte(line), &ch); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		types = append(types, ch.Type)
		if ch.Type == "added" && (ch.Instance == nil || ch.Instance.Addr != "[::1]:80" || !ch.Instance.Draining) {
			t.Errorf("added: %s", line)
		}
	}
	if strings.Join(types, ",") != "snapshot,added,removed" {
		t.Errorf("types %v:\n%s", types, wout.String())
	}
}

// While etcd does not answer, services watch says its list may be stale,
// and says so again when it has caught up.
func TestServicesWatchStale(t *testing.T) {
	srv, _ := server(t)
	p := embedtest.NewProxy(t, srv.Endpoints[0])
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out, errOut, done := cliAsync(ctx, "services", "watch", "--endpoints", p.Endpoint(), "api")
	out.waitFor(t, "watching for changes")
	p.Blackhole()
	out.waitFor(t, "# STALE")
	p.Unblackhole()
	out.waitFor(t, "# fresh again")
	cancel()
	if code := waitCode(t, done, errOut); code != 0 {
		t.Errorf("exit %d, stderr:\n%s", code, errOut.String())
	}
}

// watch --topic prints a topic's messages with their Seq, and the messages
// retention deleted before they were read as a gap.
func TestWatchTopic(t *testing.T) {
	srv, ep := server(t)
	ctx := context.Background()
	ps, err := pubsub.New(srv.Client, pubsub.WithKeepLast(3))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"m1", "m2", "m3", "m4", "m5"} {
		if _, err := ps.Publish(ctx, "events", []byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ps.Trim(ctx, "events"); err != nil {
		t.Fatal(err)
	}

	// From the oldest retained message, then a new one.
	out, errOut, done := cliAsync(ctx, "watch", ep, "--topic", "events", "-n", "4")
	out.waitFor(t, "#5 m5")
	if _, err := ps.Publish(ctx, "events", []byte("m6")); err != nil {
		t.Fatal(err)
	}
	if code := waitCode(t, done, errOut); code != 0 {
		t.Fatalf("exit %d, stderr:\n%s", code, errOut.String())
	}
	var got []string
	for _, line := range strings.Split(out.String(), "\n") {
		if f := strings.Fields(line); len(f) > 1 && strings.HasPrefix(f[0], "#") && f[0] != "#" {
			got = append(got, f[0]+" "+f[1])
		}
	}
	if strings.Join(got, ", ") != "#3 m3, #4 m4, #5 m5, #6 m6" {
		t.Errorf("messages %q:\n%s", got, out.String())
	}

	// From the start of the topic: the trimmed messages are a gap.
	r := cli(t, ctx, "watch", ep, "--topic", "events", "--after", "0", "-n", "2")
	if r.code != 0 || !strings.Contains(r.out, "GAP 3 messages deleted by retention before they were read") ||
		!strings.Contains(r.out, "seq 1..3") || !strings.Contains(r.out, "#4 m4") {
		t.Errorf("--after 0: exit %d\n%s%s", r.code, r.out, r.errOut)
	}
	r = cli(t, ctx, "watch", ep, "--topic", "events", "--after", "0", "-n", "2", "--json")
	lines := strings.Split(strings.TrimSpace(r.out), "\n")
	var gap, msg topicJSON
	if len(lines) != 2 || json.Unmarshal([]byte(lines[0]), &gap) != nil || json.Unmarshal([]byte(lines[1]), &msg) != nil ||
		gap.Type != "gap" || gap.Count != 3 || gap.Seq != 3 || msg.Type != "message" || msg.Seq != 4 || msg.Data != "m4" {
		t.Errorf("--json: exit %d\n%s%s", r.code, r.out, r.errOut)
	}

	// --new: only what is published from now on.
	out, errOut, done = cliAsync(ctx, "watch", ep, "--topic", "events", "--new", "-n", "1")
	out.waitFor(t, "watching for messages")
	if _, err := ps.Publish(ctx, "events", []byte("m7")); err != nil {
		t.Fatal(err)
	}
	if code := waitCode(t, done, errOut); code != 0 || !strings.Contains(out.String(), "#7 m7") || strings.Contains(out.String(), "m6") {
		t.Errorf("--new: exit %d\n%s%s", code, out.String(), errOut.String())
	}
}
