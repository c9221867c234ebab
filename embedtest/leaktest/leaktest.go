// Package leaktest holds the goleak helpers for test binaries that start
// embedded etcd servers. It is a package of its own so that programs that
// import embedtest (the concord CLI, the examples) do not link goleak.
package leaktest

import (
	"time"

	"go.uber.org/goleak"
)

// settleTimeout bounds the wait for goroutines that outlive a closed
// cluster: a peer HTTP connection whose server is finishing a request waits
// in net/http's abortPendingRead for etcd's 5 s peer read timeout (etcd's
// timeoutConn re-arms the read deadline that net/http sets to abort the
// read), and its client side lives as long. They end within about 5 s of
// Close; 3-4 s is typical.
const settleTimeout = 10 * time.Second

// Settled wraps a test binary's M so that, after a passing run, it waits
// (at most 10 s) for the goroutines a closed cluster leaves for a few
// seconds. Use it in packages that start clusters:
//
//	func TestMain(m *testing.M) { goleak.VerifyTestMain(leaktest.Settled(m)) }
func Settled(m goleak.TestingM) goleak.TestingM { return settled{m} }

type settled struct{ m goleak.TestingM }

func (s settled) Run() int {
	code := s.m.Run()
	if code != 0 {
		return code
	}
	// Each failed Find has already retried for about half a second.
	for deadline := time.Now().Add(settleTimeout); time.Now().Before(deadline); {
		if goleak.Find(IgnoreHardStopLeaks()...) == nil {
			break
		}
	}
	return code
}

// IgnoreHardStopLeaks are goleak options for goroutines that etcd itself
// leaves forever when a member is hard-stopped while a peer request is
// being served: the peer version handler blocks on the closed backend's
// read lock. Pass them to goleak.VerifyTestMain in packages that HardStop
// members.
func IgnoreHardStopLeaks() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreAnyFunction("go.etcd.io/etcd/server/v3/etcdserver/api/etcdhttp.newPeerHandler.versionHandler.func1"),
	}
}
