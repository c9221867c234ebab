package console_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/concordkit/concord/cmd/concord/console"
	"github.com/concordkit/concord/discovery"
	"github.com/concordkit/concord/embedtest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestTenThousandInstancesFirstRenderUnderASecond registers 10,000
// instances of one service from 10 registries, then starts a console and
// times its first page: from New to a page showing them all (under 1s;
// 10s under the race detector), and a later page (under 1s).
func TestTenThousandInstancesFirstRenderUnderASecond(t *testing.T) {
	const registries, each = 10, 1000
	srv := embedtest.Start(t, embedtest.NoFsync())
	ctx := testCtx(t)
	// Ten registries register an instance each; the other 9,990 records
	// are copies of theirs under the same leases (the Registry writes about
	// 200 records a second under the race detector on 2 cores: 50 s for
	// 10,000), written 100 to a transaction.
	var regs []*discovery.Registry
	for r := 0; r < registries; r++ {
		reg, err := discovery.NewRegistry(srv.Client)
		if err != nil {
			t.Fatal(err)
		}
		regs = append(regs, reg)
		t.Cleanup(func() {
			cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_ = reg.Close(cctx)
		})
		if _, err := reg.Register(ctx, "api", discovery.Instance{ID: fmt.Sprintf("api-%02d-0000", r), Addr: fmt.Sprintf("10.0.%d.1:8080", r),
			Metadata: map[string]string{"zone": fmt.Sprintf("z%d", r%3)}}); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := srv.Client.Get(ctx, "api/.instances/", clientv3.WithPrefix())
	if err != nil || len(resp.Kvs) != registries {
		t.Fatalf("records: %v %v", resp, err)
	}
	for _, kv := range resp.Kvs {
		for i := 1; i < each; i += 100 {
			var ops []clientv3.Op
			for j := i; j < min(i+100, each); j++ {
				ops = append(ops, clientv3.OpPut(fmt.Sprintf("%s-%04d", strings.TrimSuffix(string(kv.Key), "-0000"), j), string(kv.Value),
					clientv3.WithLease(clientv3.LeaseID(kv.Lease))))
			}
			if _, err := srv.Client.Txn(ctx).Then(ops...).Commit(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if st, err := discovery.Inspect(ctx, srv.Client, "api"); err != nil || len(st.Instances) != registries*each {
		t.Fatalf("discovery.Inspect: %d instances, %v", len(st.Instances), err)
	}
	// Cold: from New until a page shows every instance (the first page
	// usually does: it waits up to 3s for the first read).
	start := time.Now()
	_, ts, _ := serve(t, srv.Client, console.WithPollInterval(time.Second))
	bar := time.Second
	if raceEnabled {
		bar = 10 * time.Second // the race detector, on a machine shared with other tests
	}
	var page string
	for {
		_, page = get(t, ts.URL+"/")
		if strings.Contains(section(page, "services"), "10000 instances") || time.Since(start) > bar {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	cold := time.Since(start)
	services := section(page, "services")
	if !strings.Contains(services, "10000 instances") || !strings.Contains(services, "10 leases") || !strings.Contains(services, "and 9900 more") {
		t.Fatalf("services section %v after New: %.300s", cold, text(services))
	}
	start = time.Now()
	_, page = get(t, ts.URL+"/")
	warm := time.Since(start)
	t.Logf("first page with 10,000 instances: %v from New (%d bytes); later pages: %v", cold.Round(time.Millisecond), len(page), warm.Round(time.Millisecond))
	if warm > time.Second {
		t.Fatalf("a page took %v to render, want under 1s", warm)
	}
	if cold > bar {
		t.Fatalf("the first page, from New, took %v, want under %v", cold, bar)
	}
}
