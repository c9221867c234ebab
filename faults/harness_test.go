package faults

import (
	"context"
	"math"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/concordkit/concord/embedtest"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

const (
	envScale = "CONCORD_TIME_SCALE"
	envSeed  = "CONCORD_FAULT_SEED"
	envRun   = "CONCORD_FAULT_RUN"
	envSoak  = "CONCORD_SOAK"
	envAll   = "CONCORD_FAULT_ALL"
)

// timeScale is CONCORD_TIME_SCALE (default 1): every timeout, TTL and fault
// duration of the suite is multiplied by it, for slow or busy machines.
func timeScale() float64 {
	if v, err := strconv.ParseFloat(os.Getenv(envScale), 64); err == nil && v > 0 {
		return v
	}
	return 1
}

func scaled(d time.Duration) time.Duration { return time.Duration(float64(d) * timeScale()) }

// sessionTTL is the lease TTL of every process: 2s scaled, in whole seconds.
func sessionTTL() time.Duration {
	return time.Duration(math.Ceil(2*timeScale())) * time.Second
}

// Bounds, before scaling.
const (
	opTimeout     = 3 * time.Second  // one request
	waitTimeout   = 4 * time.Second  // one Lock, Acquire or Claim
	livenessBound = 15 * time.Second // progress again after a fault heals
	drainTimeout  = 15 * time.Second // queue drained after the producer stops
)

func opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, scaled(opTimeout))
}

// proc is one client process: its own etcd client, which reaches each member
// through a proxy of its own, so the process alone can be cut off or held.
// A worker calls park at the points where a real process could stall; the
// fault schedule uses it to stall the process while it holds a resource.
type proc struct {
	name    string
	recipe  string
	client  *clientv3.Client
	proxies []*embedtest.Proxy

	// holding is set by the worker while it holds its resource, so the
	// schedule stalls processes that have something to lose; stallable
	// says the worker has park points at all.
	holding   atomic.Bool
	stallable bool

	mu     sync.Mutex
	want   bool
	parked chan struct{}
	resume chan struct{}
}

// park stalls the worker if a stall was requested, until the schedule lets
// it go or ctx ends, and reports whether it stalled. A stalled worker keeps
// its handles and uses them afterwards, as a paused process would.
func (p *proc) park(ctx context.Context) bool {
	p.mu.Lock()
	if !p.want {
		p.mu.Unlock()
		return false
	}
	p.want = false
	parked, resume := p.parked, p.resume
	p.mu.Unlock()
	close(parked)
	select {
	case <-resume:
	case <-ctx.Done():
	}
	return true
}

// requestStall asks the worker to stall at its next park point.
func (p *proc) requestStall() (parked, resume chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.want = true
	p.parked, p.resume = make(chan struct{}), make(chan struct{})
	return p.parked, p.resume
}

// cancelStall withdraws a request the worker has not taken up; it reports
// false if the worker parked meanwhile.
func (p *proc) cancelStall() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.want {
		return false
	}
	p.want = false
	return true
}

func (p *proc) cut(pause bool) {
	for _, px := range p.proxies {
		if pause {
			px.Pause()
		} else {
			px.Blackhole()
		}
	}
}

func (p *proc) mend() {
	for _, px := range p.proxies {
		px.Unpause()
		px.Unblackhole()
	}
}

// members is the etcd cluster a run's faults act on.
type members interface {
	MemberEndpoint(i int) string
	Leader(ctx context.Context) (int, error)
}

// env is one run: a cluster, its processes and their records.
type env struct {
	t      testing.TB
	seed   int64
	mem    members
	cl     *embedtest.Cluster        // embedded members (TestFaults), or
	pc     *embedtest.ProcessCluster // server processes (TestProcessFaults)
	tracks [][]faultKind
	admin  *clientv3.Client // direct to every member, never cut off
	ttl    time.Duration
	hist   *history
	rec    *recorder
	procs  []*proc

	compactions, compactFails atomic.Int64

	mu      sync.Mutex
	revoked map[int64]bool // leases the schedule revoked
	// leaderResumes are when stopped leaders were let run again: see
	// serverRevokedEarly.
	leaderResumes []time.Time
	// outages are when every member was down (restart-all), from the kill
	// until the restart returned.
	outages [][2]time.Time
}

// outageIn extends d, a time allowed from t, by the whole-cluster outages
// within [t, t+d]: nothing can be written while every member is down.
func (e *env) outageIn(t time.Time, d time.Duration) time.Duration {
	e.mu.Lock()
	defer e.mu.Unlock()
	ext := d
	for range 4 { // an extension can reach a further outage
		n := d
		for _, o := range e.outages {
			from, to := o[0], o[1]
			if from.Before(t) {
				from = t
			}
			if lim := t.Add(ext); to.After(lim) {
				to = lim
			}
			if to.After(from) {
				n += to.Sub(from)
			}
		}
		if n == ext {
			break
		}
		ext = n
	}
	return ext
}

// serverRevokedEarly says whether a hold whose lease was acknowledged valid
// until valid, but which another holder was granted at granted, was ended
// by etcd revoking the lease early rather than by its expiry: granted is
// before valid (so no expiry ended it), and a stopped leader resumed within
// staleRevokeWindow before it. A leader process resumed from SIGSTOP
// revokes the leases that expired in its stale view, renewed meanwhile by
// the new leader (etcd-io/etcd#15247: the leadership check added for it is
// skipped when the raft loop ticked recently, and a resumed process ticks
// first); TestStaleLeaderRevokes shows it on its own. No client can learn
// of such a revoke before it lands, which is why writes carry a Guard.
func (e *env) serverRevokedEarly(valid, granted time.Time) bool {
	if !granted.Before(valid) {
		return false
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	window := e.staleRevokeWindow()
	for _, r := range e.leaderResumes {
		if !granted.Before(r) && granted.Sub(r) <= window {
			return true
		}
	}
	return false
}

// staleRevokeWindow is how long after a stopped leader resumes its stale
// revokes can land: a request timeout (5 s and two election timeouts) and
// a TTL. The resumed process proposes them 16 at a time (etcd's
// maxPendingRevokes); the first ones, made in its old term, are never
// committed and time out, and the rest, proposed once it follows the new
// leader, are forwarded to that leader and revoke leases it kept alive, a
// request timeout after the resume (see TestStaleLeaderRevokes;
// TestProcessFaults saw it 5.2 and 5.5 s after).
func (e *env) staleRevokeWindow() time.Duration {
	const election = 100 * time.Millisecond // embedtest.FastTicks'
	return 5*time.Second + 2*election + e.ttl
}

func (e *env) revokedLease(id int64) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.revoked[id]
}

// sinceLeaderResume is how long before t a stopped leader last resumed.
func (e *env) sinceLeaderResume(t time.Time) time.Duration {
	e.mu.Lock()
	defer e.mu.Unlock()
	d := time.Duration(-1)
	for _, r := range e.leaderResumes {
		if !t.Before(r) && (d < 0 || t.Sub(r) < d) {
			d = t.Sub(r)
		}
	}
	return d
}

// newProc makes a process of recipe with a proxy to every member.
func (e *env) newProc(recipe, name string) *proc {
	e.t.Helper()
	p := &proc{name: name, recipe: recipe, stallable: true}
	var eps []string
	for i := range 3 {
		px := embedtest.NewProxy(e.t, e.mem.MemberEndpoint(i))
		p.proxies = append(p.proxies, px)
		eps = append(eps, px.Endpoint())
	}
	c, err := clientv3.New(clientv3.Config{
		Endpoints:            eps,
		DialTimeout:          5 * time.Second,
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 2 * time.Second,
		Logger:               zap.NewNop(),
		// Reconnect within about a second of a fault healing, as
		// embedtest's own clients do.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: 2 * time.Second,
		})},
	})
	if err != nil {
		e.t.Fatalf("client of %s: %v", name, err)
	}
	// Close the client before its proxies (their Close waits for live
	// connections): cleanups run last-registered first.
	e.t.Cleanup(func() { _ = c.Close() })
	p.client = c
	e.procs = append(e.procs, p)
	return p
}

// compact compacts the history every second, up to the current revision but
// never past what the recorder has seen.
func (e *env) compact(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var last int64
	for i := 0; i < 1000000; i++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		cctx, cancel := opCtx(ctx)
		resp, err := e.admin.Get(cctx, "\x00faults-compact")
		rev := int64(0)
		if err == nil {
			rev = min(resp.Header.Revision, e.rec.seenRev())
			if rev > last {
				_, err = e.admin.Compact(cctx, rev)
			}
		}
		cancel()
		switch {
		case err != nil:
			e.compactFails.Add(1)
		case rev > last:
			e.compactions.Add(1)
			last = rev
		}
	}
}
