package bench

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// maxSamples bounds the latencies one phase keeps (about 8 MB); the count
// and the rate go on past it.
const maxSamples = 1 << 20

// sampler collects one phase's operations and their latencies. It is safe
// for concurrent use.
type sampler struct {
	count atomic.Int64
	mu    sync.Mutex
	lat   []time.Duration
}

// add records one operation that took d.
func (s *sampler) add(d time.Duration) {
	s.count.Add(1)
	s.mu.Lock()
	if len(s.lat) < maxSamples {
		s.lat = append(s.lat, d)
	}
	s.mu.Unlock()
}

// quantiles are the p50 and p99 of the latencies recorded so far (0 when
// there are none).
func (s *sampler) quantiles() (p50, p99 time.Duration) {
	s.mu.Lock()
	lat := slices.Clone(s.lat)
	s.mu.Unlock()
	return quantile(lat, 0.50), quantile(lat, 0.99)
}

// quantile is the q-quantile of lat (nearest rank): the smallest latency
// with at least q of them at or below it. It sorts lat.
func quantile(lat []time.Duration, q float64) time.Duration {
	if len(lat) == 0 {
		return 0
	}
	slices.Sort(lat)
	i := int(q*float64(len(lat))+0.999999999) - 1
	return lat[min(max(i, 0), len(lat)-1)]
}

// handoff times a resource passed from one holder to the next: the latency
// of a grant runs from the later of its request and the latest release
// before it (the release that let it in, when it waited). It is safe for
// concurrent use.
type handoff struct{ released atomic.Int64 }

// release notes that a holder begins to release at t.
func (h *handoff) release(t time.Time) { h.released.Store(t.UnixNano()) }

// latency is the grant's latency: requested when asked, granted when it
// returned.
func (h *handoff) latency(requested, granted time.Time) time.Duration {
	from := max(requested.UnixNano(), h.released.Load())
	return time.Duration(granted.UnixNano() - from)
}
