package bench

import (
	"testing"

	"github.com/concordkit/concord/embedtest/leaktest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(leaktest.Settled(m))
}
