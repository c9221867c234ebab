package pubsub_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/concordkit/concord/embedtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(embedtest.Settled(m)) }
