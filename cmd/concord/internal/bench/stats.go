package bench

import (
	"context"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/concordkit/concord/internal/srvstats"
)

// statsReadTimeout bounds one read of every member's /metrics.
const statsReadTimeout = 3 * time.Second

// statsReader reads the members' counters, summed. After one failed read
// it reads no more: the figures are n/a for the rest of the run.
type statsReader struct {
	hc        *http.Client
	endpoints []string

	mu     sync.Mutex
	failed bool
}

func newStatsReader(hc *http.Client, endpoints []string) *statsReader {
	eps := slices.Compact(slices.Sorted(slices.Values(endpoints)))
	return &statsReader{hc: hc, endpoints: eps, failed: len(eps) == 0}
}

// read is the sum of the members' counters, or nil when they cannot be
// read.
func (s *statsReader) read(ctx context.Context) *srvstats.Stats {
	if !s.ok() {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, statsReadTimeout)
	defer cancel()
	var sum srvstats.Stats
	for _, ep := range s.endpoints {
		st, err := srvstats.Read(ctx, s.hc, ep)
		if err != nil {
			s.mu.Lock()
			s.failed = true
			s.mu.Unlock()
			return nil
		}
		sum = sum.Add(st)
	}
	return &sum
}

// ok reports whether the counters have been readable so far.
func (s *statsReader) ok() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.failed
}
