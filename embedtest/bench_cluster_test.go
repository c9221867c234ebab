package embedtest

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// TestBenchClusterStatsSumMembers: a StartBenchCluster server's endpoints
// are every member's, and its Stats count the requests each member served
// (50 puts sent to each member alone: 150; a member's own share would be
// 50).
func TestBenchClusterStatsSumMembers(t *testing.T) {
	RequireEmbedded(t, "an embedded cluster")
	srv := StartBenchCluster(t, 3, NoFsync())
	if len(srv.Endpoints) != 3 {
		t.Fatalf("endpoints %v, want the 3 members'", srv.Endpoints)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	before, err := srv.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const puts = 50
	for i, ep := range srv.Endpoints {
		c, err := newClient([]string{ep}, nil)
		if err != nil {
			t.Fatal(err)
		}
		for k := range puts {
			if _, err := c.Put(ctx, fmt.Sprintf("sum/%d/%d", i, k), "x"); err != nil {
				t.Fatal(err)
			}
		}
		_ = c.Close()
	}
	after, err := srv.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := after.Sub(before); d.Unary < 3*puts || d.Unary > 3*puts+10 {
		t.Errorf("unary requests = %d, want about %d (every member's)", d.Unary, 3*puts)
	}
}
