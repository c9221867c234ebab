package faults

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/concordkit/concord/concurrency"
	"github.com/concordkit/concord/embedtest"
)

// A member that is not the leader forwards each keepalive to the leader and
// answers a stream's keepalives one at a time: a keepalive forwarded to a
// leader that has just stopped waits out the member's request timeout (5 s
// and more), and every later one on that stream waits behind it, although
// a new leader is elected within a few hundred milliseconds. A session
// whose keepalive is caught so must start a new stream (errStalled in
// internal/session) rather than reach its renew deadline. Sessions on the
// followers, started 25 ms apart so that some send during the election
// whatever the pause's phase; the leader stops for about the TTL (a shorter
// pause ends before any deadline: the stuck keepalive is then answered by
// the resumed leader). A lease the resumed leader revokes (etcd-io/etcd#15247,
// TestStaleLeaderRevokes) ends its session with ErrLeaseExpired: allowed;
// ErrRenewDeadline is not.
func TestKeepaliveOutlivesStuckForward(t *testing.T) {
	bin := embedtest.Binary()
	if bin == "" {
		t.Skipf("needs an etcd server binary: %s=$(scripts/etcd-bin.sh 3.5.36)", embedtest.BinaryEnv)
	}
	pc := embedtest.StartProcessCluster(t, bin, 3, embedtest.FastTicks())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const ttl = 2 * time.Second
	lead, err := pc.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ss []*concurrency.Session
	for i := range 3 {
		if i == lead {
			continue
		}
		cli, err := pc.NewMemberClient(i)
		if err != nil {
			t.Fatal(err)
		}
		defer cli.Close()
		for range 12 {
			s, err := concurrency.NewSession(ctx, cli, concurrency.WithTTL(ttl))
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close(ctx)
			ss = append(ss, s)
			time.Sleep(25 * time.Millisecond)
		}
	}
	pc.Pause(lead)
	time.Sleep(ttl - 300*time.Millisecond)
	pc.Resume(lead)
	time.Sleep(ttl)
	lost := 0
	for _, s := range ss {
		select {
		case <-s.Done():
		default:
			continue
		}
		lost++
		if err := s.Err(); errors.Is(err, concurrency.ErrRenewDeadline) {
			t.Errorf("lease %x: %v: its keepalives waited behind one forwarded to the stopped leader", int64(s.Lease()), err)
		}
	}
	t.Logf("%d of %d sessions ended", lost, len(ss))
}
