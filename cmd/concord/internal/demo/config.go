package demo

import (
	"time"

	"go.opentelemetry.io/otel/metric"
)

// Config is one run of the rollout demo.
type Config struct {
	Hosts   int
	Workers int
	K       int // at most K hosts in flight
	Steps   int // checkpointed steps per host
	// Canaries is how many hosts (the first ones) form the canary wave;
	// the others follow in waves of WaveSize (0: one wave), each opened by
	// the coordinator once the one before is done.
	Canaries int
	WaveSize int
	Step     time.Duration // mean duration of one step
	ttl      time.Duration // session TTL of every worker
	Faults   bool          // crash a worker and kill the coordinator midway
	Quiet    bool          // print only the summary
	TTY      bool          // redraw a live view (stdout is a terminal)
	Color    bool
	Timeout  time.Duration // fail if the rollout has not finished by then
	hooks    fleetHooks
	mp       metric.MeterProvider // every recipe's metrics; see metricsTable
	// LeaveCrashed returns without waiting for crashed workers' goroutines
	// (a session whose client is gone takes seconds to give up): for the
	// CLI, whose process exits right after. Tests wait for them.
	LeaveCrashed bool
	// EtcdStarted, if set, is called once with the embedded etcd's client
	// endpoints before any worker starts: a console or a probe can follow
	// the run on the same etcd (the console's demo screenshot does).
	EtcdStarted func(endpoints []string)
}

// DefaultConfig is the demo as `concord demo` runs it without flags.
func DefaultConfig() Config {
	return Config{Hosts: 24, Workers: 5, K: 3, Steps: 4, Canaries: 1, WaveSize: 8, Step: 120 * time.Millisecond,
		ttl: 2 * time.Second, Faults: true, Timeout: time.Minute}
}
