package main

import (
	"context"
	"strings"
	"testing"

	"github.com/concordkit/concord/embedtest"
)

// The TLS flags reach an etcd that serves TLS and requires client
// certificates, as etcdctl's do; without the client certificate or the
// CA the connection is refused.
func TestTLS(t *testing.T) {
	f, err := embedtest.GenerateTLS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	srv := embedtest.Start(t, embedtest.FastTicks(), embedtest.WithTLS(f))
	ep := "--endpoints=" + strings.Join(srv.Endpoints, ",")
	if !strings.HasPrefix(srv.Endpoints[0], "https://") {
		t.Fatalf("endpoint %s is not https", srv.Endpoints[0])
	}
	ctx := context.Background()
	full := []string{ep, "--cacert", f.CAFile, "--cert", f.ClientCertFile, "--key", f.ClientKeyFile}
	if r := cli(t, ctx, append([]string{"queue", "push"}, append(full, "jobs", "x")...)...); r.code != 0 {
		t.Fatalf("push over TLS: exit %d, stderr:\n%s", r.code, r.errOut)
	}
	if r := cli(t, ctx, append([]string{"queue", "len"}, append(full, "jobs")...)...); r.code != 0 || strings.TrimSpace(r.out) != "1" {
		t.Fatalf("len over TLS: exit %d, %s%s", r.code, r.out, r.errOut)
	}
	for name, args := range map[string][]string{
		"no client certificate": {ep, "--cacert", f.CAFile, "--dial-timeout", "1s"},
		"unknown CA":            {ep, "--cert", f.ClientCertFile, "--key", f.ClientKeyFile, "--dial-timeout", "1s"},
	} {
		if r := cli(t, ctx, append([]string{"queue", "len"}, append(args, "jobs")...)...); r.code == 0 {
			t.Errorf("%s: exit 0, want a refused connection", name)
		}
	}
	if r := cli(t, ctx, "queue", "len", ep, "--cert", f.ClientCertFile, "jobs"); r.code != exitUsage {
		t.Errorf("--cert without --key: exit %d, want %d", r.code, exitUsage)
	}
}
