package discovery_test

import (
	"errors"
	"testing"

	"github.com/concordkit/concord/discovery"
	"github.com/concordkit/concord/embedtest"
)

func TestInspectListsRecords(t *testing.T) {
	srv := embedtest.Start(t)
	ctx := testCtx(t)
	if _, err := discovery.Inspect(ctx, srv.Client, "a/b"); !errors.Is(err, discovery.ErrInvalidService) {
		t.Fatalf("Inspect of a two-segment name = %v, want ErrInvalidService", err)
	}
	st, err := discovery.Inspect(ctx, srv.Client, "api")
	if err != nil || len(st.Instances) != 0 || st.Revision == 0 {
		t.Fatalf("Inspect of an empty service = %+v, %v", st, err)
	}
	r := newRegistry(t, srv.Client)
	register(t, ctx, r, "api", "b", "10.0.0.2:80")
	g, err := r.Register(ctx, "api", discovery.Instance{ID: "a", Addr: "10.0.0.1:80", Metadata: map[string]string{"zone": "eu"}, Draining: true})
	if err != nil {
		t.Fatal(err)
	}
	// A key under the service's prefix that is not a record is counted, not listed.
	if _, err := srv.Client.Put(ctx, "api/.instances/junk", "{not json"); err != nil {
		t.Fatal(err)
	}
	st, err = discovery.Inspect(ctx, srv.Client, "api")
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Instances) != 2 || st.Malformed != 1 {
		t.Fatalf("Inspect = %+v, want 2 instances and 1 malformed", st)
	}
	a, b := st.Instances[0], st.Instances[1]
	if a.ID != "a" || a.Addr != "10.0.0.1:80" || a.Metadata["zone"] != "eu" || !a.Draining || b.ID != "b" {
		t.Fatalf("instances = %+v, want a (draining, zone eu) then b", st.Instances)
	}
	if a.Lease == 0 || a.Lease != b.Lease || a.Since <= b.Since {
		t.Fatalf("leases %x %x, since %d %d: want one Registry lease, a registered after b", a.Lease, b.Lease, a.Since, b.Since)
	}
	if err := g.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	if st, err = discovery.Inspect(ctx, srv.Client, "api"); err != nil || len(st.Instances) != 1 || st.Instances[0].ID != "b" {
		t.Fatalf("after Deregister: %+v %v", st, err)
	}
}
