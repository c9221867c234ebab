package queue_test

import (
	"testing"

	"github.com/concordkit/concord/embedtest/leaktest"
	"go.uber.org/goleak"
)

// The 3-member cluster of BenchmarkCluster3Drain leaves its members' peer
// connections to wind down after it stops: settle first.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(leaktest.Settled(m), leaktest.IgnoreHardStopLeaks()...)
}
