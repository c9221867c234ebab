package retry

import (
	"context"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestPolicyGrowsToItsCap(t *testing.T) {
	b := Policy{Initial: time.Millisecond, Max: 8 * time.Millisecond}.New()
	b.RandomizationFactor = 0
	var got []time.Duration
	for range 8 {
		got = append(got, b.NextBackOff())
	}
	if got[0] != time.Millisecond || got[7] != 8*time.Millisecond {
		t.Fatalf("pauses %v: want 1ms first and 8ms at the cap", got)
	}
	for i := 1; i < len(got); i++ {
		if got[i] < got[i-1] {
			t.Fatalf("pauses %v shrink", got)
		}
	}
	if d := b.NextBackOff(); d == backoff.Stop {
		t.Fatal("the policy gave up")
	}
}

func TestUpToCaps(t *testing.T) {
	p := Request.UpTo(30 * time.Millisecond)
	if p.Max != 30*time.Millisecond || p.Initial != Request.Initial || Request.Max != time.Second {
		t.Fatalf("UpTo = %+v (Request %+v)", p, Request)
	}
}

func TestSleepEndsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	if Sleep(ctx, time.Minute) {
		t.Fatal("Sleep reported the pause passed after ctx ended")
	}
	if time.Since(start) > time.Second {
		t.Fatal("Sleep did not end at once")
	}
	if !Sleep(context.Background(), time.Millisecond) {
		t.Fatal("Sleep reported false for a pause that passed")
	}
}
