package rollout_test

import (
	"testing"

	"github.com/concordkit/concord/embedtest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(embedtest.Settled(m), embedtest.IgnoreHardStopLeaks()...)
}
