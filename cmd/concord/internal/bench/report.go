package bench

import (
	"math"
	"time"

	"github.com/concordkit/concord/internal/srvstats"
)

// SchemaVersion is the version of the JSON form of a Report. It changes
// only when a field changes meaning or is removed; fields may be added.
const SchemaVersion = 1

// Report is one run: the floor and every workload, measured on the same
// cluster in the same run. Its JSON form (concord bench --json) is the
// stable schema documented in doc.go.
type Report struct {
	Version   int      `json:"version"`
	Endpoints []string `json:"endpoints"`
	Prefix    string   `json:"prefix"`
	// Started is when the run began (RFC 3339).
	Started time.Time `json:"started"`
	// DurationS is the bound on each workload, in seconds.
	DurationS float64 `json:"duration_s"`
	// ServerStats says whether the servers' /metrics could be read: when
	// false every server_* and *_requests_per_op field is null.
	ServerStats bool `json:"server_stats"`
	// Floor is the least a handoff can cost on this cluster: one put and
	// its watch event on another connection.
	Floor     Measurement `json:"floor"`
	Workloads []Workload  `json:"workloads"`
}

// Workload is one workload's parameters, figures and verdict.
type Workload struct {
	Name       string `json:"name"`
	Contenders int    `json:"contenders"`
	// Limit is the semaphore's limit (sem only).
	Limit int `json:"limit,omitempty"`
	// Instances are the instances registered (discovery only).
	Instances int `json:"instances,omitempty"`
	// Watchers are the watcher caches loading them (discovery only).
	Watchers     int           `json:"watchers,omitempty"`
	Measurements []Measurement `json:"measurements"`
	Verdict      string        `json:"verdict"`
}

// Measurement is one kind of operation timed over one phase.
type Measurement struct {
	// Op names the operation: put_event (the floor), handoff, grant,
	// enqueue, claim_ack, failover, register, snapshot_load, fan_out.
	Op        string  `json:"op"`
	Count     int64   `json:"count"`
	DurationS float64 `json:"duration_s"`
	OpsPerSec float64 `json:"ops_per_sec"`
	P50Ms     float64 `json:"p50_ms"`
	P99Ms     float64 `json:"p99_ms"`
	// P50ToFloor is p50_ms over the floor's p50_ms (1 for the floor).
	P50ToFloor float64 `json:"p50_to_floor"`
	// ServerCPUMsPerOp is the servers' CPU per operation (summed over the
	// endpoints); null without server stats.
	ServerCPUMsPerOp *float64 `json:"server_cpu_ms_per_op"`
	// UnaryRequestsPerOp are the unary requests the servers began per
	// operation; null without server stats.
	UnaryRequestsPerOp *float64 `json:"unary_requests_per_op"`
	// WatchEventsPerOp are the watch events the servers sent per
	// operation; null without server stats.
	WatchEventsPerOp *float64 `json:"watch_events_per_op"`

	p50, p99 time.Duration
}

// measurement makes a Measurement of a phase that ran for elapsed, with
// the servers' counters over it (nil when not read).
func measurement(op string, s *sampler, elapsed time.Duration, st *srvstats.Stats) Measurement {
	n := s.count.Load()
	p50, p99 := s.quantiles()
	m := Measurement{Op: op, Count: n, DurationS: round3(elapsed.Seconds()), P50Ms: ms(p50), P99Ms: ms(p99), p50: p50, p99: p99}
	if elapsed > 0 {
		m.OpsPerSec = round3(float64(n) / elapsed.Seconds())
	}
	if st != nil && n > 0 {
		cpu := round3(float64(st.CPU) / float64(time.Millisecond) / float64(n))
		unary := round3(float64(st.Unary) / float64(n))
		events := round3(float64(st.Events) / float64(n))
		m.ServerCPUMsPerOp, m.UnaryRequestsPerOp, m.WatchEventsPerOp = &cpu, &unary, &events
	}
	return m
}

// relate sets m's ratio to the floor.
func (m *Measurement) relate(floor Measurement) {
	if floor.P50Ms > 0 {
		m.P50ToFloor = round3(m.P50Ms / floor.P50Ms)
	}
}

func ms(d time.Duration) float64 { return round3(float64(d) / float64(time.Millisecond)) }

func round3(f float64) float64 { return math.Round(f*1000) / 1000 }
