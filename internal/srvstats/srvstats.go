// Package srvstats reads an etcd member's own counters from the /metrics it
// serves on its client URLs: its CPU time, the unary requests it began, its
// watch traffic and keepalives. embedtest's Server.Stats and concord bench
// both read them here.
package srvstats

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// ErrNoMetrics: the endpoint answered, but not with etcd's metrics.
var ErrNoMetrics = errors.New("srvstats: no etcd metrics")

// Stats are one member's counters at one moment. Subtract two snapshots
// (Sub) to get what happened between them.
type Stats struct {
	// CPU is the member process's CPU time (process_cpu_seconds_total, in
	// 10 ms steps); for an embedded member, its whole process's.
	CPU time.Duration
	// Unary is how many unary gRPC requests the member began (Range, Txn,
	// Put, LeaseGrant, ...; keepalives and watches are streams).
	Unary int64
	// WatchRequests are the messages received on Watch streams.
	WatchRequests int64
	// WatchResponses are the messages sent on Watch streams.
	WatchResponses int64
	// Events are the key-value events the member's watchers sent
	// (etcd_debugging_mvcc_events_total).
	Events int64
	// KeepAlives are the messages received on LeaseKeepAlive streams.
	KeepAlives int64
}

// Sub is s minus o.
func (s Stats) Sub(o Stats) Stats {
	return Stats{CPU: s.CPU - o.CPU, Unary: s.Unary - o.Unary, WatchRequests: s.WatchRequests - o.WatchRequests,
		WatchResponses: s.WatchResponses - o.WatchResponses, Events: s.Events - o.Events, KeepAlives: s.KeepAlives - o.KeepAlives}
}

// Add is s plus o (two members' counters, say).
func (s Stats) Add(o Stats) Stats {
	return Stats{CPU: s.CPU + o.CPU, Unary: s.Unary + o.Unary, WatchRequests: s.WatchRequests + o.WatchRequests,
		WatchResponses: s.WatchResponses + o.WatchResponses, Events: s.Events + o.Events, KeepAlives: s.KeepAlives + o.KeepAlives}
}

// Read reads the counters of the etcd member serving endpoint
// (http://host:port or https://; etcd serves /metrics on its client URLs)
// with hc (http.DefaultClient when nil).
func Read(ctx context.Context, hc *http.Client, endpoint string) (Stats, error) {
	var st Stats
	if hc == nil {
		hc = http.DefaultClient
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(endpoint, "/")+"/metrics", nil)
	if err != nil {
		return st, fmt.Errorf("srvstats: %w", err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return st, fmt.Errorf("srvstats: metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("%w at %s: %s", ErrNoMetrics, endpoint, resp.Status)
	}
	seen := 0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if parseLine(&st, sc.Text()) {
			seen++
		}
	}
	if err := sc.Err(); err != nil {
		return st, fmt.Errorf("srvstats: metrics: %w", err)
	}
	if seen == 0 {
		return st, fmt.Errorf("%w at %s: no process_cpu_seconds_total", ErrNoMetrics, endpoint)
	}
	return st, nil
}

// parseLine adds one line of the metrics text to st; it reports whether
// the line was process_cpu_seconds_total.
func parseLine(st *Stats, line string) bool {
	if line == "" || line[0] == '#' {
		return false
	}
	i := strings.LastIndexByte(line, ' ')
	if i < 0 {
		return false
	}
	name, v := line[:i], line[i+1:]
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		return false
	}
	switch {
	case name == "process_cpu_seconds_total":
		st.CPU = time.Duration(f * float64(time.Second))
		return true
	case name == "etcd_debugging_mvcc_events_total":
		st.Events = int64(f)
	case strings.HasPrefix(name, "grpc_server_started_total{") && strings.Contains(name, `grpc_type="unary"`):
		st.Unary += int64(f)
	case strings.HasPrefix(name, "grpc_server_msg_received_total{") && strings.Contains(name, `grpc_service="etcdserverpb.Watch"`):
		st.WatchRequests += int64(f)
	case strings.HasPrefix(name, "grpc_server_msg_sent_total{") && strings.Contains(name, `grpc_service="etcdserverpb.Watch"`):
		st.WatchResponses += int64(f)
	case strings.HasPrefix(name, "grpc_server_msg_received_total{") && strings.Contains(name, `grpc_method="LeaseKeepAlive"`):
		st.KeepAlives += int64(f)
	}
	return false
}
